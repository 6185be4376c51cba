//! A pure matcher over serial console bytes: what every console wait feeds its reads to.
//!
//! It works like pexpect's `expect` list, which LAVA's waits are written for: the patterns are
//! searched in the bytes received since the last match, the pattern whose match starts
//! earliest wins (the earlier pattern on a tie), and what follows the match stays for the next
//! search. Regexes use pexpect's flags (`.` matches a newline) and run on bytes, so invalid
//! UTF-8 from a board never stops a match.
//!
//! Memory is bounded whatever the board sends: the search window keeps the last `window`
//! bytes (64 KiB by default; older bytes are dropped and counted), and each new chunk is only
//! searched from `lookback` bytes (8 KiB) before it, so a flood costs time proportional to its
//! size, not to the window. A prompt that arrives in pieces matches once its last piece is in;
//! a match must start within `lookback` bytes of the data that completes it.
//! No I/O and no clock here: deadlines belong to the caller.

use std::collections::{BTreeMap, VecDeque};

use regex::bytes::{Regex, RegexBuilder};

/// The default search window (bytes kept since the last match).
pub const DEFAULT_WINDOW: usize = 64 * 1024;
/// The default lookback (how far before new data a match may start).
pub const DEFAULT_LOOKBACK: usize = 8 * 1024;
/// Largest compiled regex accepted (patterns come from jobs and device files).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// One thing to wait for: a literal string or a regex, with an id.
#[derive(Debug, Clone)]
pub struct Pattern {
    id: String,
    source: String,
    literal: bool,
    re: Regex,
}

impl Pattern {
    /// A literal string (its id is the string itself).
    pub fn literal(text: &str) -> Pattern {
        let re = RegexBuilder::new(&regex::escape(text))
            .size_limit(usize::MAX)
            .build()
            .unwrap_or_else(|_| never());
        Pattern {
            id: text.to_string(),
            source: text.to_string(),
            literal: true,
            re,
        }
    }

    /// A regex in pexpect's dialect as far as Rust's regex allows (`.` matches a newline,
    /// `^` is the start of the unsearched text); its id is the regex.
    pub fn regex(re: &str) -> Result<Pattern, regex::Error> {
        let compiled = RegexBuilder::new(re)
            .dot_matches_new_line(true)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()?;
        Ok(Pattern {
            id: re.to_string(),
            source: re.to_string(),
            literal: false,
            re: compiled,
        })
    }

    /// The same pattern with another id.
    pub fn with_id(mut self, id: impl Into<String>) -> Pattern {
        self.id = id.into();
        self
    }

    /// The id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The literal text or the regex, as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether this is a literal.
    pub fn is_literal(&self) -> bool {
        self.literal
    }
}

/// A regex that matches nothing (only for a literal whose escaped form cannot be built).
fn never() -> Regex {
    Regex::new(r"[^\x00-\x{10FFFF}]").unwrap_or_else(|_| Regex::new("$^").expect("static regex"))
}

/// A pattern found in the console output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// Position of the pattern in the matcher's list.
    pub index: usize,
    /// The pattern's id.
    pub id: String,
    /// The matched text (invalid UTF-8 replaced).
    pub text: String,
    /// The text between the previous match (or the start) and this one.
    pub before: String,
    /// Named groups of a regex that took part in the match.
    pub groups: BTreeMap<String, String>,
    /// Bytes dropped from the window since the previous match (`before` misses them).
    pub dropped: u64,
}

/// Searches console bytes for the first of a list of patterns.
#[derive(Debug, Clone)]
pub struct Matcher {
    patterns: Vec<Pattern>,
    buf: Vec<u8>,
    input: VecDeque<u8>,
    searched: usize,
    window: usize,
    lookback: usize,
    dropped: u64,
}

impl Matcher {
    /// A matcher for `patterns` with the default window and lookback.
    pub fn new(patterns: Vec<Pattern>) -> Matcher {
        Matcher {
            patterns,
            buf: Vec::new(),
            input: VecDeque::new(),
            searched: 0,
            window: DEFAULT_WINDOW,
            lookback: DEFAULT_LOOKBACK,
            dropped: 0,
        }
    }

    /// The same matcher with another window (at least 2 bytes).
    pub fn with_window(mut self, window: usize) -> Matcher {
        self.window = window.max(2);
        self
    }

    /// The same matcher with another lookback (at least 1 byte).
    pub fn with_lookback(mut self, lookback: usize) -> Matcher {
        self.lookback = lookback.max(1);
        self
    }

    /// The patterns.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// Replaces the patterns; the kept text is searched again with the new ones.
    pub fn set_patterns(&mut self, patterns: Vec<Pattern>) {
        self.patterns = patterns;
        self.searched = 0;
    }

    /// Adds bytes and returns the first match, if any. Bytes after the match are kept: call
    /// [`Matcher::poll`] (or `feed` again) for further matches in them.
    pub fn feed(&mut self, bytes: &[u8]) -> Option<Match> {
        self.input.extend(bytes);
        self.poll()
    }

    /// The next match in the bytes already fed, if any.
    pub fn poll(&mut self) -> Option<Match> {
        loop {
            if let Some(m) = self.search() {
                return Some(m);
            }
            self.searched = self.buf.len();
            if self.input.is_empty() {
                return None;
            }
            // Move input into the window in steps, so a huge chunk is searched piece by piece.
            let step = self.input.len().min((self.window / 2).max(1));
            self.buf.extend(self.input.drain(..step));
            if self.buf.len() > self.window {
                let excess = self.buf.len() - self.window;
                self.buf.drain(..excess);
                self.searched = self.searched.saturating_sub(excess);
                self.dropped += excess as u64;
            }
        }
    }

    /// The text kept since the last match (window bytes at most), not counting unsearched input.
    pub fn buffer(&self) -> &[u8] {
        &self.buf
    }

    /// Forgets everything received.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.input.clear();
        self.searched = 0;
        self.dropped = 0;
    }

    /// Finds the earliest-starting match in the window, consuming through its end.
    fn search(&mut self) -> Option<Match> {
        if self.searched >= self.buf.len() && !self.buf.is_empty() {
            return None;
        }
        let from = self.searched.saturating_sub(self.lookback);
        let mut best: Option<(usize, usize, usize)> = None;
        for (i, p) in self.patterns.iter().enumerate() {
            if let Some(m) = p.re.find_at(&self.buf, from) {
                if best.is_none_or(|(start, _, _)| m.start() < start) {
                    best = Some((m.start(), m.end(), i));
                }
            }
        }
        let (start, end, index) = best?;
        let pattern = &self.patterns[index];
        let mut groups = BTreeMap::new();
        if !pattern.literal {
            if let Some(caps) = pattern.re.captures_at(&self.buf, start) {
                for name in pattern.re.capture_names().flatten() {
                    if let Some(g) = caps.name(name) {
                        groups.insert(
                            name.to_string(),
                            String::from_utf8_lossy(g.as_bytes()).into(),
                        );
                    }
                }
            }
        }
        let found = Match {
            index,
            id: pattern.id.clone(),
            text: String::from_utf8_lossy(&self.buf[start..end]).into_owned(),
            before: String::from_utf8_lossy(&self.buf[..start]).into_owned(),
            groups,
            dropped: std::mem::take(&mut self.dropped),
        };
        self.buf.drain(..end);
        self.searched = 0;
        Some(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt_and_errors() -> Matcher {
        Matcher::new(vec![
            Pattern::literal("=> ").with_id("prompt"),
            Pattern::regex(r"Retry count exceeded|ERROR: (?P<what>\w+)").unwrap(),
        ])
    }

    #[test]
    fn prompt_split_across_chunks() {
        let mut m = prompt_and_errors();
        assert_eq!(m.feed(b"U-Boot 2024.01\r\nHit any key\r\n="), None);
        assert_eq!(m.feed(b">"), None);
        let hit = m.feed(b" ").unwrap();
        assert_eq!(
            (hit.index, hit.id.as_str(), hit.text.as_str()),
            (0, "prompt", "=> ")
        );
        assert_eq!(hit.before, "U-Boot 2024.01\r\nHit any key\r\n");
        assert_eq!(m.feed(b""), None);
    }

    #[test]
    fn every_split_point_of_a_prompt() {
        let data = b"noise noise root@board:~# more";
        for cut in 0..data.len() {
            let mut m = Matcher::new(vec![Pattern::literal("root@board:~# ")]);
            let hit = match m.feed(&data[..cut]) {
                Some(hit) => {
                    assert_eq!(m.feed(&data[cut..]), None);
                    hit
                }
                None => m.feed(&data[cut..]).expect("match"),
            };
            assert_eq!(hit.before, "noise noise ", "cut {cut}");
            assert_eq!(m.buffer(), b"more");
        }
    }

    #[test]
    fn regex_error_messages_and_groups() {
        let mut m = prompt_and_errors();
        let hit = m.feed(b"Loading...\nERROR: timeout waiting\n=> ").unwrap();
        assert_eq!(hit.index, 1);
        assert_eq!(hit.id, r"Retry count exceeded|ERROR: (?P<what>\w+)");
        assert_eq!(hit.text, "ERROR: timeout");
        assert_eq!(hit.groups.get("what").map(String::as_str), Some("timeout"));
        // The prompt after the error is still there for the next search.
        let next = m.poll().unwrap();
        assert_eq!((next.index, next.before.as_str()), (0, " waiting\n"));
        assert!(Pattern::regex("(unclosed").is_err());
    }

    #[test]
    fn earliest_match_wins_then_list_order() {
        let mut m = Matcher::new(vec![Pattern::literal("login:"), Pattern::literal("panic")]);
        assert_eq!(m.feed(b"Kernel panic ... login:").unwrap().index, 1);
        let mut m = Matcher::new(vec![
            Pattern::regex("lo+gin").unwrap(),
            Pattern::literal("login"),
        ]);
        assert_eq!(m.feed(b"xx login").unwrap().index, 0);
    }

    #[test]
    fn dot_matches_newline_like_pexpect() {
        let mut m = Matcher::new(vec![
            Pattern::regex("Starting kernel.*Linux version").unwrap()
        ]);
        assert!(m
            .feed(b"Starting kernel ...\r\n\r\n[    0.000000] Linux version 6.1")
            .is_some());
    }

    #[test]
    fn window_is_bounded_under_a_flood() {
        let mut m = Matcher::new(vec![Pattern::literal("login:")]).with_window(4096);
        let line = vec![b'x'; 1000];
        for _ in 0..1000 {
            assert_eq!(m.feed(&line), None);
            assert!(m.buffer().len() <= 4096);
        }
        let hit = m.feed(b"\nlogin:").unwrap();
        assert!(hit.dropped > 990_000, "{}", hit.dropped);
        assert!(hit.before.len() <= 4096);
        // One huge chunk is searched piece by piece: the early prompt is not lost.
        let mut big = b"first login:".to_vec();
        big.extend(vec![b'y'; 1 << 20]);
        let mut m = Matcher::new(vec![Pattern::literal("login:")]).with_window(4096);
        assert_eq!(m.feed(&big).unwrap().before, "first ");
        assert_eq!(m.poll(), None);
        assert!(m.buffer().len() <= 4096);
    }

    #[test]
    fn invalid_utf8_never_panics() {
        let mut m = Matcher::new(vec![
            Pattern::regex(r"(?P<n>\d+) errors").unwrap(),
            Pattern::literal("é"),
        ]);
        let hit = m.feed(b"\xff\xfe\xc3 3 errors").unwrap();
        assert_eq!(hit.groups["n"], "3");
        assert!(hit.before.contains('\u{fffd}'));
        // A literal split inside a multi-byte character.
        assert_eq!(m.feed(b"\xc3"), None);
        assert_eq!(m.feed(b"\xa9").unwrap().index, 1);
        let mut seed = 7u32;
        for _ in 0..5000 {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let n = (seed >> 24) as usize % 9;
            let chunk: Vec<u8> = (0..n).map(|i| (seed >> (i * 3)) as u8).collect();
            let _ = m.feed(&chunk);
        }
    }

    #[test]
    fn new_patterns_search_the_kept_text() {
        let mut m = Matcher::new(vec![Pattern::literal("nothing")]);
        assert_eq!(m.feed(b"abc => def"), None);
        m.set_patterns(vec![Pattern::literal("=> ")]);
        assert_eq!(m.poll().unwrap().before, "abc ");
        m.clear();
        assert!(m.buffer().is_empty());
    }
}
