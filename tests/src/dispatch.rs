//! A lab for `labboot dispatch` tests: a namespace with a tap, a [`LabBoard`] on it, the lab
//! config and device dictionary that describe them, and the built master image whose kernel,
//! initrd and root filesystems the test jobs deploy.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crate::binary::labboot_bin;
use crate::lab_board::LabBoard;
use crate::netns::Netns;

/// The lab's address inside its namespace.
pub const SERVER_IP: &str = "10.78.0.1";

/// A private lab with one board.
pub struct DispatchLab {
    /// The namespace the servers and the board live in.
    pub ns: Netns,
    /// The board.
    pub board: LabBoard,
    /// The test's work directory.
    pub work: tempfile::TempDir,
    /// Where the master image was built.
    pub master: PathBuf,
}

impl DispatchLab {
    /// A lab whose board has identity `board_id`; `master` is a directory with a built master.
    pub fn new(prefix: &str, board_id: &str, master: &Path) -> anyhow::Result<DispatchLab> {
        let ns = Netns::new(prefix)?;
        let tap = ns.add_tap("dltap0", &format!("{SERVER_IP}/24"))?;
        let board = LabBoard::new(&ns, &tap, board_id, "52:54:00:12:34:56")?;
        let work = tempfile::Builder::new()
            .prefix("labboot-dispatch-")
            .tempdir()?;
        let lab = format!(
            "server_ip: {SERVER_IP}\n\
             tftp:\n  listen: {SERVER_IP}:69\n  root: {root}\n\
             nfs:\n  listen: {SERVER_IP}:2049\n  portmap: {SERVER_IP}:111\n\
             nbd:\n  listen: {SERVER_IP}:10809\n\
             dhcp:\n  interface: {tap}\n  server_ip: {SERVER_IP}\n  pool: 10.78.0.10-10.78.0.50\n",
            root = work.path().join("tftp-root").display()
        );
        std::fs::create_dir_all(work.path().join("tftp-root"))?;
        std::fs::write(work.path().join("lab.yaml"), lab)?;
        Ok(DispatchLab {
            ns,
            board,
            work,
            master: master.to_path_buf(),
        })
    }

    /// A master output as a `file://` URL.
    pub fn master_url(&self, name: &str) -> String {
        format!("file://{}", self.master.join(name).display())
    }

    /// The sha256 of a master output.
    pub fn master_sha256(&self, name: &str) -> String {
        let out = Command::new("sha256sum")
            .arg(self.master.join(name))
            .output()
            .expect("run sha256sum");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    }

    /// Writes the board's device dictionary (`serial` or `network` boot) and returns its path.
    /// A `network` board gets a saved environment with `bootdelay=0`.
    pub fn device(&self, boot: &str, extra: &[(&str, &str)]) -> PathBuf {
        if boot == "network" {
            self.board
                .set_bootdelay0()
                .expect("saved U-Boot environment");
        }
        let path = self.work.path().join(format!("board-{boot}.jinja2"));
        std::fs::write(
            &path,
            self.board.dictionary("labboot-qemu-arm64", boot, extra),
        )
        .expect("write the device dictionary");
        path
    }

    /// The command that runs `labboot dispatch` for `job` inside the namespace.
    pub fn command(&self, device: &Path, job: &Path, out: &Path) -> Command {
        let mut cmd = self.ns.command(labboot_bin());
        cmd.args(["--log", "info", "dispatch", "--device"])
            .arg(device)
            .arg("--config")
            .arg(self.work.path().join("lab.yaml"))
            .arg(job)
            .arg("--output-dir")
            .arg(out);
        cmd
    }

    /// Writes `job_text` as `<name>.yaml` and runs it to the end.
    pub fn run(&self, name: &str, device: &Path, job_text: &str) -> JobRun {
        let job = self.work.path().join(format!("{name}.yaml"));
        std::fs::write(&job, job_text).expect("write the job");
        let out = self.work.path().join(format!("out-{name}"));
        let output = self
            .command(device, &job, &out)
            .stdin(Stdio::null())
            .output()
            .expect("run labboot dispatch");
        let run = JobRun { out, output };
        eprintln!("--- labboot dispatch {name}: {}", run.output.status);
        eprintln!("{}", run.stdout());
        eprintln!("{}", String::from_utf8_lossy(&run.output.stderr));
        run
    }

    /// Starts `labboot dispatch` for `job_text` without waiting (stdout piped).
    pub fn spawn(&self, name: &str, device: &Path, job_text: &str) -> (Child, PathBuf) {
        let job = self.work.path().join(format!("{name}.yaml"));
        std::fs::write(&job, job_text).expect("write the job");
        let out = self.work.path().join(format!("out-{name}"));
        let child = self
            .command(device, &job, &out)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start labboot dispatch");
        (child, out)
    }
}

/// A finished `labboot dispatch`.
pub struct JobRun {
    /// Its output directory.
    pub out: PathBuf,
    /// Its exit status and output.
    pub output: Output,
}

impl JobRun {
    /// Its stdout.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    /// Its stderr.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// `results.yaml`, as text.
    pub fn results(&self) -> String {
        std::fs::read_to_string(self.out.join("results.yaml")).unwrap_or_default()
    }
}
