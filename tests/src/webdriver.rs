//! A small W3C WebDriver client for browser tests: starts `chromedriver`, opens a headless
//! Chromium session and drives it (navigate, find by CSS, click, type, read text, run scripts,
//! wait until something shows).
//!
//! The browser can live inside a test's network namespace, to reach a server that listens on an
//! address only that namespace has: `chromedriver` then runs there (`ip netns exec`) on its
//! 127.0.0.1, which the test process cannot reach from the host's namespace. The client
//! therefore talks to it from one thread of its own that has joined the namespace (`setns`
//! applies to the calling thread only); the test hands that thread each request over a
//! channel. No address, route or veth is added, and nothing listens outside the namespace.
//!
//! Dropping the [`WebDriver`] ends the session (Chromium quits) and kills `chromedriver`'s
//! process group.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};

/// The key under which W3C WebDriver returns an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// Largest answer read (scripts may return a whole file as base64).
const MAX_ANSWER: u64 = 256 << 20;

/// An element of the current page, as WebDriver references it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element(pub String);

/// What a browser session is started with.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Network namespace (as `ip netns` names it) to run the browser in; `None`: the host's.
    pub netns: Option<String>,
    /// Directory for Chromium's profile, downloads and `chromedriver.log`; required.
    pub dir: PathBuf,
}

/// One HTTP exchange handed to the client thread.
struct Exchange {
    method: &'static str,
    url: String,
    body: Option<String>,
    reply: mpsc::Sender<anyhow::Result<(u16, String)>>,
}

/// The thread that makes the HTTP requests (inside the namespace when there is one).
struct Client {
    tx: Option<mpsc::Sender<Exchange>>,
    thread: Option<JoinHandle<()>>,
}

/// Moves the calling thread into network namespace `name`.
fn enter_netns(name: &str) -> anyhow::Result<()> {
    let path = Path::new("/run/netns").join(name);
    let f = File::open(&path).with_context(|| format!("open {}", path.display()))?;
    // SAFETY: setns on a namespace file descriptor this function owns; CLONE_NEWNET changes the
    // calling thread's network namespace only.
    let r = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) };
    if r != 0 {
        bail!(
            "setns {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

fn exchange(agent: &ureq::Agent, ex: &Exchange) -> anyhow::Result<(u16, String)> {
    let resp = match (ex.method, &ex.body) {
        ("GET", _) => agent.get(&ex.url).call(),
        ("DELETE", _) => agent.delete(&ex.url).call(),
        (_, Some(body)) => agent
            .post(&ex.url)
            .content_type("application/json")
            .send(body.as_bytes()),
        (_, None) => agent.post(&ex.url).send_empty(),
    };
    let mut resp = resp.with_context(|| format!("{} {}", ex.method, ex.url))?;
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER)
        .read_to_string()
        .with_context(|| format!("{} {}: read the answer", ex.method, ex.url))?;
    Ok((status, text))
}

impl Client {
    /// Starts the client thread (in `netns` if given) and returns it with a TCP port that is
    /// free on that thread's 127.0.0.1.
    fn start(netns: Option<&str>) -> anyhow::Result<(Client, u16)> {
        let (tx, rx) = mpsc::channel::<Exchange>();
        let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<u16>>();
        let netns = netns.map(str::to_string);
        let thread = std::thread::Builder::new()
            .name("webdriver-client".into())
            .spawn(move || {
                let port = (|| {
                    if let Some(ns) = &netns {
                        enter_netns(ns)?;
                    }
                    let l =
                        std::net::TcpListener::bind("127.0.0.1:0").context("find a free port")?;
                    Ok(l.local_addr()?.port())
                })();
                let ok = port.is_ok();
                let _ = ready_tx.send(port);
                if !ok {
                    return;
                }
                let config = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_connect(Some(Duration::from_secs(5)))
                    .timeout_global(Some(Duration::from_secs(300)))
                    .build();
                let agent = ureq::Agent::new_with_config(config);
                for ex in rx {
                    let _ = ex.reply.send(exchange(&agent, &ex));
                }
            })
            .context("spawn the WebDriver client thread")?;
        let port = ready_rx
            .recv()
            .map_err(|_| anyhow!("the WebDriver client thread died"))??;
        Ok((
            Client {
                tx: Some(tx),
                thread: Some(thread),
            },
            port,
        ))
    }

    fn call(
        &self,
        method: &'static str,
        url: String,
        body: Option<String>,
    ) -> anyhow::Result<(u16, String)> {
        let (reply, answer) = mpsc::channel();
        self.tx
            .as_ref()
            .context("client stopped")?
            .send(Exchange {
                method,
                url,
                body,
                reply,
            })
            .map_err(|_| anyhow!("the WebDriver client thread died"))?;
        answer
            .recv()
            .map_err(|_| anyhow!("the WebDriver client thread died"))?
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A headless Chromium session through `chromedriver`; ended and killed on drop.
pub struct WebDriver {
    client: Client,
    base: String,
    session: Option<String>,
    driver: Child,
    log: PathBuf,
}

impl WebDriver {
    /// Starts `chromedriver` on a free port (inside `options.netns` if set), waits until it is
    /// ready and opens a session with headless Chromium (`--headless=new --no-sandbox
    /// --disable-gpu`), its profile and downloads in `options.dir`.
    pub fn start(options: &Options) -> anyhow::Result<WebDriver> {
        let (client, port) = Client::start(options.netns.as_deref())?;
        std::fs::create_dir_all(&options.dir)?;
        let profile = options.dir.join("chromium-profile");
        let log = options.dir.join("chromedriver.log");
        let out = File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let mut cmd = match &options.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "chromedriver"]);
                c
            }
            None => Command::new("chromedriver"),
        };
        cmd.arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            // Its own process group, so that drop ends chromedriver and the browsers it started.
            .process_group(0);
        let driver = cmd.spawn().context("start chromedriver")?;
        let mut wd = WebDriver {
            client,
            base: format!("http://127.0.0.1:{port}"),
            session: None,
            driver,
            log,
        };
        wd.wait_ready(Duration::from_secs(30))?;
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "timeouts": {"script": 120_000, "pageLoad": 60_000, "implicit": 0},
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1024",
                         // Nothing but the page under test goes on the network.
                         "--disable-background-networking", "--disable-component-update",
                         "--disable-sync", "--no-first-run",
                         // The profile goes with the test's directory, not to /tmp for good.
                         format!("--user-data-dir={}", profile.display())],
                "prefs": {
                    "download.default_directory": options.dir.display().to_string(),
                    "download.prompt_for_download": false,
                },
            },
        }}});
        let v = wd.request("POST", "/session", Some(caps)).map_err(|e| {
            anyhow!(
                "{e:#}\nchromedriver.log:\n{}",
                std::fs::read_to_string(&wd.log).unwrap_or_default()
            )
        })?;
        let id = v["sessionId"]
            .as_str()
            .with_context(|| format!("new session: no sessionId in {v}"))?;
        wd.session = Some(id.to_string());
        // Headless Chromium ignores the download preference; DevTools sets it.
        wd.cdp(
            "Browser.setDownloadBehavior",
            json!({"behavior": "allow", "downloadPath": options.dir.display().to_string()}),
        )?;
        Ok(wd)
    }

    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(v) = self.request("GET", "/status", None) {
                if v["ready"] == true {
                    return Ok(());
                }
            }
            if let Some(status) = self.driver.try_wait()? {
                bail!(
                    "chromedriver exited ({status}): {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!("chromedriver did not get ready within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `METHOD PATH` against chromedriver: the answer's `value`, or its error as one line.
    fn request(
        &self,
        method: &'static str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let (status, text) = self.client.call(
            method,
            format!("{}{path}", self.base),
            body.map(|b| b.to_string()),
        )?;
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("{method} {path}: not JSON ({status}): {text:.200}"))?;
        let value = v.get("value").cloned().unwrap_or(Value::Null);
        if status >= 400 {
            bail!(
                "{method} {path}: {}: {}",
                value["error"].as_str().unwrap_or("error"),
                value["message"]
                    .as_str()
                    .unwrap_or("")
                    .lines()
                    .next()
                    .unwrap_or("")
            );
        }
        Ok(value)
    }

    fn session_path(&self, rest: &str) -> anyhow::Result<String> {
        let id = self.session.as_deref().context("no session")?;
        Ok(format!("/session/{id}{rest}"))
    }

    fn command(
        &self,
        method: &'static str,
        rest: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let path = self.session_path(rest)?;
        self.request(method, &path, body)
    }

    /// Runs a Chrome DevTools Protocol command (chromedriver's `goog/cdp/execute`).
    pub fn cdp(&self, cmd: &str, params: Value) -> anyhow::Result<Value> {
        self.command(
            "POST",
            "/goog/cdp/execute",
            Some(json!({ "cmd": cmd, "params": params })),
        )
    }

    /// Loads `url` and waits for the page's load event.
    pub fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.command("POST", "/url", Some(json!({ "url": url })))?;
        Ok(())
    }

    /// The current page's URL.
    pub fn url(&self) -> anyhow::Result<String> {
        Ok(self
            .command("GET", "/url", None)?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// The first element matching a CSS selector (an error if there is none).
    pub fn find(&self, css: &str) -> anyhow::Result<Element> {
        let v = self.command(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        )?;
        element(&v).with_context(|| format!("find {css}"))
    }

    /// Every element matching a CSS selector.
    pub fn find_all(&self, css: &str) -> anyhow::Result<Vec<Element>> {
        let v = self.command(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        )?;
        v.as_array()
            .context("elements: not a list")?
            .iter()
            .map(element)
            .collect()
    }

    /// Clicks an element.
    pub fn click(&self, e: &Element) -> anyhow::Result<()> {
        self.command("POST", &format!("/element/{}/click", e.0), Some(json!({})))?;
        Ok(())
    }

    /// Types `text` into an element (`\n` is the Enter key).
    pub fn send_keys(&self, e: &Element, text: &str) -> anyhow::Result<()> {
        self.command(
            "POST",
            &format!("/element/{}/value", e.0),
            Some(json!({ "text": text })),
        )?;
        Ok(())
    }

    /// Empties an input or a textarea.
    pub fn clear(&self, e: &Element) -> anyhow::Result<()> {
        self.command("POST", &format!("/element/{}/clear", e.0), Some(json!({})))?;
        Ok(())
    }

    /// An element's rendered text.
    pub fn text(&self, e: &Element) -> anyhow::Result<String> {
        Ok(self
            .command("GET", &format!("/element/{}/text", e.0), None)?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// An element's attribute or property (`value`, `href`, …), if set.
    pub fn property(&self, e: &Element, name: &str) -> anyhow::Result<Option<String>> {
        let v = self.command("GET", &format!("/element/{}/property/{name}", e.0), None)?;
        Ok(match v {
            Value::Null => None,
            Value::String(s) => Some(s),
            other => Some(other.to_string()),
        })
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) and returns its value.
    pub fn execute(&self, script: &str, args: &[Value]) -> anyhow::Result<Value> {
        self.command(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// Runs an asynchronous `script`, which calls `arguments[arguments.length - 1]` with its
    /// result, and returns that result.
    pub fn execute_async(&self, script: &str, args: &[Value]) -> anyhow::Result<Value> {
        self.command(
            "POST",
            "/execute/async",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// The text of the first element matching `css`.
    pub fn text_of(&self, css: &str) -> anyhow::Result<String> {
        self.text(&self.find(css)?)
    }

    /// Clicks the first element matching `css`.
    pub fn click_css(&self, css: &str) -> anyhow::Result<()> {
        self.click(&self.find(css)?)
    }

    /// Empties the field matching `css` and types `text` into it.
    pub fn type_into(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let e = self.find(css)?;
        self.clear(&e)?;
        self.send_keys(&e, text)
    }

    /// Calls `check` every 200 ms until it returns `Ok(Some(value))`; errors (an element not
    /// there yet, a stale one) count as "not yet". After `timeout`, fails naming `what` and the
    /// last error.
    pub fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&WebDriver) -> anyhow::Result<Option<T>>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("never true");
        loop {
            match check(self) {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => {}
                Err(e) => last = format!("{e:#}"),
            }
            if Instant::now() > deadline {
                bail!("waited {timeout:?} for {what}: {last}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until the text of the element matching `css` contains `needle`; returns the text.
    pub fn wait_text(&self, css: &str, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        let mut seen = String::new();
        self.wait_until(&format!("{css} to show {needle:?}"), timeout, |d| {
            let t = d.text_of(css)?;
            if t.contains(needle) {
                return Ok(Some(t));
            }
            seen = t;
            Ok(None)
        })
        .with_context(|| format!("last text of {css}: {seen:.2000}"))
    }

    /// The page's console messages since the last call, one per line (for failure messages).
    pub fn console_log(&self) -> String {
        match self.command("POST", "/se/log", Some(json!({"type": "browser"}))) {
            Ok(Value::Array(entries)) => entries
                .iter()
                .map(|e| {
                    format!(
                        "{} {}",
                        e["level"].as_str().unwrap_or("?"),
                        e["message"].as_str().unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"),
            Ok(other) => format!("(unexpected console log answer: {other:.200})"),
            Err(e) => format!("(no console log: {e:#})"),
        }
    }

    /// chromedriver's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn element(v: &Value) -> anyhow::Result<Element> {
    v.get(ELEMENT_KEY)
        .and_then(Value::as_str)
        .map(|s| Element(s.to_string()))
        .with_context(|| format!("not an element reference: {v}"))
}

impl Drop for WebDriver {
    fn drop(&mut self) {
        if self.session.is_some() {
            if let Ok(path) = self.session_path("") {
                let _ = self.request("DELETE", &path, None);
            }
        }
        // The group chromedriver leads (its own, see `start`): it and what it started.
        let pid = self.driver.id() as libc::pid_t;
        // SAFETY: kill(2) on the process group of a child this value spawned and still owns.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = self.driver.wait();
    }
}
