//! A definition's `run.sh` and `install.sh`, generated as LAVA generates them.
//!
//! Both start with the run's variables: the definition's `params`, then the job's
//! `parameters` (a later assignment wins), exported and single-quoted so any value is taken
//! literally. run.sh then turns on `set -e` (a failing step ends the definition, as in LAVA),
//! sets `TESTRUN_ID` and `UUID`, enters its own directory (where the repository's files are)
//! and runs the steps traced (`set -x`), so the log shows each command. In a step that uses
//! `--shell` or `--cmd`, `$1`… are escaped as LAVA escapes them, so they reach the command.
//! STARTRUN and ENDRUN are sent by the runner around run.sh.

use std::sync::OnceLock;

use regex::Regex;

use crate::testdef::ResolvedDefinition;

/// `s` quoted for sh: `'…'`, with `'` written as `'\''`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The variables block.
fn variables(def: &ResolvedDefinition) -> String {
    let mut out = String::from("###default parameters from test definition###\n");
    for (k, v) in &def.definition.params {
        out.push_str(&format!("export {k}={}\n", shell_quote(v)));
    }
    out.push_str("######\n###test parameters from job submission###\n");
    for (k, v) in &def.parameters {
        out.push_str(&format!("export {k}={}\n", shell_quote(v)));
    }
    out.push_str("######\n");
    out
}

/// A step as run.sh runs it: positional parameters escaped in `--shell`/`--cmd` steps.
fn step(cmd: &str) -> String {
    static POSITIONAL: OnceLock<Regex> = OnceLock::new();
    if cmd.contains("--shell") || cmd.contains("--cmd") {
        let re = POSITIONAL.get_or_init(|| Regex::new(r"\$([0-9]+)\b").expect("static regex"));
        // `$$` is a literal `$` in a replacement, `${1}` the digits.
        re.replace_all(cmd, r"\$$${1}").into_owned()
    } else {
        cmd.to_string()
    }
}

/// `run.sh` for `def`, interpreted by `shell`.
pub fn run_sh(def: &ResolvedDefinition, shell: &str) -> String {
    let suite = def.suite();
    let mut out = format!(
        "#!{shell}\n# run.sh of {suite} ({}), written by labboot: the definition's run steps.\n",
        def.describe_source().replace('\n', " ")
    );
    out.push_str(&variables(def));
    out.push_str("set -e\n");
    out.push_str(&format!(
        "TESTRUN_ID={}\nexport TESTRUN_ID\n",
        shell_quote(&suite)
    ));
    out.push_str("case $0 in */*) cd \"${0%/*}\" ;; esac\n");
    out.push_str("UUID=$(cat uuid)\n");
    out.push_str("set -x\n");
    for s in &def.definition.run_steps {
        out.push_str(&step(s));
        out.push('\n');
    }
    out.push_str("set +x\n");
    out
}

/// `install.sh` for `def` (None when nothing of `install` is left to run on the board).
pub fn install_sh(def: &ResolvedDefinition, shell: &str, os: &str) -> Option<String> {
    let install = &def.definition.install;
    let skip = def.skip_install;
    let mut body = String::new();
    if !skip.keys {
        for k in &install.keys {
            body.push_str(&format!("lava-add-keys {}\n", shell_quote(k)));
        }
    }
    if !skip.sources {
        for s in &install.sources {
            body.push_str(&format!("lava-add-sources {}\n", shell_quote(s)));
        }
    }
    if !skip.deps {
        let deps: Vec<String> = install
            .deps
            .iter()
            .chain(install.distro_deps.get(os).into_iter().flatten())
            .map(|d| shell_quote(d))
            .collect();
        if !deps.is_empty() {
            body.push_str(&format!("lava-install-packages {}\n", deps.join(" ")));
        }
    }
    if !skip.steps {
        for s in &install.steps {
            body.push_str(s);
            body.push('\n');
        }
    }
    if body.is_empty() {
        return None;
    }
    Some(format!(
        "#!{shell}\n# install.sh of {}, written by labboot: the definition's install section.\n{}set -e\ncase $0 in */*) cd \"${{0%/*}}\" ;; esac\nset -x\n{body}",
        def.suite(),
        variables(def)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_and_steps() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(
            step("lava-test-case a --shell awk '{print $1}' f"),
            r"lava-test-case a --shell awk '{print \$1}' f"
        );
        assert_eq!(step("echo $1"), "echo $1");
        assert_eq!(
            step("lava-test-case b --shell 'test $2 = $10'"),
            r"lava-test-case b --shell 'test \$2 = \$10'"
        );
    }
}
