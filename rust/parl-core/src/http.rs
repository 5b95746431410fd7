//! Starting an HTTP server (the master's endpoint, a worker's log server) on the runtime.

use axum::Router;

use crate::error::{Error, Result};

/// Serves `app` on `bind` ("host:port"; port 0 picks one) in the background. Returns the
/// bound "host:port". `name` says which server it is in errors and logs.
pub async fn serve(bind: &str, app: Router, name: &'static str) -> Result<String> {
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| Error::io(format!("binding the {name} on {bind}"), e))?;
    let address = listener.local_addr().map_err(|e| Error::io(format!("reading the {name}'s address"), e))?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("the {name} stopped: {e}");
        }
    });
    Ok(address.to_string())
}
