//! `GET /api/v1/boards/{id}/console`: a board's serial console over a WebSocket, shared through
//! its [`ConsoleHub`](crate::serve::consoles::ConsoleHub).
//!
//! The appliance sends a text status message (`{"board", "connected", "writer"}`), then the
//! backlog and every new chunk of the line as binary messages. The client's text messages are
//! commands (`{"take": true}`, `{"release": true}`, answered `{"writer": true|false}` or
//! `{"error": "console of B is held by job 12"}`); its binary messages are keystrokes, written
//! only while this connection holds the write side. A reader that falls behind is told
//! `{"lagged": N}` (N chunks it missed) and goes on. Closing the connection releases the write
//! side. Any number of connections read at once.
//!
//! The endpoint authenticates itself (it is routed outside the token layer): the bearer token
//! as everywhere, or `?token=` because a browser cannot set headers on a WebSocket.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{Extensions, HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use super::error::{blocking, ApiError};
use crate::serve::consoles::{ConsoleHub, ConsoleWriter};
use crate::serve::App;

/// Largest message a client may send (keystrokes and commands are small).
const MAX_MESSAGE: usize = 64 << 10;
/// How often an idle connection is pinged (keeps proxies and NATs from dropping it).
const PING_EVERY: Duration = Duration::from_secs(30);
/// How long the closing handshake may take.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// The query of the console endpoint.
#[derive(Debug, Default, Deserialize)]
pub struct ConsoleQuery {
    /// The API token, for browsers (which cannot set `Authorization` on a WebSocket).
    #[serde(default)]
    pub token: Option<String>,
}

/// `GET /boards/{id}/console` (WebSocket upgrade): 401 without a right token, 404 for an
/// unknown board, 409 for a board without a console, 426 for a request that is no upgrade.
pub async fn console(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    query: Result<Query<ConsoleQuery>, QueryRejection>,
    headers: HeaderMap,
    extensions: Extensions,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let token = authenticate(&app, &headers, query.token.as_deref())?;
    let hub = find(&app, &id).await?;
    let upgrade = upgrade.map_err(|e| match e {
        WebSocketUpgradeRejection::InvalidConnectionHeader(_)
        | WebSocketUpgradeRejection::InvalidUpgradeHeader(_) => ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            format!(
                "the console of {id} is a WebSocket: send Connection: Upgrade, Upgrade: websocket"
            ),
        ),
        other => ApiError::new(other.status(), other.body_text()),
    })?;
    let who = match extensions.get::<ConnectInfo<std::net::SocketAddr>>() {
        Some(ConnectInfo(peer)) => format!("{token} via websocket from {peer}"),
        None => format!("{token} via websocket"),
    };
    Ok(upgrade
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| session(socket, hub, id, who)))
}

/// The name of the token the request carries (`http.tokens[N]`), from `Authorization: Bearer`
/// or else `?token=`.
fn authenticate(app: &App, headers: &HeaderMap, query: Option<&str>) -> Result<String, ApiError> {
    let given = super::bearer(headers).or(query.map(str::trim).filter(|t| !t.is_empty()));
    let result = match given {
        None => Err(ApiError::unauthorized("missing bearer token")),
        Some(t) => app
            .config
            .http
            .tokens
            .iter()
            .position(|k| super::constant_eq(k, t))
            .map(|i| format!("http.tokens[{i}]"))
            .ok_or_else(|| ApiError::unauthorized("wrong bearer token")),
    };
    if let Err(e) = &result {
        tracing::warn!("api: GET console: {}", e.message);
    }
    result
}

/// The board's hub: 404 when there is no such board, 409 when it has no console.
async fn find(app: &Arc<App>, id: &str) -> Result<Arc<ConsoleHub>, ApiError> {
    if let Some(hub) = app.consoles.get(id) {
        return Ok(hub);
    }
    let (a, board) = (Arc::clone(app), id.to_string());
    blocking(move || {
        let b = super::boards::load(&a, &board)?;
        super::boards::served_here(&a, &b)?;
        Err(ApiError::conflict(format!("board {board} has no console")))
    })
    .await
}

/// One connection, until either side closes it or the hub goes away; the write side it took
/// is released when it ends.
async fn session(mut socket: WebSocket, hub: Arc<ConsoleHub>, board: String, who: String) {
    tracing::info!(board = %board, "console: {who} connected");
    let (backlog, mut live) = hub.subscribe();
    let mut writer: Option<ConsoleWriter> = None;
    let hello = json!({"board": board, "connected": hub.connected(), "writer": hub.writer()});
    let mut ok = send_json(&mut socket, &hello).await;
    if ok && !backlog.is_empty() {
        ok = socket.send(Message::Binary(backlog.into())).await.is_ok();
    }
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    while ok {
        tokio::select! {
            chunk = live.recv() => match chunk {
                Ok(bytes) => ok = socket.send(Message::Binary(bytes)).await.is_ok(),
                Err(RecvError::Lagged(n)) => ok = send_json(&mut socket, &json!({"lagged": n})).await,
                Err(RecvError::Closed) => {
                    let frame = CloseFrame {
                        code: close_code::AWAY,
                        reason: "the appliance stops".into(),
                    };
                    if socket.send(Message::Close(Some(frame))).await.is_ok() {
                        drain(&mut socket).await;
                    }
                    break;
                }
            },
            message = socket.recv() => match message {
                Some(Ok(Message::Text(text))) => {
                    let answer = command(&hub, &board, &who, &mut writer, text.as_str());
                    ok = send_json(&mut socket, &answer).await;
                }
                Some(Ok(Message::Binary(keys))) => {
                    if let Some(answer) = keystrokes(&board, &mut writer, &keys) {
                        ok = send_json(&mut socket, &answer).await;
                    }
                }
                Some(Ok(Message::Close(_))) => {
                    // The reply is queued; reading on sends it and ends the stream.
                    drain(&mut socket).await;
                    break;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Err(_)) | None => break,
            },
            _ = ping.tick() => ok = socket.send(Message::Ping(Bytes::new())).await.is_ok(),
        }
    }
    let held = writer.take().is_some();
    tracing::info!(
        board = %board,
        "console: {who} left{}",
        if held { ", write side released" } else { "" }
    );
}

/// The answer to a text message: `{"take": true}` or `{"release": true}`.
fn command(
    hub: &Arc<ConsoleHub>,
    board: &str,
    who: &str,
    writer: &mut Option<ConsoleWriter>,
    text: &str,
) -> Value {
    let parsed: Option<Value> = serde_json::from_str(text).ok();
    let is = |key: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(key))
            .and_then(Value::as_bool)
            == Some(true)
    };
    if is("take") {
        if writer.is_none() {
            match hub.take_writer(who) {
                Ok(w) => {
                    tracing::info!(board = %board, "console: {who} took the write side");
                    *writer = Some(w);
                }
                Err(holder) => {
                    return json!({"error": format!("console of {board} is held by {holder}")})
                }
            }
        }
        json!({"writer": true})
    } else if is("release") {
        if writer.take().is_some() {
            tracing::info!(board = %board, "console: {who} released the write side");
        }
        json!({"writer": false})
    } else {
        json!({"error": format!(
            "unknown command {}: send {{\"take\": true}} or {{\"release\": true}}",
            Value::from(text.chars().take(100).collect::<String>())
        )})
    }
}

/// Writes keystrokes if this connection holds the write side; an error answer otherwise. A
/// write side a job took over is let go (the job holds it now).
fn keystrokes(board: &str, writer: &mut Option<ConsoleWriter>, keys: &[u8]) -> Option<Value> {
    let Some(w) = writer.as_ref() else {
        return Some(json!({"error": format!(
            "keystrokes ignored: this connection does not hold the console of {board} \
             (send {{\"take\": true}} first)"
        )}));
    };
    match w.write(keys) {
        Ok(()) => None,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            *writer = None;
            Some(json!({"writer": false, "error": e.to_string()}))
        }
        Err(e) => Some(json!({"error": e.to_string()})),
    }
}

async fn send_json(socket: &mut WebSocket, value: &Value) -> bool {
    socket
        .send(Message::Text(value.to_string().into()))
        .await
        .is_ok()
}

/// Reads until the peer's side of the closing handshake is done (or a few seconds passed).
async fn drain(socket: &mut WebSocket) {
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(_)) = socket.recv().await {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;
    use std::sync::mpsc;

    use axum::routing::get;
    use axum::Router;
    use tungstenite::Message as Ws;

    type Client = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>;

    /// A server whose connections are sessions on `hub`, named by the path ("/one" → "one").
    async fn serve(hub: Arc<ConsoleHub>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route(
            "/{who}",
            get(
                move |Path(who): Path<String>, ws: WebSocketUpgrade| async move {
                    ws.on_upgrade(move |s| session(s, hub, "b1".into(), who))
                },
            ),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("ws://{addr}")
    }

    /// Connects as `who` (on a blocking thread) and reads the status message.
    async fn connect(url: &str, who: &str) -> Client {
        let url = format!("{url}/{who}");
        tokio::task::spawn_blocking(move || {
            let (mut ws, _) = tungstenite::connect(url).unwrap();
            let hello = ws.read().unwrap();
            assert!(
                hello.to_text().unwrap().contains(r#""board":"b1""#),
                "{hello}"
            );
            ws
        })
        .await
        .unwrap()
    }

    /// Runs `f` on the client on a blocking thread (the server runs meanwhile).
    async fn with<T: Send + 'static>(
        mut ws: Client,
        f: impl FnOnce(&mut Client) -> T + Send + 'static,
    ) -> (Client, T) {
        tokio::task::spawn_blocking(move || {
            let t = f(&mut ws);
            (ws, t)
        })
        .await
        .unwrap()
    }

    /// The next text message (skipping console bytes).
    fn text(ws: &mut Client) -> Value {
        loop {
            match ws.read().unwrap() {
                Ws::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
                Ws::Binary(_) | Ws::Ping(_) | Ws::Pong(_) => {}
                other => panic!("{other:?}"),
            }
        }
    }

    fn command(ws: &mut Client, c: &str) -> Value {
        ws.send(Ws::text(c)).unwrap();
        text(ws)
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn console_session_backlog_keyboard_and_release() {
        let hub = Arc::new(ConsoleHub::new("b1"));
        let (line, typed) = mpsc::channel();
        hub.set_line(Some(line));
        hub.publish(b"U-Boot\r\n=> ");
        runtime().block_on(async {
            let url = serve(Arc::clone(&hub)).await;
            let one = connect(&url, "one").await;
            let (one, backlog) = with(one, |ws| ws.read().unwrap()).await;
            assert_eq!(backlog, Ws::binary(&b"U-Boot\r\n=> "[..]));
            hub.publish(b"live");
            let (one, answers) = with(one, |ws| {
                assert_eq!(ws.read().unwrap(), Ws::binary(&b"live"[..]));
                ws.send(Ws::binary(&b"typed too early"[..])).unwrap();
                let early = text(ws);
                let unknown = command(ws, r#"{"frobnicate": 1}"#);
                let take = command(ws, r#"{"take": true}"#);
                let again = command(ws, r#"{"take": true}"#);
                ws.send(Ws::binary(&b"version\r"[..])).unwrap();
                (early, unknown, take, again)
            })
            .await;
            let (early, unknown, take, again) = answers;
            assert!(
                early["error"]
                    .as_str()
                    .unwrap()
                    .contains("does not hold the console of b1"),
                "{early}"
            );
            assert!(
                unknown["error"]
                    .as_str()
                    .unwrap()
                    .starts_with("unknown command \"{"),
                "{unknown}"
            );
            assert_eq!(take, json!({"writer": true}));
            assert_eq!(again, json!({"writer": true}));
            let got = tokio::task::spawn_blocking(move || typed.recv().map(|b| (b, typed)))
                .await
                .unwrap();
            let (got, typed) = got.unwrap();
            assert_eq!(&got[..], b"version\r");
            assert_eq!(hub.writer().as_deref(), Some("one"));

            // One keyboard: a second connection is refused with the holder's name.
            let two = connect(&url, "two").await;
            let (two, refused) = with(two, |ws| command(ws, r#"{"take": true}"#)).await;
            assert_eq!(refused, json!({"error": "console of b1 is held by one"}));
            let (one, released) = with(one, |ws| command(ws, r#"{"release": true}"#)).await;
            assert_eq!(released, json!({"writer": false}));
            assert_eq!(hub.writer(), None);
            let (two, took) = with(two, |ws| command(ws, r#"{"take": true}"#)).await;
            assert_eq!(took, json!({"writer": true}));

            // A job takes it over: the next keystrokes say so and the keyboard is let go.
            let (job, _) = hub.take_writer_over("job 12");
            let (two, over) = with(two, |ws| {
                ws.send(Ws::binary(&b"x"[..])).unwrap();
                text(ws)
            })
            .await;
            assert_eq!(over["writer"], json!(false), "{over}");
            assert!(
                over["error"].as_str().unwrap().contains("taken by job 12"),
                "{over}"
            );
            drop(job);

            // Closing releases the keyboard.
            let (mut two, took) = with(two, |ws| command(ws, r#"{"take": true}"#)).await;
            assert_eq!(took, json!({"writer": true}));
            two.close(None).unwrap();
            let _ = with(two, |ws| while ws.read().is_ok() {}).await;
            for _ in 0..100 {
                if hub.writer().is_none() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(hub.writer(), None, "closing released the keyboard");
            assert!(typed.try_recv().is_err(), "nothing else reached the line");

            // The appliance stops: the connection is closed with 1001.
            hub.close();
            let (_, end) = with(one, |ws| loop {
                match ws.read() {
                    Ok(Ws::Close(frame)) => break frame,
                    Ok(_) => {}
                    Err(e) => panic!("{e}"),
                }
            })
            .await;
            let end = end.unwrap();
            assert_eq!(u16::from(end.code), 1001);
            assert_eq!(end.reason.as_str(), "the appliance stops");
        });
    }

    #[test]
    fn console_session_tells_a_lagging_reader_and_goes_on() {
        let hub = Arc::new(ConsoleHub::new("b1"));
        runtime().block_on(async {
            let url = serve(Arc::clone(&hub)).await;
            let reader = connect(&url, "slow").await;
            // The session cannot run meanwhile (one thread, no await): it falls 2000 chunks
            // behind a channel of 1024.
            for i in 0..2000u32 {
                hub.publish(format!("{i:04}.").as_bytes());
            }
            let (_, (lagged, after)) = with(reader, |ws| {
                let mut lagged = None;
                let mut after = Vec::new();
                while !after.ends_with(b"1999.") {
                    match ws.read().unwrap() {
                        Ws::Text(t) => lagged = Some(t.to_string()),
                        Ws::Binary(b) => after.extend_from_slice(&b),
                        _ => {}
                    }
                }
                (lagged, after)
            })
            .await;
            assert_eq!(lagged.as_deref(), Some(r#"{"lagged":976}"#));
            assert!(after.starts_with(b"0976.0977."), "{}", after.len());
            assert_eq!(after.len(), 1024 * 5);
        });
    }
}
