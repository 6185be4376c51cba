//! Option negotiation (RFC 2347): blksize (2348), timeout and tsize (2349), windowsize (7440).
//!
//! Pure functions over the option list of a request. Options the server does not know, or whose
//! values are out of range (blksize below 8, windowsize 0 or above 65535, …), are left out of the
//! OACK (RFC 2347 lets a server ignore them), so a strange client falls back to plain RFC 1350
//! rather than failing. A blksize or windowsize above the server's limit is lowered to the limit
//! (RFC 2348 and 7440 let the server answer a smaller value); only the first of repeated options
//! counts.

use std::time::Duration;

/// The RFC 1350 block size.
pub const DEFAULT_BLKSIZE: u16 = 512;
/// The largest block size RFC 2348 allows.
pub const MAX_BLKSIZE: u16 = 65464;
/// The smallest block size RFC 2348 allows.
pub const MIN_BLKSIZE: u16 = 8;

/// Server-side limits applied while negotiating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest block size granted.
    pub max_blksize: u16,
    /// Largest window granted.
    pub max_window: u16,
}

/// What a request and the server agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Block size in bytes.
    pub blksize: u16,
    /// Blocks sent before waiting for an ACK.
    pub window: u16,
    /// Retransmission timeout the client asked for, if any.
    pub timeout: Option<Duration>,
    /// Transfer size: the file size for reads, the client's announced size for writes.
    pub tsize: Option<u64>,
    /// The options to put in the OACK, in the client's order and spelling; empty means no OACK.
    pub reply: Vec<(String, String)>,
}

/// Which side the request is: the server sends (RRQ, with the content size) or receives (WRQ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// RRQ; the size is reported in `tsize`.
    Read {
        /// Size of the content in bytes.
        size: u64,
    },
    /// WRQ; `tsize` is the client's announcement.
    Write,
}

/// Negotiates `requested` against `limits`.
pub fn negotiate(requested: &[(String, String)], limits: Limits, dir: Direction) -> Negotiated {
    let mut n = Negotiated {
        blksize: DEFAULT_BLKSIZE,
        window: 1,
        timeout: None,
        tsize: None,
        reply: Vec::new(),
    };
    let mut seen: Vec<String> = Vec::new();
    for (name, value) in requested {
        let key = name.to_ascii_lowercase();
        if seen.contains(&key) {
            continue;
        }
        seen.push(key.clone());
        let Ok(v) = value.trim().parse::<u64>() else {
            continue;
        };
        let granted = match key.as_str() {
            "blksize" if v >= u64::from(MIN_BLKSIZE) => {
                let b = v.min(u64::from(
                    limits.max_blksize.clamp(MIN_BLKSIZE, MAX_BLKSIZE),
                ));
                n.blksize = b as u16;
                Some(b)
            }
            "windowsize" if (1..=65535).contains(&v) => {
                let w = v.min(u64::from(limits.max_window.max(1)));
                n.window = w as u16;
                Some(w)
            }
            "timeout" if (1..=255).contains(&v) => {
                n.timeout = Some(Duration::from_secs(v));
                Some(v)
            }
            "tsize" => match dir {
                // curl (up to at least 8.x) rejects `tsize 0` in an OACK as invalid, so the
                // size of an empty file is left out; RFC 2347 lets a server omit any option.
                Direction::Read { size: 0 } => {
                    n.tsize = Some(0);
                    None
                }
                Direction::Read { size } => {
                    n.tsize = Some(size);
                    Some(size)
                }
                Direction::Write => {
                    n.tsize = Some(v);
                    Some(v)
                }
            },
            _ => None,
        };
        if let Some(g) = granted {
            n.reply.push((name.clone(), g.to_string()));
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    const LIMITS: Limits = Limits {
        max_blksize: 1468,
        max_window: 16,
    };

    #[test]
    fn grants_within_limits_and_reports_size() {
        let n = negotiate(
            &opts(&[
                ("BLKSIZE", "65464"),
                ("tsize", "0"),
                ("timeout", "3"),
                ("windowsize", "64"),
            ]),
            LIMITS,
            Direction::Read { size: 12345 },
        );
        assert_eq!(n.blksize, 1468);
        assert_eq!(n.window, 16);
        assert_eq!(n.timeout, Some(Duration::from_secs(3)));
        assert_eq!(n.tsize, Some(12345));
        assert_eq!(
            n.reply,
            opts(&[
                ("BLKSIZE", "1468"),
                ("tsize", "12345"),
                ("timeout", "3"),
                ("windowsize", "16")
            ])
        );
    }

    #[test]
    fn ignores_unknown_invalid_and_repeated_options() {
        let n = negotiate(
            &opts(&[
                ("blksize", "7"),
                ("timeout", "0"),
                ("windowsize", "0"),
                ("multicast", "1"),
                ("tsize", "x"),
                ("blksize", "1024"),
            ]),
            LIMITS,
            Direction::Read { size: 1 },
        );
        assert_eq!(n.blksize, DEFAULT_BLKSIZE);
        assert_eq!(n.window, 1);
        assert!(n.reply.is_empty(), "{:?}", n.reply);
    }

    #[test]
    fn empty_file_size_is_not_announced() {
        let n = negotiate(
            &opts(&[("tsize", "0")]),
            LIMITS,
            Direction::Read { size: 0 },
        );
        assert_eq!(n.tsize, Some(0));
        assert!(n.reply.is_empty(), "no OACK: curl refuses tsize 0");
    }

    #[test]
    fn write_tsize_is_the_clients() {
        let n = negotiate(&opts(&[("tsize", "999")]), LIMITS, Direction::Write);
        assert_eq!(n.tsize, Some(999));
        assert_eq!(n.reply, opts(&[("tsize", "999")]));
    }

    #[test]
    fn no_options_means_rfc1350() {
        let n = negotiate(&[], LIMITS, Direction::Read { size: 5 });
        assert_eq!((n.blksize, n.window, n.tsize), (512, 1, None));
        assert!(n.reply.is_empty());
    }
}
