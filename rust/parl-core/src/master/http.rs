//! The master's HTTP endpoint: the cluster's status as JSON, and jobs' logs (PARL's
//! `/get-log` and `/download-log`), redirected to the log server of the job's worker.
//!
//! Handlers never touch the master's state: they ask the master's loop through a channel, so
//! the loop stays the state's only owner.

use axum::extract::{Query, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use crate::error::Result;
use crate::protocol::ClusterStatus;

/// A question from an HTTP handler to the master's loop.
#[derive(Debug)]
pub enum HttpQuery {
    Status(oneshot::Sender<ClusterStatus>),
    /// Where the log of a job is ("host:port" of its worker's log server).
    LogLocation {
        job_id: String,
        reply: oneshot::Sender<Option<String>>,
    },
}

type Queries = mpsc::UnboundedSender<HttpQuery>;

/// Serves on `bind` ("host:port"; port 0 picks one). Returns the bound "host:port".
pub async fn serve(bind: &str, queries: Queries, auth: &crate::auth::Auth) -> Result<String> {
    let app = Router::new()
        .route("/status", get(status))
        .route("/get-log", get(log_redirect))
        .route("/download-log", get(log_redirect))
        .with_state(queries);
    crate::http::serve(bind, app, "master's HTTP endpoint", auth).await
}

fn unavailable() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "message": "the master is shutting down" })))
        .into_response()
}

async fn status(State(queries): State<Queries>) -> Response {
    let (tx, rx) = oneshot::channel();
    let _ = queries.send(HttpQuery::Status(tx));
    match rx.await {
        Ok(status) => Json(status).into_response(),
        Err(_) => unavailable(),
    }
}

#[derive(Deserialize)]
struct JobQuery {
    job_id: Option<String>,
}

async fn log_redirect(
    State(queries): State<Queries>,
    uri: Uri,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    Query(query): Query<JobQuery>,
) -> Response {
    let bad = |message: String| (StatusCode::BAD_REQUEST, Json(serde_json::json!({ "message": message })));
    let Some(job_id) = query.job_id else {
        return bad(format!("No job_id provided: ask for {}?job_id=<job id>", uri.path())).into_response();
    };
    let (tx, rx) = oneshot::channel();
    let _ = queries.send(HttpQuery::LogLocation { job_id: job_id.clone(), reply: tx });
    match rx.await {
        Ok(Some(location)) => {
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
        Ok(None) => bad(format!("The master knows no job {job_id}")).into_response(),
        Err(_) => unavailable(),
    }
}
