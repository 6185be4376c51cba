//! The checked job: what the pipeline builder and the actions read.
//!
//! Every block keeps the line it starts at in the job file, so later checks (and run-time
//! errors) can name it.

use std::collections::BTreeMap;
use std::time::Duration;

/// A LAVA V2 job, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The file it was read from, as given (for messages).
    pub file: String,
    /// `job_name`.
    pub name: String,
    /// `device_type`: must equal the device's.
    pub device_type: String,
    /// `timeouts`.
    pub timeouts: JobTimeouts,
    /// `priority` (`high`, `medium`, `low` or 0–100), kept as written.
    pub priority: Option<String>,
    /// `visibility` (`public`, `personal` or `{group: [...]}`), kept as written.
    pub visibility: Option<serde_yaml_ng::Value>,
    /// `context`: variables for the device templates (and labboot's own keys, e.g. `labboot_boot`).
    pub context: serde_yaml_ng::Mapping,
    /// `metadata`, recorded in the results.
    pub metadata: serde_yaml_ng::Mapping,
    /// `protocols`, accepted and recorded.
    pub protocols: serde_yaml_ng::Mapping,
    /// `actions`, in order.
    pub actions: Vec<ActionBlock>,
}

/// The job's `timeouts` section.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JobTimeouts {
    /// `job`: the whole job (required by LAVA).
    pub job: Duration,
    /// `action`: default for every action.
    pub action: Option<Duration>,
    /// `connection`: default for every console wait.
    pub connection: Option<Duration>,
    /// `actions`: by action name (`lava-test-shell`, `auto-login-action`, …).
    pub actions: BTreeMap<String, Duration>,
    /// `connections`: by action name.
    pub connections: BTreeMap<String, Duration>,
}

/// One entry of `actions`.
// A job holds a handful of blocks, so the size difference costs nothing; boxing the variants
// would change the model every consumer matches on.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ActionBlock {
    /// `- deploy:`
    Deploy(Deploy),
    /// `- boot:`
    Boot(Boot),
    /// `- test:`
    Test(Test),
}

impl ActionBlock {
    /// What every block has.
    pub fn common(&self) -> &BlockCommon {
        match self {
            ActionBlock::Deploy(d) => &d.common,
            ActionBlock::Boot(b) => &b.common,
            ActionBlock::Test(t) => &t.common,
        }
    }
}

/// Keys every action block may carry.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BlockCommon {
    /// Line of the block (its `- deploy:` line) in the job file, 1-based.
    pub line: usize,
    /// `timeout`: the block's own timeout.
    pub timeout: Option<Duration>,
    /// `timeouts`: per-action timeouts given inside the block (`{name: duration}`).
    pub timeouts: BTreeMap<String, Duration>,
    /// `failure_retry`: how often the block may run in all (LAVA's max_retries).
    pub failure_retry: Option<u32>,
    /// `namespace`, kept as written.
    pub namespace: Option<String>,
    /// `connection-namespace`, kept as written.
    pub connection_namespace: Option<String>,
    /// `protocols` of the block, accepted and recorded.
    pub protocols: Option<serde_yaml_ng::Value>,
}

/// Where a deploy block puts things.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployTo {
    /// `to: tftp`
    Tftp,
    /// `to: nfs`
    Nfs,
    /// `to: nbd`
    Nbd,
    /// `to: downloads`
    Downloads,
}

impl DeployTo {
    /// The value as written in a job.
    pub fn as_str(self) -> &'static str {
        match self {
            DeployTo::Tftp => "tftp",
            DeployTo::Nfs => "nfs",
            DeployTo::Nbd => "nbd",
            DeployTo::Downloads => "downloads",
        }
    }
}

/// A compression a job can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// gzip
    Gz,
    /// xz
    Xz,
    /// zstd
    Zstd,
    /// bzip2
    Bz2,
}

impl Compression {
    /// The value as written in a job (`gz`, `xz`, `zstd`, `bz2`).
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Gz => "gz",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
            Compression::Bz2 => "bz2",
        }
    }
}

/// `kernel: type:`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelType {
    /// `zimage` (booted with bootz)
    Zimage,
    /// `image` (booted with booti)
    Image,
    /// `uimage` (booted with bootm)
    Uimage,
}

/// One file a deploy block names (`kernel`, `dtb`, `ramdisk`, `modules`, `nfsrootfs`, `nbdroot`,
/// `initrd`, or any key under `to: downloads`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Artifact {
    /// The key it was given under (`kernel`, `ramdisk`, …).
    pub key: String,
    /// `url`: http(s)://, file://, or a local path.
    pub url: String,
    /// `sha256sum`, lower-case hex.
    pub sha256: Option<String>,
    /// `md5sum`, lower-case hex.
    pub md5: Option<String>,
    /// `compression`.
    pub compression: Option<Compression>,
    /// `type` (kernel only).
    pub kernel_type: Option<KernelType>,
    /// `header: u-boot` (ramdisk only): the file carries, and must again carry, a uImage header.
    pub uboot_header: bool,
    /// `install_overlay` (ramdisk, nfsrootfs): default true for nfsrootfs and ramdisk.
    pub install_overlay: Option<bool>,
    /// `install_modules` (ramdisk): default true.
    pub install_modules: Option<bool>,
    /// `prefix` (nfsrootfs): the directory inside the archive that is the root.
    pub prefix: Option<String>,
    /// Line of the artefact's key in the job file.
    pub line: usize,
}

/// `- deploy:`
#[derive(Debug, Clone, PartialEq)]
pub struct Deploy {
    /// Common keys.
    pub common: BlockCommon,
    /// `to`.
    pub to: DeployTo,
    /// `os` (`oe`, `debian`, …), default `oe`.
    pub os: Option<String>,
    /// `kernel`.
    pub kernel: Option<Artifact>,
    /// `dtb`.
    pub dtb: Option<Artifact>,
    /// `ramdisk`.
    pub ramdisk: Option<Artifact>,
    /// `initrd` (`to: nbd`: LAVA's name for the ramdisk there).
    pub initrd: Option<Artifact>,
    /// `modules`.
    pub modules: Option<Artifact>,
    /// `nfsrootfs`.
    pub nfsrootfs: Option<Artifact>,
    /// `nbdroot`.
    pub nbdroot: Option<Artifact>,
    /// Any further artefacts (`to: downloads` takes arbitrary keys), in file order.
    pub other: Vec<Artifact>,
}

impl Deploy {
    /// Every artefact of the block, in LAVA's download order (ramdisk/initrd, kernel, dtb,
    /// modules, nfsrootfs, nbdroot, then the rest).
    pub fn artifacts(&self) -> Vec<&Artifact> {
        [
            &self.ramdisk,
            &self.initrd,
            &self.kernel,
            &self.dtb,
            &self.modules,
            &self.nfsrootfs,
            &self.nbdroot,
        ]
        .into_iter()
        .flatten()
        .chain(self.other.iter())
        .collect()
    }
}

/// `commands:` of a boot block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootCommands {
    /// A stanza name from the device (`ramdisk`, `nfs`, `nbd`, …).
    Named(String),
    /// An inline list.
    Inline(Vec<String>),
}

/// `auto_login:`
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AutoLogin {
    /// `login_prompt`
    pub login_prompt: String,
    /// `username`
    pub username: String,
    /// `password_prompt`
    pub password_prompt: Option<String>,
    /// `password`
    pub password: Option<String>,
    /// `login_commands`: sent after login.
    pub login_commands: Vec<String>,
}

/// `- boot:`
#[derive(Debug, Clone, PartialEq)]
pub struct Boot {
    /// Common keys.
    pub common: BlockCommon,
    /// `method` (`u-boot`; `minimal` is accepted: power on and wait, no bootloader).
    pub method: String,
    /// `commands`.
    pub commands: Option<BootCommands>,
    /// `prompts`: what the booted system's shell prompt looks like.
    pub prompts: Vec<String>,
    /// `auto_login`.
    pub auto_login: Option<AutoLogin>,
    /// `parameters` (`shutdown-message`, …), kept as written.
    pub parameters: serde_yaml_ng::Mapping,
    /// `transfer_overlay` (`download_command`, `unpack_command`), kept as written.
    pub transfer_overlay: Option<serde_yaml_ng::Mapping>,
    /// `soft_reboot`, kept as written.
    pub soft_reboot: Option<serde_yaml_ng::Value>,
}

/// Where a test definition comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum DefinitionSource {
    /// `from: inline`, `repository:` holding the definition itself.
    Inline(serde_yaml_ng::Value),
    /// `from: git`: a repository URL or local path, the file `path` inside it.
    Git {
        /// `repository`
        repository: String,
        /// `path`
        path: String,
        /// `branch`
        branch: Option<String>,
        /// `revision`
        revision: Option<String>,
    },
    /// `from: url`: the definition file at `repository` (URL or local path).
    Url {
        /// `repository`
        repository: String,
    },
}

/// One entry of `definitions`.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    /// `name`: the results suite is `<index>_<name>`, as LAVA names it.
    pub name: String,
    /// Where the definition comes from.
    pub source: DefinitionSource,
    /// `parameters` (or `params`): variables given to the run steps.
    pub parameters: serde_yaml_ng::Mapping,
    /// Line of the entry in the job file.
    pub line: usize,
}

/// One step of an `interactive` test.
#[derive(Debug, Clone, PartialEq)]
pub struct InteractiveScript {
    /// `name`
    pub name: String,
    /// `prompts`: what each command waits for after it is sent.
    pub prompts: Vec<String>,
    /// `script`: the commands.
    pub script: Vec<InteractiveCommand>,
}

/// One command of an interactive script.
#[derive(Debug, Clone, PartialEq)]
pub struct InteractiveCommand {
    /// `command` (None: just wait).
    pub command: Option<String>,
    /// `name`: a test case recorded pass/fail by whether the prompt came (and no failure matched).
    pub name: Option<String>,
    /// `successes`: patterns that must appear (each `{message: …}`).
    pub successes: Vec<String>,
    /// `failures`: patterns that fail the case (each `{message: …}`).
    pub failures: Vec<String>,
}

/// `- test:`
#[derive(Debug, Clone, PartialEq)]
pub struct Test {
    /// Common keys.
    pub common: BlockCommon,
    /// `definitions` (a shell test), empty for an interactive one.
    pub definitions: Vec<Definition>,
    /// `interactive` scripts.
    pub interactive: Vec<InteractiveScript>,
}
