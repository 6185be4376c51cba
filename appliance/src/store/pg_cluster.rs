//! A throwaway PostgreSQL cluster for tests: [`PgCluster::start`] runs `initdb` and `pg_ctl`
//! from Debian's `postgresql` package in a temporary directory, listening on a free TCP port of
//! 127.0.0.1 only, with trust authentication, and [`Drop`] stops it and removes the directory.
//!
//! PostgreSQL refuses to run as root, so when the tests run as root the directory is given to
//! the `postgres` system user the package creates (or `nobody`) and `initdb`/`pg_ctl` run as
//! that user through `setpriv`; otherwise they run as the caller. A watchdog process stops the
//! cluster and removes its directory within a second or two of the test process ending, however
//! it ends, so a cluster kept in a `static` (never dropped) or one whose test was killed does not
//! outlive its tests.
//!
//! Each test should take a database of its own ([`PgCluster::create_database`]) rather than a
//! cluster of its own: a cluster takes a second or two to start, a database a few milliseconds.
//!
//! PostgreSQL's binaries are looked for in `$LABBOOT_PG_BINDIR`, then the newest
//! `/usr/lib/postgresql/*/bin`, then `PATH`. When they are missing, [`PgCluster::start`] says so;
//! tests fail then (`scripts/setup.sh` installs the package) unless `LABBOOT_SKIP_POSTGRES=1`
//! is set ([`PgCluster::start_for_tests`]).

use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};

/// The environment variable that lets PostgreSQL tests be skipped when no cluster can start.
pub const SKIP_ENV: &str = "LABBOOT_SKIP_POSTGRES";

/// The environment variable that names the directory of `initdb` and `pg_ctl`.
pub const BINDIR_ENV: &str = "LABBOOT_PG_BINDIR";

/// The superuser `initdb` creates (and the user of [`PgCluster::url`]).
pub const SUPERUSER: &str = "postgres";

/// How many ports are tried when the free one found was taken before PostgreSQL bound it.
const PORT_TRIES: usize = 3;

/// The settings appended to the cluster's `postgresql.conf`: loopback only, its socket in its
/// own directory, and no durability (a test's database is thrown away).
const SETTINGS: &str = "
listen_addresses = '127.0.0.1'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
";

/// A running throwaway PostgreSQL cluster; stopped and removed on drop.
#[derive(Debug)]
pub struct PgCluster {
    /// The temporary directory: `data/`, the server's log and its socket.
    root: PathBuf,
    /// `initdb` and `pg_ctl`.
    bin: PathBuf,
    /// The TCP port on 127.0.0.1.
    port: u16,
    /// Who runs the server, when the caller is root.
    run_as: Option<RunAs>,
    /// The watchdog that cleans up if this process ends without dropping the cluster.
    watchdog: Mutex<Option<Child>>,
}

/// A user to run PostgreSQL's programs as.
#[derive(Debug, Clone)]
struct RunAs {
    /// Its name, for messages.
    name: String,
    /// Its user id.
    uid: u32,
    /// Its primary group id.
    gid: u32,
}

impl PgCluster {
    /// Creates and starts a cluster (a few seconds). Errors say what was missing or what failed,
    /// with the server's log when it did not start.
    pub fn start() -> Result<PgCluster> {
        let bin = find_bindir()?;
        let run_as = if is_root() {
            Some(unprivileged_user()?)
        } else {
            None
        };
        let root = make_root(run_as.as_ref())?;
        let mut cluster = PgCluster {
            root,
            bin,
            port: 0,
            run_as,
            watchdog: Mutex::new(None),
        };
        // From here on, dropping `cluster` cleans up whatever was made.
        cluster.start_watchdog()?;
        cluster.initdb()?;
        let mut last = None;
        for _ in 0..PORT_TRIES {
            cluster.port = free_port()?;
            match cluster.pg_ctl_start() {
                Ok(()) => return Ok(cluster),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("the cluster did not start")))
    }

    /// [`PgCluster::start`] for a test: the cluster; or, when it cannot start and
    /// `LABBOOT_SKIP_POSTGRES=1` is set, `None` after saying so on stderr.
    ///
    /// # Panics
    ///
    /// When the cluster cannot start and `LABBOOT_SKIP_POSTGRES=1` is not set: a test that
    /// needs PostgreSQL fails rather than skips (`scripts/setup.sh` installs it).
    pub fn start_for_tests() -> Option<PgCluster> {
        match PgCluster::start() {
            Ok(cluster) => Some(cluster),
            Err(e) if std::env::var(SKIP_ENV).is_ok_and(|v| v == "1") => {
                eprintln!("SKIPPED: PostgreSQL tests ({SKIP_ENV}=1): {e:#}");
                None
            }
            Err(e) => panic!(
                "cannot start a test PostgreSQL: {e:#} (run scripts/setup.sh, or set \
                 {SKIP_ENV}=1 to skip the PostgreSQL tests)"
            ),
        }
    }

    /// The TCP port on 127.0.0.1 the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory that holds the cluster (`data/` and `postgres.log`).
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// The URL of database `db` as the superuser (trust authentication: no password).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates the empty database `name` (letters, digits and `_`, at most 63, not starting
    /// with a digit); its URL. Callable from any thread, inside a tokio runtime too.
    pub fn create_database(&self, name: &str) -> Result<String> {
        let valid = !name.is_empty()
            && name.len() <= 63
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            bail!("'{name}' is not a database name for a test (a-z, 0-9, _; at most 63)");
        }
        let admin = self.url("postgres");
        let statement = format!("CREATE DATABASE {name}");
        // The synchronous client cannot run inside a tokio runtime: use a thread of its own.
        std::thread::spawn(move || -> Result<()> {
            let mut client = ::postgres::Client::connect(&admin, ::postgres::NoTls)
                .with_context(|| format!("connect to {admin}"))?;
            client
                .batch_execute(&statement)
                .with_context(|| format!("{statement} on {admin}"))?;
            Ok(())
        })
        .join()
        .map_err(|_| anyhow!("creating database {name} panicked"))??;
        Ok(self.url(name))
    }

    /// The data directory.
    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The server's log.
    fn log(&self) -> PathBuf {
        self.root.join("postgres.log")
    }

    /// A command running PostgreSQL's program `program` as the cluster's user.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={}", user.uid))
                    .arg(format!("--regid={}", user.gid))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(&path);
                c
            }
            None => Command::new(&path),
        };
        command
            .current_dir(&self.root)
            .env("LC_ALL", "C")
            .env_remove("PGDATA")
            .stdin(Stdio::null());
        command
    }

    /// Runs `command`; its output, or an error with its stderr.
    fn run(&self, what: &str, mut command: Command) -> Result<Output> {
        let output = command
            .output()
            .with_context(|| format!("{what}: run {command:?}"))?;
        if !output.status.success() {
            bail!(
                "{what} failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim(),
                self.log_tail()
            );
        }
        Ok(output)
    }

    /// The end of the server's log, for errors (empty if there is none).
    fn log_tail(&self) -> String {
        match std::fs::read_to_string(self.log()) {
            Ok(log) if !log.trim().is_empty() => {
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(10)..].join("\n");
                format!("\nserver log ({}):\n{tail}", self.log().display())
            }
            _ => String::new(),
        }
    }

    /// `initdb`, then this cluster's settings (its socket lives in its own directory).
    fn initdb(&self) -> Result<()> {
        let mut initdb = self.command("initdb");
        initdb
            .arg("--pgdata")
            .arg(self.data())
            .args(["--username", SUPERUSER, "--auth=trust", "--encoding=UTF8"])
            .args(["--locale=C", "--no-sync", "--no-instructions"]);
        self.run("initdb", initdb)?;
        let conf = self.data().join("postgresql.conf");
        let mut file = OpenOptions::new()
            .append(true)
            .open(&conf)
            .with_context(|| format!("open {}", conf.display()))?;
        let socket_dir = self.root.display().to_string().replace('\'', "''");
        writeln!(file, "{SETTINGS}unix_socket_directories = '{socket_dir}'")
            .with_context(|| format!("write {}", conf.display()))?;
        Ok(())
    }

    /// `pg_ctl start` on [`PgCluster::port`], waiting until the server accepts connections.
    fn pg_ctl_start(&self) -> Result<()> {
        let mut start = self.command("pg_ctl");
        start
            .arg("start")
            .arg("--pgdata")
            .arg(self.data())
            .arg("--log")
            .arg(self.log())
            .args(["--wait", "--timeout=60", "--silent"])
            .arg(format!("--options=-p {}", self.port))
            .stdout(Stdio::null());
        self.run(&format!("pg_ctl start on port {}", self.port), start)
            .map(|_| ())
    }

    /// Starts the process that stops the cluster and removes its directory once this process
    /// is gone (it polls every second). It runs in a process group of its own, so a Ctrl-C to
    /// the tests does not end it before it has cleaned up.
    fn start_watchdog(&mut self) -> Result<()> {
        const SCRIPT: &str = r#"pid=$1 data=$2 root=$3; shift 3
while kill -0 "$pid" 2>/dev/null; do sleep 1; done
if [ -e "$data/postmaster.pid" ]; then "$@" stop -D "$data" -m immediate >/dev/null 2>&1; fi
rm -rf "$root""#;
        let stop = self.command("pg_ctl");
        let mut watchdog = Command::new("sh");
        watchdog
            .arg("-c")
            .arg(SCRIPT)
            .arg("labboot-pg-watchdog")
            .arg(std::process::id().to_string())
            .arg(self.data())
            .arg(&self.root)
            .arg(stop.get_program())
            .args(stop.get_args())
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut watchdog, 0);
        let child = watchdog
            .spawn()
            .context("start the cluster's watchdog (sh)")?;
        *self
            .watchdog
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(child);
        Ok(())
    }
}

impl Drop for PgCluster {
    /// Stops the server at once (`pg_ctl stop -m immediate`), ends the watchdog and removes the
    /// directory.
    fn drop(&mut self) {
        if self.data().join("postmaster.pid").exists() {
            let mut stop = self.command("pg_ctl");
            stop.arg("stop")
                .arg("--pgdata")
                .arg(self.data())
                .args(["--mode=immediate", "--wait", "--silent"])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if let Err(e) = stop.status() {
                eprintln!(
                    "test PostgreSQL in {}: pg_ctl stop: {e}",
                    self.root.display()
                );
            }
        }
        let watchdog = self
            .watchdog
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(mut watchdog) = watchdog {
            // Ours, by its id; it may already be gone.
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        if let Err(e) = std::fs::remove_dir_all(&self.root) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("test PostgreSQL: remove {}: {e}", self.root.display());
            }
        }
    }
}

/// Whether this process runs as root.
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The directory of `initdb` and `pg_ctl`: `$LABBOOT_PG_BINDIR`, the newest
/// `/usr/lib/postgresql/*/bin`, or the one on `PATH`.
fn find_bindir() -> Result<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os(BINDIR_ENV) {
        let dir = PathBuf::from(dir);
        if has_tools(&dir) {
            return Ok(dir);
        }
        bail!("{BINDIR_ENV}={} has no initdb and pg_ctl", dir.display());
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            has_tools(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|dir| has_tools(dir));
    on_path.ok_or_else(|| {
        anyhow!(
            "PostgreSQL's initdb and pg_ctl were not found (looked in ${BINDIR_ENV}, \
             /usr/lib/postgresql/*/bin and PATH): install Debian's postgresql package \
             (scripts/setup.sh does)"
        )
    })
}

/// The user PostgreSQL runs as when the tests run as root: `postgres` (Debian's package
/// creates it), else `nobody`.
fn unprivileged_user() -> Result<RunAs> {
    let passwd = std::fs::read_to_string("/etc/passwd").context("read /etc/passwd")?;
    let find = |wanted: &str| {
        passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            match fields.as_slice() {
                [name, _, uid, gid, ..] if *name == wanted => Some(RunAs {
                    name: name.to_string(),
                    uid: uid.parse().ok()?,
                    gid: gid.parse().ok()?,
                }),
                _ => None,
            }
        })
    };
    find("postgres")
        .or_else(|| find("nobody"))
        .filter(|user| user.uid != 0)
        .ok_or_else(|| {
            anyhow!(
                "running as root, and neither a 'postgres' nor a 'nobody' user exists to run \
                 PostgreSQL as (it refuses root)"
            )
        })
}

/// A new private directory under the system's temporary directory, owned by `run_as` if given.
fn make_root(run_as: Option<&RunAs>) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let base = std::env::temp_dir();
    for _ in 0..16 {
        let root = base.join(format!(
            "labboot-pg-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        match std::fs::create_dir(&root) {
            Ok(()) => {
                let setup = || -> Result<()> {
                    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700))?;
                    if let Some(user) = run_as {
                        std::os::unix::fs::chown(&root, Some(user.uid), Some(user.gid))
                            .with_context(|| format!("give it to user {}", user.name))?;
                    }
                    Ok(())
                };
                if let Err(e) = setup() {
                    let _ = std::fs::remove_dir_all(&root);
                    return Err(e.context(format!("prepare {}", root.display())));
                }
                return Ok(root);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("create {}", root.display())),
        }
    }
    bail!("no unused directory name under {}", base.display())
}

/// A TCP port of 127.0.0.1 free right now.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("find a free port")?;
    Ok(listener.local_addr().context("find a free port")?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_starts_serves_and_cleans_up() {
        let Some(cluster) = PgCluster::start_for_tests() else {
            return;
        };
        let root = cluster.dir().to_path_buf();
        assert!(root.join("data/PG_VERSION").is_file());
        let url = cluster.create_database("pg_cluster_selftest").unwrap();
        assert_eq!(
            url,
            format!(
                "postgres://postgres@127.0.0.1:{}/pg_cluster_selftest",
                cluster.port()
            )
        );
        let answer = std::thread::spawn(move || {
            let mut client = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
            let row = client.query_one("SELECT current_database()", &[]).unwrap();
            row.get::<_, String>(0)
        })
        .join()
        .unwrap();
        assert_eq!(answer, "pg_cluster_selftest");
        assert!(cluster.create_database("Bad-Name").is_err());
        assert!(
            cluster.create_database("pg_cluster_selftest").is_err(),
            "exists"
        );
        drop(cluster);
        assert!(!root.exists(), "{} left behind", root.display());
    }
}
