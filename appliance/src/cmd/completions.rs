//! `labboot completions SHELL` and the hidden `labboot man --out DIR`: shell completions and
//! man pages, both generated from the clap definitions (the Debian package ships them).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::CommandFactory;

use crate::fsutil::write_atomically;

/// Arguments of `labboot completions`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    #[arg(value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

/// Arguments of `labboot man`.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// The directory the pages are written to (`labboot.1`, one `labboot-SUB….1` per subcommand).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// Prints the completion script of `shell` on stdout.
pub fn completions(args: CompletionsArgs) -> anyhow::Result<()> {
    let mut cmd = crate::cli::Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "labboot", &mut out);
    use std::io::Write;
    std::io::stdout()
        .write_all(&out)
        .context("cannot write the completion script")
}

/// Writes one man page per visible command into `args.out`.
pub fn man(args: ManArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut cmd = crate::cli::Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut written = 0;
    write_pages(&cmd, &args.out, &mut written)?;
    println!("{}: {written} man pages", args.out.display());
    Ok(())
}

fn write_pages(cmd: &clap::Command, dir: &Path, written: &mut usize) -> anyhow::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir, written)?;
    }
    let man = clap_mangen::Man::new(cmd.clone())
        .source(concat!("labboot ", env!("CARGO_PKG_VERSION")))
        .manual("labboot manual");
    let mut page = Vec::new();
    man.render(&mut page)
        .with_context(|| format!("cannot render the man page of {}", cmd.get_name()))?;
    write_atomically(&dir.join(man.get_filename()), &page)?;
    *written += 1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_page_per_visible_command() {
        let dir = tempfile::tempdir().unwrap();
        man(ManArgs {
            out: dir.path().to_path_buf(),
        })
        .unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for want in [
            "labboot.1",
            "labboot-serve.1",
            "labboot-job-submit.1",
            "labboot-completions.1",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
        }
        assert!(
            !names.iter().any(|n| n.starts_with("labboot-man")),
            "{names:?}"
        );
        let top = std::fs::read_to_string(dir.path().join("labboot.1")).unwrap();
        assert!(top.contains(".TH labboot 1"), "{top}");
        assert!(top.contains("serve"), "{top}");
    }
}
