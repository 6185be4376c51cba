//! `/api/v1/boards`: list, show (with events), approve, power, maintenance.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};

use super::error::{blocking, ApiError};
use super::views;
use crate::serve::power::PowerAction;
use crate::serve::App;
use crate::store::{BoardState, Health};

fn load(app: &App, id: &str) -> Result<crate::store::Board, ApiError> {
    app.store
        .board(id)?
        .ok_or_else(|| ApiError::not_found(format!("no board {id}")))
}

/// `GET /boards`.
pub async fn list(State(app): State<Arc<App>>) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let boards = app.store.boards()?;
        Ok(Json(Value::Array(
            boards.iter().map(views::board).collect(),
        )))
    })
    .await
}

/// `GET /boards/{id}`.
pub async fn show(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let b = load(&app, &id)?;
        let mut v = views::board(&b);
        let events: Vec<Value> = app
            .store
            .events(&id, 50)?
            .iter()
            .map(|e| json!({"time": views::rfc3339(e.time), "kind": e.kind, "message": e.message}))
            .collect();
        v["events"] = Value::Array(events);
        Ok(Json(v))
    })
    .await
}

/// `POST /boards/{id}/approve` (body optional `{"device_type": …}`); also clears a clone flag.
pub async fn approve(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let device_type = if body.is_empty() {
        None
    } else {
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("body: not JSON: {e}")))?;
        v.get("device_type")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let a = Arc::clone(&app);
    let r = blocking(move || {
        let mut b = load(&a, &id)?;
        if let Some(t) = device_type {
            if b.from_config && t != b.device_type {
                return Err(ApiError::conflict(format!(
                    "board {id}'s device type comes from its device file ({})",
                    b.device_type
                )));
            }
            b.device_type = t;
        }
        let mut what = Vec::new();
        if !b.approved {
            b.approved = true;
            what.push("approved");
        }
        if b.health == Health::Pending {
            b.health = Health::Unknown;
        }
        if let Some(c) = b.cloned.take() {
            what.push("clone flag cleared");
            a.store.add_event(
                &id,
                "clone",
                &format!("clone flag ({c}) cleared by approve"),
            )?;
        }
        a.store.put_board(&b)?;
        if !what.is_empty() {
            a.store.add_event(&id, "state", &what.join(", "))?;
        }
        Ok(Json(views::board(&b)))
    })
    .await;
    app.wake.notify_one();
    r
}

/// `POST /boards/{id}/power/{on,off,cycle}`.
pub async fn power(
    State(app): State<Arc<App>>,
    Path((id, action)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let action = PowerAction::parse(&action).ok_or_else(|| {
        ApiError::bad_request(format!("power action '{action}': on, off or cycle"))
    })?;
    blocking(move || {
        let b = load(&app, &id)?;
        if b.state == BoardState::Job {
            return Err(ApiError::conflict(format!(
                "board {id} runs job {}: cancel it first",
                b.current_job.unwrap_or_default()
            )));
        }
        app.registry.power(&id, action).map_err(|e| {
            ApiError::internal(format!("board {id}: power {}: {e:#}", action.as_str()))
        })?;
        Ok(Json(json!({"board": id, "power": action.as_str()})))
    })
    .await
}

/// `POST /boards/{id}/maintenance/{on,off}`: maintenance boards stop at U-Boot and get no
/// jobs; off returns the board to idle and boots it into the master.
pub async fn maintenance(
    State(app): State<Arc<App>>,
    Path((id, onoff)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let on = match onoff.as_str() {
        "on" => true,
        "off" => false,
        o => {
            return Err(ApiError::bad_request(format!(
                "maintenance '{o}': on or off"
            )))
        }
    };
    let a = Arc::clone(&app);
    let r = blocking(move || {
        let mut b = load(&a, &id)?;
        if b.state == BoardState::Job {
            return Err(ApiError::conflict(format!(
                "board {id} runs job {}: cancel it first",
                b.current_job.unwrap_or_default()
            )));
        }
        let want = if on {
            BoardState::Maintenance
        } else {
            BoardState::Idle
        };
        if b.state != want {
            b.state = want;
            a.store.put_board(&b)?;
            a.store.add_event(
                &id,
                "state",
                if on {
                    "maintenance on"
                } else {
                    "maintenance off: idle"
                },
            )?;
            if !on && a.registry.configured(&id).is_some() {
                // Back to the master: reboot it into the idle boot script.
                if let Err(e) = a.registry.power(&id, PowerAction::Cycle) {
                    tracing::warn!(board = %id, "maintenance off: {e:#}");
                }
            }
        }
        Ok(Json(views::board(&load(&a, &id)?)))
    })
    .await;
    app.wake.notify_one();
    r
}
