//! The master image's agent: check-in, long-poll for work, report results, fetch job files.
//! Authenticated by the card's token (`Authorization: Bearer`), answered in formats a busybox
//! shell can read (`key=value` lines, base64 values).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde_json::{json, Value};

use super::bearer;
use super::error::{blocking, ApiError};
use crate::serve::registry::{Checkin, CheckinOutcome};
use crate::serve::App;
use crate::store::WorkKind;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// `POST /agent/checkin`.
pub async fn checkin(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let c: Checkin = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("check-in body: {e}")))?;
    let token = bearer(&headers).map(str::to_string);
    let a = Arc::clone(&app);
    let outcome = blocking(move || a.registry.checkin(token.as_deref(), peer, &c)).await?;
    if outcome == CheckinOutcome::Ok {
        app.wake.notify_one();
    }
    Ok(Json(json!({
        "status": if outcome == CheckinOutcome::Ok { "ok" } else { "pending" }
    })))
}

fn query<'a>(q: &'a HashMap<String, String>, key: &str) -> Result<&'a str, ApiError> {
    q.get(key)
        .map(String::as_str)
        .ok_or_else(|| ApiError::bad_request(format!("query: {key}= is missing")))
}

/// `GET /agent/poll?board=&mac=`.
pub async fn poll(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let id = query(&q, "board")?.to_string();
    let mac = q.get("mac").cloned();
    let token = bearer(&headers).map(str::to_string);
    let a = Arc::clone(&app);
    let board = blocking(move || {
        a.registry
            .authorize_agent(&id, token.as_deref(), mac.as_deref())
    })
    .await?;
    let reg = Arc::clone(&app.registry);
    let work = reg.poll(&board, app.config.poll_timeout()).await?;
    let Some(w) = work else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let mut text = format!("work={}\nkind=", w.id);
    match &w.kind {
        WorkKind::Run { command } => {
            text.push_str(&format!("run\ncommand={}\n", B64.encode(command)));
        }
        WorkKind::Fetch { url, path } => {
            text.push_str(&format!(
                "fetch\nurl={}\npath={}\n",
                B64.encode(url),
                B64.encode(path)
            ));
        }
        WorkKind::Reboot => text.push_str("reboot\n"),
    }
    tracing::info!(board = %board.id, work = w.id, "agent: work handed out");
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain")], text).into_response())
}

/// `POST /agent/result?board=&work=`.
pub async fn result(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = query(&q, "board")?.to_string();
    let work: i64 = query(&q, "work")?
        .parse()
        .map_err(|_| ApiError::bad_request("query: work= is not a number"))?;
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("result body: {e}")))?;
    let exit = v
        .get("exit")
        .and_then(Value::as_i64)
        .ok_or_else(|| ApiError::bad_request("result body: exit: a number is needed"))?
        as i32;
    let field = |k: &str| -> Result<Vec<u8>, ApiError> {
        match v.get(k).and_then(Value::as_str) {
            None => Ok(Vec::new()),
            Some(s) => B64
                .decode(s.trim())
                .map_err(|e| ApiError::bad_request(format!("result body: {k}: not base64: {e}"))),
        }
    };
    let (stdout, stderr) = (field("stdout")?, field("stderr")?);
    let token = bearer(&headers).map(str::to_string);
    let mac = q.get("mac").cloned();
    let a = Arc::clone(&app);
    blocking(move || {
        a.registry
            .authorize_agent(&id, token.as_deref(), mac.as_deref())?;
        if !a.store.finish_work(&id, work, exit, &stdout, &stderr)? {
            return Err(ApiError::not_found(format!(
                "no work {work} for board {id}"
            )));
        }
        tracing::info!(board = %id, work, exit, "agent: result");
        a.registry.work_reported(&id);
        Ok(Json(json!({"status": "ok"})))
    })
    .await
}

/// `GET /agent/files/{job}/{name}`: a file a job published for its board's agent.
pub async fn file(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    Path((job, name)): Path<(i64, String)>,
) -> Result<Response, ApiError> {
    if name.contains('/') || name.starts_with('.') || name.is_empty() {
        return Err(ApiError::bad_request(format!("file name '{name}'")));
    }
    let token = bearer(&headers).map(str::to_string);
    let a = Arc::clone(&app);
    let data = blocking(move || {
        let j = a
            .store
            .job(job)?
            .ok_or_else(|| ApiError::not_found(format!("no job {job}")))?;
        let board = j
            .board
            .ok_or_else(|| ApiError::not_found(format!("job {job} has no board")))?;
        a.registry
            .authorize_agent(&board, token.as_deref(), q.get("mac").map(String::as_str))?;
        let path = a.jobs_dir.join(job.to_string()).join("agent").join(&name);
        std::fs::read(&path).map_err(|e| ApiError::not_found(format!("{name}: {e}")))
    })
    .await?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        data,
    )
        .into_response())
}
