//! The monitor's job logs: the master asks the log server of the job's worker (PARL's
//! `/get-log` and `/download-log` contract) with the cluster's token, and passes the answer
//! on. A browser logged in to the master thus reads logs from workers it may not reach, and
//! no token goes into a URL.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hyper_util::rt::TokioIo;

/// Lines of a log tail unless asked for another number (PARL's default).
pub const DEFAULT_LINES: usize = 500;
/// The most lines a tail returns.
pub const MAX_LINES: usize = 100_000;
/// How long the worker's log server may take to answer (a download's body streams after).
const DEADLINE: Duration = Duration::from_secs(10);
/// The largest `/get-log` answer read (the log server reads at most 4 MiB of a log).
const MAX_TAIL_ANSWER: usize = 16 << 20;

fn bad_gateway(location: &str, why: impl std::fmt::Display) -> Response {
    let message = format!("the log server of the job's worker at {location} cannot be reached: {why}");
    (StatusCode::BAD_GATEWAY, Json(serde_json::json!({ "message": message }))).into_response()
}

/// `GET http://{location}{path_and_query}` with the token; the answer's head, body streaming.
async fn fetch(location: &str, path_and_query: &str, token: Option<&str>) -> Result<Response, Response> {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(location).await.map_err(|e| e.to_string())?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let mut request = Request::get(path_and_query).header(header::HOST, location);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request.body(Body::empty()).map_err(|e| e.to_string())?;
        sender.send_request(request).await.map_err(|e| e.to_string())
    };
    match tokio::time::timeout(DEADLINE, exchange).await {
        Ok(Ok(answer)) => Ok(answer.map(Body::new)),
        Ok(Err(why)) => Err(bad_gateway(location, why)),
        Err(_) => Err(bad_gateway(location, format!("no answer within {DEADLINE:?}"))),
    }
}

/// The last `lines` lines of the job's log, as text.
pub async fn tail(location: &str, job_id: &str, lines: usize, token: Option<&str>) -> Response {
    let path = format!("/get-log?job_id={}&lines={lines}", encode(job_id));
    let answer = match fetch(location, &path, token).await {
        Ok(answer) => answer,
        Err(failed) => return failed,
    };
    let status = answer.status();
    let body = match axum::body::to_bytes(answer.into_body(), MAX_TAIL_ANSWER).await {
        Ok(body) => body,
        Err(e) => return bad_gateway(location, e),
    };
    let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if !status.is_success() {
        let message = parsed["message"].as_str().unwrap_or("the log server refused").to_string();
        let status =
            if status == StatusCode::BAD_REQUEST { StatusCode::NOT_FOUND } else { StatusCode::BAD_GATEWAY };
        return (status, Json(serde_json::json!({ "message": message }))).into_response();
    }
    let log = parsed["log"].as_str().unwrap_or_default().to_string();
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], log).into_response()
}

/// The whole log as an attachment, streamed from the worker.
pub async fn download(location: &str, job_id: &str, token: Option<&str>) -> Response {
    let path = format!("/download-log?job_id={}", encode(job_id));
    let answer = match fetch(location, &path, token).await {
        Ok(answer) => answer,
        Err(failed) => return failed,
    };
    if !answer.status().is_success() {
        let message = format!("the log of job {job_id} is not on its worker (or was removed by retention)");
        return (StatusCode::NOT_FOUND, Json(serde_json::json!({ "message": message }))).into_response();
    }
    let disposition = format!("attachment; filename=\"{}.log\"", safe_file_name(job_id));
    let headers = [
        (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_string()),
        (header::CONTENT_DISPOSITION, disposition),
    ];
    (headers, answer.into_body()).into_response()
}

/// `text` for a query string: job ids are letters, digits and dashes; anything else is
/// percent-encoded.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A job id fit for a file name in a header.
fn safe_file_name(job_id: &str) -> String {
    job_id.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_cannot_change_the_query_or_the_header() {
        assert_eq!(encode("w-ab12-3"), "w-ab12-3");
        assert_eq!(encode("a&token=x"), "a%26token%3Dx");
        assert_eq!(safe_file_name("a\"\r\nb"), "ab");
    }
}
