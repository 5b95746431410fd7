//! [`Client`]: a connection to a cluster's master, and [`ClientBuilder`] to make one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use parl_core::client::tasks::{FunctionId, Limits, TaskSettings, Tasks};
use parl_core::protocol::{ActorOptions, Encoding, ShippedFile};
use parl_core::{Auth, ClientConfig};

use crate::actor::ActorBuilder;
use crate::error::{Error, Result};
use crate::function::Function;
use crate::pickle;

/// Where `xparl start` takes the cluster key from, and where clients look for it.
const KEY_ENV: &str = "XPARL_CLUSTER_KEY";
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an actor's creation (or a task's lease) may wait for a vacant slot, as in Python.
const DEFAULT_CREATE_TIMEOUT: Duration = Duration::from_secs(300);

/// A connection to a cluster, shared by every actor and task made through it. Cheap to clone;
/// the connection closes (every actor released, every task cancelled) when the last clone
/// and the last [`Actor`](crate::Actor) made through it are dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    core: parl_core::Client,
    create_timeout: Duration,
    /// The task dispatcher, started by the first task.
    tasks: OnceLock<Tasks>,
    /// The id each function (`module:function`) was defined with.
    functions: Mutex<HashMap<String, FunctionId>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.core.close();
    }
}

impl Client {
    /// Connects to the master at `address` ("host:port"), finding the key as
    /// [`ClientBuilder::key`] says.
    pub fn connect(address: &str) -> Result<Client> {
        Client::builder(address).connect()
    }

    /// A connection to configure before connecting.
    pub fn builder(address: &str) -> ClientBuilder {
        ClientBuilder {
            address: address.to_string(),
            key: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            create_timeout: DEFAULT_CREATE_TIMEOUT,
            log_to_driver: false,
            files: Vec::new(),
            error: None,
        }
    }

    /// An actor of the Python class `class`, named `"module:Class"` (`"pkg.module:Outer.Inner"`
    /// for a nested class): the module must be importable in the cluster's jobs, installed on
    /// the workers or shipped with [`ClientBuilder::ship_file`].
    pub fn actor(&self, class: &str) -> ActorBuilder {
        ActorBuilder::new(self.clone(), class, self.inner.create_timeout)
    }

    /// Stateless tasks of the Python function `function`, named `"module:function"`, run on
    /// jobs leased on demand (like `@parl_rs.remote_function` in Python).
    pub fn function(&self, function: &str) -> Function {
        Function::new(self.clone(), function)
    }

    /// The master's address.
    pub fn master_address(&self) -> &str {
        self.inner.core.master_address()
    }

    /// Releases every actor and cancels every task of this client; later requests fail.
    pub fn close(&self) {
        self.inner.core.close();
    }

    pub(crate) fn core(&self) -> &parl_core::Client {
        &self.inner.core
    }

    /// The task dispatcher, started on first use; and the id of `module:qualname`, defined on
    /// first use.
    pub(crate) fn tasks_of(&self, module: &str, qualname: &str) -> Result<(Tasks, FunctionId)> {
        let tasks = self.inner.tasks.get_or_init(|| {
            let settings = TaskSettings {
                runner_options: ActorOptions::default(),
                create_timeout: self.inner.create_timeout,
                limits: Limits::default(),
            };
            Tasks::start(&self.inner.core, settings)
        });
        let key = format!("{module}:{qualname}");
        let mut functions = self.inner.functions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = functions.get(&key) {
            return Ok((tasks.clone(), *id));
        }
        let id = functions.len() as FunctionId + 1;
        tasks.define(id, pickle::function_ref(module, qualname)?);
        functions.insert(key, id);
        Ok((tasks.clone(), id))
    }
}

/// How to connect: the key, timeouts, the files every job gets.
#[must_use]
pub struct ClientBuilder {
    address: String,
    key: Option<String>,
    connect_timeout: Duration,
    create_timeout: Duration,
    log_to_driver: bool,
    files: Vec<ShippedFile>,
    /// A file that could not be read, reported by `connect`.
    error: Option<Error>,
}

impl ClientBuilder {
    /// The cluster key. Without it the client uses `$XPARL_CLUSTER_KEY`, then the key file
    /// `xparl start` wrote for the master's port on this machine (only when the master is on
    /// this machine), and otherwise connects without a key, which only an `--insecure`
    /// cluster accepts.
    pub fn key(mut self, key: impl Into<String>) -> ClientBuilder {
        self.key = Some(key.into());
        self
    }

    /// How long to try to reach the master (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.connect_timeout = timeout;
        self
    }

    /// How long an actor's creation, or a task's lease, may wait for a vacant slot (default
    /// 300 s).
    pub fn create_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.create_timeout = timeout;
        self
    }

    /// Print what the actors write to stdout and stderr here, each line prefixed with its
    /// actor (PARL's `log_to_driver`).
    pub fn log_to_driver(mut self, on: bool) -> ClientBuilder {
        self.log_to_driver = on;
        self
    }

    /// Ships the file at `path` to every job's working directory under its file name: a
    /// Python module shipped so is importable by the jobs (`"simulator:Simulator"` for
    /// `simulator.py`). Read now; a file that cannot be read fails `connect`.
    pub fn ship_file(self, path: impl AsRef<Path>) -> ClientBuilder {
        let path = path.as_ref();
        let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        self.ship_file_as(path, name)
    }

    /// Ships the file at `path` to every job's working directory as `name` (a relative,
    /// '/'-separated path).
    pub fn ship_file_as(mut self, path: impl AsRef<Path>, name: impl Into<String>) -> ClientBuilder {
        let path = path.as_ref();
        match std::fs::read(path) {
            Ok(data) => self.files.push(ShippedFile { path: name.into(), data }),
            Err(error) => {
                let why = format!("cannot read {} to ship it to the jobs: {error}", path.display());
                self.error.get_or_insert(Error::InvalidArgument(why));
            }
        }
        self
    }

    /// Connects, blocking the calling thread (not an async runtime's: use
    /// [`ClientBuilder::connect_async`] there).
    pub fn connect(self) -> Result<Client> {
        parl_core::runtime::block_on(self.connect_on_runtime())
    }

    /// Connects, from async code (any executor).
    pub async fn connect_async(self) -> Result<Client> {
        let connecting = parl_core::runtime::handle().spawn(self.connect_on_runtime());
        connecting.await.map_err(|_| Error::Cluster(parl_core::Error::Shutdown))?
    }

    /// Runs on the process's background runtime, where the client's connections then live.
    async fn connect_on_runtime(self) -> Result<Client> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let key = self.key.or_else(|| find_key(&self.address));
        let config = ClientConfig {
            master: self.address,
            connect_timeout: self.connect_timeout,
            log_to_driver: self.log_to_driver,
            auth: Auth::from_key(key.as_deref()),
            encoding: Encoding::Portable,
        };
        let core = parl_core::Client::connect(config).await?;
        core.set_shipped_files(self.files)?;
        let inner = Inner {
            core,
            create_timeout: self.create_timeout,
            tasks: OnceLock::new(),
            functions: Mutex::default(),
        };
        Ok(Client { inner: Arc::new(inner) })
    }
}

/// The key from the environment, or the key file of the master's port when the master is on
/// this machine (as the Python client looks for it).
fn find_key(address: &str) -> Option<String> {
    if let Ok(key) = std::env::var(KEY_ENV) {
        if !key.is_empty() {
            return Some(key);
        }
    }
    let (host, port) = address.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    if !is_this_machine(host.trim_matches(|c| c == '[' || c == ']')) {
        return None;
    }
    let text = std::fs::read_to_string(state_root().join("keys").join(format!("{port}.key"))).ok()?;
    Some(text.trim().to_string()).filter(|key| !key.is_empty())
}

fn is_this_machine(host: &str) -> bool {
    let loopback = host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    loopback || host == "localhost" || host == parl_core::ids::hostname()
}

/// `$XPARL_STATE_DIR`, default `~/.parl_rs`.
fn state_root() -> PathBuf {
    match std::env::var_os("XPARL_STATE_DIR").filter(|dir| !dir.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".parl_rs"),
    }
}
