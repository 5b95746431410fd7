//! The master's HTTP endpoint: the web monitor's page and its JSON API (`/api/v1/...`, see
//! `docs/monitor-api.md`), `/metrics` for Prometheus, the cluster's status as JSON, and
//! jobs' logs (PARL's `/get-log` and `/download-log`, redirected to the log server of the
//! job's worker; the API's log endpoint fetches them itself, so a browser needs no token).
//!
//! Handlers never touch the master's state: they hand the master's loop a read to run on its
//! core ([`Read`]) and wait for the answer, so the loop stays the state's only owner.

use std::time::Instant;

use axum::extract::{Path, Query, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use super::core::MasterCore;
use super::log_proxy;
use super::monitor::{metrics, page};
use crate::auth::Auth;
use crate::error::Result;

/// A read of the master's core, run by its loop with the time it runs.
pub type Read = Box<dyn FnOnce(&mut MasterCore, Instant) + Send>;

type Queries = mpsc::UnboundedSender<Read>;

#[derive(Clone)]
struct Shared {
    queries: Queries,
    /// The token the master shows the log servers of its workers (None without a key).
    token: Option<String>,
}

/// Serves on `bind` ("host:port"; port 0 picks one). Returns the bound "host:port".
pub async fn serve(bind: &str, queries: Queries, auth: &Auth) -> Result<String> {
    let shared = Shared { queries, token: auth.key().map(|key| key.http_token()) };
    let app = Router::new()
        .route("/", get(|| async { page::index() }))
        .route("/assets/{file}", get(|Path(file): Path<String>| async move { page::asset(&file) }))
        .route("/login", get(login))
        .route("/api/v1/cluster", get(cluster))
        .route("/api/v1/actors", get(actors))
        .route("/api/v1/actors/{job_id}", get(actor))
        .route("/api/v1/actors/{job_id}/log", get(actor_log))
        .route("/api/v1/events", get(events))
        .route("/api/v1/history", get(history))
        .route("/metrics", get(prometheus_metrics))
        .route("/status", get(status))
        .route("/get-log", get(log_redirect))
        .route("/download-log", get(log_redirect))
        .with_state(shared);
    let app = crate::http::protect(app, auth).layer(middleware::from_fn(security_headers));
    crate::http::serve_app(bind, app, "master's HTTP endpoint").await
}

/// Headers on every answer: no referrer (a page's links never carry its URL away), no
/// sniffing, no framing, and a page that runs only its own script and style.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let set = |headers: &mut HeaderMap, name, value| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::CONTENT_SECURITY_POLICY, page::CONTENT_SECURITY_POLICY);
    if !headers.contains_key(header::CACHE_CONTROL) {
        set(headers, header::CACHE_CONTROL, "no-store");
    }
    response
}

/// Runs `read` on the master's core; None if the master is stopping.
async fn ask<T: Send + 'static>(
    queries: &Queries,
    read: impl FnOnce(&mut MasterCore, Instant) -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = oneshot::channel();
    let run: Read = Box::new(move |core, now| {
        let _ = tx.send(read(core, now));
    });
    queries.send(run).ok()?;
    rx.await.ok()
}

fn unavailable() -> Response {
    let message = serde_json::json!({ "message": "the master is shutting down" });
    (StatusCode::SERVICE_UNAVAILABLE, Json(message)).into_response()
}

fn json_or_unavailable<T: serde::Serialize>(answer: Option<T>) -> Response {
    match answer {
        Some(answer) => Json(answer).into_response(),
        None => unavailable(),
    }
}

fn not_found(message: String) -> Response {
    (StatusCode::NOT_FOUND, Json(serde_json::json!({ "message": message }))).into_response()
}

#[derive(Deserialize)]
struct LoginQuery {
    token: Option<String>,
}

/// The link `xparl start` and `xparl monitor` print: the token (checked already by
/// [`crate::http::protect`]) becomes an HttpOnly cookie, and the browser goes on to `/`, so
/// the address bar and the history keep no token.
async fn login(Query(query): Query<LoginQuery>) -> Response {
    let cookie = match query.token {
        Some(token) if token.bytes().all(|b| b.is_ascii_hexdigit()) => crate::http::session_cookie(&token),
        // Without a key nothing is checked: there is no token to keep.
        _ => String::new(),
    };
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        if !cookie.is_empty() {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
    }
    response
}

async fn cluster(State(shared): State<Shared>) -> Response {
    json_or_unavailable(ask(&shared.queries, |core, now| core.cluster_view(now)).await)
}

async fn actors(State(shared): State<Shared>) -> Response {
    json_or_unavailable(ask(&shared.queries, |core, now| core.actors_view(now)).await)
}

async fn actor(State(shared): State<Shared>, Path(job_id): Path<String>) -> Response {
    let id = job_id.clone();
    match ask(&shared.queries, move |core, now| core.actor_view(&id, now)).await {
        Some(Some(actor)) => Json(actor).into_response(),
        Some(None) => not_found(format!("the master knows no job {job_id}")),
        None => unavailable(),
    }
}

#[derive(Deserialize)]
struct LogQuery {
    lines: Option<usize>,
    download: Option<String>,
}

async fn actor_log(
    State(shared): State<Shared>,
    Path(job_id): Path<String>,
    Query(query): Query<LogQuery>,
) -> Response {
    let id = job_id.clone();
    let location = match ask(&shared.queries, move |core, _| core.log_location(&id).map(str::to_string)).await
    {
        Some(Some(location)) => location,
        Some(None) => return not_found(format!("the master knows no job {job_id}")),
        None => return unavailable(),
    };
    let token = shared.token.as_deref();
    match query.download.is_some_and(|d| d != "0") {
        true => log_proxy::download(&location, &job_id, token).await,
        false => {
            let lines = query.lines.unwrap_or(log_proxy::DEFAULT_LINES).min(log_proxy::MAX_LINES);
            log_proxy::tail(&location, &job_id, lines, token).await
        }
    }
}

#[derive(Deserialize)]
struct EventsQuery {
    after: Option<u64>,
}

async fn events(State(shared): State<Shared>, Query(query): Query<EventsQuery>) -> Response {
    let after = query.after.unwrap_or(0);
    json_or_unavailable(ask(&shared.queries, move |core, _| core.events_view(after)).await)
}

async fn history(State(shared): State<Shared>) -> Response {
    json_or_unavailable(ask(&shared.queries, |core, now| core.history_view(now)).await)
}

async fn prometheus_metrics(State(shared): State<Shared>) -> Response {
    let read = |core: &mut MasterCore, now| metrics::encode(&core.cluster_view(now), core.monitor_totals());
    match ask(&shared.queries, read).await {
        Some(Ok(text)) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Some(Err(e)) => {
            let message = serde_json::json!({ "message": format!("the metrics could not be encoded: {e}") });
            (StatusCode::INTERNAL_SERVER_ERROR, Json(message)).into_response()
        }
        None => unavailable(),
    }
}

async fn status(State(shared): State<Shared>) -> Response {
    json_or_unavailable(ask(&shared.queries, |core, _| core.status()).await)
}

#[derive(Deserialize)]
struct JobQuery {
    job_id: Option<String>,
}

async fn log_redirect(
    State(shared): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    Query(query): Query<JobQuery>,
) -> Response {
    let bad = |message: String| (StatusCode::BAD_REQUEST, Json(serde_json::json!({ "message": message })));
    let Some(job_id) = query.job_id else {
        return bad(format!("No job_id provided: ask for {}?job_id=<job id>", uri.path())).into_response();
    };
    let id = job_id.clone();
    match ask(&shared.queries, move |core, _| core.log_location(&id).map(str::to_string)).await {
        Some(Some(location)) => {
            let mut query = raw.unwrap_or_default();
            // Clients drop `Authorization` on a redirect to another host: the token that
            // came in it (checked already) goes on in the query, where the log server looks.
            let header_token = crate::http::bearer_token(&headers)
                .filter(|token| token.bytes().all(|b| b.is_ascii_hexdigit()));
            if let (None, Some(token)) = (crate::http::query_token(&query), header_token) {
                query = format!("{query}&token={token}");
            }
            let target = format!("http://{location}{}?{query}", uri.path());
            (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, target)]).into_response()
        }
        Some(None) => bad(format!("The master knows no job {job_id}")).into_response(),
        None => unavailable(),
    }
}
