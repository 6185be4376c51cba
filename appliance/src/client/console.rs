//! `labboot board console`: a board's serial console through the appliance's WebSocket
//! (`GET /api/v1/boards/{id}/console`, see `appliance/API.md`).
//!
//! The console's bytes go to standard output as they come, untouched. With the keyboard
//! (`--write`) the client first takes the console's write side (refused: one line naming the
//! holder), puts the terminal of standard input in raw mode (restored when it ends, also on an
//! error or a panic; skipped when standard input is no terminal) and sends what is typed;
//! `~.` at the start of a line leaves, `~~` sends one `~` (as ssh and cu read them), and the end
//! of standard input leaves too. Without the keyboard, standard input is not read and Ctrl-C
//! leaves.
//!
//! One thread does it all: `poll(2)` on the socket (non-blocking, driven through tungstenite's
//! [`WebSocket`]) and on standard input. Only `ws://` is spoken: an `https://` server is refused.

use std::io::{self, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use serde_json::Value;
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use super::{encode, status_error, ApiClient, StdoutClosed, API_PREFIX};

/// How long connecting to the appliance may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the handshake and the answer to `{"take": true}` may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the closing handshake may take once the user left.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Standard input's file descriptor.
const STDIN: libc::c_int = 0;

/// The API path of a board's console.
pub fn console_path(board: &str) -> String {
    format!("/boards/{}/console", encode(board))
}

/// The `ws://` URL of `path` under the API of the appliance at `base` (as
/// [`ApiClient::base`] gives it) and the `host:port` to connect to.
pub fn ws_target(base: &str, path: &str) -> anyhow::Result<(String, String)> {
    let Some(rest) = base.strip_prefix("http://") else {
        bail!("the console speaks ws:// only: give an http:// server URL, not {base}");
    };
    let (authority, prefix) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority.rsplit('@').next().unwrap_or(authority);
    let has_port = match host.rfind(']') {
        Some(end) => host[end..].contains(':'),
        None => host.contains(':'),
    };
    let addr = if has_port {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    Ok((format!("ws://{host}{prefix}{API_PREFIX}{path}"), addr))
}

/// Follows `board`'s console on standard output until the connection ends (or, with
/// `keyboard`, until the user leaves), sending what is typed when `keyboard` is set.
pub fn run(client: &ApiClient, board: &str, keyboard: bool) -> anyhow::Result<()> {
    let mut ws = connect(client, board)?;
    let mut early = Vec::new();
    if keyboard {
        take(&mut ws, board, &mut early)?;
    }
    ws.get_ref()
        .set_nonblocking(true)
        .map_err(|e| anyhow!("console of {board}: {e}"))?;
    let raw = if keyboard {
        RawMode::enter(STDIN)?
    } else {
        None
    };
    let eol = if raw.is_some() { "\r\n" } else { "\n" };
    if raw.is_some() {
        eprint!("labboot: console of {board}: you have the keyboard; ~. at the start of a line leaves{eol}");
    }
    let mut session = Session {
        ws,
        board: board.to_string(),
        stdout: io::stdout(),
        eol,
        unflushed: false,
        leaving: false,
        closed_by: None,
        escape: Escape::new(),
    };
    session.output(&early)?;
    let outcome = session.pump(keyboard);
    drop(raw);
    outcome
}

/// Connects and upgrades; a refused upgrade is the API's one-line error.
fn connect(client: &ApiClient, board: &str) -> anyhow::Result<WebSocket<TcpStream>> {
    let path = console_path(board);
    let (url, addr) = ws_target(client.base(), &path)?;
    let unreachable =
        |e: io::Error| anyhow!("cannot reach the appliance at {}: {e}", client.base());
    let mut last = io::Error::new(io::ErrorKind::NotFound, "host not found");
    let mut stream = None;
    for a in addr.to_socket_addrs().map_err(unreachable)? {
        match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let stream = stream.ok_or_else(|| unreachable(last))?;
    let _ = stream.set_nodelay(true);
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    stream.set_write_timeout(Some(ANSWER_TIMEOUT))?;
    let mut request = url.as_str().into_client_request()?;
    let headers = request.headers_mut();
    if let Some(t) = &client.token {
        headers.insert("Authorization", format!("Bearer {t}").parse()?);
    }
    headers.insert(
        "User-Agent",
        format!("labboot/{}", env!("CARGO_PKG_VERSION")).parse()?,
    );
    let config = WebSocketConfig::default()
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20));
    match tungstenite::client::client_with_config(request, stream, Some(config)) {
        Ok((ws, _)) => Ok(ws),
        Err(HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            let status = resp.status().as_u16();
            let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default());
            let has_message = serde_json::from_str::<Value>(&body)
                .is_ok_and(|v| v.get("error").is_some_and(Value::is_string));
            if !has_message {
                // The message did not come with the head: a plain GET gets the same error.
                client.get_json::<Value>(&path)?;
            }
            Err(status_error(
                "GET",
                &path,
                status,
                &body,
                client.token.is_some(),
            ))
        }
        Err(HandshakeError::Failure(tungstenite::Error::Io(e))) => Err(unreachable(e)),
        Err(HandshakeError::Failure(e)) => {
            Err(anyhow!("GET {API_PREFIX}{path}: no WebSocket: {e}"))
        }
        Err(HandshakeError::Interrupted(_)) => Err(anyhow!(
            "GET {API_PREFIX}{path}: the appliance did not answer within {} s",
            ANSWER_TIMEOUT.as_secs()
        )),
    }
}

/// Takes the write side (blocking, before the session): the console's bytes that come
/// meanwhile are kept in `early`; a refusal is the appliance's one-line message.
fn take(ws: &mut WebSocket<TcpStream>, board: &str, early: &mut Vec<u8>) -> anyhow::Result<()> {
    let lost = |e: tungstenite::Error| anyhow!("console of {board}: the connection was lost: {e}");
    ws.send(Message::text(r#"{"take": true}"#)).map_err(lost)?;
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    while Instant::now() < deadline {
        match ws.read() {
            Ok(Message::Binary(bytes)) => early.extend_from_slice(&bytes),
            Ok(Message::Text(text)) => {
                let v: Value = serde_json::from_str(text.as_str()).unwrap_or_default();
                if v.get("writer") == Some(&Value::Bool(true)) {
                    return Ok(());
                }
                if let Some(e) = v.get("error").and_then(Value::as_str) {
                    bail!("{e}");
                }
            }
            Ok(Message::Close(frame)) => bail!("{}", closed_message(board, frame.as_ref())),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) => return Err(lost(e)),
        }
    }
    bail!(
        "console of {board}: the appliance did not answer {{\"take\": true}} within {} s",
        ANSWER_TIMEOUT.as_secs()
    )
}

/// Why the appliance closed the connection, from its close frame.
fn closed_message(board: &str, frame: Option<&CloseFrame>) -> String {
    match frame {
        Some(f) if !f.reason.is_empty() => format!("console of {board}: {}", f.reason),
        Some(f) => format!(
            "console of {board}: the appliance closed the connection ({})",
            f.code
        ),
        None => format!("console of {board}: the appliance closed the connection"),
    }
}

/// A connected console.
struct Session {
    ws: WebSocket<TcpStream>,
    board: String,
    stdout: io::Stdout,
    /// How notices on stderr end their line (`\r\n` while the terminal is raw).
    eol: &'static str,
    /// Frames wait in tungstenite's buffer: wait until the socket is writable.
    unflushed: bool,
    /// The user left: our close frame is out, the appliance's answer is awaited.
    leaving: bool,
    /// The appliance closed the connection (with this frame, if any).
    closed_by: Option<Option<CloseFrame>>,
    escape: Escape,
}

impl Session {
    /// Moves bytes both ways until the connection is over.
    fn pump(&mut self, keyboard: bool) -> anyhow::Result<()> {
        let sock = self.ws.get_ref().as_raw_fd();
        let mut stdin_open = keyboard;
        let mut close_deadline: Option<Instant> = None;
        let mut buf = [0u8; 4096];
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: sock,
                    events: libc::POLLIN | if self.unflushed { libc::POLLOUT } else { 0 },
                    revents: 0,
                },
                libc::pollfd {
                    fd: STDIN,
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let polled = if stdin_open && !self.leaving { 2 } else { 1 };
            let timeout = match close_deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) => left.as_millis().clamp(1, 10_000) as libc::c_int,
                    None => return Ok(()),
                },
                None => -1,
            };
            // SAFETY: poll(2) on `polled` (≤ 2) entries of an array that lives across the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), polled as libc::nfds_t, timeout) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                bail!("console of {}: poll: {e}", self.board);
            }
            let ready = libc::POLLIN | libc::POLLHUP | libc::POLLERR;
            if fds[0].revents & libc::POLLOUT != 0 {
                self.flush()?;
            }
            if fds[0].revents & ready != 0 && self.read_all()? {
                return Ok(());
            }
            if polled == 2 && fds[1].revents & ready != 0 {
                // SAFETY: read(2) into a buffer of its length; poll said it will not block.
                let got = unsafe { libc::read(STDIN, buf.as_mut_ptr().cast(), buf.len()) };
                let (keys, leave) = match got {
                    0 => (Vec::new(), true),
                    n if n > 0 => self.escape.feed(&buf[..n as usize]),
                    _ => {
                        let e = io::Error::last_os_error();
                        match e.kind() {
                            io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock => continue,
                            _ => {
                                stdin_open = false;
                                eprint!("labboot: cannot read standard input: {e}{}", self.eol);
                                continue;
                            }
                        }
                    }
                };
                if !keys.is_empty() {
                    self.send(Message::Binary(keys.into()))?;
                }
                if leave {
                    self.leaving = true;
                    close_deadline = Some(Instant::now() + CLOSE_TIMEOUT);
                    match self.ws.close(None) {
                        Ok(()) => self.unflushed = false,
                        Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                            self.unflushed = true
                        }
                        Err(_) => return Ok(()),
                    }
                }
            }
        }
    }

    /// Reads every message that is there; true when the connection ended well.
    fn read_all(&mut self) -> anyhow::Result<bool> {
        loop {
            match self.ws.read() {
                Ok(Message::Binary(bytes)) => self.output(&bytes)?,
                Ok(Message::Text(text)) => self.notice(text.as_str()),
                Ok(Message::Close(frame)) => self.closed_by = Some(frame),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.flush()?;
                    return Ok(false);
                }
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return self.ended();
                }
                Err(_) if self.leaving => return Ok(true),
                Err(e) => bail!("console of {}: the connection was lost: {e}", self.board),
            }
        }
    }

    /// The connection closed: fine if the user left or the appliance closed it normally.
    fn ended(&self) -> anyhow::Result<bool> {
        match &self.closed_by {
            _ if self.leaving => Ok(true),
            Some(Some(f)) if f.code == CloseCode::Normal => Ok(true),
            Some(frame) => bail!("{}", closed_message(&self.board, frame.as_ref())),
            None => bail!("console of {}: the connection was lost", self.board),
        }
    }

    /// Queues a message and writes what the socket takes.
    fn send(&mut self, message: Message) -> anyhow::Result<()> {
        match self.ws.write(message) {
            Ok(()) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => bail!("console of {}: cannot send: {e}", self.board),
        }
        self.flush()
    }

    /// Writes what waits in tungstenite's buffer, as far as the socket takes it.
    fn flush(&mut self) -> anyhow::Result<()> {
        match self.ws.flush() {
            Ok(()) => self.unflushed = false,
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                self.unflushed = true
            }
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                self.unflushed = false
            }
            Err(e) => bail!("console of {}: the connection was lost: {e}", self.board),
        }
        Ok(())
    }

    /// The console's bytes, as they are, on standard output.
    fn output(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let mut out = self.stdout.lock();
        match out.write_all(bytes).and_then(|()| out.flush()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
            Err(e) => Err(anyhow!("cannot write to standard output: {e}")),
        }
    }

    /// A text message from the appliance: lost chunks and errors go to stderr.
    fn notice(&self, text: &str) {
        if let Some(line) = notice_line(&self.board, text) {
            eprint!("labboot: {line}{}", self.eol);
        }
    }
}

/// What a text message from the appliance tells the user, if anything.
fn notice_line(board: &str, text: &str) -> Option<String> {
    let v: Value = serde_json::from_str(text).ok()?;
    if v.get("board").is_some() && v.get("connected") == Some(&Value::Bool(false)) {
        return Some(format!(
            "console of {board}: the line is down for now (the appliance keeps reopening it)"
        ));
    }
    if let Some(n) = v.get("lagged").and_then(Value::as_u64) {
        return Some(format!(
            "console of {board}: {n} chunks lost (this reader fell behind)"
        ));
    }
    v.get("error").and_then(Value::as_str).map(str::to_string)
}

/// The `~.` escape at the start of a line, as ssh and cu read it: `~.` leaves, `~~` sends one
/// `~`, a `~` before anything else is sent with it.
#[derive(Debug, Clone)]
pub struct Escape {
    line_start: bool,
    tilde: bool,
}

impl Default for Escape {
    fn default() -> Self {
        Escape::new()
    }
}

impl Escape {
    /// A filter at the start of a line.
    pub fn new() -> Escape {
        Escape {
            line_start: true,
            tilde: false,
        }
    }

    /// The bytes to send for `input`, and whether `~.` was typed (what follows it is dropped).
    pub fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len() + 1);
        for &b in input {
            if self.tilde {
                self.tilde = false;
                match b {
                    b'.' => return (out, true),
                    b'~' => {
                        out.push(b'~');
                        self.line_start = false;
                        continue;
                    }
                    _ => out.push(b'~'),
                }
            } else if self.line_start && b == b'~' {
                self.tilde = true;
                self.line_start = false;
                continue;
            }
            out.push(b);
            self.line_start = matches!(b, b'\r' | b'\n');
        }
        (out, false)
    }
}

/// The terminal of a file descriptor in raw mode, as it was restored on drop (also when a
/// panic unwinds through its owner).
struct RawMode {
    fd: libc::c_int,
    saved: libc::termios,
}

impl RawMode {
    /// Raw mode on `fd`, or `None` when `fd` is no terminal (a pipe in scripts and tests).
    fn enter(fd: libc::c_int) -> anyhow::Result<Option<RawMode>> {
        // SAFETY: isatty(3) on a descriptor number.
        if unsafe { libc::isatty(fd) } != 1 {
            return Ok(None);
        }
        // SAFETY: termios is plain old data; tcgetattr fills it.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: tcgetattr(3) into a termios this function owns.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            bail!(
                "cannot read the terminal's mode: {}",
                io::Error::last_os_error()
            );
        }
        let mut raw = saved;
        // SAFETY: cfmakeraw(3) edits the termios it is given.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: tcsetattr(3) with a termios from tcgetattr.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            bail!(
                "cannot put the terminal in raw mode: {}",
                io::Error::last_os_error()
            );
        }
        Ok(Some(RawMode { fd, saved }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: tcsetattr(3) with the termios saved by `enter`.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_urls() {
        assert_eq!(
            ws_target("http://10.0.0.1:8080", "/boards/b1/console").unwrap(),
            (
                "ws://10.0.0.1:8080/api/v1/boards/b1/console".to_string(),
                "10.0.0.1:8080".to_string()
            )
        );
        assert_eq!(
            ws_target("http://lab/proxy", &console_path("a b")).unwrap(),
            (
                "ws://lab/proxy/api/v1/boards/a%20b/console".to_string(),
                "lab:80".to_string()
            )
        );
        assert_eq!(
            ws_target("http://[::1]:9000", "/x").unwrap().1,
            "[::1]:9000"
        );
        assert_eq!(ws_target("http://[::1]", "/x").unwrap().1, "[::1]:80");
        let err = ws_target("https://lab", "/x").unwrap_err();
        assert!(format!("{err}").contains("ws:// only"), "{err}");
    }

    #[test]
    fn console_escape_leaves_at_line_start_only() {
        let mut e = Escape::new();
        assert_eq!(e.feed(b"~."), (vec![], true));
        let mut e = Escape::new();
        assert_eq!(e.feed(b"ls ~.\r"), (b"ls ~.\r".to_vec(), false));
        assert_eq!(e.feed(b"~"), (vec![], false));
        assert_eq!(e.feed(b"."), (vec![], true));
        let mut e = Escape::new();
        assert_eq!(e.feed(b"~~.\n~x~."), (b"~.\n~x~.".to_vec(), false));
        let mut e = Escape::new();
        assert_eq!(e.feed(b"a\n~.rest"), (b"a\n".to_vec(), true));
        let mut e = Escape::new();
        assert_eq!(e.feed(b"~\r~."), (b"~\r".to_vec(), true));
    }

    #[test]
    fn console_notices() {
        assert_eq!(
            notice_line("b1", r#"{"lagged": 3}"#).as_deref(),
            Some("console of b1: 3 chunks lost (this reader fell behind)")
        );
        assert_eq!(
            notice_line("b1", r#"{"error": "console of b1 is held by job 12"}"#).as_deref(),
            Some("console of b1 is held by job 12")
        );
        assert_eq!(notice_line("b1", r#"{"writer": true}"#), None);
        let hello = r#"{"board": "b1", "connected": true, "writer": "job 12"}"#;
        assert_eq!(notice_line("b1", hello), None);
        assert!(notice_line("b1", &hello.replace("true", "false"))
            .unwrap()
            .contains("the line is down"));
        assert_eq!(notice_line("b1", "not json"), None);
    }

    #[test]
    fn console_refused_upgrade_is_the_api_error() {
        use crate::client::testing::{answer, fake_server, header};
        let (url, heads) = fake_server(vec![answer(
            "401 Unauthorized",
            "application/json",
            r#"{"error": "wrong bearer token"}"#,
        )]);
        let client = ApiClient::new(&url, Some("t")).unwrap();
        let err = run(&client, "b1", false).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "GET /api/v1/boards/b1/console: 401: wrong bearer token"
        );
        let head = heads.recv().unwrap();
        assert!(head.starts_with("GET /api/v1/boards/b1/console "), "{head}");
        assert_eq!(header(&head, "authorization"), Some("Bearer t"));
        assert_eq!(header(&head, "upgrade"), Some("websocket"));
    }

    #[test]
    fn console_refusal_without_a_body_asks_again_without_upgrade() {
        use crate::client::testing::{answer, fake_server, header};
        let (url, heads) = fake_server(vec![
            b"HTTP/1.1 409 Conflict\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
            answer(
                "409 Conflict",
                "application/json",
                r#"{"error": "board b1 has no console"}"#,
            ),
        ]);
        let client = ApiClient::new(&url, None).unwrap();
        let err = run(&client, "b1", true).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "GET /api/v1/boards/b1/console: 409: board b1 has no console"
        );
        assert_eq!(header(&heads.recv().unwrap(), "upgrade"), Some("websocket"));
        assert_eq!(header(&heads.recv().unwrap(), "upgrade"), None);
    }
}
