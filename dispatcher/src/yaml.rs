//! YAML with line numbers, so every check can say `FILE:LINE: key.path: message`.
//!
//! serde's YAML types forget where a value was written, and a job or device error that names
//! no line sends the reader hunting. This module builds a small tree from yaml-rust2's event
//! parser: every mapping key, mapping value and sequence item carries the (1-based) line it
//! starts on. Plain scalars are typed the way serde_yaml_ng types them (YAML 1.2 core schema:
//! `null`/`~`/empty, `true`/`false`, decimal/hex/octal/binary integers, floats), so a subtree
//! converted with [`Node::to_serde`] equals what serde_yaml_ng would have read. Anchors and
//! aliases are expanded (with a cap against alias bombs), `<<` merge keys are applied as PyYAML
//! (which LAVA uses) applies them, and duplicate keys are an error rather than a silent overwrite.

use std::collections::HashMap;
use std::fmt;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Most nodes a document may expand to (aliases included) before it is refused.
const MAX_NODES: usize = 1_000_000;

/// Deepest nesting accepted (the tree is walked recursively).
const MAX_DEPTH: usize = 200;

/// One value of the tree and the line it starts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// 1-based line of the value's first character (for a block mapping: its first key).
    pub line: usize,
    /// The value.
    pub value: Value,
}

/// A YAML value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`, `~` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer that fits i64.
    Int(i64),
    /// Any other number.
    Float(f64),
    /// A string (any quoted scalar, or a plain one that is nothing else).
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in file order.
    Map(Vec<Entry>),
}

/// One key and value of a mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The key (its line is the key's line).
    pub key: Node,
    /// The value.
    pub value: Node,
}

/// One problem found in a YAML document: where, which key, what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line (0: unknown).
    pub line: usize,
    /// The key path (`actions[1].boot.prompts`), empty for the document itself.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    /// A problem at `line` with `path`.
    pub fn new(line: usize, path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            line,
            path: path.into(),
            message: message.into(),
        }
    }

    /// The one-line form `FILE:LINE: path: message` (parts that are unknown are left out).
    pub fn render(&self, file: &str) -> String {
        let mut out = file.to_string();
        if self.line > 0 {
            out.push_str(&format!(":{}", self.line));
        }
        if !self.path.is_empty() {
            out.push_str(&format!(": {}", self.path));
        }
        out.push_str(&format!(": {}", self.message));
        out
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "line {}: {}", self.line, self.message)
        } else {
            write!(f, "line {}: {}: {}", self.line, self.path, self.message)
        }
    }
}

/// `path.key` (or `key` at the top).
pub fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `path[index]`.
pub fn join_index(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

impl Node {
    /// The entries, if this is a mapping.
    pub fn as_map(&self) -> Option<&[Entry]> {
        match &self.value {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The items, if this is a sequence.
    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(items) => Some(items),
            _ => None,
        }
    }

    /// The text, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The number, if this is an integer.
    pub fn as_i64(&self) -> Option<i64> {
        match self.value {
            Value::Int(i) => Some(i),
            _ => None,
        }
    }

    /// The flag, if this is a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match self.value {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// Whether this is `null`.
    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    /// The entry for `key`, if this is a mapping that has it.
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        self.as_map()?.iter().find(|e| e.key.as_str() == Some(key))
    }

    /// The value under `key`, if this is a mapping that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|e| &e.value)
    }

    /// What kind of value this is, for messages ("a string", "a mapping", …).
    pub fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// A scalar as text (strings as they are, numbers and booleans as YAML writes them);
    /// None for collections.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Null => Some(String::new()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Str(s) => Some(s.clone()),
            Value::Seq(_) | Value::Map(_) => None,
        }
    }

    /// The same value as serde_yaml_ng's type (for fields kept as written).
    pub fn to_serde(&self) -> serde_yaml_ng::Value {
        use serde_yaml_ng::Value as S;
        match &self.value {
            Value::Null => S::Null,
            Value::Bool(b) => S::Bool(*b),
            Value::Int(i) => S::Number((*i).into()),
            Value::Float(f) => S::Number((*f).into()),
            Value::Str(s) => S::String(s.clone()),
            Value::Seq(items) => S::Sequence(items.iter().map(Node::to_serde).collect()),
            Value::Map(entries) => S::Mapping(
                entries
                    .iter()
                    .map(|e| (e.key.to_serde(), e.value.to_serde()))
                    .collect(),
            ),
        }
    }
}

impl Entry {
    /// The key as text (keys are nearly always strings; others are written as YAML writes them).
    pub fn name(&self) -> String {
        self.key
            .scalar_text()
            .unwrap_or_else(|| "<complex key>".to_string())
    }
}

/// The scanner message for a quoted scalar continued on a line indented too little.
const QUOTED_INDENT: &str = "invalid indentation in quoted scalar";

/// How many such lines are indented before giving up.
const MAX_REINDENTS: usize = 1000;

/// Parses one YAML document. An empty document is `null` at line 1; a second document is an
/// error (job and device files hold exactly one).
///
/// libyaml (serde_yaml_ng, and PyYAML which LAVA uses) accepts a quoted scalar whose
/// continuation lines are indented less than its key; yaml-rust2 does not, and LAVA's base
/// template prints one (`interrupt-character: '` newline `'`). Leading spaces of a quoted
/// scalar's continuation line are not part of its value, so such a line is indented and the
/// text parsed again: same value, same line numbers.
pub fn parse(text: &str) -> Result<Node, Problem> {
    let mut fixed: Option<String> = None;
    for _ in 0..MAX_REINDENTS {
        let current = fixed.as_deref().unwrap_or(text);
        match parse_once(current) {
            Err((p, Some(col))) if p.message.ends_with(QUOTED_INDENT) => {
                match reindent(current, p.line, col) {
                    Some(next) => fixed = Some(next),
                    None => return Err(p),
                }
            }
            other => return other.map_err(|(p, _)| p),
        }
    }
    parse_once(fixed.as_deref().unwrap_or(text)).map_err(|(p, _)| p)
}

/// Indents the continuation lines of the quoted scalar that starts at 1-based `line`, 0-based
/// character `col`, two spaces deeper than its first line; None if that changes nothing.
fn reindent(text: &str, line: usize, col: usize) -> Option<String> {
    let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    let first = line.checked_sub(1)?;
    let last = quoted_scalar_end(&lines, first, col)?;
    let indent = |l: &str| l.len() - l.trim_start_matches(' ').len();
    let wanted = indent(lines.get(first)?) + 2;
    let mut changed = false;
    for l in lines.iter_mut().take(last + 1).skip(first + 1) {
        if !l.trim().is_empty() && indent(l) < wanted {
            *l = format!("{}{}", " ".repeat(wanted), l.trim_start_matches(' '));
            changed = true;
        }
    }
    changed.then(|| lines.join("\n"))
}

/// The index of the line where the quoted scalar opening at `lines[first]`, character `col`,
/// closes.
fn quoted_scalar_end(lines: &[String], first: usize, col: usize) -> Option<usize> {
    let mut chars = lines
        .iter()
        .enumerate()
        .skip(first)
        .flat_map(|(i, l)| l.chars().chain(std::iter::once('\n')).map(move |c| (i, c)))
        .skip(col);
    let (_, quote) = chars.next()?;
    if quote != '\'' && quote != '"' {
        return None;
    }
    let mut chars = chars.peekable();
    while let Some((i, c)) = chars.next() {
        if quote == '"' && c == '\\' {
            chars.next();
        } else if c == quote {
            if quote == '\'' && chars.peek().map(|(_, n)| *n) == Some('\'') {
                chars.next();
            } else {
                return Some(i);
            }
        }
    }
    None
}

/// One parse; for a scanner error, also the 0-based column it names.
fn parse_once(text: &str) -> Result<Node, (Problem, Option<usize>)> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut builder, true) {
        let problem = Problem::new(
            e.marker().line(),
            "",
            format!("YAML syntax error: {}", e.info()),
        );
        return Err((problem, Some(e.marker().col())));
    }
    if let Some(problem) = builder.problem {
        return Err((problem, None));
    }
    match builder.documents.len() {
        0 => Ok(Node {
            line: 1,
            value: Value::Null,
        }),
        1 => Ok(builder.documents.remove(0)),
        _ => Err((
            Problem::new(
                builder.documents[1].line,
                "",
                "more than one YAML document: a file holds exactly one",
            ),
            None,
        )),
    }
}

/// A collection being built.
enum Open {
    Seq {
        line: usize,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        line: usize,
        anchor: usize,
        entries: Vec<Entry>,
        pending_key: Option<Node>,
    },
}

/// The event receiver that builds the tree.
#[derive(Default)]
struct Builder {
    stack: Vec<Open>,
    documents: Vec<Node>,
    anchors: HashMap<usize, Node>,
    nodes: usize,
    problem: Option<Problem>,
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.problem.is_some() {
            return;
        }
        let line = mark.line();
        if self.stack.len() >= MAX_DEPTH
            && matches!(ev, Event::SequenceStart(..) | Event::MappingStart(..))
        {
            self.problem = Some(Problem::new(
                line,
                "",
                format!("nested more than {MAX_DEPTH} levels deep"),
            ));
            return;
        }
        match ev {
            Event::SequenceStart(anchor, _) => self.stack.push(Open::Seq {
                line,
                anchor,
                items: Vec::new(),
            }),
            Event::MappingStart(anchor, _) => self.stack.push(Open::Map {
                line,
                anchor,
                entries: Vec::new(),
                pending_key: None,
            }),
            Event::SequenceEnd => {
                if let Some(Open::Seq {
                    line,
                    anchor,
                    items,
                }) = self.stack.pop()
                {
                    let node = Node {
                        line,
                        value: Value::Seq(items),
                    };
                    self.finish(node, anchor);
                }
            }
            Event::MappingEnd => {
                if let Some(Open::Map {
                    line,
                    anchor,
                    entries,
                    ..
                }) = self.stack.pop()
                {
                    match merge_keys(entries) {
                        Ok(entries) => {
                            let node = Node {
                                line,
                                value: Value::Map(entries),
                            };
                            self.finish(node, anchor);
                        }
                        Err(p) => self.problem = Some(p),
                    }
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let node = Node {
                    line,
                    value: scalar(text, style, tag.as_ref()),
                };
                self.finish(node, anchor);
            }
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(node) => {
                    self.nodes = self.nodes.saturating_add(count(&node));
                    self.add(node);
                }
                None => {
                    self.problem = Some(Problem::new(line, "", "alias to an unknown anchor"));
                }
            },
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

impl Builder {
    /// A complete node: remember its anchor, then add it to its parent.
    fn finish(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        self.nodes += 1;
        self.add(node);
    }

    /// Adds a complete node to the collection being built (or ends a document).
    fn add(&mut self, node: Node) {
        if self.nodes > MAX_NODES {
            self.problem = Some(Problem::new(
                node.line,
                "",
                "document too large (aliases expand to more than a million values)",
            ));
            return;
        }
        match self.stack.last_mut() {
            None => self.documents.push(node),
            Some(Open::Seq { items, .. }) => items.push(node),
            Some(Open::Map {
                entries,
                pending_key,
                ..
            }) => match pending_key.take() {
                None => *pending_key = Some(node),
                Some(key) => {
                    let duplicate = key.scalar_text().is_some()
                        && entries.iter().any(|e| e.key.value == key.value);
                    if duplicate {
                        let name = key.scalar_text().unwrap_or_default();
                        self.problem = Some(Problem::new(
                            key.line,
                            name,
                            "duplicate key in the same mapping",
                        ));
                    } else {
                        entries.push(Entry { key, value: node });
                    }
                }
            },
        }
    }
}

/// How many nodes a subtree holds.
fn count(node: &Node) -> usize {
    match &node.value {
        Value::Seq(items) => 1 + items.iter().map(count).sum::<usize>(),
        Value::Map(entries) => {
            1 + entries
                .iter()
                .map(|e| count(&e.key) + count(&e.value))
                .sum::<usize>()
        }
        _ => 1,
    }
}

/// Applies `<<` merge keys: the merged mappings' entries are added where the mapping does not
/// already have the key.
fn merge_keys(entries: Vec<Entry>) -> Result<Vec<Entry>, Problem> {
    if !entries.iter().any(|e| e.key.as_str() == Some("<<")) {
        return Ok(entries);
    }
    let mut own = Vec::new();
    let mut merged: Vec<Entry> = Vec::new();
    for entry in entries {
        if entry.key.as_str() != Some("<<") {
            own.push(entry);
            continue;
        }
        let sources: Vec<Node> = match entry.value.value {
            Value::Map(_) => vec![entry.value],
            Value::Seq(items) => items,
            _ => {
                return Err(Problem::new(
                    entry.key.line,
                    "<<",
                    "a merge key takes a mapping or a list of mappings",
                ))
            }
        };
        for source in sources {
            let Value::Map(source_entries) = source.value else {
                return Err(Problem::new(
                    source.line,
                    "<<",
                    "a merge key takes a mapping or a list of mappings",
                ));
            };
            for e in source_entries {
                if !merged.iter().any(|m| m.key.value == e.key.value) {
                    merged.push(e);
                }
            }
        }
    }
    for e in merged {
        if !own.iter().any(|o| o.key.value == e.key.value) {
            own.push(e);
        }
    }
    Ok(own)
}

/// Types a scalar: quoted ones are strings, plain ones follow the YAML 1.2 core schema.
fn scalar(text: String, style: TScalarStyle, tag: Option<&Tag>) -> Value {
    if let Some(tag) = tag {
        let core = tag.handle == "!!" || tag.handle == "tag:yaml.org,2002:";
        if core && tag.suffix == "str" {
            return Value::Str(text);
        }
        if core && ["int", "float", "bool", "null"].contains(&tag.suffix.as_str()) {
            return resolve_plain(text);
        }
    }
    if style != TScalarStyle::Plain {
        return Value::Str(text);
    }
    resolve_plain(text)
}

/// The YAML 1.2 core schema for a plain scalar, as serde_yaml_ng applies it.
fn resolve_plain(text: String) -> Value {
    match text.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY)
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    if let Some(i) = parse_int(&text) {
        return Value::Int(i);
    }
    if looks_like_float(&text) {
        if let Ok(f) = text.parse::<f64>() {
            return Value::Float(f);
        }
    }
    Value::Str(text)
}

/// Integers: optional sign, then decimal (no leading zeros), `0x`, `0o` or `0b`.
fn parse_int(text: &str) -> Option<i64> {
    let (negative, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (radix, body) = if let Some(rest) = digits.strip_prefix("0x") {
        (16, rest)
    } else if let Some(rest) = digits.strip_prefix("0o") {
        (8, rest)
    } else if let Some(rest) = digits.strip_prefix("0b") {
        (2, rest)
    } else {
        if digits.len() > 1 && digits.starts_with('0') {
            return None;
        }
        (10, digits)
    };
    if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = i128::from_str_radix(body, radix).ok()?;
    let value = if negative { -magnitude } else { magnitude };
    i64::try_from(value).ok()
}

/// Whether a plain scalar is written as a decimal float (digits with a point or an exponent).
fn looks_like_float(text: &str) -> bool {
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    let mut digits = false;
    let mut point_or_exp = false;
    for c in body.chars() {
        match c {
            '0'..='9' => digits = true,
            '.' | 'e' | 'E' => point_or_exp = true,
            '-' | '+' => {}
            _ => return false,
        }
    }
    digits && point_or_exp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_keys_and_items() {
        let doc = parse("# comment\na: 1\nb:\n  - x\n  - c: 2\n").expect("parses");
        let a = doc.entry("a").expect("a");
        assert_eq!(a.key.line, 2);
        assert_eq!(a.value.as_i64(), Some(1));
        let b = doc.get("b").and_then(Node::as_seq).expect("b");
        assert_eq!(b[0].line, 4);
        assert_eq!(b[1].line, 5);
        assert_eq!(b[1].get("c").and_then(Node::as_i64), Some(2));
    }

    #[test]
    fn scalar_types_follow_serde_yaml_ng() {
        let text = "a: 0x10\nb: '5'\nc: 08\nd: True\ne: ~\nf: 1.5\ng: -3\nh: 1e3\ni: abc\n";
        let doc = parse(text).expect("parses");
        let ours = doc.to_serde();
        let theirs: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).expect("serde parses");
        assert_eq!(ours, theirs);
        assert_eq!(doc.get("c").and_then(Node::as_str), Some("08"));
    }

    #[test]
    fn syntax_error_has_line() {
        let err = parse("a: 1\n b: 2\n").expect_err("bad");
        assert_eq!(err.line, 2);
        assert!(err.message.starts_with("YAML syntax error"));
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let err = parse("a: 1\nb: 2\na: 3\n").expect_err("dup");
        assert_eq!((err.line, err.path.as_str()), (3, "a"));
    }

    #[test]
    fn aliases_and_merge_keys() {
        let doc = parse("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n").expect("parses");
        let other = doc.get("other").expect("other");
        assert_eq!(other.get("x").and_then(Node::as_i64), Some(1));
        assert_eq!(other.get("y").and_then(Node::as_i64), Some(3));
    }

    #[test]
    fn alias_bomb_is_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let err = parse(&text).expect_err("too large");
        assert!(err.message.contains("too large"));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let flow = "[".repeat(10_000) + &"]".repeat(10_000);
        assert!(parse(&flow).is_err());
        let block: String = (0..300).map(|i| format!("{}a:\n", " ".repeat(i))).collect();
        let err = parse(&block).expect_err("too deep");
        assert!(err.message.contains("nested more than"), "{}", err.message);
        assert_eq!(err.line, 201);
    }

    #[test]
    fn empty_and_multi_documents() {
        assert_eq!(parse("").expect("empty").value, Value::Null);
        assert!(parse("a: 1\n---\nb: 2\n").is_err());
    }

    #[test]
    fn under_indented_quoted_scalar_as_libyaml_reads_it() {
        let text = "a:\n  b: '\n'\n  c: \"x\\\"\ny\"\n  e: 'it''s\n\nz'\n  d: 1\n";
        let doc = parse(text).expect("parses");
        let theirs: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).expect("serde parses");
        assert_eq!(doc.to_serde(), theirs);
        let d = doc.get("a").and_then(|a| a.entry("d")).expect("d");
        assert_eq!(d.key.line, 9);
    }

    #[test]
    fn problem_render() {
        let p = Problem::new(7, "actions[1].boot.promts", "unknown key");
        assert_eq!(
            p.render("job.yaml"),
            "job.yaml:7: actions[1].boot.promts: unknown key"
        );
    }
}
