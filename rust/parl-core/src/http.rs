//! Starting an HTTP server (the master's endpoint, a worker's log server) on the runtime.
//!
//! Its port is reachable by anyone who can reach the machine, so what a peer can hold is
//! bounded before any token is checked: a connection must send a whole request head within
//! [`HTTP_HEADER_DEADLINE`] (an idle keep-alive connection too), and only so many
//! connections are open at once, in all and per remote address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};

use crate::auth::{Auth, ClusterKey};
use crate::error::{Error, Result};
use crate::logging::Throttle;

/// A connection that has not sent a whole request head within this is closed.
pub const HTTP_HEADER_DEADLINE: Duration = Duration::from_secs(10);
/// Connections an HTTP server keeps open at once.
pub const MAX_HTTP_CONNECTIONS: usize = 256;
/// Connections an HTTP server keeps open at once from one remote address.
pub const MAX_HTTP_CONNECTIONS_PER_ADDRESS: usize = 64;

/// Serves `app` on `bind` ("host:port"; port 0 picks one) in the background, answering only
/// requests that carry the cluster key's token when `auth` has a key. Returns the bound
/// "host:port". `name` says which server it is in errors and logs.
pub async fn serve(bind: &str, app: Router, name: &'static str, auth: &Auth) -> Result<String> {
    serve_app(bind, protect(app, auth), name).await
}

/// `app`, answering only requests that carry the cluster key's token when `auth` has a key.
pub fn protect(app: Router, auth: &Auth) -> Router {
    match auth.key() {
        Some(key) => {
            let key = key.clone();
            app.layer(middleware::from_fn(move |request, next| require_token(key.clone(), request, next)))
        }
        None => app,
    }
}

/// Serves `app` as it is on `bind` in the background; returns the bound "host:port".
pub async fn serve_app(bind: &str, app: Router, name: &'static str) -> Result<String> {
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| Error::io(format!("binding the {name} on {bind}"), e))?;
    let address = listener.local_addr().map_err(|e| Error::io(format!("reading the {name}'s address"), e))?;
    tokio::spawn(accept_loop(listener, app, name));
    Ok(address.to_string())
}

async fn accept_loop(listener: tokio::net::TcpListener, app: Router, name: &'static str) {
    let slots = Slots::default();
    let mut refusals = Throttle::new(Duration::from_secs(10));
    let mut backoff = Duration::from_millis(5);
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, most likely: the connection waits in the backlog.
                if let Some(suppressed) = refusals.allow() {
                    tracing::warn!(
                        "the {name} cannot accept connections: {e} ({suppressed} more not logged)"
                    );
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(5);
        let Some(slot) = slots.take(remote.ip()) else {
            if let Some(suppressed) = refusals.allow() {
                tracing::warn!(
                    "the {name} closed a connection from {remote}: {MAX_HTTP_CONNECTIONS} connections in all, \
                     or {MAX_HTTP_CONNECTIONS_PER_ADDRESS} from that address, are open ({suppressed} more not logged)"
                );
            }
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(HTTP_HEADER_DEADLINE);
            let _ = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
            drop(slot);
        });
    }
}

/// Open connections per remote address, shared by the accept loop and the connections.
#[derive(Clone, Default)]
struct Slots(Arc<Mutex<HashMap<IpAddr, usize>>>);

impl Slots {
    /// A slot for a connection from `address`, or None if the caps are reached.
    fn take(&self, address: IpAddr) -> Option<Slot> {
        let mut open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = open.values().sum();
        let from_address = open.entry(address).or_default();
        if total >= MAX_HTTP_CONNECTIONS || *from_address >= MAX_HTTP_CONNECTIONS_PER_ADDRESS {
            return None;
        }
        *from_address += 1;
        Some(Slot { slots: self.clone(), address })
    }
}

/// One open connection's place; given back when dropped.
struct Slot {
    slots: Slots,
    address: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.address);
            }
        }
    }
}

/// Lets a request through if it carries the cluster's HTTP token: as `Authorization: Bearer
/// <token>`, as the [`COOKIE`] a browser got from the login link, or as the `token` query
/// parameter (for links a person clicks).
async fn require_token(key: ClusterKey, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let in_query = query_token(request.uri().query().unwrap_or(""));
    let offered = [bearer_token(headers), cookie_token(headers), in_query];
    if offered.into_iter().flatten().any(|token| key.verify_http_token(token)) {
        return next.run(request).await;
    }
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if wants_html {
        let page = "<!doctype html><title>parl_rs: log in</title><h1>This cluster requires its key</h1>\
                    <p>Open the link that <code>xparl monitor</code> prints on a machine of the cluster: \
                    it logs this browser in.</p>";
        let content_type = [(header::CONTENT_TYPE, "text/html; charset=utf-8")];
        return (StatusCode::UNAUTHORIZED, content_type, page).into_response();
    }
    let message = "this cluster requires its key: send `Authorization: Bearer <token>` or `?token=<token>` \
                   (parl_rs.log_url and get_log do; the token is derived from the cluster key), or log in \
                   with the link `xparl monitor` prints";
    (StatusCode::UNAUTHORIZED, Json(serde_json::json!({ "message": message }))).into_response()
}

/// The cookie that carries a browser's token after the login link.
pub const COOKIE: &str = "parl_rs_token";

/// The `Set-Cookie` value that logs a browser in with `token`: never readable by scripts,
/// never sent by another site's page, for 30 days.
pub fn session_cookie(token: &str) -> String {
    format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age=2592000")
}

/// The token of the [`COOKIE`] cookie, if the request has it.
pub fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// The token of an `Authorization: Bearer <token>` header (the scheme in any case, RFC 9110).
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The `token` parameter of a query string.
pub fn query_token(query: &str) -> Option<&str> {
    query.split('&').find_map(|pair| pair.strip_prefix("token="))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::COOKIE, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn the_token_is_found_among_other_cookies_and_only_under_its_name() {
        assert_eq!(cookie_token(&with_cookie(&["a=1; parl_rs_token=abc; b=2"])), Some("abc"));
        assert_eq!(cookie_token(&with_cookie(&["a=1", "parl_rs_token=def"])), Some("def"));
        assert_eq!(cookie_token(&with_cookie(&["parl_rs_token_old=abc", "xparl_rs_token=abc"])), None);
        assert_eq!(cookie_token(&HeaderMap::new()), None);
    }

    #[test]
    fn the_session_cookie_is_out_of_scripts_and_other_sites_reach() {
        let cookie = session_cookie("abc");
        assert!(cookie.starts_with("parl_rs_token=abc;"));
        for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(cookie.contains(attribute), "{cookie}");
        }
    }
}
