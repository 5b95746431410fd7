//! [`LocalCluster`]: a master and a worker inside this process, whose jobs run Python: for
//! examples, tests and trying things out without `xparl start`.

use std::process::Command;

use crate::client::ClientBuilder;
use crate::error::{Error, Result};
use crate::Client;

/// The interpreter jobs run: `$PARL_RS_PYTHON`, else `python3`.
const PYTHON_ENV: &str = "PARL_RS_PYTHON";

/// A cluster of one master and one worker in this process, on 127.0.0.1, with a key of its
/// own. Its jobs run a Python that has parl_rs installed. Stopped (its jobs killed) when
/// dropped.
pub struct LocalCluster {
    cluster: Option<parl_core::LocalCluster>,
}

impl LocalCluster {
    /// Starts a cluster of `cpus` CPU slots whose jobs run `$PARL_RS_PYTHON` or `python3`.
    pub fn start(cpus: u32) -> Result<LocalCluster> {
        let python =
            std::env::var(PYTHON_ENV).ok().filter(|p| !p.is_empty()).unwrap_or_else(|| "python3".into());
        LocalCluster::start_with(cpus, &python)
    }

    /// Starts a cluster of `cpus` CPU slots whose jobs run the interpreter `python`. Fails at
    /// once, saying so, if it cannot import parl_rs.
    pub fn start_with(cpus: u32, python: &str) -> Result<LocalCluster> {
        check_python(python)?;
        let state_dir = std::env::temp_dir().join(parl_core::ids::new_id("parl-client-cluster"));
        let python = vec![python.to_string()];
        let start = parl_core::LocalCluster::start("127.0.0.1:0", cpus, python, String::new(), state_dir);
        let cluster = parl_core::runtime::block_on(start)?;
        Ok(LocalCluster { cluster: Some(cluster) })
    }

    /// The master's "host:port".
    pub fn address(&self) -> &str {
        self.cluster.as_ref().map_or("", |cluster| cluster.address.as_str())
    }

    /// The cluster's key.
    pub fn key(&self) -> &str {
        self.cluster.as_ref().and_then(|cluster| cluster.auth.key()).map_or("", |key| key.text())
    }

    /// A client of this cluster, to configure before connecting.
    pub fn client(&self) -> ClientBuilder {
        Client::builder(self.address()).key(self.key())
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if let Some(mut cluster) = self.cluster.take() {
            parl_core::runtime::block_on(async move { cluster.stop().await });
        }
    }
}

fn check_python(python: &str) -> Result<()> {
    let checked = Command::new(python).args(["-c", "import parl_rs"]).output();
    let why = match checked {
        Ok(output) if output.status.success() => return Ok(()),
        Ok(output) => String::from_utf8_lossy(&output.stderr).trim().lines().last().unwrap_or("").to_string(),
        Err(error) => error.to_string(),
    };
    Err(Error::InvalidArgument(format!(
        "the jobs' Python `{python}` cannot import parl_rs ({why}): install parl_rs in it (`pip install .` in the \
         repository), or name another interpreter in ${PYTHON_ENV}"
    )))
}
