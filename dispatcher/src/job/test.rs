//! `- test:` blocks: LAVA's `test.definition` (git, url and inline definitions) and
//! `test.interactive` schemas. Docker, monitor and service tests are not supported by labboot.

use regex::Regex;

use super::common::{block_common, with_common, with_common_unsupported};
use super::model::{Definition, DefinitionSource, InteractiveCommand, InteractiveScript, Test};
use super::schema::{At, Check, Unsupported};
use super::testdef::inline_testdef;

/// What LAVA allows in definition and test case names.
const NAME_PATTERN: &str = r"^[-_a-zA-Z0-9.]+$";

/// Keys of every definition.
const DEFINITION_KEYS: &[&str] = &["from", "repository", "path", "name", "lava-signal"];

/// Definition keys LAVA accepts that labboot refuses.
const DEFINITION_UNSUPPORTED: &[Unsupported<'static>] = &[
    ("skip_install", "install steps are never skipped"),
    ("expected", "no list of expected test cases"),
];

/// Test block kinds LAVA knows that labboot does not run.
const TEST_UNSUPPORTED: &[Unsupported<'static>] = &[
    ("docker", "tests run on the board, not in docker"),
    ("monitors", "no monitor tests"),
    ("services", "no test services"),
];

/// Reads the test block at `at` (a mapping) whose `- test:` line is `line`.
pub fn test(at: &At<'_>, line: usize) -> Check<Test> {
    let names = Names::new()?;
    let definitions = at.opt("definitions");
    let interactive = at.opt("interactive");
    if let (Some(_), Some(i)) = (&definitions, &interactive) {
        return Err(i.fail("a test block has either definitions or interactive, not both"));
    }
    let kind = if definitions.is_some() {
        "definitions"
    } else {
        "interactive"
    };
    at.keys(
        &with_common(&[kind]),
        &with_common_unsupported(TEST_UNSUPPORTED),
    )?;
    let mut test = Test {
        common: block_common(at, line)?,
        definitions: Vec::new(),
        interactive: Vec::new(),
    };
    match (definitions, interactive) {
        (Some(defs), _) => {
            for item in defs.items()? {
                test.definitions.push(definition(&item, &names)?);
            }
        }
        (None, Some(scripts)) => {
            for item in scripts.items()? {
                test.interactive.push(script(&item, &names)?);
            }
        }
        (None, None) => {
            return Err(at.fail("a test block needs definitions or interactive"));
        }
    }
    Ok(test)
}

/// The name rule, compiled once per block.
struct Names(Regex);

impl Names {
    /// Compiles the pattern.
    fn new() -> Check<Names> {
        Regex::new(NAME_PATTERN)
            .map(Names)
            .map_err(|e| crate::yaml::Problem::new(0, "", format!("internal: {e}")))
    }

    /// Checks a name.
    fn check(&self, at: &At<'_>) -> Check<String> {
        let name = at.str()?;
        if !self.0.is_match(name) {
            return Err(at.fail(format!(
                "'{name}' may only hold letters, digits, '-', '_' and '.'"
            )));
        }
        Ok(name.to_string())
    }
}

/// One entry of `definitions`.
fn definition(at: &At<'_>, names: &Names) -> Check<Definition> {
    at.map()?;
    let from_at = at.req("from")?;
    let from = from_at.one_of(&["git", "url", "inline"])?;
    let mut allowed = DEFINITION_KEYS.to_vec();
    let mut unsupported = DEFINITION_UNSUPPORTED.to_vec();
    match from {
        "git" => allowed.extend([
            "branch",
            "history",
            "revision",
            "parameters",
            "params",
            "recursive",
        ]),
        "url" => {
            allowed.extend(["parameters", "params"]);
            unsupported.extend([
                ("compression", "a url definition is the YAML file itself"),
                (
                    "strip-components",
                    "a url definition is the YAML file itself",
                ),
                ("headers", "downloads send no extra HTTP headers"),
            ]);
        }
        _ => {}
    }
    at.keys(&allowed, &unsupported)?;
    let path = at.req("path")?.str()?.to_string();
    let name = names.check(&at.req("name")?)?;
    if let Some(s) = at.opt("lava-signal") {
        if s.one_of(&["kmsg", "stdout"])? == "kmsg" {
            return Err(
                s.fail("not supported by labboot: signals are read from the console (stdout)")
            );
        }
    }
    let repo = at.req("repository")?;
    let source = match from {
        "git" => {
            if let Some(h) = at.opt("history") {
                h.bool()?;
            }
            if let Some(r) = at.opt("recursive") {
                r.default_only(false, "submodules are not cloned")?;
            }
            DefinitionSource::Git {
                repository: repo.nonempty_str()?.to_string(),
                path,
                branch: opt_string(at, "branch")?,
                revision: opt_string(at, "revision")?,
            }
        }
        "url" => DefinitionSource::Url {
            repository: repo.nonempty_str()?.to_string(),
        },
        _ => {
            inline_testdef(&repo)?;
            DefinitionSource::Inline(repo.node.to_serde())
        }
    };
    let mut parameters = serde_yaml_ng::Mapping::new();
    for key in ["params", "parameters"] {
        if let Some(p) = at.opt(key) {
            p.map()?;
            if let serde_yaml_ng::Value::Mapping(m) = p.node.to_serde() {
                parameters.extend(m);
            }
        }
    }
    Ok(Definition {
        name,
        source,
        parameters,
        line: at.line,
    })
}

/// An optional string key.
fn opt_string(at: &At<'_>, key: &str) -> Check<Option<String>> {
    at.opt(key).map(|v| v.str().map(str::to_string)).transpose()
}

/// One entry of `interactive`.
fn script(at: &At<'_>, names: &Names) -> Check<InteractiveScript> {
    at.keys(
        &["name", "prompts", "script"],
        &[
            ("echo", "echoed commands are always kept"),
            ("expected", "no list of expected test cases"),
        ],
    )?;
    let name = names.check(&at.req("name")?)?;
    let prompts = at.req("prompts")?.strings(true)?;
    let mut commands = Vec::new();
    for item in at.req("script")?.items()? {
        commands.push(command(&item, names)?);
    }
    Ok(InteractiveScript {
        name,
        prompts,
        script: commands,
    })
}

/// One entry of an interactive `script`.
fn command(at: &At<'_>, names: &Names) -> Check<InteractiveCommand> {
    const MULTINODE: &str = "multinode is not supported";
    at.keys(
        &[
            "command",
            "name",
            "wait_for_prompt",
            "successes",
            "failures",
        ],
        &[
            ("delay", "commands are sent without a delay"),
            ("lava-send", MULTINODE),
            ("lava-sync", MULTINODE),
            ("lava-wait", MULTINODE),
            ("lava-wait-all", MULTINODE),
        ],
    )?;
    let mut cmd = InteractiveCommand {
        command: None,
        name: None,
        successes: Vec::new(),
        failures: Vec::new(),
    };
    if let Some(c) = at.opt("command") {
        if !c.node.is_null() {
            cmd.command = Some(c.str()?.to_string());
        }
    }
    if let Some(n) = at.opt("name") {
        cmd.name = Some(names.check(&n)?);
    }
    if let Some(w) = at.opt("wait_for_prompt") {
        w.default_only(true, "every command waits for a prompt")?;
    }
    if let Some(s) = at.opt("successes") {
        cmd.successes = messages(&s, &[])?;
    }
    if let Some(f) = at.opt("failures") {
        cmd.failures = messages(
            &f,
            &[
                ("exception", "a matched failure fails the test case"),
                ("error", "a matched failure fails the test case"),
            ],
        )?;
    }
    Ok(cmd)
}

/// A list of `{message: …}` patterns.
fn messages(at: &At<'_>, unsupported: &[Unsupported<'_>]) -> Check<Vec<String>> {
    let mut out = Vec::new();
    for item in at.items()? {
        item.keys(&["message"], unsupported)?;
        out.push(item.req("message")?.nonempty_str()?.to_string());
    }
    Ok(out)
}
