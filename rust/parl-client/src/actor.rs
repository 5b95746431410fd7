//! [`Actor`]: one instance of a Python class in its own job, and [`ActorBuilder`] to make one.

use std::sync::Arc;
use std::time::Duration;

use parl_core::protocol::{ActorOptions, CallKind};
use parl_core::{ActorSpec, Reply};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::call::{Call, Sender};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::pickle;

/// An instance of a Python class living in its own job on the cluster. Its methods run one at
/// a time (or `max_concurrency` at once), in the order they were called.
///
/// As in PARL, an exception raised by its code ends the actor (its job exits, its slot is
/// free) unless it was created with [`ActorBuilder::keep_alive_on_error`]: the failing call
/// gets [`Error::Remote`], later ones [`Error::ActorDied`]. Dropping the `Actor` releases it.
/// `Actor` is `Send + Sync`: share it between threads or tokio tasks behind an `Arc`.
pub struct Actor {
    core: Arc<parl_core::Actor>,
    /// Keeps the connection open while the actor lives.
    _client: Client,
    methods: Vec<String>,
}

impl Actor {
    /// Calls `method` with the positional arguments `args`: a tuple (`(x,)` for one argument,
    /// `()` for none). The reply is decoded as `R` (`()` for None, `serde_bytes::ByteBuf` for
    /// bytes, a struct for a dict with its field names).
    pub fn call<R: DeserializeOwned>(&self, method: &str, args: impl Serialize) -> Call<R> {
        self.call_kw(method, args, ())
    }

    /// Calls `method` with positional and keyword arguments; `kwargs` is a map with string
    /// keys or a struct (its fields are the names).
    pub fn call_kw<R: DeserializeOwned>(
        &self,
        method: &str,
        args: impl Serialize,
        kwargs: impl Serialize,
    ) -> Call<R> {
        match pickle::call_payload(method, &args, &kwargs) {
            Ok(payload) => {
                let what = method.to_string();
                self.send(CallKind::Method, method, payload, move |reply| {
                    let value = pickle::item(&what, reply_value(&what, reply)?, 0)?;
                    pickle::decode(&what, value)
                })
            }
            Err(error) => Call::failed(method, error),
        }
    }

    /// Reads the attribute `attribute`.
    pub fn get<R: DeserializeOwned>(&self, attribute: &str) -> Call<R> {
        let what = attribute.to_string();
        let class = self.class_name().to_string();
        self.send(CallKind::GetAttr, attribute, bytes::Bytes::new(), move |reply| {
            let value = reply_value(&what, reply)?;
            let is_method: bool = pickle::decode(&what, pickle::item(&what, value.clone(), 0)?)?;
            if is_method {
                let why = format!("`{what}` is a method of {class}, not a value: call it with `Actor::call`");
                return Err(Error::InvalidArgument(why));
            }
            pickle::decode(&what, pickle::item(&what, value, 1)?)
        })
    }

    /// Writes the attribute `attribute`.
    pub fn set(&self, attribute: &str, value: impl Serialize) -> Call<()> {
        match pickle::encode(attribute, &value) {
            Ok(payload) => {
                let what = attribute.to_string();
                self.send(CallKind::SetAttr, attribute, payload, move |reply| {
                    reply_value(&what, reply).map(drop)
                })
            }
            Err(error) => Call::failed(attribute, error),
        }
    }

    /// The methods of the actor's class (known once it was created).
    pub fn methods(&self) -> &[String] {
        &self.methods
    }

    /// The Python class's name.
    pub fn class_name(&self) -> &str {
        self.core.class_name()
    }

    /// The actor's id (its job's), as the monitor and the logs name it.
    pub fn id(&self) -> Option<&str> {
        self.core.actor_id()
    }

    /// False once the actor ended: released, dead, or failed to start.
    pub fn is_alive(&self) -> bool {
        self.core.is_alive()
    }

    /// Releases the actor: its job exits and its slot returns to the cluster; calls still
    /// waiting fail with [`Error::ActorDied`].
    pub fn release(self) {
        self.core.release();
    }

    fn send<R>(
        &self,
        kind: CallKind,
        name: &str,
        payload: bytes::Bytes,
        decode: impl FnOnce(Reply) -> Result<R> + Send + 'static,
    ) -> Call<R> {
        let (call, sender) = Call::pending(name, decode);
        let payload = if payload.is_empty() { Vec::new() } else { vec![payload] };
        submit(&self.core, kind, name, payload, sender);
        call
    }
}

impl std::fmt::Debug for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Actor").field("class", &self.class_name()).field("id", &self.id()).finish()
    }
}

fn submit(core: &parl_core::Actor, kind: CallKind, name: &str, payload: Vec<bytes::Bytes>, sender: Sender) {
    core.submit(kind, name, payload, move |reply| sender(reply.map_err(Error::from)));
}

/// The reply's value, or the failure the job reported.
fn reply_value(what: &str, reply: Reply) -> Result<serde_pickle::Value> {
    if let Some(failure) = reply.failure {
        return Err(Error::remote(what, failure));
    }
    pickle::reply_value(what, &reply.payload)
}

/// How to create an actor: its resources and options (those of Python's `@remote_class`).
#[must_use]
pub struct ActorBuilder {
    client: Client,
    class: String,
    spec: ActorSpec,
}

impl ActorBuilder {
    pub(crate) fn new(client: Client, class: &str, create_timeout: Duration) -> ActorBuilder {
        let spec = ActorSpec {
            n_cpu: 1,
            n_gpu: 0,
            timeout: create_timeout,
            class_name: String::new(),
            max_memory: None,
            on_worker: None,
            options: ActorOptions::default(),
        };
        ActorBuilder { client, class: class.to_string(), spec }
    }

    /// GPUs for the actor, all on one worker of a GPU cluster (it then takes no CPU slot).
    pub fn gpus(mut self, n_gpu: u32) -> ActorBuilder {
        self.spec.n_gpu = n_gpu;
        self.spec.n_cpu = u32::from(n_gpu == 0);
        self
    }

    /// Memory the actor may use beyond its job's start-up memory (MB of 2^20 bytes); past it
    /// its worker kills it, and calls fail with [`Error::ActorDied`] saying so.
    pub fn max_memory_mb(mut self, mb: u64) -> ActorBuilder {
        self.spec.max_memory = Some(mb.saturating_mul(1 << 20));
        self
    }

    /// An exception raised by the actor's code is reported and the actor lives on.
    pub fn keep_alive_on_error(mut self, keep: bool) -> ActorBuilder {
        self.spec.options.keep_alive_on_error = keep;
        self
    }

    /// Requests served at once (`async def` methods interleave on the actor's event loop,
    /// plain ones run on threads); 1 by default.
    pub fn max_concurrency(mut self, n: u32) -> ActorBuilder {
        self.spec.options.max_concurrency = n.max(1);
        self
    }

    /// How long the creation may wait for a vacant slot (the client's `create_timeout` by
    /// default).
    pub fn create_timeout(mut self, timeout: Duration) -> ActorBuilder {
        self.spec.timeout = timeout;
        self
    }

    /// Creates the actor, calling its class with `args` (a tuple). The call completes with the
    /// [`Actor`] once `__init__` has run in its job, or with its error.
    pub fn create(self, args: impl Serialize) -> Call<Actor> {
        self.create_kw(args, ())
    }

    /// Creates the actor, calling its class with positional and keyword arguments.
    pub fn create_kw(mut self, args: impl Serialize, kwargs: impl Serialize) -> Call<Actor> {
        let what = format!("{}.__init__", self.class);
        let (module, qualname) = match crate::split_reference(&self.class, "module:Class") {
            Ok(parts) => parts,
            Err(error) => return Call::failed(what, error),
        };
        let payload = match pickle::init_payload(module, qualname, &args, &kwargs) {
            Ok(payload) => payload,
            Err(error) => return Call::failed(what, error),
        };
        self.spec.class_name = qualname.to_string();
        let core = Arc::new(self.client.core().spawn_actor(self.spec));
        let actor = core.clone();
        let client = self.client;
        let (call, sender) = Call::pending(what.clone(), move |reply| {
            let methods = pickle::decode(&what, reply_value(&what, reply)?)?;
            Ok(Actor { core: actor, _client: client, methods })
        });
        submit(&core, CallKind::init(), qualname, vec![payload], sender);
        call
    }
}
