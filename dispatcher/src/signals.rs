//! LAVA's test shell signals, parsed from the board's console output.
//!
//! The board-side scripts (see [`crate::overlay`]) print one line per signal, e.g.
//! `<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=boot RESULT=pass>`. On a shared serial console the kernel
//! may print its own messages in the middle of such a line: the signal then arrives in pieces,
//! each piece followed by a kernel message that runs to the end of its line, e.g.
//!
//! ```text
//! <LAVA_SIGNAL_TESTCASE TEST_CASE_ID=a[   12.345678] random: crng init done
//!  RESULT=pass>
//! ```
//!
//! [`SignalParser`] reassembles such signals: while a signal is open, text up to the next
//! printk timestamp (`[ 12.345678]`) belongs to the signal, the rest of that line is the kernel's,
//! and lines that start with a timestamp are skipped. Bounds on the number of lines and bytes
//! an open signal may take turn a lost `>` into [`Event::Malformed`] instead of memory growth.
//! The parser is pure (no I/O, no clock) and never panics, whatever bytes it is fed.

use std::sync::OnceLock;

use regex::Regex;

/// The longest a signal may be once reassembled (bytes); longer is reported as malformed.
const MAX_SIGNAL_LEN: usize = 4096;
/// Lines of the test's own output an open signal may span before it is given up.
const MAX_CONTINUATION_LINES: usize = 8;
/// Kernel message lines an open signal may wait through (an oops is ~50 lines).
const MAX_KERNEL_LINES: usize = 256;
/// The longest unterminated console line kept by [`SignalParser::feed_bytes`].
const MAX_LINE_LEN: usize = 64 * 1024;

/// One signal the board-side test shell sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `<LAVA_SIGNAL_STARTRUN id uuid>`: a test definition (suite `id`) starts.
    StartRun {
        /// The suite name, `<index>_<name>`.
        id: String,
        /// The definition's unique id.
        uuid: String,
    },
    /// `<LAVA_SIGNAL_ENDRUN id uuid>`: the definition's run steps all completed.
    EndRun {
        /// The suite name.
        id: String,
        /// The definition's unique id.
        uuid: String,
    },
    /// `<LAVA_SIGNAL_STARTTC name>`: the output of test case `name` starts (`--shell`).
    StartTc {
        /// The test case name.
        case: String,
    },
    /// `<LAVA_SIGNAL_ENDTC name>`: the output of test case `name` ends.
    EndTc {
        /// The test case name.
        case: String,
    },
    /// `<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=.. RESULT=.. [MEASUREMENT=..] [UNITS=..]>`, raw:
    /// the fixupdict and the result/measurement checks are applied by the consumer.
    TestCase {
        /// `TEST_CASE_ID`
        id: String,
        /// `RESULT`, as sent.
        result: String,
        /// `MEASUREMENT`, as sent.
        measurement: Option<String>,
        /// `UNITS`
        units: Option<String>,
    },
    /// `<LAVA_SIGNAL_TESTSET START name>`
    TestSetStart {
        /// The set's name.
        name: String,
    },
    /// `<LAVA_SIGNAL_TESTSET STOP>`
    TestSetStop,
    /// `<LAVA_SIGNAL_TESTRAISE message>`: the test asks for a TestError.
    TestRaise {
        /// The message (words joined by single spaces, as LAVA does).
        message: String,
    },
    /// `<LAVA_SIGNAL_TESTREFERENCE case result url>` (LAVA's positional form) or the
    /// `TEST_CASE_ID=.. RESULT=.. REFERENCE=..` form.
    TestReference {
        /// The test case name.
        case: String,
        /// The result, as sent.
        result: String,
        /// The reference (a URL).
        reference: String,
    },
    /// `<LAVA_SIGNAL_TESTEVENT message>`
    TestEvent {
        /// The message.
        message: String,
    },
    /// `<LAVA_SIGNAL_TESTFEEDBACK namespace>`
    TestFeedback {
        /// The namespace to listen to.
        namespace: String,
    },
    /// `<LAVA_TEST_RUNNER EXIT>`: the runner has finished (or was stopped).
    RunnerExit,
    /// `<LAVA_TEST_RUNNER INSTALL_FAIL>`: a definition's install.sh failed; it was not run.
    InstallFail,
    /// Any other well-formed `<LAVA_SIGNAL_NAME params>` (MultiNode's, …).
    Other {
        /// The name after `LAVA_SIGNAL_`.
        name: String,
        /// The whitespace-separated parameters.
        params: Vec<String>,
    },
    /// Something that started like a signal but could not be read.
    Malformed {
        /// The text received (reassembled, kernel messages removed).
        raw: String,
        /// Why it was rejected.
        reason: String,
    },
}

/// The opening of a signal in console text.
const OPENERS: [&str; 2] = ["<LAVA_SIGNAL_", "<LAVA_TEST_RUNNER"];

/// A printk timestamp, where a kernel message starts.
fn kernel_stamp() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"\[\s*[0-9]+\.[0-9]+\]").expect("static regex"))
}

/// A signal that has started but not yet ended.
#[derive(Debug, Default)]
struct Open {
    text: String,
    lines: usize,
    kernel_lines: usize,
}

/// Turns console lines (or raw bytes) into [`Event`]s, reassembling split signals.
#[derive(Debug, Default)]
pub struct SignalParser {
    open: Option<Open>,
    partial: Vec<u8>,
}

impl SignalParser {
    /// A parser with nothing pending.
    pub fn new() -> SignalParser {
        SignalParser::default()
    }

    /// Whether a signal has started and is waiting for its end.
    pub fn is_pending(&self) -> bool {
        self.open.is_some()
    }

    /// Feeds raw console bytes; complete lines are parsed, an unterminated tail is kept
    /// (at most 64 KiB of it) for the next call. Invalid UTF-8 is replaced, never fatal.
    pub fn feed_bytes(&mut self, bytes: &[u8]) -> Vec<Event> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&rest[..pos]);
            let line = std::mem::take(&mut self.partial);
            out.extend(self.feed_line(&String::from_utf8_lossy(&line)));
            rest = &rest[pos + 1..];
        }
        self.partial.extend_from_slice(rest);
        if self.partial.len() > MAX_LINE_LEN {
            // A flood without line ends: parse what there is as one line rather than grow.
            let line = std::mem::take(&mut self.partial);
            out.extend(self.feed_line(&String::from_utf8_lossy(&line)));
        }
        out
    }

    /// Parses one console line (without its line end; `\r` anywhere is ignored).
    pub fn feed_line(&mut self, line: &str) -> Vec<Event> {
        let cleaned: String;
        let line = if line.contains('\r') {
            cleaned = line.replace('\r', "");
            cleaned.as_str()
        } else {
            line
        };
        let mut out = Vec::new();
        let mut rest = line;
        if let Some(mut open) = self.open.take() {
            match continue_open(&mut open, rest, &mut out) {
                Continue::Pending => {
                    self.open = Some(open);
                    return out;
                }
                Continue::Resume(tail) => rest = tail,
            }
        }
        self.scan(rest, &mut out);
        out
    }

    /// Ends the input: a signal still open is returned as [`Event::Malformed`].
    pub fn finish(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            out.extend(self.feed_line(&String::from_utf8_lossy(&line)));
        }
        if let Some(open) = self.open.take() {
            out.push(malformed(
                &open.text,
                "the console output ended inside the signal",
            ));
        }
        out
    }

    /// Finds the signals starting in `text` (no signal is open).
    fn scan(&mut self, mut text: &str, out: &mut Vec<Event>) {
        while let Some(start) = find_opener(text) {
            let candidate = &text[start..];
            // The signal's own text ends at a kernel timestamp, if one interrupts the line.
            let own = match kernel_stamp().find(candidate) {
                Some(m) => &candidate[..m.start()],
                None => candidate,
            };
            if let Some(end) = own[1..].find(['<', '>']).map(|i| i + 1) {
                if own.as_bytes()[end] == b'>' {
                    out.push(parse_signal(&own[..=end]));
                    text = &candidate[end + 1..];
                } else {
                    out.push(malformed(&own[..end], "a new '<' before the closing '>'"));
                    text = &candidate[end..];
                }
                continue;
            }
            if own.len() > MAX_SIGNAL_LEN {
                out.push(malformed(own, "too long"));
                return;
            }
            self.open = Some(Open {
                text: own.to_string(),
                lines: 0,
                kernel_lines: 0,
            });
            return;
        }
    }
}

/// What the continuation of an open signal did with a line.
enum Continue<'a> {
    /// Still open: the whole line was consumed.
    Pending,
    /// The open signal is finished (or abandoned); scan this rest of the line normally.
    Resume(&'a str),
}

/// Adds the next line to an open signal.
fn continue_open<'a>(open: &mut Open, line: &'a str, out: &mut Vec<Event>) -> Continue<'a> {
    let stamp = kernel_stamp().find(line);
    let own = match stamp {
        Some(m) if line[..m.start()].trim().is_empty() => {
            // A kernel message line of its own: the signal continues after it.
            open.kernel_lines += 1;
            if open.kernel_lines > MAX_KERNEL_LINES {
                out.push(malformed(&open.text, "no end after many kernel messages"));
                return Continue::Resume("");
            }
            return Continue::Pending;
        }
        Some(m) => &line[..m.start()],
        None => line,
    };
    match own.find(['<', '>']) {
        Some(end) if own.as_bytes()[end] == b'>' => {
            open.text.push_str(&own[..=end]);
            out.push(parse_signal(&open.text));
            Continue::Resume(&line[end + 1..])
        }
        Some(start) => {
            open.text.push_str(&own[..start]);
            out.push(malformed(&open.text, "a new '<' before the closing '>'"));
            Continue::Resume(&line[start..])
        }
        None => {
            open.text.push_str(own);
            open.lines += 1;
            if open.text.len() > MAX_SIGNAL_LEN {
                out.push(malformed(&open.text, "too long"));
                Continue::Resume("")
            } else if open.lines > MAX_CONTINUATION_LINES {
                out.push(malformed(&open.text, "no closing '>'"));
                Continue::Resume("")
            } else {
                Continue::Pending
            }
        }
    }
}

/// The byte offset of the first signal opener in `text`.
fn find_opener(text: &str) -> Option<usize> {
    OPENERS.iter().filter_map(|o| text.find(o)).min()
}

fn malformed(raw: &str, reason: &str) -> Event {
    Event::Malformed {
        raw: raw.to_string(),
        reason: reason.to_string(),
    }
}

/// Parses one complete `<…>` signal.
fn parse_signal(raw: &str) -> Event {
    let inner = raw
        .strip_prefix('<')
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or(raw);
    if let Some(runner) = inner.strip_prefix("LAVA_TEST_RUNNER") {
        return match runner.trim() {
            "EXIT" => Event::RunnerExit,
            "INSTALL_FAIL" => Event::InstallFail,
            _ => malformed(raw, "unknown LAVA_TEST_RUNNER message"),
        };
    }
    let Some(body) = inner.strip_prefix("LAVA_SIGNAL_") else {
        return malformed(raw, "not a signal");
    };
    let mut words = body.split_whitespace();
    let name = words.next().unwrap_or("");
    let params: Vec<&str> = words.collect();
    if name.is_empty() || body.starts_with(char::is_whitespace) {
        return malformed(raw, "no signal name");
    }
    match parse_named(name, &params) {
        Ok(signal) => signal,
        Err(reason) => malformed(raw, &reason),
    }
}

/// Builds the signal `name` from its parameters.
fn parse_named(name: &str, params: &[&str]) -> Result<Event, String> {
    let exactly = |n: usize| -> Result<(), String> {
        if params.len() == n {
            Ok(())
        } else {
            Err(format!(
                "{name} takes {n} parameter(s), got {}",
                params.len()
            ))
        }
    };
    let owned = |i: usize| params[i].to_string();
    Ok(match name {
        "STARTRUN" | "ENDRUN" => {
            exactly(2)?;
            let (id, uuid) = (owned(0), owned(1));
            if name == "STARTRUN" {
                Event::StartRun { id, uuid }
            } else {
                Event::EndRun { id, uuid }
            }
        }
        "STARTTC" => {
            exactly(1)?;
            Event::StartTc { case: owned(0) }
        }
        "ENDTC" => {
            exactly(1)?;
            Event::EndTc { case: owned(0) }
        }
        "TESTCASE" => parse_testcase(params)?,
        "TESTSET" => match params {
            ["START", set] => Event::TestSetStart {
                name: set.to_string(),
            },
            ["START"] => return Err("test set started without a name".into()),
            ["STOP"] => Event::TestSetStop,
            _ => return Err("TESTSET takes START name or STOP".into()),
        },
        "TESTRAISE" => {
            if params.is_empty() {
                return Err("TESTRAISE without a message".into());
            }
            Event::TestRaise {
                message: params.join(" "),
            }
        }
        "TESTREFERENCE" => parse_reference(params)?,
        "TESTEVENT" => Event::TestEvent {
            message: params.join(" "),
        },
        "TESTFEEDBACK" => {
            exactly(1)?;
            Event::TestFeedback {
                namespace: owned(0),
            }
        }
        _ => Event::Other {
            name: name.to_string(),
            params: params.iter().map(|p| p.to_string()).collect(),
        },
    })
}

/// `KEY=value` parameters, keys lower-cased (as LAVA reads them).
fn key_values(params: &[&str]) -> Result<Vec<(String, String)>, String> {
    params
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) => Ok((k.to_ascii_lowercase(), v.to_string())),
            None => Err(format!("malformed parameter {p:?} (expected KEY=value)")),
        })
        .collect()
}

fn take(kv: &mut Vec<(String, String)>, key: &str) -> Option<String> {
    let pos = kv.iter().position(|(k, _)| k == key)?;
    Some(kv.remove(pos).1)
}

fn parse_testcase(params: &[&str]) -> Result<Event, String> {
    let mut kv = key_values(params)?;
    let id = take(&mut kv, "test_case_id").ok_or("TESTCASE without TEST_CASE_ID")?;
    let result = take(&mut kv, "result").ok_or("TESTCASE without RESULT")?;
    if id.is_empty() {
        return Err("TESTCASE with an empty TEST_CASE_ID".into());
    }
    Ok(Event::TestCase {
        id,
        result,
        measurement: take(&mut kv, "measurement"),
        units: take(&mut kv, "units"),
    })
}

fn parse_reference(params: &[&str]) -> Result<Event, String> {
    if params.iter().all(|p| p.contains('=')) && !params.is_empty() {
        let mut kv = key_values(params)?;
        if let (Some(case), Some(result), Some(reference)) = (
            take(&mut kv, "test_case_id"),
            take(&mut kv, "result"),
            take(&mut kv, "reference"),
        ) {
            return Ok(Event::TestReference {
                case,
                result,
                reference,
            });
        }
    }
    match params {
        [case, result, reference] => Ok(Event::TestReference {
            case: case.to_string(),
            result: result.to_string(),
            reference: reference.to_string(),
        }),
        _ => Err("TESTREFERENCE takes case, result and reference".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[&str]) -> Vec<Event> {
        let mut p = SignalParser::new();
        let mut out: Vec<Event> = input.iter().flat_map(|l| p.feed_line(l)).collect();
        out.extend(p.finish());
        out
    }

    fn case(id: &str, result: &str) -> Event {
        Event::TestCase {
            id: id.into(),
            result: result.into(),
            measurement: None,
            units: None,
        }
    }

    #[test]
    fn every_signal_kind() {
        let got = lines(&[
            "<LAVA_SIGNAL_STARTRUN 0_smoke 1234_1.3.2.1>",
            "<LAVA_SIGNAL_STARTTC echo1>",
            "<LAVA_SIGNAL_ENDTC echo1>",
            "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=echo1 RESULT=pass>",
            "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=t5 RESULT=pass MEASUREMENT=99 UNITS=bottles>",
            "<LAVA_SIGNAL_TESTSET START network>",
            "<LAVA_SIGNAL_TESTSET STOP>",
            "<LAVA_SIGNAL_TESTREFERENCE ref1 pass https://example.org/x>",
            "<LAVA_SIGNAL_TESTREFERENCE TEST_CASE_ID=ref2 RESULT=fail REFERENCE=http://h/y>",
            "<LAVA_SIGNAL_TESTEVENT firmware updated>",
            "<LAVA_SIGNAL_TESTRAISE disk   is full>",
            "<LAVA_SIGNAL_LAVA_SYNC barrier1>",
            "<LAVA_SIGNAL_ENDRUN 0_smoke 1234_1.3.2.1>",
            "<LAVA_TEST_RUNNER INSTALL_FAIL>",
            "<LAVA_TEST_RUNNER EXIT>",
        ]);
        assert_eq!(
            got,
            vec![
                Event::StartRun {
                    id: "0_smoke".into(),
                    uuid: "1234_1.3.2.1".into()
                },
                Event::StartTc {
                    case: "echo1".into()
                },
                Event::EndTc {
                    case: "echo1".into()
                },
                case("echo1", "pass"),
                Event::TestCase {
                    id: "t5".into(),
                    result: "pass".into(),
                    measurement: Some("99".into()),
                    units: Some("bottles".into())
                },
                Event::TestSetStart {
                    name: "network".into()
                },
                Event::TestSetStop,
                Event::TestReference {
                    case: "ref1".into(),
                    result: "pass".into(),
                    reference: "https://example.org/x".into()
                },
                Event::TestReference {
                    case: "ref2".into(),
                    result: "fail".into(),
                    reference: "http://h/y".into()
                },
                Event::TestEvent {
                    message: "firmware updated".into()
                },
                Event::TestRaise {
                    message: "disk is full".into()
                },
                Event::Other {
                    name: "LAVA_SYNC".into(),
                    params: vec!["barrier1".into()]
                },
                Event::EndRun {
                    id: "0_smoke".into(),
                    uuid: "1234_1.3.2.1".into()
                },
                Event::InstallFail,
                Event::RunnerExit,
            ]
        );
    }

    #[test]
    fn split_by_kernel_message_on_its_own_line() {
        let got = lines(&[
            "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=a",
            "[   12.3] random: crng init done",
            " RESULT=pass>",
        ]);
        assert_eq!(got, vec![case("a", "pass")]);
    }

    #[test]
    fn split_by_kernel_messages_inside_lines() {
        // LAVA's documented example of serial corruption.
        let got = lines(&[
            "<LAVA_SIGNAL_ENDRUN 0_network[   31.811978] ------------[ cut here ]------------",
            "-inline 14658_3.[   31.818261] WARNING: CPU: 4 PID: 2576 at sock.h:1703 a->b",
            "[   31.834094] Modules linked in: algif_hash af_alg <x>",
            "2.3.1>",
        ]);
        assert_eq!(
            got,
            vec![Event::EndRun {
                id: "0_network-inline".into(),
                uuid: "14658_3.2.3.1".into()
            }]
        );
    }

    #[test]
    fn kmsg_signals_and_crlf() {
        let got = lines(&[
            "[   40.100000] <LAVA_SIGNAL_STARTRUN 1_k 9_1.2>\r",
            "output\r",
            "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=x RESULT=fail>\r",
            "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=y\r",
            "\r RESULT=skip>\r",
        ]);
        assert_eq!(
            got,
            vec![
                Event::StartRun {
                    id: "1_k".into(),
                    uuid: "9_1.2".into()
                },
                case("x", "fail"),
                case("y", "skip"),
            ]
        );
    }

    #[test]
    fn bytes_split_anywhere_give_the_same_signals() {
        let text = b"boot\r\n<LAVA_SIGNAL_STARTTC a>\r\nx<LAVA_SIGNAL_ENDTC a>y\r\n\
<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=a[    1.000] kmsg\r\n RESULT=pass>\r\n";
        let whole = {
            let mut p = SignalParser::new();
            let mut v = p.feed_bytes(text);
            v.extend(p.finish());
            v
        };
        assert_eq!(whole.len(), 3);
        for cut in 0..text.len() {
            let mut p = SignalParser::new();
            let mut v = p.feed_bytes(&text[..cut]);
            v.extend(p.feed_bytes(&text[cut..]));
            v.extend(p.finish());
            assert_eq!(v, whole, "cut at {cut}");
        }
    }

    #[test]
    fn two_signals_on_one_line() {
        let got = lines(&[
            "<LAVA_SIGNAL_TESTSET STOP><LAVA_SIGNAL_TESTCASE TEST_CASE_ID=z RESULT=unknown>",
        ]);
        assert_eq!(got, vec![Event::TestSetStop, case("z", "unknown")]);
    }

    #[test]
    fn lost_end_is_malformed_and_the_next_signal_survives() {
        let got = lines(&[
            "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=a RES",
            "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=b RESULT=pass>",
        ]);
        assert!(matches!(&got[0], Event::Malformed { raw, .. } if raw.ends_with("RES")));
        assert_eq!(got[1], case("b", "pass"));
        assert_eq!(got.len(), 2);

        let mut many = vec!["<LAVA_SIGNAL_STARTTC q"];
        many.extend(std::iter::repeat_n("ordinary output", 20));
        many.push("<LAVA_SIGNAL_ENDTC q>");
        let got = lines(&many);
        assert!(matches!(got[0], Event::Malformed { .. }));
        assert_eq!(got[1], Event::EndTc { case: "q".into() });

        let got = lines(&["<LAVA_SIGNAL_STARTTC never-ends"]);
        assert!(matches!(got[..], [Event::Malformed { .. }]));
    }

    #[test]
    fn malformed_parameters() {
        for bad in [
            "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=a>",
            "<LAVA_SIGNAL_TESTCASE RESULT=pass>",
            "<LAVA_SIGNAL_TESTCASE a pass>",
            "<LAVA_SIGNAL_STARTRUN onlyone>",
            "<LAVA_SIGNAL_TESTSET START>",
            "<LAVA_SIGNAL_TESTSET>",
            "<LAVA_SIGNAL_TESTREFERENCE a b>",
            "<LAVA_SIGNAL_ >",
            "<LAVA_TEST_RUNNER WHAT>",
        ] {
            let got = lines(&[bad]);
            assert!(
                matches!(got[..], [Event::Malformed { .. }]),
                "{bad}: {got:?}"
            );
        }
    }

    #[test]
    fn ordinary_text_and_garbage_never_panic() {
        assert!(lines(&["plain", "", "<", ">", "<LAVA", "[ 1.0]"]).is_empty());
        let mut p = SignalParser::new();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let alphabet = b"<>[] .0123456789=\r\nLAVA_SIGNAL_TESTCASE\xff\xfe";
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let n = (seed % 40) as usize;
            let chunk: Vec<u8> = (0..n)
                .map(|i| alphabet[((seed >> (i % 50)) as usize + i) % alphabet.len()])
                .collect();
            let _ = p.feed_bytes(&chunk);
        }
        let _ = p.feed_bytes(&vec![b'x'; 200_000]);
        assert!(p.partial.len() <= MAX_LINE_LEN);
        let _ = p.finish();
    }
}
