//! The HTTP API (`/api/v1/`, see `appliance/API.md`): boards, jobs, live logs, the agents'
//! endpoints and health. People and scripts authenticate with a bearer token from
//! `http.tokens`; agents with their card's token; health needs none.

pub mod agent;
pub mod boards;
pub mod cards;
pub mod console;
pub mod error;
pub mod jobs;
pub mod views;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::App;
use error::{blocking, ApiError};

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

async fn require_token(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let ok = match bearer(req.headers()) {
        None => Err(ApiError::unauthorized("missing bearer token")),
        Some(t) if app.config.http.tokens.iter().any(|k| constant_eq(k, t)) => Ok(()),
        Some(_) => Err(ApiError::unauthorized("wrong bearer token")),
    };
    match ok {
        Ok(()) => next.run(req).await,
        Err(e) => {
            tracing::warn!("api: {} {}: {}", req.method(), req.uri().path(), e.message);
            e.into_response()
        }
    }
}

/// Compares two tokens in time independent of where they differ.
fn constant_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

async fn health(State(app): State<Arc<App>>) -> Result<Json<serde_json::Value>, ApiError> {
    let a = Arc::clone(&app);
    blocking(move || {
        let boards = a.store.boards()?.len();
        let count = |s| -> Result<usize, ApiError> {
            Ok(a.store
                .jobs(&crate::store::JobFilter {
                    state: Some(s),
                    limit: Some(100_000),
                    ..Default::default()
                })?
                .len())
        };
        Ok(Json(serde_json::json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
            "boards": boards,
            "queued": count(crate::store::JobState::Queued)?,
            "running": count(crate::store::JobState::Running)?,
            "appliance": a.name,
        })))
    })
    .await
}

/// `GET /appliances`: every appliance that shares this database, with its API, its last
/// heartbeat and whether the others take it for lost.
async fn appliances(State(app): State<Arc<App>>) -> Result<Json<serde_json::Value>, ApiError> {
    blocking(move || {
        let now = crate::store::now_ms();
        let lease = (app.config.lease_seconds * 1000) as crate::store::Millis;
        let list: Vec<serde_json::Value> = app
            .store
            .appliances()?
            .into_iter()
            .map(|a| {
                serde_json::json!({
                    "name": a.name,
                    "url": a.url,
                    "seen": views::rfc3339(a.seen),
                    "started": views::rfc3339(a.started),
                    "lost": now - a.seen > lease,
                    "this": a.name == app.name,
                })
            })
            .collect();
        Ok(Json(serde_json::Value::Array(list)))
    })
    .await
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such API endpoint")
}

/// The API's routes.
pub fn router(app: Arc<App>) -> Router {
    let people = Router::new()
        .route("/appliances", get(appliances))
        .route("/boards", get(boards::list))
        .route("/boards", post(cards::create))
        .route("/boards/{id}", get(boards::show))
        .route("/boards/{id}/sdcard", post(cards::sdcard))
        .route("/boards/{id}/approve", post(boards::approve))
        .route("/boards/{id}/power/{action}", post(boards::power))
        .route("/boards/{id}/reserve", post(boards::reserve))
        .route("/boards/{id}/release", post(boards::release))
        .route("/boards/{id}/boot", post(boards::boot))
        .route(
            "/boards/{id}/maintenance/{onoff}",
            post(boards::maintenance),
        )
        .route("/jobs", post(jobs::submit).get(jobs::list))
        .route("/jobs/{id}", get(jobs::show))
        .route("/jobs/{id}/cancel", post(jobs::cancel))
        .route("/jobs/{id}/logs", get(jobs::logs))
        .route("/jobs/{id}/logs/stream", get(jobs::stream))
        .route("/jobs/{id}/results", get(jobs::results))
        .route("/jobs/{id}/pipeline", get(jobs::pipeline))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&app),
            require_token,
        ));
    let open = Router::new()
        .route("/health", get(health))
        // Authenticates itself: the bearer token, or ?token= (a browser's WebSocket).
        .route("/boards/{id}/console", get(console::console))
        .route("/agent/checkin", post(agent::checkin))
        .route("/agent/poll", get(agent::poll))
        .route("/agent/result", post(agent::result))
        .route("/agent/files/{job}/{name}", get(agent::file));
    Router::new()
        .route("/metrics", get(super::metrics::handler))
        .nest("/api/v1", people.merge(open))
        .merge(super::dashboard::router())
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(16 << 20))
        .with_state(app)
}
