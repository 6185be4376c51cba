//! The command-line client of the appliance's HTTP API (`appliance/API.md`).
//!
//! [`ApiClient`] talks to `labboot serve` over `ureq`: JSON requests, plain-text answers and the
//! Server-Sent Events of a job's log stream ([`EventStream`]), which resumes with `Last-Event-ID`
//! when the connection drops. Every failure is one line, `GET /api/v1/jobs/7: 404: no such job`
//! or `cannot reach the appliance at http://…: Connection refused (os error 111)`.
//!
//! `labboot job …` and `labboot board …` (in `cmd`) are built on it; [`table`] renders their
//! plain-text output and [`Out`] writes it without panicking on a closed pipe. [`console`] is
//! the WebSocket client of a board's serial console (`labboot board console`).

pub mod console;
pub mod table;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use serde::de::DeserializeOwned;
use serde_json::Value;
use ureq::http::Response;
use ureq::Body;

/// The server used when neither `--server` nor `LABBOOT_SERVER` is given.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// The prefix of every API path.
pub const API_PREFIX: &str = "/api/v1";

/// How long connecting to the appliance may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one read of an ordinary answer may wait.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the event stream may stay silent before it is reconnected (which is harmless: it
/// resumes with `Last-Event-ID`).
const STREAM_READ_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest JSON answer read.
const JSON_LIMIT: u64 = 64 << 20;
/// Largest text answer read by [`ApiClient::get_text`].
const TEXT_LIMIT: u64 = 1 << 30;
/// Largest error body read.
const ERROR_LIMIT: u64 = 64 << 10;

/// Options shared by `labboot job …` and `labboot board …`: where the appliance is, how to
/// authenticate and how to print.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// Base URL of the appliance's HTTP API, e.g. http://10.78.0.1:8080.
    #[arg(
        long,
        global = true,
        env = "LABBOOT_SERVER",
        default_value = DEFAULT_SERVER,
        value_name = "URL"
    )]
    pub server: String,
    /// Bearer token, one of the appliance's http.tokens (prefer LABBOOT_TOKEN: arguments show in `ps`).
    #[arg(
        long,
        global = true,
        env = "LABBOOT_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// Print the API's JSON (and raw logs.yaml lines) instead of tables and text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// A client of one appliance's HTTP API: its base URL, the bearer token and a `ureq` agent.
#[derive(Clone)]
pub struct ApiClient {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "…"))
            .finish()
    }
}

impl ApiClient {
    /// A client of the appliance at `server` (`http(s)://host[:port][/prefix]`; a bare
    /// `host:port` means http), sending `token` as `Authorization: Bearer` when given.
    pub fn new(server: &str, token: Option<&str>) -> anyhow::Result<ApiClient> {
        let base = normalize_base(server)?;
        let token = token.map(str::trim).filter(|t| !t.is_empty());
        if let Some(t) = token {
            if !t.bytes().all(|b| (0x21..0x7f).contains(&b)) {
                bail!("the token may only hold printable ASCII without spaces");
            }
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .user_agent(format!("labboot/{}", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(ApiClient {
            base,
            token: token.map(str::to_string),
            agent: ureq::Agent::new_with_config(config),
        })
    }

    /// The client that `--server`, `--token` (or their environment variables) describe.
    pub fn from_args(args: &ApiArgs) -> anyhow::Result<ApiClient> {
        ApiClient::new(&args.server, args.token.as_deref())
    }

    /// The normalized base URL, without a trailing `/` and without `/api/v1`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The full URL of an API path such as `/jobs/7` (which must start with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{API_PREFIX}{path}", self.base)
    }

    /// `GET path`, a JSON answer.
    pub fn get_json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self.get(path, &[], READ_TIMEOUT);
        let resp = self.check("GET", path, resp)?;
        read_json("GET", path, resp)
    }

    /// `POST path` with a JSON body, a JSON answer.
    pub fn post_json<T: DeserializeOwned>(&self, path: &str, body: &Value) -> anyhow::Result<T> {
        let bytes = serde_json::to_vec(body)?;
        self.post_body(path, "application/json", &bytes)
    }

    /// `POST path` with `body` of type `content_type` (e.g. a job's YAML), a JSON answer.
    pub fn post_body<T: DeserializeOwned>(
        &self,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> anyhow::Result<T> {
        let resp = self.post(path, Some((content_type, body)));
        let resp = self.check("POST", path, resp)?;
        read_json("POST", path, resp)
    }

    /// `POST path` without a body, a JSON answer.
    pub fn post_empty<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self.post(path, None);
        let resp = self.check("POST", path, resp)?;
        read_json("POST", path, resp)
    }

    /// `GET path`, a text answer (invalid UTF-8 replaced).
    pub fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let resp = self.get(path, &[], READ_TIMEOUT);
        let resp = self.check("GET", path, resp)?;
        resp.into_body()
            .with_config()
            .limit(TEXT_LIMIT)
            .lossy_utf8(true)
            .read_to_string()
            .map_err(|e| read_error("GET", path, &e))
    }

    /// `GET path`, a text answer handed to `each` line by line (without the line end) as it
    /// arrives, so that a long answer is never held whole.
    pub fn get_lines(
        &self,
        path: &str,
        mut each: impl FnMut(&str) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let resp = self.get(path, &[], READ_TIMEOUT);
        let resp = self.check("GET", path, resp)?;
        let mut reader = BufReader::new(resp.into_body().into_reader());
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = reader
                .read_until(b'\n', &mut buf)
                .map_err(|e| anyhow!("GET {API_PREFIX}{path}: cannot read the answer: {e}"))?;
            if n == 0 {
                return Ok(());
            }
            each(trim_eol(&String::from_utf8_lossy(&buf)))?;
        }
    }

    /// The Server-Sent Events of `GET path` (e.g. `/jobs/7/logs/stream`), resumed with
    /// `Last-Event-ID` whenever the connection drops; the caller stops at the event that ends it.
    pub fn stream_events(&self, path: &str) -> EventStream<'_> {
        EventStream {
            client: self,
            path: path.to_string(),
            parser: SseParser::new(),
            reader: None,
            line: Vec::new(),
            first_line: true,
            connected_at: Instant::now(),
            events_this_connection: 0,
            failures: 0,
            retry: Duration::from_secs(1),
            max_delay: Duration::from_secs(5),
            max_failures: 60,
            read_timeout: STREAM_READ_TIMEOUT,
            lost: None,
            pending: VecDeque::new(),
            connected_once: false,
            done: false,
            quiet: false,
        }
    }

    fn get(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        read_timeout: Duration,
    ) -> Result<Response<Body>, ureq::Error> {
        let mut req = self
            .agent
            .get(self.url(path))
            .config()
            .timeout_per_read(Some(read_timeout))
            .build();
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.call()
    }

    fn post(&self, path: &str, body: Option<(&str, &[u8])>) -> Result<Response<Body>, ureq::Error> {
        let mut req = self
            .agent
            .post(self.url(path))
            .config()
            .timeout_per_read(Some(READ_TIMEOUT))
            .build();
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        match body {
            Some((content_type, bytes)) => req.content_type(content_type).send(bytes),
            None => req.send_empty(),
        }
    }

    /// A 2xx answer, or the one-line error of a failed request.
    fn check(
        &self,
        method: &str,
        path: &str,
        resp: Result<Response<Body>, ureq::Error>,
    ) -> anyhow::Result<Response<Body>> {
        let resp = resp.map_err(|e| self.unreachable(&e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(self.error_of(method, path, resp))
    }

    /// The one-line error of a non-2xx answer.
    fn error_of(&self, method: &str, path: &str, resp: Response<Body>) -> anyhow::Error {
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .with_config()
            .limit(ERROR_LIMIT)
            .lossy_utf8(true)
            .read_to_string()
            .unwrap_or_default();
        status_error(method, path, status, &body, self.token.is_some())
    }

    /// `cannot reach the appliance at URL: cause`.
    fn unreachable(&self, err: &ureq::Error) -> anyhow::Error {
        anyhow!(
            "cannot reach the appliance at {}: {}",
            self.base,
            cause(err)
        )
    }
}

/// `server` as a base URL: whitespace and trailing `/` removed, `http://` added to a bare
/// `host:port`, a trailing `/api/v1` dropped; only http and https are accepted.
pub fn normalize_base(server: &str) -> anyhow::Result<String> {
    let s = server.trim();
    if s.is_empty() {
        bail!("the server URL is empty");
    }
    let with_scheme = if s.contains("://") {
        s.to_string()
    } else {
        format!("http://{s}")
    };
    let (scheme, rest) = with_scheme.split_once("://").unwrap_or(("", ""));
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        bail!("invalid server URL {s:?}: only http:// and https:// are supported");
    }
    if rest.split('/').next().unwrap_or("").is_empty() {
        bail!("invalid server URL {s:?}: no host");
    }
    if rest.contains(['?', '#']) || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!("invalid server URL {s:?}: expected http(s)://host[:port][/prefix]");
    }
    let mut base = format!("{scheme}://{}", rest.trim_end_matches('/'));
    if let Some(stripped) = base.strip_suffix(API_PREFIX) {
        base = stripped.trim_end_matches('/').to_string();
    }
    Ok(base)
}

/// `s` percent-encoded for a path segment or query value (only `A-Z a-z 0-9 - . _ ~` stay, and
/// the dots of `.` and `..` are encoded too).
pub fn encode(s: &str) -> String {
    let dots_only = !s.is_empty() && s.bytes().all(|b| b == b'.');
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~' | b'.'))
            && !(dots_only && b == b'.')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A query string `?k=v&…` of the pairs that have a value (empty when none has).
pub fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{}={}", encode(k), encode(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// The error of a non-2xx answer: `{METHOD} /api/v1{path}: {status}: {message}`, the message
/// being the `error` field of a JSON body, else the body's text, else the status's reason.
pub fn status_error(
    method: &str,
    path: &str,
    status: u16,
    body: &str,
    token_given: bool,
) -> anyhow::Error {
    let mut message = error_message(status, body);
    if status == 401 && !token_given {
        message.push_str(" (give --token or set LABBOOT_TOKEN)");
    }
    anyhow!("{method} {API_PREFIX}{path}: {status}: {message}")
}

fn error_message(status: u16, body: &str) -> String {
    if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(body) {
        match map.get("error") {
            Some(Value::String(s)) => return one_line(s, usize::MAX),
            Some(Value::Null) | None => {}
            Some(other) => return one_line(&other.to_string(), 300),
        }
    }
    let text = one_line(body, 200);
    if !text.is_empty() {
        return text;
    }
    ureq::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("no error message")
        .to_string()
}

/// `s` on one line: lines trimmed and joined with a space, control characters blanked, cut
/// to `max` characters.
fn one_line(s: &str, max: usize) -> String {
    let joined = s
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let clean: String = joined
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.chars().count() > max {
        let mut cut: String = clean.chars().take(max).collect();
        cut.push('…');
        cut
    } else {
        clean
    }
}

/// The cause of a failed request, without ureq's `io:` prefix.
fn cause(err: &ureq::Error) -> String {
    match err {
        ureq::Error::Io(e) => e.to_string(),
        ureq::Error::HostNotFound => "host not found".to_string(),
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        other => other.to_string(),
    }
}

fn read_error(method: &str, path: &str, err: &ureq::Error) -> anyhow::Error {
    anyhow!(
        "{method} {API_PREFIX}{path}: cannot read the answer: {}",
        cause(err)
    )
}

fn read_json<T: DeserializeOwned>(
    method: &str,
    path: &str,
    resp: Response<Body>,
) -> anyhow::Result<T> {
    let text = resp
        .into_body()
        .with_config()
        .limit(JSON_LIMIT)
        .lossy_utf8(true)
        .read_to_string()
        .map_err(|e| read_error(method, path, &e))?;
    serde_json::from_str(&text)
        .map_err(|e| anyhow!("{method} {API_PREFIX}{path}: unexpected answer: {e}"))
}

fn trim_eol(line: &str) -> &str {
    let line = line.strip_suffix('\n').unwrap_or(line);
    line.strip_suffix('\r').unwrap_or(line)
}

/// One Server-Sent Event: its type (`message` unless named), the last event ID and its data
/// (the `data:` lines joined with `\n`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, `message` when absent.
    pub event: String,
    /// The last `id:` seen on the stream (IDs carry over to later events, as in the spec).
    pub id: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

/// The line-by-line parser of a `text/event-stream` body, as the HTML specification reads it.
#[derive(Debug, Default)]
pub struct SseParser {
    event: String,
    data: String,
    /// The `id:` of the event being read.
    id_buffer: Option<String>,
    /// The ID of the last dispatched event: what a reconnection sends.
    last_id: Option<String>,
    retry: Option<Duration>,
}

impl SseParser {
    /// A parser with nothing pending and no last event ID.
    pub fn new() -> SseParser {
        SseParser::default()
    }

    /// Feeds one line (without its line end); an empty line dispatches the pending event, if it
    /// has data.
    pub fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => {
                self.id_buffer = (!value.is_empty()).then(|| value.to_string());
            }
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(ms) = value.parse::<u64>() {
                    self.retry = Some(Duration::from_millis(ms));
                }
            }
            _ => {}
        }
        None
    }

    /// The ID to send as `Last-Event-ID` when reconnecting.
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// The reconnection time the server asked for with `retry:`.
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// Drops the pending event (the connection it came on was lost), including an `id:` it
    /// carried; keeps the ID of the last dispatched event.
    pub fn reset(&mut self) {
        self.event.clear();
        self.data.clear();
        self.id_buffer.clone_from(&self.last_id);
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        self.last_id.clone_from(&self.id_buffer);
        let event = std::mem::take(&mut self.event);
        let mut data = std::mem::take(&mut self.data);
        if data.is_empty() {
            return None;
        }
        data.pop();
        Some(SseEvent {
            event: if event.is_empty() {
                "message".to_string()
            } else {
                event
            },
            id: self.last_id.clone(),
            data,
        })
    }
}

/// The events of one `GET` of a `text/event-stream`, an iterator that reconnects (sending
/// `Last-Event-ID`) when the connection drops or ends, and gives up after 60 attempts in a row
/// that bring nothing. The first connection is not retried: its failure is the first item. It
/// only ends by itself if the server answers `204 No Content`.
pub struct EventStream<'a> {
    client: &'a ApiClient,
    path: String,
    parser: SseParser,
    reader: Option<BufReader<ureq::BodyReader<'static>>>,
    line: Vec<u8>,
    first_line: bool,
    connected_at: Instant,
    events_this_connection: u64,
    failures: u32,
    retry: Duration,
    max_delay: Duration,
    max_failures: u32,
    read_timeout: Duration,
    lost: Option<String>,
    pending: VecDeque<SseEvent>,
    connected_once: bool,
    done: bool,
    quiet: bool,
}

impl EventStream<'_> {
    /// Sets the first reconnection delay (the server's `retry:` overrides it), the longest delay
    /// and how many attempts in a row may bring nothing before the stream fails.
    pub fn with_retry(mut self, first: Duration, longest: Duration, attempts: u32) -> Self {
        self.retry = first;
        self.max_delay = longest;
        self.max_failures = attempts.max(1);
        self
    }

    /// Stops the one-line notice on stderr when the connection is lost.
    pub fn quiet(mut self) -> Self {
        self.quiet = true;
        self
    }

    /// The ID the next reconnection will send as `Last-Event-ID`.
    pub fn last_event_id(&self) -> Option<&str> {
        self.parser.last_event_id()
    }

    fn fail(&mut self, err: anyhow::Error) -> Option<anyhow::Result<SseEvent>> {
        self.done = true;
        self.reader = None;
        Some(Err(err))
    }

    /// Counts an attempt that brought nothing; true when there were too many in a row.
    fn give_up(&mut self) -> bool {
        self.failures += 1;
        self.failures >= self.max_failures
    }

    fn delay(&self) -> Duration {
        let first = self.parser.retry().unwrap_or(self.retry);
        let grown = first.saturating_mul(self.failures.max(1));
        grown.min(self.max_delay.max(first))
    }

    /// The connection was lost (`why`): drop it and count it unless it brought something.
    fn lose(&mut self, why: String) -> bool {
        self.reader = None;
        self.parser.reset();
        let progress = self.events_this_connection > 0
            || self.connected_at.elapsed() >= Duration::from_secs(10);
        if progress {
            self.failures = 0;
        }
        if !self.quiet && self.lost.is_none() {
            eprintln!(
                "labboot: {why}; reconnecting to {}{API_PREFIX}{}",
                self.client.base, self.path
            );
        }
        self.lost = Some(why);
        !progress && self.give_up()
    }

    /// Connects (again); `Err` when the stream must fail, `Ok(false)` to try again later.
    fn connect(&mut self) -> Result<bool, anyhow::Error> {
        let mut headers = vec![
            ("Accept", "text/event-stream"),
            ("Cache-Control", "no-cache"),
        ];
        let last_id = self.parser.last_event_id().map(str::to_string);
        if let Some(id) = &last_id {
            headers.push(("Last-Event-ID", id));
        }
        let resp = self.client.get(&self.path, &headers, self.read_timeout);
        let resp = match resp {
            Ok(resp) => resp,
            Err(e) => {
                let err = self.client.unreachable(&e);
                if !self.connected_once || self.give_up() {
                    return Err(err);
                }
                self.lost.get_or_insert_with(|| format!("{err:#}"));
                return Ok(false);
            }
        };
        let status = resp.status().as_u16();
        if status == 204 {
            self.done = true;
            return Ok(false);
        }
        if !(200..300).contains(&status) {
            let retriable = status >= 500 || status == 429;
            let err = self.client.error_of("GET", &self.path, resp);
            if retriable && self.connected_once && !self.give_up() {
                self.lost.get_or_insert_with(|| format!("{err:#}"));
                return Ok(false);
            }
            return Err(err);
        }
        let body = resp.into_body();
        if let Some(mime) = body.mime_type() {
            if mime != "text/event-stream" {
                bail!(
                    "GET {API_PREFIX}{}: expected text/event-stream, got {mime}",
                    self.path
                );
            }
        }
        self.reader = Some(BufReader::new(body.into_reader()));
        self.connected_once = true;
        self.first_line = true;
        self.connected_at = Instant::now();
        self.events_this_connection = 0;
        self.lost = None;
        Ok(true)
    }
}

impl Iterator for EventStream<'_> {
    type Item = anyhow::Result<SseEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut attempted = false;
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            if self.done {
                return None;
            }
            let Some(reader) = self.reader.as_mut() else {
                if self.connected_once || attempted {
                    std::thread::sleep(self.delay());
                }
                attempted = true;
                match self.connect() {
                    Ok(_) => continue,
                    Err(e) => return self.fail(e),
                }
            };
            self.line.clear();
            let read = reader.read_until(b'\n', &mut self.line);
            let why = match read {
                Ok(0) => Some("the appliance closed the event stream".to_string()),
                Ok(_) if !self.line.ends_with(b"\n") => {
                    Some("the event stream ended in the middle of a line".to_string())
                }
                Ok(_) => None,
                Err(e) => Some(format!("the event stream broke: {e}")),
            };
            if let Some(why) = why {
                if self.lose(why) {
                    let why = self.lost.take().unwrap_or_default();
                    return self.fail(anyhow!(
                        "GET {API_PREFIX}{}: gave up after {} attempts: {why}",
                        self.path,
                        self.failures
                    ));
                }
                continue;
            }
            let text = String::from_utf8_lossy(&self.line).into_owned();
            let mut text = trim_eol(&text);
            if std::mem::take(&mut self.first_line) {
                text = text.strip_prefix('\u{feff}').unwrap_or(text);
            }
            // A lone CR also ends a line.
            for piece in text.split('\r') {
                if let Some(event) = self.parser.line(piece) {
                    self.events_this_connection += 1;
                    self.failures = 0;
                    self.pending.push_back(event);
                }
            }
        }
    }
}

/// Marks an error as "standard output was closed" (a reader such as `head` went away), which
/// [`ignore_closed_stdout`] turns into success.
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// `Ok(())` instead of the error when standard output was closed under the command.
pub fn ignore_closed_stdout(result: anyhow::Result<()>) -> anyhow::Result<()> {
    match result {
        Err(e) if e.downcast_ref::<StdoutClosed>().is_some() => Ok(()),
        other => other,
    }
}

/// The output of the client's commands (standard output): line by line, flushed, with errors
/// instead of panics.
pub struct Out {
    inner: Box<dyn Write>,
}

impl Out {
    /// Locked standard output.
    pub fn stdout() -> Out {
        Out::new(Box::new(std::io::stdout().lock()))
    }

    /// Any writer (tests capture the output this way).
    pub fn new(inner: Box<dyn Write>) -> Out {
        Out { inner }
    }

    /// Writes `text` as it is and flushes.
    pub fn text(&mut self, text: &str) -> anyhow::Result<()> {
        let result = self
            .inner
            .write_all(text.as_bytes())
            .and_then(|()| self.inner.flush());
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
            Err(e) => Err(anyhow!("cannot write to standard output: {e}")),
        }
    }

    /// Writes `line` and a newline.
    pub fn line(&mut self, line: &str) -> anyhow::Result<()> {
        self.text(&format!("{line}\n"))
    }

    /// Writes a JSON value, pretty-printed.
    pub fn json(&mut self, value: &Value) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(value)?;
        self.line(&text)
    }
}

/// Helpers of the client's tests: a canned HTTP server and a captured [`Out`].
#[cfg(test)]
pub(crate) mod testing {
    use std::cell::RefCell;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::rc::Rc;
    use std::sync::mpsc;

    use super::Out;

    /// A one-shot HTTP server: each connection gets the next canned answer (or is refused by a
    /// closed socket when answers run out); the requests' heads are sent back through the channel.
    pub(crate) fn fake_server(answers: Vec<Vec<u8>>) -> (String, mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for answer in answers {
                let Ok((mut conn, _)) = listener.accept() else {
                    return;
                };
                let head = read_request(&mut conn);
                let _ = tx.send(head);
                let _ = conn.write_all(&answer);
                let _ = conn.flush();
            }
        });
        (format!("http://{addr}"), rx)
    }

    fn read_request(conn: &mut TcpStream) -> String {
        let mut data = Vec::new();
        let mut byte = [0u8; 1];
        while !data.ends_with(b"\r\n\r\n") {
            match conn.read(&mut byte) {
                Ok(1) => data.push(byte[0]),
                _ => break,
            }
        }
        let head = String::from_utf8_lossy(&data).into_owned();
        let length = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        let _ = conn.read_exact(&mut body);
        format!("{head}{}", String::from_utf8_lossy(&body))
    }

    pub(crate) fn answer(status: &str, content_type: &str, body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    pub(crate) fn stream_answer(body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n{body}"
        )
        .into_bytes()
    }

    pub(crate) fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// A writer whose bytes stay readable after it was handed to an [`Out`].
    #[derive(Clone, Default)]
    pub(crate) struct Captured(Rc<RefCell<Vec<u8>>>);

    impl Captured {
        pub(crate) fn out(&self) -> Out {
            Out::new(Box::new(self.clone()))
        }

        pub(crate) fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.borrow()).into_owned()
        }
    }

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.borrow_mut().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{answer, fake_server, header, stream_answer};
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn client_base_url_is_normalized() {
        let n = |s| normalize_base(s).unwrap();
        assert_eq!(n("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(n(" http://lab:8080/ "), "http://lab:8080");
        assert_eq!(n("lab.example:8080"), "http://lab.example:8080");
        assert_eq!(n("HTTPS://lab/labboot/"), "https://lab/labboot");
        assert_eq!(n("http://lab:8080/api/v1/"), "http://lab:8080");
        assert_eq!(n("http://[::1]:8080"), "http://[::1]:8080");
        for bad in [
            "",
            "ftp://lab",
            "http://",
            "http:///x",
            "http://lab?x=1",
            "http://a b",
        ] {
            let err = normalize_base(bad).unwrap_err().to_string();
            assert!(!err.contains('\n'), "{err}");
            assert!(err.contains("URL"), "{bad}: {err}");
        }
    }

    #[test]
    fn client_urls_and_queries() {
        let c = ApiClient::new("http://lab:8080/", Some("t")).unwrap();
        assert_eq!(c.url("/jobs/7"), "http://lab:8080/api/v1/jobs/7");
        assert_eq!(c.base(), "http://lab:8080");
        assert_eq!(encode("qemu-01"), "qemu-01");
        assert_eq!(encode("a b/c?"), "a%20b%2Fc%3F");
        assert_eq!(encode(".."), "%2E%2E");
        assert_eq!(encode("a.b"), "a.b");
        assert_eq!(encode("é"), "%C3%A9");
        assert_eq!(query(&[("state", None)]), "");
        assert_eq!(
            query(&[
                ("state", Some("queued".into())),
                ("board", None),
                ("device_type", Some("x y".into())),
                ("limit", Some("5".into())),
            ]),
            "?state=queued&device_type=x%20y&limit=5"
        );
    }

    #[test]
    fn client_rejects_bad_tokens_and_ignores_empty_ones() {
        assert!(ApiClient::new(DEFAULT_SERVER, Some("a b")).is_err());
        assert!(ApiClient::new(DEFAULT_SERVER, Some("tok\n"))
            .unwrap()
            .token
            .is_some());
        assert!(ApiClient::new(DEFAULT_SERVER, Some(""))
            .unwrap()
            .token
            .is_none());
    }

    #[test]
    fn client_status_errors_are_one_line() {
        let e = |status, body, token| {
            format!("{:#}", status_error("POST", "/jobs", status, body, token))
        };
        assert_eq!(
            e(
                400,
                r#"{"error": "job.yaml:12: actions[0].deploy.to: unknown method \"usb\""}"#,
                true
            ),
            r#"POST /api/v1/jobs: 400: job.yaml:12: actions[0].deploy.to: unknown method "usb""#
        );
        assert_eq!(
            e(401, r#"{"error": "missing bearer token"}"#, false),
            "POST /api/v1/jobs: 401: missing bearer token (give --token or set LABBOOT_TOKEN)"
        );
        assert_eq!(
            e(401, r#"{"error": "wrong bearer token"}"#, true),
            "POST /api/v1/jobs: 401: wrong bearer token"
        );
        assert_eq!(e(502, "", true), "POST /api/v1/jobs: 502: Bad Gateway");
        assert_eq!(
            e(500, "<html>\n<h1>oops</h1>\n</html>\n", true),
            "POST /api/v1/jobs: 500: <html> <h1>oops</h1> </html>"
        );
        assert_eq!(
            e(409, r#"{"error": {"x": 1}}"#, true),
            r#"POST /api/v1/jobs: 409: {"x":1}"#
        );
        assert_eq!(
            e(404, r#"{"error": null}"#, true),
            r#"POST /api/v1/jobs: 404: {"error": null}"#
        );
        let long = e(500, &"x".repeat(1000), true);
        assert!(long.len() < 300 && long.ends_with('…'), "{long}");
    }

    #[test]
    fn client_sse_parser_follows_the_spec() {
        let mut p = SseParser::new();
        let feed = |p: &mut SseParser, text: &str| -> Vec<SseEvent> {
            text.split('\n')
                .filter_map(|l| p.line(l.strip_suffix('\r').unwrap_or(l)))
                .collect()
        };
        let events = feed(
            &mut p,
            ": hello\n\nevent: log\nid: 1\ndata: - {\"dt\": \"x\"}\n\ndata:a\ndata: b\ndata\n\nevent: end\nid\ndata: {}\n\n",
        );
        assert_eq!(
            events,
            vec![
                SseEvent {
                    event: "log".into(),
                    id: Some("1".into()),
                    data: "- {\"dt\": \"x\"}".into()
                },
                SseEvent {
                    event: "message".into(),
                    id: Some("1".into()),
                    data: "a\nb\n".into()
                },
                SseEvent {
                    event: "end".into(),
                    id: None,
                    data: "{}".into()
                },
            ]
        );
        // An event without data is not dispatched, but its id counts; retry is in milliseconds.
        let events = feed(&mut p, "id: 9\nevent: log\nretry: 2500\nretry: x\n\n");
        assert!(events.is_empty());
        assert_eq!(p.last_event_id(), Some("9"));
        assert_eq!(p.retry(), Some(Duration::from_millis(2500)));
        // A NUL in an id is ignored; reset drops a half-read event.
        assert!(p.line("id: a\0b").is_none());
        assert_eq!(p.last_event_id(), Some("9"));
        p.line("data: half");
        p.reset();
        assert!(p.line("").is_none());
        assert_eq!(
            feed(&mut p, "data:  two spaces\r\n\r\n")[0].data,
            " two spaces"
        );
    }

    #[test]
    fn client_requests_carry_the_token_and_map_errors() {
        let (url, heads) = fake_server(vec![
            answer(
                "201 Created",
                "application/json",
                r#"{"id": 7, "state": "queued"}"#,
            ),
            answer(
                "400 Bad Request",
                "application/json",
                r#"{"error": "job.yaml:12: actions[0].deploy.to: unknown"}"#,
            ),
            answer("200 OK", "text/yaml", "- {\"a\": 1}\n- {\"b\": 2}\n"),
        ]);
        let c = ApiClient::new(&url, Some("sekrit")).unwrap();
        let job: Value = c
            .post_body("/jobs", "application/yaml", b"job_name: smoke\n")
            .unwrap();
        assert_eq!(job["id"], 7);
        let head = heads.recv().unwrap();
        assert!(head.starts_with("POST /api/v1/jobs HTTP/1.1\r\n"), "{head}");
        assert_eq!(header(&head, "authorization"), Some("Bearer sekrit"));
        assert_eq!(header(&head, "content-type"), Some("application/yaml"));
        assert!(head.ends_with("\r\n\r\njob_name: smoke\n"), "{head}");

        let err = c
            .post_body::<Value>("/jobs", "application/yaml", b"x")
            .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "POST /api/v1/jobs: 400: job.yaml:12: actions[0].deploy.to: unknown"
        );
        heads.recv().unwrap();

        let mut lines = Vec::new();
        c.get_lines("/jobs/7/logs", |l| {
            lines.push(l.to_string());
            Ok(())
        })
        .unwrap();
        assert_eq!(lines, ["- {\"a\": 1}", "- {\"b\": 2}"]);
    }

    #[test]
    fn client_unreachable_server_is_one_line() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = format!("http://127.0.0.1:{port}");
        let c = ApiClient::new(&url, None).unwrap();
        let err = format!("{:#}", c.get_json::<Value>("/jobs").unwrap_err());
        assert!(
            err.starts_with(&format!("cannot reach the appliance at {url}: ")),
            "{err}"
        );
        assert!(!err.contains('\n'));
        let err = c
            .stream_events("/jobs/1/logs/stream")
            .with_retry(Duration::from_millis(1), Duration::from_millis(2), 3)
            .quiet()
            .next()
            .unwrap()
            .unwrap_err();
        assert!(
            format!("{err:#}").starts_with("cannot reach the appliance at "),
            "{err:#}"
        );
    }

    #[test]
    fn client_event_stream_resumes_with_last_event_id() {
        let (url, heads) = fake_server(vec![
            // Two events, then the connection drops in the middle of the third.
            stream_answer(": hi\n\nevent: log\nid: 1\ndata: one\n\nevent: log\nid: 2\ndata: two\n\nevent: log\nid: 3\ndata: thr"),
            // A failing reconnection, retried.
            answer("503 Service Unavailable", "application/json", r#"{"error": "restarting"}"#),
            stream_answer("retry: 5\nevent: log\nid: 3\ndata: three\n\nevent: end\ndata: {\"id\": 1}\n\n"),
        ]);
        let c = ApiClient::new(&url, Some("t")).unwrap();
        let stream = c
            .stream_events("/jobs/1/logs/stream")
            .with_retry(Duration::from_millis(5), Duration::from_millis(20), 5)
            .quiet();
        assert_eq!(stream.last_event_id(), None);
        let mut seen = Vec::new();
        for event in stream {
            let event = event.unwrap();
            let end = event.event == "end";
            seen.push((event.event, event.id, event.data));
            if end {
                break;
            }
        }
        let s = |e: &str, id: Option<&str>, d: &str| {
            (e.to_string(), id.map(str::to_string), d.to_string())
        };
        assert_eq!(
            seen,
            vec![
                s("log", Some("1"), "one"),
                s("log", Some("2"), "two"),
                s("log", Some("3"), "three"),
                s("end", Some("3"), "{\"id\": 1}"),
            ]
        );
        let first = heads.recv().unwrap();
        assert!(
            first.starts_with("GET /api/v1/jobs/1/logs/stream HTTP/1.1"),
            "{first}"
        );
        assert_eq!(header(&first, "last-event-id"), None);
        assert_eq!(header(&first, "accept"), Some("text/event-stream"));
        assert_eq!(header(&heads.recv().unwrap(), "last-event-id"), Some("2"));
        assert_eq!(header(&heads.recv().unwrap(), "last-event-id"), Some("2"));
    }

    #[test]
    fn client_event_stream_fails_on_client_errors_and_gives_up() {
        let (url, _heads) = fake_server(vec![answer(
            "404 Not Found",
            "application/json",
            r#"{"error": "no job 9"}"#,
        )]);
        let c = ApiClient::new(&url, None).unwrap();
        let mut stream = c.stream_events("/jobs/9/logs/stream").quiet();
        let err = stream.next().unwrap().unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "GET /api/v1/jobs/9/logs/stream: 404: no job 9"
        );
        assert!(stream.next().is_none());

        // A server that accepts and closes at once, again and again.
        let (url, _heads) = fake_server(vec![
            stream_answer(""),
            stream_answer(""),
            stream_answer(""),
        ]);
        let c = ApiClient::new(&url, None).unwrap();
        let err = c
            .stream_events("/s")
            .with_retry(Duration::from_millis(1), Duration::from_millis(1), 3)
            .quiet()
            .next()
            .unwrap()
            .unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.starts_with("GET /api/v1/s: gave up after 3 attempts: "),
            "{err}"
        );

        // The first connection is not retried.
        let (url, _heads) = fake_server(vec![answer("503 Service Unavailable", "text/plain", "")]);
        let c = ApiClient::new(&url, None).unwrap();
        let err = c.stream_events("/s").quiet().next().unwrap().unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "GET /api/v1/s: 503: Service Unavailable"
        );

        // 204 ends the stream; a JSON answer is not a stream.
        let (url, _heads) = fake_server(vec![
            answer("204 No Content", "text/plain", ""),
            answer("200 OK", "application/json", "{}"),
        ]);
        let c = ApiClient::new(&url, None).unwrap();
        assert!(c.stream_events("/s").quiet().next().is_none());
        let err = c.stream_events("/s").quiet().next().unwrap().unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "GET /api/v1/s: expected text/event-stream, got application/json"
        );
    }

    #[test]
    fn client_event_stream_splits_lone_carriage_returns() {
        let (url, _heads) = fake_server(vec![stream_answer("\u{feff}data: a\r\rdata: b\r\r\n")]);
        let c = ApiClient::new(&url, None).unwrap();
        let data: Vec<String> = c
            .stream_events("/s")
            .quiet()
            .take(2)
            .map(|e| e.unwrap().data)
            .collect();
        assert_eq!(data, ["a", "b"]);
    }

    #[test]
    fn client_closed_stdout_is_not_an_error() {
        assert!(ignore_closed_stdout(Err(StdoutClosed.into())).is_ok());
        assert!(ignore_closed_stdout(Err(anyhow!("x"))).is_err());
    }
}
