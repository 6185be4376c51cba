//! `/api/v1/boards`: list, show (with events), approve, power, maintenance, and people's
//! reservations (reserve, release, boot their own kernel).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::error::{blocking, ApiError};
use super::views;
use crate::serve::power::PowerAction;
use crate::serve::power_saving::{switch, with_board};
use crate::serve::reservations::{self, BootRequest, ReserveRequest};
use crate::serve::App;
use crate::store::{Board, BoardState, Health};

/// The board, or 404.
pub fn load(app: &App, id: &str) -> Result<Board, ApiError> {
    app.store
        .board(id)?
        .ok_or_else(|| ApiError::not_found(format!("no board {id}")))
}

/// Refuses (409) an action on a board another appliance of the lab serves, naming that
/// appliance and its API: power, maintenance, reservations and consoles act where the board is.
pub fn served_here(app: &App, b: &Board) -> Result<(), ApiError> {
    if app.registry.serves(b) {
        return Ok(());
    }
    let other = b.appliance.clone().unwrap_or_default();
    let url = app
        .store
        .appliances()
        .ok()
        .and_then(|all| all.into_iter().find(|a| a.name == other))
        .map(|a| format!(" at {}", a.url))
        .unwrap_or_default();
    Err(ApiError::conflict(format!(
        "board {} is served by appliance {other}{url}; this is appliance {}: send the request there",
        b.id, app.name
    )))
}

/// [`load`] and [`served_here`].
fn load_here(app: &App, id: &str) -> Result<Board, ApiError> {
    let b = load(app, id)?;
    served_here(app, &b)?;
    Ok(b)
}

/// A board object with its power and reservation.
pub fn view(b: &Board) -> Value {
    let mut v = views::board(b);
    v["powered"] = json!(b.power_now());
    v["reservation"] = match &b.reservation {
        None => Value::Null,
        Some(r) => json!({
            "until": views::rfc3339(r.until),
            "note": r.note,
            "by": r.by,
            "since": views::rfc3339(r.since),
            "boot": r.boot,
        }),
    };
    v
}

/// The board's console as the appliance keeps it: `{"connected", "reconnects", "writer"}`, or
/// null when it has none.
fn console(app: &App, board: &str) -> Value {
    match app.consoles.get(board) {
        None => Value::Null,
        Some(hub) => json!({
            "connected": hub.connected(),
            "reconnects": hub.reconnects(),
            "writer": hub.writer(),
        }),
    }
}

/// Which of `http.tokens` the request carries: `http.tokens[N]`.
fn token_name(app: &App, headers: &HeaderMap) -> String {
    let token = super::bearer(headers).unwrap_or_default();
    match app.config.http.tokens.iter().position(|t| t == token) {
        Some(i) => format!("http.tokens[{i}]"),
        None => "an unknown token".to_string(),
    }
}

/// A JSON body (an empty one is `T::default()`).
fn body<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("body: {e}")))
}

/// `GET /boards`.
pub async fn list(State(app): State<Arc<App>>) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let boards = app.store.boards()?;
        let views = boards.iter().map(|b| {
            let mut v = view(b);
            v["console"] = console(&app, &b.id);
            v
        });
        Ok(Json(Value::Array(views.collect())))
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
        let mut v = view(&b);
        v["console"] = console(&app, &id);
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
        let mut b = load_here(&a, &id)?;
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
        Ok(Json(view(&b)))
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
        let b = load_here(&app, &id)?;
        if b.state == BoardState::Job {
            return Err(ApiError::conflict(format!(
                "board {id} runs job {}: cancel it first",
                b.current_job.unwrap_or_default()
            )));
        }
        with_board(&id, || switch(&app, &id, action)).map_err(|e| {
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
        let mut b = load_here(&a, &id)?;
        if b.state == BoardState::Job {
            return Err(ApiError::conflict(format!(
                "board {id} runs job {}: cancel it first",
                b.current_job.unwrap_or_default()
            )));
        }
        if on && b.reservation.is_some() {
            return Err(ApiError::conflict(format!(
                "board {id} is reserved: release it first"
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
                if let Err(e) = with_board(&id, || switch(&a, &id, PowerAction::Cycle)) {
                    tracing::warn!(board = %id, "maintenance off: {e:#}");
                }
            }
        }
        Ok(Json(view(&load(&a, &id)?)))
    })
    .await;
    app.wake.notify_one();
    r
}

/// `POST /boards/{id}/reserve` (body optional `{"for_seconds": N, "note": "…"}`): the board
/// leaves the scheduler until it is released or its time is up.
pub async fn reserve(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: ReserveRequest = body(&bytes)?;
    let by = token_name(&app, &headers);
    blocking(move || {
        load_here(&app, &id)?;
        Ok(Json(view(&reservations::reserve(&app, &id, &by, &req)?)))
    })
    .await
}

/// `POST /boards/{id}/release`: the board is powered off, then boots the master and returns to
/// the scheduler.
pub async fn release(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let why = format!("by {}", token_name(&app, &headers));
    blocking(move || {
        load_here(&app, &id)?;
        Ok(Json(view(&reservations::release(&app, &id, &why)?)))
    })
    .await
}

/// `POST /boards/{id}/boot` (body: `{"kernel": …, "initrd"?, "dtb"?, "append"?, "nfsroot"? |
/// "nbdroot"?}`): a reserved board boots its person's kernel.
pub async fn boot(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "body: give {\"kernel\": URL or path, …}",
        ));
    }
    let req: BootRequest = body(&bytes)?;
    blocking(move || {
        load_here(&app, &id)?;
        Ok(Json(view(&reservations::boot(&app, &id, &req)?)))
    })
    .await
}
