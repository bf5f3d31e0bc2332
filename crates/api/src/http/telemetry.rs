//! Request ids, request logs, metrics and timeouts: the layers every route runs in.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::error::AppError;

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use (one per process, so several
/// apps in one test process share it).
pub fn metrics_handle() -> PrometheusHandle {
    RECORDER
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ])
                .expect("static buckets are valid")
                .install_recorder()
                .expect("no other metrics recorder is installed")
        })
        .clone()
}

/// Counts requests and their latencies by route template, method and status.
pub async fn record_metrics(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().to_string();
    let start = Instant::now();
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    let labels = [("route", route), ("method", method), ("status", status)];
    metrics::counter!("tessera_http_requests_total", &labels).increment(1);
    metrics::histogram!("tessera_http_request_duration_seconds", &labels)
        .record(start.elapsed().as_secs_f64());
    res
}

/// Answers 503 `timeout` when a request takes longer than `limit`.
pub async fn timeout(limit: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(res) => res,
        Err(_) => AppError::Timeout.into_response(),
    }
}

/// The answer for a route that does not exist.
/// Drops a client's `x-request-id` unless it is 1 to 64 characters of `A-Za-z0-9._-`: an
/// id goes into every log line of the request, so anything else (a line break, an escape
/// sequence, a megabyte) would let a client write the log. A fresh id replaces it.
pub async fn sanitize_request_id(mut req: Request, next: Next) -> Response {
    let fine = |v: &axum::http::HeaderValue| {
        let b = v.as_bytes();
        (1..=64).contains(&b.len())
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
    };
    if req.headers().get_all("x-request-id").iter().count() > 1
        || req.headers().get("x-request-id").is_some_and(|v| !fine(v))
    {
        req.headers_mut().remove("x-request-id");
    }
    next.run(req).await
}

pub async fn not_found() -> AppError {
    AppError::NotFound
}

/// Gives the answer axum makes by itself, a 405 with an empty body, the service's problem
/// format, keeping its `Allow` header.
pub async fn method_not_allowed(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    if res.status() != axum::http::StatusCode::METHOD_NOT_ALLOWED
        || res.headers().contains_key(axum::http::header::CONTENT_TYPE)
    {
        return res;
    }
    let allow = res.headers().get(axum::http::header::ALLOW).cloned();
    let mut problem = AppError::MethodNotAllowed.into_response();
    if let Some(allow) = allow {
        problem
            .headers_mut()
            .insert(axum::http::header::ALLOW, allow);
    }
    problem
}
