//! # parl-client
//!
//! Drive the Python actors and tasks of a parl_rs cluster from Rust: the same cluster, the same
//! jobs and the same semantics as the Python client, with serde values.
//!
//! - [`Client`]: a connection to a master (`xparl start`), with the cluster key.
//! - [`Actor`]: an instance of a Python class named `"module:Class"`, in its own job; call
//!   its methods, read and write its attributes.
//! - [`Function`]: stateless tasks of a Python function `"module:function"`, with timeouts,
//!   retries and dependencies.
//! - [`Call`]: every request returns one at once; [`Call::wait`] blocks for its result, or
//!   `.await` it from async code. Calls can be awaited together.
//! - [`Error`]: typed failures: the remote exception with its Python type and traceback, a dead
//!   actor, a timeout, a value that cannot cross.
//! - [`LocalCluster`]: a cluster inside this process, for trying things out.
//!
//! ## Values
//!
//! Arguments and results travel as pickle written and read by `serde-pickle` (the call
//! envelope's portable encoding): any `Serialize` value goes in, any `Deserialize` value comes
//! out. Integers, floats, strings, `Option` (None), `Vec` and tuples (list, tuple), maps and
//! structs (dict), sets, and bytes through `serde_bytes`. Arguments are a tuple: `(x,)` for one,
//! `()` for none; keyword arguments a map or a struct. A Python result with no such form (a
//! numpy array, an object of the user's class) fails with [`Error::NotPortable`], naming its
//! type; the actor lives on.
//!
//! ## Example
//!
//! ```
//! # fn main() -> Result<(), parl_client::Error> {
//! use parl_client::LocalCluster;
//!
//! let cluster = LocalCluster::start(2)?; // or Client::connect("host:port") after `xparl start`
//! let client = cluster.client().connect()?;
//!
//! // An actor of a class the jobs can import: `collections.Counter("abracadabra")`.
//! let counter = client.actor("collections:Counter").create(("abracadabra",)).wait()?;
//! let top: Vec<(String, u32)> = counter.call("most_common", (2,)).wait()?;
//! assert_eq!(top, [("a".to_string(), 5), ("b".to_string(), 2)]);
//!
//! // A remote exception carries its Python type and traceback.
//! let missing = counter.call::<u32>("pop", ("z",)).wait().unwrap_err();
//! assert_eq!(missing.exc_type(), Some("builtins.KeyError"));
//!
//! // Tasks: a function the jobs can import, run where a job is free.
//! let root: f64 = client.function("math:sqrt").submit((2.0,)).wait()?;
//! assert!((root - 2f64.sqrt()).abs() < 1e-12);
//! # Ok(())
//! # }
//! ```
//!
//! From async code, `.await` the same calls, and await many together:
//!
//! ```
//! # async fn run(client: parl_client::Client) -> Result<(), parl_client::Error> {
//! let counter = client.actor("collections:Counter").create(()).await?;
//! let updates: Vec<_> = (0..10).map(|i| counter.call::<()>("update", (vec![i % 3],))).collect();
//! for done in futures::future::join_all(updates).await {
//!     done?;
//! }
//! let count: u32 = counter.call("total", ()).await?;
//! assert_eq!(count, 10);
//! # Ok(())
//! # }
//! # let cluster = parl_client::LocalCluster::start(1).unwrap();
//! # let client = cluster.client().connect().unwrap();
//! # tokio::runtime::Runtime::new().unwrap().block_on(run(client)).unwrap();
//! ```
//!
//! Python classes and functions of your own are found in the jobs when they are installed on
//! the workers, or shipped by the client: [`ClientBuilder::ship_file`]. The repository's
//! `examples/native_client.rs` drives four Python simulator actors that way.

mod actor;
mod call;
mod client;
mod error;
mod function;
mod local;
mod pickle;

pub use actor::{Actor, ActorBuilder};
pub use call::Call;
pub use client::{Client, ClientBuilder};
pub use error::{Error, FailureKind, Result, TaskFailure};
pub use function::Function;
pub use local::LocalCluster;
pub use parl_core::client::tasks::TaskId;

/// `"module:name"` (a class or function the jobs import) as its module and qualified name.
fn split_reference<'a>(reference: &'a str, form: &str) -> Result<(&'a str, &'a str)> {
    let dotted = |part: &str| {
        !part.is_empty()
            && part.split('.').all(|name| {
                let mut chars = name.chars();
                chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
                    && chars.all(|c| c.is_alphanumeric() || c == '_')
            })
    };
    match reference.split_once(':') {
        Some((module, name)) if dotted(module) && dotted(name) => Ok((module, name)),
        _ => {
            Err(Error::InvalidArgument(format!("expected `{form}` (dotted Python names), got `{reference}`")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_module_and_qualified_name() {
        assert_eq!(split_reference("pkg.sim:Outer.Sim", "module:Class").unwrap(), ("pkg.sim", "Outer.Sim"));
        for bad in ["Sim", "sim:", ":Sim", "sim:Sim()", "sim:1x", "a b:C", "sim:Sim:Extra"] {
            let error = split_reference(bad, "module:Class").unwrap_err().to_string();
            assert!(error.contains("expected `module:Class`"), "{bad}: {error}");
        }
    }
}
