//! `bench/dashboard/run.sh`: the dashboard under 20 concurrent viewers while a job runs.
//!
//! A real lab in a private namespace (`labboot serve`, the virtual QEMU arm64 board booted into
//! the master). Then, from inside the namespace:
//! 1. First load: VIEWERS clients each load the page LOADS times (`/`, `/ui/app.js`,
//!    `/ui/style.css`, then `/api/v1/health` and `/api/v1/boards` with the token, as the page
//!    does): time to first byte, whole-page time and bytes. The peer: busybox httpd serving the
//!    same static bytes from a directory, loaded the same way in the same run (ratio printed).
//! 2. Live log: a deploying job is submitted and VIEWERS clients follow its SSE log stream
//!    from the start; every `log` event's delay is its arrival time minus the `dt` the
//!    dispatcher stamped on the line. Every viewer must receive every line.
//!
//! Environment: VIEWERS (20), LOADS (10).

use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::process::{Child, ExitCode, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use labboot_tests::appliance::{boards_ready, sample_job, ApplianceLab, SERVER_IP, TOKEN};

const BOARD: &str = "qemu-dash";
const STATIC: [&str; 3] = ["/", "/ui/app.js", "/ui/style.css"];
const PEER_PORT: u16 = 8081;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dashboard-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn env_usize(key: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(key) {
        Err(_) => Ok(default),
        Ok(v) => v
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| anyhow!("{key}={v}: not a positive number")),
    }
}

fn run() -> anyhow::Result<()> {
    let viewers = env_usize("VIEWERS", 20)?;
    let loads = env_usize("LOADS", 10)?;
    if !boards_ready() {
        bail!("needs root, QEMU, U-Boot and the lab's tools (make setup)");
    }
    let root = labboot_tests::binary::workspace_root();
    let master = labboot_tests::appliance::master(&root.join("target/tmp"))?;
    let mut lab = ApplianceLab::new("dbld", BOARD, &master)?;
    lab.start()?;
    lab.power_on()?;
    lab.wait_board(BOARD, "\"health\": \"online\"", Duration::from_secs(300))?;
    eprintln!("dashboard-load: board {BOARD} online; {viewers} viewers");

    // The peer serves the very bytes labboot serves.
    let www = tempfile::tempdir()?;
    let ns = lab.ns.name().to_string();
    let fetched = in_netns(&ns, {
        let url = lab.url();
        move || -> anyhow::Result<Vec<(String, Vec<u8>)>> {
            STATIC
                .iter()
                .map(|p| Ok((p.to_string(), get(&format!("{url}{p}"), None)?.body)))
                .collect()
        }
    })??;
    std::fs::create_dir_all(www.path().join("ui"))?;
    for (path, body) in &fetched {
        let file = if path == "/" { "/index.html" } else { path };
        std::fs::write(www.path().join(&file[1..]), body)?;
    }
    let httpd = lab
        .ns
        .command("busybox")
        .args(["httpd", "-f", "-p"])
        .arg(format!("{SERVER_IP}:{PEER_PORT}"))
        .arg("-h")
        .arg(www.path())
        .stdin(Stdio::null())
        .spawn()
        .context("busybox httpd")?;
    let _peer = Killed(httpd);
    in_netns(&ns, || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect((SERVER_IP, PEER_PORT)).is_err() {
            if Instant::now() > deadline {
                bail!("busybox httpd never listened on {SERVER_IP}:{PEER_PORT}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    })??;

    let url = lab.url();
    let peer_url = format!("http://{SERVER_IP}:{PEER_PORT}");
    let ours = in_netns(&ns, {
        let url = url.clone();
        move || first_load(&url, true, viewers, loads)
    })??;
    let peer = in_netns(&ns, move || first_load(&peer_url, false, viewers, loads))??;

    // The live log of a running job.
    let job = lab.work.path().join("bench-job.yaml");
    std::fs::write(&job, sample_job(&master))?;
    let out = lab.cli(&["job", "submit", job.to_str().unwrap_or_default(), "--json"]);
    if !out.status.success() {
        bail!("job submit: {}", String::from_utf8_lossy(&out.stderr));
    }
    let submitted: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let id = submitted["id"].as_i64().context("job id")?;
    let streams = in_netns(&ns, {
        let url = url.clone();
        move || follow(&url, id, viewers)
    })??;
    let done = lab.wait_job(id, "finished", Duration::from_secs(600));
    let (_, all) = lab.curl(&[
        "-H",
        &format!("Authorization: Bearer {TOKEN}"),
        &format!("{url}/api/v1/jobs/{id}/logs"),
    ]);
    let lines = all.lines().count();

    report(&ours, &peer, viewers, loads);
    let mut delays: Vec<f64> = streams.iter().flat_map(|s| s.delays.clone()).collect();
    delays.sort_by(f64::total_cmp);
    let got: Vec<usize> = streams.iter().map(|s| s.delays.len()).collect();
    let first_event = streams.iter().map(|s| s.ttfb).fold(0.0, f64::max);
    println!(
        "live log: job {id} ({}), {lines} lines; {viewers} viewers on the SSE stream",
        done["health"].as_str().unwrap_or("?")
    );
    println!(
        "  lines received per viewer: min {} max {} (of {lines})",
        got.iter().min().unwrap_or(&0),
        got.iter().max().unwrap_or(&0)
    );
    println!(
        "  event delay (arrival - dt): p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  ({} events)",
        pct(&delays, 0.50),
        pct(&delays, 0.99),
        delays.last().copied().unwrap_or(0.0),
        delays.len()
    );
    println!("  stream time to first byte: max {first_event:.1} ms");
    if got.iter().any(|&n| n != lines) {
        bail!("a viewer missed lines: {got:?} of {lines}");
    }
    Ok(())
}

/// A child process killed (and reaped) when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `f` on a thread inside network namespace `ns` (sockets it opens live there).
fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    let path = format!("/run/netns/{ns}");
    let file = std::fs::File::open(&path).with_context(|| path.clone())?;
    std::thread::spawn(move || {
        // SAFETY: setns on a descriptor we hold open; it changes only this thread's namespace.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        if r != 0 {
            return Err(anyhow!("setns {path}: {}", std::io::Error::last_os_error()));
        }
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow!("the namespace thread panicked"))?
}

struct Got {
    ttfb: Duration,
    body: Vec<u8>,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn get(url: &str, token: Option<&str>) -> anyhow::Result<Got> {
    let t = Instant::now();
    let mut req = agent().get(url);
    if let Some(tok) = token {
        req = req.header("Authorization", &format!("Bearer {tok}"));
    }
    let mut resp = req.call().with_context(|| url.to_string())?;
    let ttfb = t.elapsed();
    let mut body = Vec::new();
    resp.body_mut()
        .as_reader()
        .read_to_end(&mut body)
        .with_context(|| url.to_string())?;
    Ok(Got { ttfb, body })
}

#[derive(Default)]
struct Loads {
    ttfb_ms: Vec<f64>,
    page_ms: Vec<f64>,
    bytes: usize,
}

/// Every viewer loads the page `loads` times at once with the others.
fn first_load(url: &str, api: bool, viewers: usize, loads: usize) -> anyhow::Result<Loads> {
    let start = Arc::new(Barrier::new(viewers));
    let handles: Vec<_> = (0..viewers)
        .map(|_| {
            let url = url.to_string();
            let start = Arc::clone(&start);
            std::thread::spawn(move || -> anyhow::Result<Loads> {
                let mut l = Loads::default();
                start.wait();
                for _ in 0..loads {
                    let t = Instant::now();
                    let mut paths: Vec<(&str, Option<&str>)> =
                        STATIC.iter().map(|p| (*p, None)).collect();
                    if api {
                        paths.push(("/api/v1/health", Some(TOKEN)));
                        paths.push(("/api/v1/boards", Some(TOKEN)));
                    }
                    for (p, tok) in paths {
                        let g = get(&format!("{url}{p}"), tok)?;
                        if STATIC.contains(&p) {
                            l.ttfb_ms.push(g.ttfb.as_secs_f64() * 1e3);
                        }
                        l.bytes += g.body.len();
                    }
                    l.page_ms.push(t.elapsed().as_secs_f64() * 1e3);
                }
                Ok(l)
            })
        })
        .collect();
    let mut all = Loads::default();
    for h in handles {
        let l = h.join().map_err(|_| anyhow!("a viewer panicked"))??;
        all.ttfb_ms.extend(l.ttfb_ms);
        all.page_ms.extend(l.page_ms);
        all.bytes += l.bytes;
    }
    all.ttfb_ms.sort_by(f64::total_cmp);
    all.page_ms.sort_by(f64::total_cmp);
    Ok(all)
}

struct Stream {
    ttfb: f64,
    delays: Vec<f64>,
}

/// `viewers` clients follow job `id`'s log stream to its `end` event.
fn follow(url: &str, id: i64, viewers: usize) -> anyhow::Result<Vec<Stream>> {
    let handles: Vec<_> = (0..viewers)
        .map(|_| {
            let url = format!("{url}/api/v1/jobs/{id}/logs/stream");
            std::thread::spawn(move || -> anyhow::Result<Stream> {
                let t = Instant::now();
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .timeout_global(Some(Duration::from_secs(900)))
                    .build()
                    .into();
                let mut resp = agent
                    .get(&url)
                    .header("Authorization", &format!("Bearer {TOKEN}"))
                    .call()
                    .with_context(|| url.clone())?;
                let ttfb = t.elapsed().as_secs_f64() * 1e3;
                let reader = BufReader::new(resp.body_mut().as_reader());
                let mut delays = Vec::new();
                let mut event = String::new();
                for line in reader.lines() {
                    let line = line.with_context(|| url.clone())?;
                    if let Some(e) = line.strip_prefix("event:") {
                        event = e.trim().to_string();
                    } else if let Some(data) = line.strip_prefix("data:") {
                        if event == "end" {
                            return Ok(Stream { ttfb, delays });
                        }
                        if event == "log" {
                            let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
                            let dt = stamp(data).with_context(|| format!("no dt in {data}"))?;
                            delays.push((now.as_secs_f64() - dt) * 1e3);
                        }
                    }
                }
                bail!("{url}: the stream ended without an end event")
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().map_err(|_| anyhow!("a viewer panicked"))?)
        .collect()
}

/// The `dt` of a `logs.yaml` line (`- {"dt": "2026-12-04T10:00:00.123456", …}`, UTC) in
/// seconds since the epoch.
fn stamp(line: &str) -> Option<f64> {
    let at = line.find("\"dt\": \"")? + 7;
    let s = line.get(at..at + 26)?;
    let num = |a: usize, b: usize| s.get(a..b)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, mi, sec, us) = (num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 26)?);
    // Days from the civil date (proleptic Gregorian), after H. Hinnant's algorithm.
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + mi * 60 + sec) as f64 + us as f64 / 1e6)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn report(ours: &Loads, peer: &Loads, viewers: usize, loads: usize) {
    let page = |l: &Loads| l.bytes / (viewers * loads);
    println!("first load: {viewers} viewers x {loads} loads at once");
    println!(
        "  {:<14} {:>10} {:>10} {:>12} {:>12} {:>10}",
        "server", "ttfb p50", "ttfb p99", "page p50", "page p99", "bytes/page"
    );
    for (name, l) in [("labboot", ours), ("busybox httpd", peer)] {
        println!(
            "  {name:<14} {:>7.2} ms {:>7.2} ms {:>9.2} ms {:>9.2} ms {:>10}",
            pct(&l.ttfb_ms, 0.5),
            pct(&l.ttfb_ms, 0.99),
            pct(&l.page_ms, 0.5),
            pct(&l.page_ms, 0.99),
            page(l)
        );
    }
    println!(
        "  ratio labboot/busybox (static files' ttfb p99): {:.2}; labboot's page adds /api/v1/health and /api/v1/boards",
        pct(&ours.ttfb_ms, 0.99) / pct(&peer.ttfb_ms, 0.99).max(1e-9)
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn stamps_read_as_utc_seconds() {
        let s = super::stamp(r#"- {"dt": "2026-12-04T10:00:00.500000", "lvl": "info"}"#);
        assert_eq!(s, Some(1_796_378_400.5));
        assert_eq!(
            super::stamp(r#"- {"dt": "1970-01-01T00:00:01.000000"}"#),
            Some(1.0)
        );
        assert_eq!(super::stamp("no stamp"), None);
    }

    #[test]
    fn percentiles_pick_ranks() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(super::pct(&v, 0.5), 50.0);
        assert_eq!(super::pct(&v, 0.99), 99.0);
        assert_eq!(super::pct(&[], 0.99), 0.0);
    }
}
