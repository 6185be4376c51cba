//! `GET /metrics`: the appliance for Prometheus, in its text exposition format (version 0.0.4).
//!
//! Served on the HTTP listener outside `/api/v1` and without a token, like `/api/v1/health`.
//! The servers' counters come from [`netboot::metrics::METRICS`] (bumped by the servers
//! themselves); jobs are counted in the store at each scrape (one `GROUP BY` query), boards
//! from one read of the board list (state, health and power); job durations are observed by
//! the runner when a job finishes ([`job_finished`]).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `labboot_dhcp_offers_total`, `labboot_dhcp_acks_total`, `labboot_dhcp_naks_total`, `labboot_dhcp_pool_exhausted_total` | counter | |
//! | `labboot_dhcp_leases` | gauge | |
//! | `labboot_tftp_transfers_total` | counter | `outcome` (`ok`, `error`) |
//! | `labboot_tftp_errors_total` (requests refused) | counter | |
//! | `labboot_tftp_sent_bytes_total`, `labboot_tftp_received_bytes_total` | counter | |
//! | `labboot_tftp_retransmitted_blocks_total` | counter | |
//! | `labboot_{nbd,nfs}_connections_open` | gauge | |
//! | `labboot_{nbd,nfs}_connections_accepted_total` | counter | |
//! | `labboot_{nbd,nfs}_read_bytes_total`, `labboot_{nbd,nfs}_written_bytes_total` | counter | `export` |
//! | `labboot_jobs` | gauge | `state`, `health` |
//! | `labboot_boards` | gauge | `state`, `health` |
//! | `labboot_boards_powered` | gauge | `power` (`on`, `off`, `unknown`) |
//! | `labboot_console_connected` | gauge | `board` |
//! | `labboot_console_reconnects_total` | counter | `board` |
//! | `labboot_job_duration_seconds` | histogram | `health` |
//! | `labboot_build_info` | gauge | `version` |

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::App;
use crate::store::{BoardState, Health, JobHealth, JobId, JobState, Powered, Store};
use netboot::metrics::{ConnMetrics, Metrics};

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds (seconds) of the job duration histogram's buckets.
pub const JOB_DURATION_BUCKETS: &[f64] = &[30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0];

/// Durations of finished jobs, by health (`complete`, `incomplete`, `canceled`).
static JOB_DURATIONS: Mutex<BTreeMap<&'static str, Histogram>> = Mutex::new(BTreeMap::new());

/// Observes the duration of job `id`, just finished, from its start and end in the store.
pub fn job_finished(store: &dyn Store, id: JobId) {
    let Ok(Some(job)) = store.job(id) else {
        return;
    };
    let (Some(started), Some(ended)) = (job.started, job.ended) else {
        return;
    };
    observe_job(job.health, (ended - started).max(0) as f64 / 1000.0);
}

/// Records one finished job's duration in seconds.
pub fn observe_job(health: JobHealth, seconds: f64) {
    let mut h = JOB_DURATIONS.lock().unwrap_or_else(|p| p.into_inner());
    h.entry(job_health_name(health))
        .or_insert_with(|| Histogram::new(JOB_DURATION_BUCKETS))
        .observe(seconds);
}

/// The job duration histograms so far, one for each ending health (empty ones included).
pub fn job_durations() -> BTreeMap<&'static str, Histogram> {
    let mut all = JOB_DURATIONS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for health in [
        JobHealth::Complete,
        JobHealth::Incomplete,
        JobHealth::Canceled,
    ] {
        all.entry(job_health_name(health))
            .or_insert_with(|| Histogram::new(JOB_DURATION_BUCKETS));
    }
    all
}

/// What the store and the consoles say at a scrape.
#[derive(Debug, Default)]
pub struct LabCounts {
    /// Jobs by (state, health).
    pub jobs: Vec<(JobState, JobHealth, i64)>,
    /// Boards by (state, health).
    pub boards: Vec<(BoardState, Health, i64)>,
    /// Boards by power as the dashboard shows it.
    pub powered: Vec<(Powered, i64)>,
    /// Each console the appliance keeps: board, connected now, reconnects so far.
    pub consoles: Vec<(String, bool, u64)>,
}

/// `GET /metrics`.
pub async fn handler(State(app): State<Arc<App>>) -> Response {
    let store = Arc::clone(&app.store);
    let counted = tokio::task::spawn_blocking(move || -> Result<_, String> {
        let jobs = store.job_counts().map_err(|e| e.to_string())?;
        // One read of the boards gives both their (state, health) and their power.
        let mut boards: Vec<(BoardState, Health, i64)> = Vec::new();
        let mut powered: BTreeMap<&str, (Powered, i64)> = BTreeMap::new();
        for b in store.boards().map_err(|e| e.to_string())? {
            boards.push((b.state, b.health, 1));
            let p = b.power_now();
            powered.entry(power_name(p)).or_insert((p, 0)).1 += 1;
        }
        Ok((jobs, boards, powered.into_values().collect()))
    })
    .await
    .unwrap_or_else(|e| Err(format!("task failed: {e}")));
    match counted {
        Ok((jobs, boards, powered)) => {
            let consoles = app
                .consoles
                .boards()
                .into_iter()
                .filter_map(|b| {
                    let hub = app.consoles.get(&b)?;
                    Some((b, hub.connected(), hub.reconnects()))
                })
                .collect();
            let lab = LabCounts {
                jobs,
                boards,
                powered,
                consoles,
            };
            let text = render(&netboot::metrics::METRICS, &lab, &job_durations());
            (StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
        }
        Err(e) => {
            tracing::error!("metrics: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("metrics: {e}\n"),
            )
                .into_response()
        }
    }
}

/// A histogram: per-bucket counts (not cumulative; the last one is `+Inf`), sum and count.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    /// An empty histogram with buckets `le` each of `bounds` (ascending) and `+Inf`.
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    /// Adds one observation.
    pub fn observe(&mut self, v: f64) {
        let i = self
            .bounds
            .iter()
            .position(|&b| v <= b)
            .unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += v;
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Sum of the observations.
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// `(upper bound, cumulative count)` per bucket, `+Inf` last.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        self.bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.counts)
            .map(|(b, n)| {
                total += n;
                (b, total)
            })
            .collect()
    }
}

/// A metric type, as the `# TYPE` line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Buckets, sum and count.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A sample value in the text format.
pub trait Value {
    /// The value as the format writes it (`+Inf`, `-Inf`, `NaN` for special floats).
    fn render(&self) -> String;
}

impl Value for u64 {
    fn render(&self) -> String {
        self.to_string()
    }
}

impl Value for i64 {
    fn render(&self) -> String {
        self.to_string()
    }
}

impl Value for f64 {
    fn render(&self) -> String {
        if self.is_nan() {
            "NaN".into()
        } else if self.is_infinite() {
            if *self > 0.0 { "+Inf" } else { "-Inf" }.into()
        } else {
            self.to_string()
        }
    }
}

/// Escapes a `# HELP` text: backslash and newline.
pub fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Escapes a label value: backslash, double quote and newline.
pub fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes the text exposition format, one metric family after the other.
#[derive(Debug, Default)]
pub struct TextWriter {
    out: String,
}

impl TextWriter {
    /// An empty page.
    pub fn new() -> TextWriter {
        TextWriter::default()
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
    }

    /// One sample line.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Value) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        self.out.push(' ');
        self.out.push_str(&value.render());
        self.out.push('\n');
    }

    /// A family of one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: impl Value) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// The samples of one histogram (its family started): cumulative `_bucket`s with `le`,
    /// then `_sum` and `_count`.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let bucket = format!("{name}_bucket");
        for (le, n) in h.cumulative() {
            let le = le.render();
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, n);
        }
        self.sample(&format!("{name}_sum"), labels, h.sum());
        self.sample(&format!("{name}_count"), labels, h.count());
    }

    /// The page.
    pub fn finish(self) -> String {
        self.out
    }
}

/// The whole page: the servers' counters, jobs and boards by state and health, job durations.
pub fn render(
    servers: &Metrics,
    lab: &LabCounts,
    durations: &BTreeMap<&'static str, Histogram>,
) -> String {
    let (jobs, boards) = (&lab.jobs, &lab.boards);
    let mut w = TextWriter::new();
    w.family(
        "labboot_build_info",
        Kind::Gauge,
        "The running labboot's version (always 1).",
    );
    w.sample(
        "labboot_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1u64,
    );

    let d = &servers.dhcp;
    w.single(
        "labboot_dhcp_offers_total",
        Kind::Counter,
        "DHCPOFFERs sent.",
        d.offers.get(),
    );
    w.single(
        "labboot_dhcp_acks_total",
        Kind::Counter,
        "DHCPACKs sent (leases granted or renewed, INFORM answers).",
        d.acks.get(),
    );
    w.single(
        "labboot_dhcp_naks_total",
        Kind::Counter,
        "DHCPNAKs sent.",
        d.naks.get(),
    );
    w.single(
        "labboot_dhcp_pool_exhausted_total",
        Kind::Counter,
        "DISCOVERs refused because the pool had no free address.",
        d.pool_exhausted.get(),
    );
    w.single(
        "labboot_dhcp_leases",
        Kind::Gauge,
        "Leases in the DHCP server's table (offered or bound).",
        d.leases.get(),
    );

    let t = &servers.tftp;
    w.family(
        "labboot_tftp_transfers_total",
        Kind::Counter,
        "TFTP transfers (reads and writes) ended, by outcome.",
    );
    w.sample(
        "labboot_tftp_transfers_total",
        &[("outcome", "ok")],
        t.transfers_ok.get(),
    );
    w.sample(
        "labboot_tftp_transfers_total",
        &[("outcome", "error")],
        t.transfers_failed.get(),
    );
    w.single(
        "labboot_tftp_errors_total",
        Kind::Counter,
        "TFTP requests refused with an ERROR packet before data moved (bad name, not found, busy, writes disabled).",
        t.refused.get(),
    );
    w.single(
        "labboot_tftp_sent_bytes_total",
        Kind::Counter,
        "File bytes of completed TFTP reads.",
        t.sent_bytes.get(),
    );
    w.single(
        "labboot_tftp_received_bytes_total",
        Kind::Counter,
        "File bytes of completed TFTP writes.",
        t.received_bytes.get(),
    );
    w.single(
        "labboot_tftp_retransmitted_blocks_total",
        Kind::Counter,
        "TFTP DATA blocks sent more than once.",
        t.retransmitted_blocks.get(),
    );

    connections(&mut w, "nbd", "NBD", &servers.nbd);
    connections(&mut w, "nfs", "NFS", &servers.nfs);

    w.family(
        "labboot_jobs",
        Kind::Gauge,
        "Jobs in the store, by state and health.",
    );
    let mut job_series: BTreeMap<(&str, &str), i64> = [
        (JobState::Queued, JobHealth::Unknown),
        (JobState::Running, JobHealth::Unknown),
        (JobState::Canceling, JobHealth::Unknown),
        (JobState::Finished, JobHealth::Complete),
        (JobState::Finished, JobHealth::Incomplete),
        (JobState::Finished, JobHealth::Canceled),
    ]
    .into_iter()
    .map(|(s, h)| ((job_state_name(s), job_health_name(h)), 0))
    .collect();
    for &(s, h, n) in jobs {
        *job_series
            .entry((job_state_name(s), job_health_name(h)))
            .or_default() += n;
    }
    for ((state, health), n) in job_series {
        w.sample("labboot_jobs", &[("state", state), ("health", health)], n);
    }

    w.family(
        "labboot_boards",
        Kind::Gauge,
        "Boards known, by state and health.",
    );
    let mut board_series: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for s in [BoardState::Idle, BoardState::Job, BoardState::Maintenance] {
        for h in [
            Health::Unknown,
            Health::Online,
            Health::Offline,
            Health::Pending,
            Health::Cloned,
        ] {
            board_series.insert((board_state_name(s), board_health_name(h)), 0);
        }
    }
    for &(s, h, n) in boards {
        *board_series
            .entry((board_state_name(s), board_health_name(h)))
            .or_default() += n;
    }
    for ((state, health), n) in board_series {
        w.sample("labboot_boards", &[("state", state), ("health", health)], n);
    }

    w.family(
        "labboot_boards_powered",
        Kind::Gauge,
        "Boards by power: on, off (by the appliance, e.g. power saving) or unknown.",
    );
    let mut power_series: BTreeMap<&str, i64> = [Powered::On, Powered::Off, Powered::Unknown]
        .into_iter()
        .map(|p| (power_name(p), 0))
        .collect();
    for &(p, n) in &lab.powered {
        *power_series.entry(power_name(p)).or_default() += n;
    }
    for (power, n) in power_series {
        w.sample("labboot_boards_powered", &[("power", power)], n);
    }

    w.family(
        "labboot_console_connected",
        Kind::Gauge,
        "Whether the appliance holds the board's serial line open now (1) or is reconnecting (0).",
    );
    for (board, up, _) in &lab.consoles {
        w.sample(
            "labboot_console_connected",
            &[("board", board)],
            u64::from(*up),
        );
    }
    w.family(
        "labboot_console_reconnects_total",
        Kind::Counter,
        "Times the board's serial line was opened again after it dropped or failed to open.",
    );
    for (board, _, n) in &lab.consoles {
        w.sample("labboot_console_reconnects_total", &[("board", board)], *n);
    }

    w.family(
        "labboot_job_duration_seconds",
        Kind::Histogram,
        "Time from a job's start to its end, by how it ended.",
    );
    for (health, h) in durations {
        w.histogram("labboot_job_duration_seconds", &[("health", health)], h);
    }
    w.finish()
}

/// The connection and per-export byte families of NBD or NFS.
fn connections(w: &mut TextWriter, proto: &str, name: &str, m: &ConnMetrics) {
    w.single(
        &format!("labboot_{proto}_connections_open"),
        Kind::Gauge,
        &format!("{name} connections open."),
        m.open.get(),
    );
    w.single(
        &format!("labboot_{proto}_connections_accepted_total"),
        Kind::Counter,
        &format!("{name} connections accepted."),
        m.accepted.get(),
    );
    let exports = m.exports();
    let read = format!("labboot_{proto}_read_bytes_total");
    w.family(
        &read,
        Kind::Counter,
        &format!("Bytes clients read from {name} exports, by export."),
    );
    for e in &exports {
        w.sample(&read, &[("export", &e.name)], e.read);
    }
    let written = format!("labboot_{proto}_written_bytes_total");
    w.family(
        &written,
        Kind::Counter,
        &format!("Bytes clients wrote to {name} exports, by export."),
    );
    for e in &exports {
        w.sample(&written, &[("export", &e.name)], e.written);
    }
}

fn power_name(p: Powered) -> &'static str {
    match p {
        Powered::On => "on",
        Powered::Off => "off",
        Powered::Unknown => "unknown",
    }
}

fn job_state_name(s: JobState) -> &'static str {
    match s {
        JobState::Queued => "queued",
        JobState::Running => "running",
        JobState::Canceling => "canceling",
        JobState::Finished => "finished",
    }
}

fn job_health_name(h: JobHealth) -> &'static str {
    match h {
        JobHealth::Unknown => "unknown",
        JobHealth::Complete => "complete",
        JobHealth::Incomplete => "incomplete",
        JobHealth::Canceled => "canceled",
    }
}

fn board_state_name(s: BoardState) -> &'static str {
    match s {
        BoardState::Idle => "idle",
        BoardState::Job => "job",
        BoardState::Maintenance => "maintenance",
    }
}

fn board_health_name(h: Health) -> &'static str {
    match h {
        Health::Unknown => "unknown",
        Health::Online => "online",
        Health::Offline => "offline",
        Health::Pending => "pending",
        Health::Cloned => "cloned",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn help_and_label_values_are_escaped() {
        let mut w = TextWriter::new();
        w.family("m_total", Kind::Counter, "a \\ b\nc \"q\"");
        w.sample("m_total", &[("export", "a\\b\"c\nd"), ("x", "y")], 3u64);
        assert_eq!(
            lines(&w.finish()),
            [
                r#"# HELP m_total a \\ b\nc "q""#,
                "# TYPE m_total counter",
                r#"m_total{export="a\\b\"c\nd",x="y"} 3"#,
            ]
        );
    }

    #[test]
    fn special_floats() {
        assert_eq!(f64::INFINITY.render(), "+Inf");
        assert_eq!(f64::NEG_INFINITY.render(), "-Inf");
        assert_eq!(f64::NAN.render(), "NaN");
        assert_eq!(0.5f64.render(), "0.5");
        assert_eq!(30.0f64.render(), "30");
        assert_eq!((-2i64).render(), "-2");
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_sum_and_count() {
        static BOUNDS: &[f64] = &[1.0, 5.0, 10.0];
        let mut h = Histogram::new(BOUNDS);
        for v in [0.5, 1.0, 3.0, 7.0, 100.0, 2.5] {
            h.observe(v);
        }
        assert_eq!(
            h.cumulative(),
            vec![(1.0, 2), (5.0, 4), (10.0, 5), (f64::INFINITY, 6)]
        );
        let mut w = TextWriter::new();
        w.family("d_seconds", Kind::Histogram, "Durations.");
        w.histogram("d_seconds", &[("health", "complete")], &h);
        assert_eq!(
            lines(&w.finish()),
            [
                "# HELP d_seconds Durations.",
                "# TYPE d_seconds histogram",
                r#"d_seconds_bucket{health="complete",le="1"} 2"#,
                r#"d_seconds_bucket{health="complete",le="5"} 4"#,
                r#"d_seconds_bucket{health="complete",le="10"} 5"#,
                r#"d_seconds_bucket{health="complete",le="+Inf"} 6"#,
                r#"d_seconds_sum{health="complete"} 114"#,
                r#"d_seconds_count{health="complete"} 6"#,
            ]
        );
    }

    #[test]
    fn page_has_every_family_and_the_counts() {
        let servers = Metrics::new();
        servers.dhcp.offers.inc();
        servers.tftp.read_ended(true, 1234, 2);
        let _open = servers.nbd.connection();
        servers.nbd.read("master", 4096);
        servers.nfs.written("job-\"7\"", 10);
        let mut durations = BTreeMap::new();
        let mut h = Histogram::new(JOB_DURATION_BUCKETS);
        h.observe(45.0);
        durations.insert("complete", h);
        let lab = LabCounts {
            jobs: vec![(JobState::Queued, JobHealth::Unknown, 2)],
            boards: vec![(BoardState::Idle, Health::Pending, 1)],
            powered: vec![(Powered::Off, 1)],
            consoles: vec![("qemu-01".into(), false, 3)],
        };
        let page = render(&servers, &lab, &durations);
        for line in [
            "labboot_dhcp_offers_total 1",
            r#"labboot_tftp_transfers_total{outcome="ok"} 1"#,
            r#"labboot_tftp_transfers_total{outcome="error"} 0"#,
            "labboot_tftp_sent_bytes_total 1234",
            "labboot_tftp_retransmitted_blocks_total 2",
            "labboot_nbd_connections_open 1",
            "labboot_nbd_connections_accepted_total 1",
            r#"labboot_nbd_read_bytes_total{export="master"} 4096"#,
            r#"labboot_nfs_written_bytes_total{export="job-\"7\""} 10"#,
            r#"labboot_jobs{state="queued",health="unknown"} 2"#,
            r#"labboot_jobs{state="finished",health="complete"} 0"#,
            r#"labboot_boards{state="idle",health="pending"} 1"#,
            r#"labboot_boards{state="maintenance",health="cloned"} 0"#,
            r#"labboot_boards_powered{power="off"} 1"#,
            r#"labboot_boards_powered{power="on"} 0"#,
            r#"labboot_console_connected{board="qemu-01"} 0"#,
            r#"labboot_console_reconnects_total{board="qemu-01"} 3"#,
            r#"labboot_job_duration_seconds_bucket{health="complete",le="30"} 0"#,
            r#"labboot_job_duration_seconds_bucket{health="complete",le="60"} 1"#,
            r#"labboot_job_duration_seconds_bucket{health="complete",le="+Inf"} 1"#,
            r#"labboot_job_duration_seconds_sum{health="complete"} 45"#,
            r#"labboot_job_duration_seconds_count{health="complete"} 1"#,
        ] {
            assert!(page.lines().any(|l| l == line), "no {line:?} in\n{page}");
        }
        // Every family has its HELP and TYPE once, before its samples.
        let mut typed = std::collections::HashSet::new();
        for l in page.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                assert!(typed.insert(rest.split(' ').next().unwrap().to_string()));
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .filter(|f| typed.contains(*f))
                    .unwrap_or(name);
                assert!(typed.contains(family), "{l} before its TYPE");
            }
        }
    }

    #[test]
    fn finished_jobs_are_observed_by_health() {
        observe_job(JobHealth::Canceled, 4000.0);
        let all = job_durations();
        assert_eq!(
            all.keys().copied().collect::<Vec<_>>(),
            ["canceled", "complete", "incomplete"]
        );
        let c = &all["canceled"];
        assert!(c.count() >= 1);
        assert_eq!(c.cumulative().last().unwrap().1, c.count());
    }
}
