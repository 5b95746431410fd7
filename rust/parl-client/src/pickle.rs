//! Rust values to and from the portable pickle of the call envelope
//! ([`Encoding::Portable`](parl_core::protocol::Encoding::Portable)), with `serde-pickle`.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_pickle::{DeOptions, HashableValue, SerOptions, Value};

use crate::error::{Error, Result};

/// One value as a payload frame.
pub(crate) fn encode(what: &str, value: &impl Serialize) -> Result<Bytes> {
    let bytes =
        serde_pickle::to_vec(value, SerOptions::new()).map_err(|source| encode_error(what, source))?;
    Ok(Bytes::from(bytes))
}

/// The payload of a call of `what`: `(args, kwargs)`.
pub(crate) fn call_payload(what: &str, args: &impl Serialize, kwargs: &impl Serialize) -> Result<Bytes> {
    let (args, kwargs) = args_and_kwargs(what, args, kwargs)?;
    frame(what, &Value::Tuple(vec![args, kwargs]))
}

/// The payload of an `Init` of the class `qualname` of `module`: `(class, args, kwargs)`, the
/// class by reference.
pub(crate) fn init_payload(
    module: &str,
    qualname: &str,
    args: &impl Serialize,
    kwargs: &impl Serialize,
) -> Result<Bytes> {
    let what = format!("{qualname}.__init__");
    let (args, kwargs) = args_and_kwargs(&what, args, kwargs)?;
    let class = Value::Tuple(vec![string("by_ref"), string(module), string(qualname), Value::None]);
    frame(&what, &Value::Tuple(vec![class, args, kwargs]))
}

/// A task's function by reference, as the job loads it: `("by_ref", module, qualname)`.
pub(crate) fn function_ref(module: &str, qualname: &str) -> Result<Bytes> {
    frame(qualname, &Value::Tuple(vec![string("by_ref"), string(module), string(qualname)]))
}

fn string(text: &str) -> Value {
    Value::String(text.to_string())
}

fn frame(what: &str, value: &Value) -> Result<Bytes> {
    let bytes =
        serde_pickle::value_to_vec(value, SerOptions::new()).map_err(|source| encode_error(what, source))?;
    Ok(Bytes::from(bytes))
}

/// `args` must serialize as a sequence (a tuple such as `(1, "a")`, `(x,)` for one argument,
/// `()` for none, or a `Vec`); `kwargs` as a map with string keys (a map, or a struct: its
/// fields become the names), or `()` for none.
fn args_and_kwargs(what: &str, args: &impl Serialize, kwargs: &impl Serialize) -> Result<(Value, Value)> {
    let args = match to_value(what, "the arguments", args)? {
        Value::Tuple(items) | Value::List(items) => Value::Tuple(items),
        Value::None => Value::Tuple(Vec::new()),
        other => {
            return Err(Error::InvalidArgument(format!(
                "the arguments of `{what}` must be a tuple (`(x,)` for one argument), got {}",
                kind(&other)
            )))
        }
    };
    let kwargs = match to_value(what, "the keyword arguments", kwargs)? {
        Value::None => Value::Dict(Default::default()),
        Value::Dict(map) if map.keys().all(|key| matches!(key, HashableValue::String(_))) => Value::Dict(map),
        other => {
            return Err(Error::InvalidArgument(format!(
                "the keyword arguments of `{what}` must be a map or struct with string keys, got {}",
                kind(&other)
            )))
        }
    };
    Ok((args, kwargs))
}

fn to_value(what: &str, part: &str, value: &impl Serialize) -> Result<Value> {
    serde_pickle::to_value(value).map_err(|source| encode_error(&format!("{part} of `{what}`"), source))
}

fn encode_error(what: &str, source: serde_pickle::Error) -> Error {
    Error::Encode { what: what.to_string(), source }
}

/// The reply's one frame as a value.
pub(crate) fn reply_value(what: &str, payload: &[Bytes]) -> Result<Value> {
    let frame = payload.first().map(|f| &f[..]).unwrap_or_default();
    serde_pickle::value_from_slice(frame, DeOptions::new()).map_err(|source| Error::Decode {
        what: what.to_string(),
        rust_type: "a pickled value",
        source,
    })
}

/// `value` as an `R`.
pub(crate) fn decode<R: DeserializeOwned>(what: &str, value: Value) -> Result<R> {
    serde_pickle::from_value(value).map_err(|source| Error::Decode {
        what: what.to_string(),
        rust_type: std::any::type_name::<R>(),
        source,
    })
}

/// Item `index` of a reply that is a tuple (the call envelope's `(value, methods)` and
/// `(is_method, value)`).
pub(crate) fn item(what: &str, value: Value, index: usize) -> Result<Value> {
    match value {
        Value::Tuple(mut items) | Value::List(mut items) if index < items.len() => {
            Ok(items.swap_remove(index))
        }
        other => Err(Error::Cluster(parl_core::Error::Protocol(format!(
            "the reply to `{what}` is {}, not the tuple the call envelope defines",
            kind(&other)
        )))),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::None => "None",
        Value::Bool(_) => "a bool",
        Value::I64(_) | Value::Int(_) => "an int",
        Value::F64(_) => "a float",
        Value::Bytes(_) => "bytes",
        Value::String(_) => "a str",
        Value::List(_) => "a list",
        Value::Tuple(_) => "a tuple",
        Value::Set(_) | Value::FrozenSet(_) => "a set",
        Value::Dict(_) => "a dict",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Serialize)]
    struct Options {
        noise: f64,
    }

    fn round_trip(payload: Bytes) -> Value {
        serde_pickle::value_from_slice(&payload, DeOptions::new()).unwrap()
    }

    #[test]
    fn arguments_are_a_tuple_and_a_dict_of_names() {
        let payload = call_payload("step", &(1, "a"), &Options { noise: 0.5 }).unwrap();
        let Value::Tuple(parts) = round_trip(payload) else { panic!("not a tuple") };
        assert_eq!(parts[0], Value::Tuple(vec![Value::I64(1), Value::String("a".into())]));
        let expected = BTreeMap::from([(HashableValue::String("noise".into()), Value::F64(0.5))]);
        assert_eq!(parts[1], Value::Dict(expected));
        let none = call_payload("step", &(), &()).unwrap();
        assert_eq!(round_trip(none), Value::Tuple(vec![Value::Tuple(vec![]), Value::Dict(BTreeMap::new())]));
    }

    #[test]
    fn arguments_that_are_not_a_sequence_or_names_that_are_not_strings_are_refused() {
        let error = call_payload("step", &5, &()).unwrap_err().to_string();
        assert!(error.contains("must be a tuple (`(x,)` for one argument), got an int"), "{error}");
        let kwargs = BTreeMap::from([(1, 2)]);
        let error = call_payload("step", &(), &kwargs).unwrap_err().to_string();
        assert!(error.contains("map or struct with string keys, got a dict"), "{error}");
    }

    #[test]
    fn a_python_value_that_does_not_fit_names_the_rust_type() {
        let error = decode::<u8>("step", Value::String("x".into())).unwrap_err().to_string();
        assert!(error.contains("the result of `step` as u8"), "{error}");
    }
}
