//! `/api/v1/jobs`: submit, list, show, cancel, logs (file and live stream), results.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;
use tokio_stream::wrappers::ReceiverStream;

use super::error::{blocking, ApiError};
use super::views;
use crate::serve::{submit, App};
use crate::store::{JobFilter, JobHealth, JobState};

fn load(app: &App, id: i64) -> Result<crate::store::Job, ApiError> {
    app.store
        .job(id)?
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))
}

/// `POST /jobs`: the body is the job's YAML; `?file=NAME` names it in errors.
pub async fn submit(
    State(app): State<Arc<App>>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let yaml = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::bad_request("job: the body is not UTF-8 text"))?;
    let file = q
        .get("file")
        .map(|f| f.rsplit('/').next().unwrap_or(f).to_string())
        .unwrap_or_else(|| "job.yaml".into());
    let a = Arc::clone(&app);
    let job = blocking(move || {
        let boards: Vec<_> = a
            .store
            .boards()?
            .into_iter()
            .filter(|b| b.approved)
            .collect();
        let (_, new) = submit::check(
            &file,
            &yaml,
            &boards,
            &a.registry,
            &a.consoles,
            a.config.shared_database(),
        ).map_err(|e| {
            tracing::info!("api: job refused: {e}");
            ApiError::bad_request(e)
        })?;
        let id = a.store.insert_job(&new)?;
        tracing::info!(job = id, name = %new.name, device_type = %new.device_type, priority = new.priority, "job queued");
        load(&a, id)
    })
    .await?;
    app.wake.notify_one();
    Ok((StatusCode::CREATED, Json(views::job(&job))).into_response())
}

fn parse_state(s: &str) -> Result<JobState, ApiError> {
    Ok(match s {
        "queued" => JobState::Queued,
        "running" => JobState::Running,
        "canceling" => JobState::Canceling,
        "finished" => JobState::Finished,
        o => {
            return Err(ApiError::bad_request(format!(
                "state '{o}': queued, running, canceling or finished"
            )))
        }
    })
}

fn parse_health(s: &str) -> Result<JobHealth, ApiError> {
    Ok(match s {
        "unknown" => JobHealth::Unknown,
        "complete" => JobHealth::Complete,
        "incomplete" => JobHealth::Incomplete,
        "canceled" => JobHealth::Canceled,
        o => {
            return Err(ApiError::bad_request(format!(
                "health '{o}': unknown, complete, incomplete or canceled"
            )))
        }
    })
}

/// `GET /jobs?state=&health=&board=&device_type=&limit=`.
pub async fn list(
    State(app): State<Arc<App>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let filter = JobFilter {
        state: q.get("state").map(|s| parse_state(s)).transpose()?,
        health: q.get("health").map(|s| parse_health(s)).transpose()?,
        board: q.get("board").cloned(),
        device_type: q.get("device_type").cloned(),
        limit: q
            .get("limit")
            .map(|l| {
                l.parse()
                    .map_err(|_| ApiError::bad_request(format!("limit '{l}' is not a number")))
            })
            .transpose()?,
    };
    blocking(move || {
        let jobs = app.store.jobs(&filter)?;
        Ok(Json(Value::Array(jobs.iter().map(views::job).collect())))
    })
    .await
}

/// `GET /jobs/{id}`.
pub async fn show(
    State(app): State<Arc<App>>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let j = load(&app, id)?;
        let mut v = views::job(&j);
        v["yaml"] = Value::String(j.yaml);
        Ok(Json(v))
    })
    .await
}

/// `POST /jobs/{id}/cancel`.
pub async fn cancel(
    State(app): State<Arc<App>>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let a = Arc::clone(&app);
    let j = blocking(move || {
        let j = a
            .store
            .cancel_job(id)?
            .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
        if let Some(flag) = a.running.lock().ok().and_then(|r| r.get(&id).cloned()) {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            tracing::info!(job = id, "job canceled while running: finalize runs");
        }
        Ok(j)
    })
    .await?;
    let _ = app.log_events.send(id);
    app.wake.notify_one();
    Ok(Json(views::job(&j)))
}

/// `GET /jobs/{id}/logs`: the `logs.yaml` lines so far.
pub async fn logs(State(app): State<Arc<App>>, Path(id): Path<i64>) -> Result<Response, ApiError> {
    let text = blocking(move || {
        load(&app, id)?;
        let mut out = String::new();
        let mut after = 0;
        loop {
            let lines = app.store.log_lines(id, after, 10_000)?;
            let Some((last, _)) = lines.last() else { break };
            after = *last;
            for (_, l) in &lines {
                out.push_str(l);
                out.push('\n');
            }
        }
        Ok(out)
    })
    .await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "text/yaml")], text).into_response())
}

/// `GET /jobs/{id}/results`.
pub async fn results(
    State(app): State<Arc<App>>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let text = blocking(move || {
        load(&app, id)?;
        app.store
            .results(id)?
            .ok_or_else(|| ApiError::not_found(format!("job {id} has no results yet")))
    })
    .await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "text/yaml")], text).into_response())
}

/// `GET /jobs/{id}/pipeline`: the job's pipeline tree (`description.yaml` as JSON).
pub async fn pipeline(
    State(app): State<Arc<App>>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let job = load(&app, id)?;
        let boards = app.store.boards()?;
        crate::serve::pipeline_tree::tree(&job, &boards, &app.registry)
            .map(Json)
            .map_err(|e| ApiError::conflict(format!("job {id}: cannot build its pipeline: {e}")))
    })
    .await
}

/// `GET /jobs/{id}/logs/stream`: Server-Sent Events, one `log` event per line (its number as
/// the event id; `Last-Event-ID` resumes), then `end` with the job.
pub async fn stream(
    State(app): State<Arc<App>>,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let a = Arc::clone(&app);
    blocking(move || load(&a, id)).await?;
    let mut after: i64 = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    let mut wake = app.log_events.subscribe();
    tokio::spawn(async move {
        loop {
            let a = Arc::clone(&app);
            let batch = blocking(move || {
                let job = load(&a, id)?;
                Ok((a.store.log_lines(id, after, 500)?, job))
            })
            .await;
            let Ok((lines, job)) = batch else { return };
            let done = job.state == JobState::Finished;
            let empty = lines.is_empty();
            for (seq, line) in lines {
                after = seq;
                let ev = Event::default().event("log").id(seq.to_string()).data(line);
                if tx.send(Ok(ev)).await.is_err() {
                    return;
                }
            }
            if empty && done {
                let ev = Event::default()
                    .event("end")
                    .data(views::job(&job).to_string());
                let _ = tx.send(Ok(ev)).await;
                return;
            }
            if empty {
                // Wait for this job's next lines (or a second, to notice the end).
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    loop {
                        match wake.recv().await {
                            Ok(j) if j == id => return,
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                            _ => {}
                        }
                    }
                })
                .await;
            }
        }
    });
    let rx: ReceiverStream<Result<Event, Infallible>> = ReceiverStream::new(rx);
    Ok(Sse::new(rx)
        .keep_alive(KeepAlive::default())
        .into_response())
}
