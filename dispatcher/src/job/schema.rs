//! The small toolkit the job checks are written with: a cursor over the YAML tree that knows
//! its key path and line, and one helper per kind of rule LAVA's schema states (required key,
//! allowed keys, type, one-of, range).
//!
//! LAVA's schema is a voluptuous tree; its messages ("extra keys not allowed @ data[...]") name
//! a path but no line. Writing the same rules as plain functions over [`At`] gives each rule one
//! place and each failure one line: `FILE:LINE: key.path: what is wrong`.

use std::time::Duration;

use crate::timeout;
use crate::yaml::{join_index, join_key, Entry, Node, Problem};

/// The result of a check.
pub type Check<T> = Result<T, Problem>;

/// A value in the job file with its key path and the line to blame.
#[derive(Debug, Clone)]
pub struct At<'a> {
    /// The value.
    pub node: &'a Node,
    /// Its key path (`actions[0].deploy.kernel`).
    pub path: String,
    /// The line of its key (or of the sequence item).
    pub line: usize,
}

/// A key LAVA accepts that labboot refuses, and why.
pub type Unsupported<'s> = (&'s str, &'s str);

impl<'a> At<'a> {
    /// The document root.
    pub fn root(node: &'a Node) -> At<'a> {
        At {
            node,
            path: String::new(),
            line: node.line,
        }
    }

    /// A problem at this value.
    pub fn fail(&self, message: impl Into<String>) -> Problem {
        Problem::new(self.line, self.path.clone(), message)
    }

    /// The child under `entry`.
    fn child(&self, entry: &'a Entry) -> At<'a> {
        At {
            node: &entry.value,
            path: join_key(&self.path, &entry.name()),
            line: entry.key.line,
        }
    }

    /// The value under `key`, if this is a mapping that has it (a `null` value counts as absent
    /// only where the caller says so).
    pub fn opt(&self, key: &str) -> Option<At<'a>> {
        self.node.entry(key).map(|e| self.child(e))
    }

    /// The value under `key`, which must be there.
    pub fn req(&self, key: &str) -> Check<At<'a>> {
        self.opt(key).ok_or_else(|| self.missing(key))
    }

    /// The problem "`key` is missing here".
    pub fn missing(&self, key: &str) -> Problem {
        Problem::new(
            self.line,
            join_key(&self.path, key),
            "required key is missing",
        )
    }

    /// The entries of a mapping.
    pub fn map(&self) -> Check<Vec<(String, At<'a>)>> {
        match self.node.as_map() {
            Some(entries) => entries
                .iter()
                .map(|e| {
                    if e.key.as_str().is_none() {
                        Err(Problem::new(
                            e.key.line,
                            join_key(&self.path, &e.name()),
                            "keys must be strings",
                        ))
                    } else {
                        Ok((e.name(), self.child(e)))
                    }
                })
                .collect(),
            None => Err(self.fail(format!("must be a mapping (got {})", self.node.kind()))),
        }
    }

    /// The items of a list.
    pub fn items(&self) -> Check<Vec<At<'a>>> {
        match self.node.as_seq() {
            Some(items) => Ok(items
                .iter()
                .enumerate()
                .map(|(i, node)| At {
                    node,
                    path: join_index(&self.path, i),
                    line: node.line,
                })
                .collect()),
            None => Err(self.fail(format!("must be a list (got {})", self.node.kind()))),
        }
    }

    /// Every key must be in `allowed`; keys in `unsupported` are LAVA's but refused by labboot.
    pub fn keys(&self, allowed: &[&str], unsupported: &[Unsupported<'_>]) -> Check<()> {
        for (name, at) in self.map()? {
            if let Some((_, why)) = unsupported.iter().find(|(k, _)| *k == name) {
                return Err(at.fail(format!("not supported by labboot: {why}")));
            }
            if !allowed.contains(&name.as_str()) {
                let mut message = "unknown key".to_string();
                let known = allowed.iter().chain(unsupported.iter().map(|(k, _)| k));
                if let Some(best) = closest(&name, known) {
                    message.push_str(&format!(" (did you mean '{best}'?)"));
                }
                return Err(at.fail(message));
            }
        }
        Ok(())
    }

    /// A string.
    pub fn str(&self) -> Check<&'a str> {
        self.node
            .as_str()
            .ok_or_else(|| self.fail(format!("must be a string (got {})", self.node.kind())))
    }

    /// A string that is not empty.
    pub fn nonempty_str(&self) -> Check<&'a str> {
        let s = self.str()?;
        if s.is_empty() {
            return Err(self.fail("must not be empty"));
        }
        Ok(s)
    }

    /// A string of at most `max` characters, not empty.
    pub fn str_len(&self, max: usize) -> Check<&'a str> {
        let s = self.nonempty_str()?;
        if s.chars().count() > max {
            return Err(self.fail(format!("must be at most {max} characters long")));
        }
        Ok(s)
    }

    /// A boolean.
    pub fn bool(&self) -> Check<bool> {
        self.node
            .as_bool()
            .ok_or_else(|| self.fail(format!("must be true or false (got {})", self.node.kind())))
    }

    /// An integer in `min..=max`.
    pub fn int(&self, min: i64, max: i64) -> Check<i64> {
        let Some(i) = self.node.as_i64() else {
            return Err(self.fail(format!("must be an integer (got {})", self.node.kind())));
        };
        if i < min {
            return Err(self.fail(format!("must be at least {min} (got {i})")));
        }
        if i > max {
            return Err(self.fail(format!("must be at most {max} (got {i})")));
        }
        Ok(i)
    }

    /// One of the listed strings.
    pub fn one_of(&self, values: &[&str]) -> Check<&'a str> {
        let s = self.node.as_str();
        match s {
            Some(s) if values.contains(&s) => Ok(s),
            _ if values.len() == 1 => Err(self.fail(format!(
                "must be '{}' (got {})",
                values.join(""),
                self.shown()
            ))),
            _ => Err(self.fail(format!(
                "must be one of {} (got {})",
                values.join(", "),
                self.shown()
            ))),
        }
    }

    /// The value as a message shows it: `'text'` for strings, the kind otherwise.
    pub fn shown(&self) -> String {
        match &self.node.value {
            crate::yaml::Value::Str(s) => format!("'{s}'"),
            crate::yaml::Value::Int(i) => i.to_string(),
            crate::yaml::Value::Bool(b) => b.to_string(),
            _ => self.node.kind().to_string(),
        }
    }

    /// A list of strings (each non-empty when `nonempty`).
    pub fn strings(&self, nonempty: bool) -> Check<Vec<String>> {
        self.items()?
            .iter()
            .map(|item| {
                if nonempty {
                    item.nonempty_str().map(str::to_string)
                } else {
                    item.str().map(str::to_string)
                }
            })
            .collect()
    }

    /// A string or a list of strings (LAVA's `Any(str, [str])`), as a list.
    pub fn str_or_list(&self, nonempty: bool) -> Check<Vec<String>> {
        if self.node.as_seq().is_some() {
            return self.strings(nonempty);
        }
        match self.node.as_str() {
            Some(s) if nonempty && s.is_empty() => Err(self.fail("must not be empty")),
            Some(s) => Ok(vec![s.to_string()]),
            None => Err(self.fail(format!(
                "must be a string or a list of strings (got {})",
                self.node.kind()
            ))),
        }
    }

    /// A LAVA timeout (`{minutes: N}`), at least 1 as LAVA's job schema says.
    pub fn timeout(&self) -> Check<Duration> {
        timeout::parse_node(self.node, &self.path, self.line, 1)
    }

    /// A key LAVA accepts that labboot supports only with its default value.
    pub fn default_only(&self, default: bool, why: &str) -> Check<()> {
        if self.bool()? != default {
            return Err(self.fail(format!("only {default} is supported by labboot: {why}")));
        }
        Ok(())
    }
}

/// The known key nearest to a misspelt one (at most two edits away).
fn closest<'k>(name: &str, known: impl Iterator<Item = &'k &'k str>) -> Option<&'k str> {
    known
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            let next = (row[j + 1] + 1).min(row[j] + 1).min(prev + cost);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::parse;

    #[test]
    fn unknown_key_suggests() {
        let doc = parse("promts: [a]\n").expect("yaml");
        let err = At::root(&doc)
            .keys(&["prompts", "method"], &[])
            .expect_err("unknown");
        assert_eq!(err.path, "promts");
        assert_eq!(err.message, "unknown key (did you mean 'prompts'?)");
    }

    #[test]
    fn unsupported_key() {
        let doc = parse("a: 1\nrepeat: 2\n").expect("yaml");
        let err = At::root(&doc)
            .keys(&["a"], &[("repeat", "no repeats")])
            .expect_err("unsupported");
        assert_eq!((err.line, err.path.as_str()), (2, "repeat"));
        assert_eq!(err.message, "not supported by labboot: no repeats");
    }

    #[test]
    fn required_key_blames_parent() {
        let doc = parse("x: 1\nboot:\n  a: 1\n").expect("yaml");
        let boot = At::root(&doc).req("boot").expect("boot");
        let err = boot.req("method").expect_err("missing");
        assert_eq!((err.line, err.path.as_str()), (2, "boot.method"));
    }

    #[test]
    fn distance() {
        assert_eq!(edit_distance("promts", "prompts"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kernel", "kernel"), 0);
    }
}
