//! Starting an HTTP server (the master's endpoint, a worker's log server) on the runtime.

use axum::extract::Request;
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};

use crate::auth::{Auth, ClusterKey};
use crate::error::{Error, Result};

/// Serves `app` on `bind` ("host:port"; port 0 picks one) in the background, answering only
/// requests that carry the cluster key's token when `auth` has a key. Returns the bound
/// "host:port". `name` says which server it is in errors and logs.
pub async fn serve(bind: &str, app: Router, name: &'static str, auth: &Auth) -> Result<String> {
    let app = match auth.key() {
        Some(key) => {
            let key = key.clone();
            app.layer(middleware::from_fn(move |request, next| require_token(key.clone(), request, next)))
        }
        None => app,
    };
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

/// Lets a request through if it carries the cluster's HTTP token, as `Authorization: Bearer
/// <token>` or as the `token` query parameter (for links a person clicks).
async fn require_token(key: ClusterKey, request: Request, next: Next) -> Response {
    let bearer = bearer_token(request.headers());
    let in_query = query_token(request.uri().query().unwrap_or(""));
    if bearer.or(in_query).is_some_and(|token| key.verify_http_token(token)) {
        return next.run(request).await;
    }
    let message = "this cluster requires its key: send `Authorization: Bearer <token>` or `?token=<token>` \
                   (parl_rs.log_url and get_log do; the token is derived from the cluster key)";
    (StatusCode::UNAUTHORIZED, Json(serde_json::json!({ "message": message }))).into_response()
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
