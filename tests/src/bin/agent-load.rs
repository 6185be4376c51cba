//! `agent-load`: simulated board agents against one `labboot serve` (`bench/appliance/run.sh`).
//!
//! Usage: `agent-load --url URL --agents N --seconds S [--interval S]`
//!
//! Every agent is a thread with its own identity (board `bench-NNNN`, MAC, card token) doing
//! what the master image's `labboot-agent` does (`appliance/API.md`, Agent): check in, then
//! long-poll `GET /api/v1/agent/poll` in a loop, checking in again once its last check-in is
//! older than the interval. Like the real agent, every request is a fresh TCP connection.
//! Starts are staggered over the first 2 s. When the time is up the figures are printed and
//! the process exits: requests still waiting then (held polls) are reported as in flight, not
//! counted. Exit status 1 if any request failed (transport error or a non-2xx answer) or a
//! check-in came back `pending`.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a check-in may take (the real agent gives it 20 s).
const CHECKIN_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a poll may take (the real agent gives it 40 s; the server holds it ≤ 30 s).
const POLL_TIMEOUT: Duration = Duration::from_secs(40);
/// Starts are spread over this.
const STAGGER: Duration = Duration::from_secs(2);
/// Distinct error messages kept.
const KEEP_MESSAGES: usize = 5;
/// Stack of an agent's thread.
const STACK: usize = 256 << 10;

struct Args {
    url: String,
    agents: usize,
    seconds: u64,
    interval: u64,
}

fn usage() -> String {
    "usage: agent-load --url URL --agents N --seconds S [--interval S]".to_string()
}

fn parse_args() -> Result<Args, String> {
    let mut url = None;
    let mut agents = None;
    let mut seconds = None;
    let mut interval = 30;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| format!("{name}: a value is needed"))
        };
        let number = |name: &str, v: String| -> Result<u64, String> {
            v.parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{name}: '{v}' is not a positive number"))
        };
        match a.as_str() {
            "--url" => url = Some(value("--url")?.trim_end_matches('/').to_string()),
            "--agents" => agents = Some(number("--agents", value("--agents")?)? as usize),
            "--seconds" => seconds = Some(number("--seconds", value("--seconds")?)?),
            "--interval" => interval = number("--interval", value("--interval")?)?,
            "-h" | "--help" => return Err(usage()),
            other => return Err(format!("unknown argument '{other}'\n{}", usage())),
        }
    }
    match (url, agents, seconds) {
        (Some(url), Some(agents), Some(seconds)) => Ok(Args {
            url,
            agents,
            seconds,
            interval,
        }),
        _ => Err(usage()),
    }
}

/// What the agents measured.
#[derive(Default)]
struct Stats {
    checkin_ok: u64,
    checkin_pending: u64,
    checkin_errors: u64,
    poll_held: u64,
    poll_work: u64,
    poll_errors: u64,
    /// Distinct error messages (the first few) and how often each came.
    messages: BTreeMap<String, u64>,
    /// Seconds, whole request (connect, send, answer read).
    checkin_lat: Vec<f64>,
    /// The same, of each board's first check-in (the appliance records a new board)…
    first_checkin_lat: Vec<f64>,
    /// … and of the later ones.
    again_checkin_lat: Vec<f64>,
    /// Polls answered 204 (held until the server's poll_seconds).
    held_lat: Vec<f64>,
    /// Polls answered 200 (work handed out before the hold ended).
    work_lat: Vec<f64>,
}

impl Stats {
    fn error(&mut self, what: &str, message: String) {
        let key = format!("{what}: {message}");
        if let Some(n) = self.messages.get_mut(&key) {
            *n += 1;
        } else if self.messages.len() < KEEP_MESSAGES {
            self.messages.insert(key, 1);
        }
    }
}

struct Shared {
    stats: Mutex<Stats>,
    checkins_in_flight: AtomicU64,
    polls_in_flight: AtomicU64,
    agents_started: AtomicU64,
}

impl Shared {
    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One simulated board.
struct Board {
    id: String,
    token: String,
    checkin_body: String,
    poll_url: String,
    checkin_url: String,
}

impl Board {
    fn new(url: &str, n: usize) -> Board {
        let id = format!("bench-{n:04}");
        let mac = format!(
            "02:be:{:02x}:{:02x}:{:02x}:{:02x}",
            (n >> 24) & 0xff,
            (n >> 16) & 0xff,
            (n >> 8) & 0xff,
            n & 0xff
        );
        let address = format!(
            "10.{}.{}.{}/16",
            200 + (n >> 16) % 50,
            (n >> 8) & 0xff,
            n & 0xff
        );
        let checkin_body = serde_json::json!({
            "board": id,
            "mac": mac,
            "macs": [mac],
            "addresses": [address],
            "kernel": "6.1.0-bench-arm64",
            "cpus": 4,
            "memory_kb": 1_000_000,
            "root": "nbd",
            "uptime": "12.3",
        })
        .to_string();
        Board {
            poll_url: format!("{url}/api/v1/agent/poll?board={id}&mac={mac}"),
            checkin_url: format!("{url}/api/v1/agent/checkin"),
            token: format!("Bearer bench-card-token-{n:04}"),
            id,
            checkin_body,
        }
    }
}

/// An answer: its status and body, or the transport error.
fn answer(
    r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<(u16, String), String> {
    let mut resp = r.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("HTTP {status}, reading the body: {e}"))?;
    Ok((status, body))
}

fn one_line(s: &str) -> String {
    let s: String = s.trim().chars().take(160).collect();
    s.replace('\n', " ")
}

/// Sleeps `d`, but not past `deadline`; false if the deadline came.
fn sleep_until_or(deadline: Instant, d: Duration) -> bool {
    let now = Instant::now();
    if now >= deadline {
        return false;
    }
    std::thread::sleep(d.min(deadline - now));
    Instant::now() < deadline
}

/// One check-in; true if the board is in.
fn checkin(agent: &ureq::Agent, b: &Board, first: bool, shared: &Shared) -> bool {
    shared.checkins_in_flight.fetch_add(1, Ordering::SeqCst);
    let t = Instant::now();
    let r = agent
        .post(&b.checkin_url)
        .config()
        .timeout_global(Some(CHECKIN_TIMEOUT))
        .build()
        .header("Authorization", &b.token)
        .content_type("application/json")
        .send(b.checkin_body.as_bytes());
    let r = answer(r);
    let took = t.elapsed().as_secs_f64();
    shared.checkins_in_flight.fetch_sub(1, Ordering::SeqCst);
    let mut s = shared.stats();
    match r {
        Ok((200, body)) if body.contains("\"ok\"") => {
            s.checkin_ok += 1;
            s.checkin_lat.push(took);
            if first {
                s.first_checkin_lat.push(took);
            } else {
                s.again_checkin_lat.push(took);
            }
            true
        }
        Ok((200, body)) if body.contains("\"pending\"") => {
            s.checkin_pending += 1;
            s.checkin_lat.push(took);
            s.error(
                "check-in",
                format!("{}: pending (accept_unknown is off?)", b.id),
            );
            false
        }
        Ok((status, body)) => {
            s.checkin_errors += 1;
            s.error("check-in", format!("HTTP {status} {}", one_line(&body)));
            false
        }
        Err(e) => {
            s.checkin_errors += 1;
            s.error("check-in", e);
            false
        }
    }
}

/// One poll; true if it came back (204 or work), false on a failure.
fn poll(agent: &ureq::Agent, b: &Board, shared: &Shared) -> bool {
    shared.polls_in_flight.fetch_add(1, Ordering::SeqCst);
    let t = Instant::now();
    let r = agent
        .get(&b.poll_url)
        .config()
        .timeout_global(Some(POLL_TIMEOUT))
        .build()
        .header("Authorization", &b.token)
        .call();
    let r = answer(r);
    let took = t.elapsed().as_secs_f64();
    shared.polls_in_flight.fetch_sub(1, Ordering::SeqCst);
    let mut s = shared.stats();
    match r {
        Ok((204, _)) => {
            s.poll_held += 1;
            s.held_lat.push(took);
            true
        }
        Ok((200, _)) => {
            // Work for a simulated board: nobody queues any in the bench; counted, not done.
            s.poll_work += 1;
            s.work_lat.push(took);
            true
        }
        Ok((status, body)) => {
            s.poll_errors += 1;
            s.error("poll", format!("HTTP {status} {}", one_line(&body)));
            false
        }
        Err(e) => {
            s.poll_errors += 1;
            s.error("poll", e);
            false
        }
    }
}

/// An agent's life: check in, poll, check in again every `interval`, until `deadline`.
fn run_agent(
    agent: ureq::Agent,
    b: Board,
    start: Instant,
    deadline: Instant,
    interval: Duration,
    shared: Arc<Shared>,
) {
    let now = Instant::now();
    if start > now {
        std::thread::sleep(start - now);
    }
    shared.agents_started.fetch_add(1, Ordering::SeqCst);
    let mut first = true;
    while Instant::now() < deadline {
        let ok = checkin(&agent, &b, first, &shared);
        first = false;
        if !ok {
            // The real agent sleeps its interval and checks in again.
            if !sleep_until_or(deadline, interval) {
                return;
            }
            continue;
        }
        let last = Instant::now();
        while Instant::now() < deadline && last.elapsed() < interval {
            if !poll(&agent, &b, &shared) && !sleep_until_or(deadline, interval) {
                return;
            }
        }
    }
}

/// Nearest-rank percentile of sorted `v`.
fn pct(v: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn latency_row(name: &str, v: &mut [f64], scale: f64, unit: &str) {
    if v.is_empty() {
        println!(
            "  {name:<22} {:>6} {:>9} {:>9} {:>9} {:>9}",
            0, "-", "-", "-", "-"
        );
        return;
    }
    v.sort_by(f64::total_cmp);
    let digits = if unit == "s" { 3 } else { 1 };
    let f = |x: f64| format!("{:.*}", digits, x * scale);
    println!(
        "  {name:<22} {:>6} {:>9} {:>9} {:>9} {:>9}  {unit}",
        v.len(),
        f(v[0]),
        f(pct(v, 50.0)),
        f(pct(v, 99.0)),
        f(v[v.len() - 1])
    );
}

fn cpu_seconds() -> (f64, f64) {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (s(ru.ru_utime), s(ru.ru_stime))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("agent-load: {e}");
            return ExitCode::from(2);
        }
    };
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        // A fresh connection per request, like the board's agent (HTTP/1.0, busybox).
        .max_idle_connections(0)
        .max_idle_connections_per_host(0)
        .timeout_connect(Some(Duration::from_secs(10)))
        .user_agent("labboot-agent-load")
        .build();
    let agent = ureq::Agent::new_with_config(config);
    let shared = Arc::new(Shared {
        stats: Mutex::new(Stats::default()),
        checkins_in_flight: AtomicU64::new(0),
        polls_in_flight: AtomicU64::new(0),
        agents_started: AtomicU64::new(0),
    });
    let interval = Duration::from_secs(args.interval);
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(args.seconds);
    let mut spawn_errors = 0;
    for n in 1..=args.agents {
        let start = t0 + STAGGER.mul_f64((n - 1) as f64 / args.agents as f64);
        let (agent, shared, b) = (agent.clone(), Arc::clone(&shared), Board::new(&args.url, n));
        let r = std::thread::Builder::new()
            .name(b.id.clone())
            .stack_size(STACK)
            .spawn(move || run_agent(agent, b, start, deadline, interval, shared));
        if let Err(e) = r {
            spawn_errors += 1;
            if spawn_errors == 1 {
                eprintln!("agent-load: cannot start agent {n}: {e}");
            }
        }
    }
    // The agents' threads are not joined: at the deadline the figures are what has finished.
    let now = Instant::now();
    if deadline > now {
        std::thread::sleep(deadline - now);
    }
    let wall = t0.elapsed().as_secs_f64();
    let (checkins_open, polls_open) = (
        shared.checkins_in_flight.load(Ordering::SeqCst),
        shared.polls_in_flight.load(Ordering::SeqCst),
    );
    let started = shared.agents_started.load(Ordering::SeqCst);
    let (user, sys) = cpu_seconds();
    let mut s = shared.stats();
    let errors = s.checkin_errors + s.poll_errors + s.checkin_pending + spawn_errors;
    let total = s.checkin_ok
        + s.checkin_pending
        + s.checkin_errors
        + s.poll_held
        + s.poll_work
        + s.poll_errors;

    println!(
        "agent-load: {} agents ({started} started) against {} for {wall:.1} s, check-in interval {} s",
        args.agents, args.url, args.interval
    );
    println!();
    println!("  {:<38} {:>8}", "requests (finished)", "count");
    println!("  {:<38} {:>8}", "check-in 200 ok", s.checkin_ok);
    println!("  {:<38} {:>8}", "check-in 200 pending", s.checkin_pending);
    println!("  {:<38} {:>8}", "check-in failed", s.checkin_errors);
    println!("  {:<38} {:>8}", "poll 204 (held, no work)", s.poll_held);
    println!("  {:<38} {:>8}", "poll 200 (work)", s.poll_work);
    println!("  {:<38} {:>8}", "poll failed", s.poll_errors);
    println!("  {:<38} {:>8}", "total", total);
    println!(
        "  {:<38} {:>8}",
        "in flight at the end: check-ins+polls",
        format!("{checkins_open}+{polls_open}")
    );
    println!();
    println!(
        "  {:<22} {:>6} {:>9} {:>9} {:>9} {:>9}",
        "latency", "n", "min", "p50", "p99", "max"
    );
    latency_row("check-in", &mut s.checkin_lat, 1000.0, "ms");
    latency_row(
        "  first (new board)",
        &mut s.first_checkin_lat,
        1000.0,
        "ms",
    );
    latency_row(
        "  again (known board)",
        &mut s.again_checkin_lat,
        1000.0,
        "ms",
    );
    latency_row("poll with work (200)", &mut s.work_lat, 1000.0, "ms");
    latency_row("poll held (204)", &mut s.held_lat, 1.0, "s");
    println!();
    println!(
        "  requests/s (finished): {:.1}; client CPU: {user:.2} s user, {sys:.2} s system",
        total as f64 / wall
    );
    println!("  errors: {errors}");
    for (m, n) in &s.messages {
        println!("    {n} × {m}");
    }
    if spawn_errors > 0 {
        println!("    {spawn_errors} × agent thread could not start");
    }
    // Exit without joining the agents still waiting in a poll.
    let code = if errors == 0 { 0 } else { 1 };
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}
