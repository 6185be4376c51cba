//! From datagram to [`Message`]: check the framing first, then let dhcproto parse.
//!
//! Why a check of our own: dhcproto 0.15 decodes each option from its own slice (so a bad length
//! cannot desynchronise the stream), but it `debug_assert!`s the length of some fixed-size options
//! (80, 81, 94, 152-155) and subtracts from the length of option 151 without a check, after
//! merging consecutive options with the same code (RFC 3396). In a debug build a single crafted
//! packet would therefore panic the server. [`check`] walks the options the same way and rejects
//! those lengths, so dhcproto only ever sees packets it handles without asserting. As a second
//! line, [`decode`] runs the parser under `catch_unwind` (it is a pure function of the bytes),
//! so an unknown parser bug costs one dropped packet, not the server.
//!
//! dhcproto does not read option overload (option 52, RFC 2132 §9.3): [`decode`] does. When a
//! request says its `file` and/or `sname` fields carry options, they are appended to the options
//! field in the order RFC 3396 gives (options, `file`, `sname`) before dhcproto parses, so a
//! client that moved its message type there is still understood; a field whose options run past
//! its end, or an overload value other than 1, 2 or 3, makes the packet malformed.

use dhcproto::v4::Message;
use dhcproto::{Decodable, Decoder};

/// Size of the fixed BOOTP header plus the magic cookie.
pub const HEADER_LEN: usize = 240;

const MAGIC: [u8; 4] = [99, 130, 83, 99];

/// Why a datagram is not a DHCP message we can parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Shorter than the fixed header.
    #[error("truncated: {0} bytes, the header alone is 240")]
    Truncated(usize),
    /// No DHCP magic cookie (plain BOOTP or garbage).
    #[error("no DHCP magic cookie")]
    NoMagic,
    /// An option whose length runs past the end of the packet.
    #[error("option {code} at offset {offset} claims {len} bytes, past the end")]
    OptionOverrun {
        /// Option code.
        code: u8,
        /// Offset of the option in the datagram.
        offset: usize,
        /// Its length byte.
        len: usize,
    },
    /// An option whose (merged) length is impossible for its type.
    #[error("option {code} has length {len}, expected {expected}")]
    OptionLength {
        /// Option code.
        code: u8,
        /// The merged length.
        len: usize,
        /// What its type requires.
        expected: &'static str,
    },
    /// Option overload (52) with a value other than 1 (`file`), 2 (`sname`) or 3 (both).
    #[error("option overload {0} is not 1, 2 or 3")]
    Overload(u8),
    /// dhcproto refused it.
    #[error("undecodable: {0}")]
    Decode(String),
    /// dhcproto panicked on it (a parser bug; the packet is dropped).
    #[error("the parser panicked on it")]
    ParserPanic,
}

/// Length rule for options that dhcproto asserts on.
fn length_ok(code: u8, len: usize) -> Result<(), &'static str> {
    let ok = match code {
        80 => len == 0,
        94 => len == 3,
        81 => len >= 3,
        151 => len >= 1,
        152..=155 => len == 4,
        _ => true,
    };
    if ok {
        return Ok(());
    }
    Err(match code {
        80 => "0",
        94 => "3",
        81 => "at least 3",
        151 => "at least 1",
        _ => "4",
    })
}

/// Checks the framing of a DHCP datagram: header, magic cookie and option lengths.
pub fn check(bytes: &[u8]) -> Result<(), WireError> {
    if bytes.len() < HEADER_LEN {
        return Err(WireError::Truncated(bytes.len()));
    }
    if bytes[236..240] != MAGIC {
        return Err(WireError::NoMagic);
    }
    let mut i = HEADER_LEN;
    // (code, merged length) of the run of equal codes being read, as dhcproto merges them.
    let mut run: Option<(u8, usize)> = None;
    let finish = |run: Option<(u8, usize)>| match run {
        Some((code, len)) => length_ok(code, len).map_err(|expected| WireError::OptionLength {
            code,
            len,
            expected,
        }),
        None => Ok(()),
    };
    while i < bytes.len() {
        let code = bytes[i];
        match code {
            0 => {
                // A pad ends a run of equal codes, as in dhcproto.
                finish(run.take())?;
                i += 1;
                continue;
            }
            255 => break,
            _ => {}
        }
        let Some(&len) = bytes.get(i + 1) else {
            return Err(WireError::OptionOverrun {
                code,
                offset: i,
                len: 0,
            });
        };
        let len = usize::from(len);
        if i + 2 + len > bytes.len() {
            return Err(WireError::OptionOverrun {
                code,
                offset: i,
                len,
            });
        }
        run = match run {
            Some((c, total)) if c == code => Some((c, total + len)),
            other => {
                finish(other)?;
                Some((code, len))
            }
        };
        i += 2 + len;
    }
    finish(run)
}

/// The `sname` field of the BOOTP header.
const SNAME: std::ops::Range<usize> = 44..108;
/// The `file` field of the BOOTP header.
const FILE: std::ops::Range<usize> = 108..236;
/// Option overload (RFC 2132 §9.3).
const OVERLOAD: u8 = 52;

/// The options of one area up to its END (or its end), pads kept; `offset` is where the area
/// starts in the datagram (for the error).
fn area_options(area: &[u8], offset: usize) -> Result<&[u8], WireError> {
    let mut i = 0;
    while i < area.len() {
        let code = area[i];
        match code {
            0 => i += 1,
            255 => return Ok(&area[..i]),
            _ => {
                let len = area.get(i + 1).map_or(usize::MAX, |&l| usize::from(l));
                if len == usize::MAX || i + 2 + len > area.len() {
                    return Err(WireError::OptionOverrun {
                        code,
                        offset: offset + i,
                        len: if len == usize::MAX { 0 } else { len },
                    });
                }
                i += 2 + len;
            }
        }
    }
    Ok(area)
}

/// The datagram with the options of `file`/`sname` appended to its options field when option
/// overload asks for it; `None` when it does not. `bytes` has passed [`check`].
fn with_overloaded_options(bytes: &[u8]) -> Result<Option<Vec<u8>>, WireError> {
    let options = area_options(&bytes[HEADER_LEN..], HEADER_LEN)?;
    let mut i = 0;
    let mut overload = None;
    while i < options.len() {
        match options[i] {
            0 => i += 1,
            code => {
                let len = usize::from(options[i + 1]);
                if code == OVERLOAD && len >= 1 && overload.is_none() {
                    overload = Some(options[i + 2]);
                }
                i += 2 + len;
            }
        }
    }
    let Some(which) = overload else {
        return Ok(None);
    };
    if !(1..=3).contains(&which) {
        return Err(WireError::Overload(which));
    }
    let mut merged = bytes[..HEADER_LEN].to_vec();
    merged.extend_from_slice(options);
    if which & 1 != 0 {
        merged.extend_from_slice(area_options(&bytes[FILE], FILE.start)?);
    }
    if which & 2 != 0 {
        merged.extend_from_slice(area_options(&bytes[SNAME], SNAME.start)?);
    }
    merged.push(255);
    check(&merged)?;
    Ok(Some(merged))
}

/// Checks and decodes one datagram (with its overloaded options, if any).
pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
    check(bytes)?;
    let merged = with_overloaded_options(bytes)?;
    let bytes = merged.as_deref().unwrap_or(bytes);
    let parsed = std::panic::catch_unwind(|| Message::decode(&mut Decoder::new(bytes)));
    match parsed {
        Ok(Ok(msg)) => Ok(msg),
        Ok(Err(e)) => Err(WireError::Decode(e.to_string())),
        Err(_) => Err(WireError::ParserPanic),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DISCOVER: &[u8] = include_bytes!("../../tests/data/uboot-2023.01-discover.bin");

    fn with_options(opts: &[u8]) -> Vec<u8> {
        let mut p = DISCOVER[..HEADER_LEN].to_vec();
        p.extend_from_slice(opts);
        p
    }

    #[test]
    fn real_packet_passes() {
        assert_eq!(check(DISCOVER), Ok(()));
        assert!(decode(DISCOVER).is_ok());
    }

    #[test]
    fn framing_errors() {
        assert_eq!(check(&DISCOVER[..100]), Err(WireError::Truncated(100)));
        let mut p = DISCOVER.to_vec();
        p[236] = 0;
        assert_eq!(check(&p), Err(WireError::NoMagic));
        assert!(matches!(
            check(&with_options(&[53, 1, 1, 60, 20, b'x'])),
            Err(WireError::OptionOverrun { code: 60, .. })
        ));
        assert!(matches!(
            check(&with_options(&[53, 1, 1, 60])),
            Err(WireError::OptionOverrun { code: 60, .. })
        ));
    }

    #[test]
    fn overloaded_options_are_read_from_file_and_sname() {
        use dhcproto::v4::{DhcpOption, MessageType, OptionCode};
        let mut p = with_options(&[52, 1, 3, 255]);
        p[FILE.start..FILE.start + 4].copy_from_slice(&[53, 1, 1, 255]);
        p[SNAME.start..SNAME.start + 5].copy_from_slice(&[60, 2, b'h', b'i', 255]);
        let m = decode(&p).unwrap();
        assert_eq!(m.opts().msg_type(), Some(MessageType::Discover));
        assert_eq!(
            m.opts().get(OptionCode::ClassIdentifier),
            Some(&DhcpOption::ClassIdentifier(b"hi".to_vec()))
        );
        // Without overload the same fields are only a file and a server name.
        let plain = with_options(&[53, 1, 3, 255]);
        let mut q = plain.clone();
        q[FILE.start..FILE.start + 4].copy_from_slice(&[53, 1, 1, 255]);
        assert_eq!(
            decode(&q).unwrap().opts().msg_type(),
            Some(MessageType::Request)
        );
        p[FILE.start + 1] = 200;
        assert!(matches!(
            decode(&p),
            Err(WireError::OptionOverrun {
                code: 53,
                offset: 108,
                len: 200
            })
        ));
        assert_eq!(
            decode(&with_options(&[52, 1, 4, 255])).unwrap_err(),
            WireError::Overload(4)
        );
    }

    #[test]
    fn asserted_lengths_are_refused_before_dhcproto_sees_them() {
        for opts in [
            &[53, 1, 1, 94, 2, 1, 0, 255][..],
            &[53, 1, 1, 80, 1, 0, 255],
            &[53, 1, 1, 151, 0, 255],
            &[53, 1, 1, 81, 1, 0, 255],
            &[53, 1, 1, 152, 3, 0, 0, 0, 255],
            // Two option-94 parts merge to length 6.
            &[53, 1, 1, 94, 3, 1, 0, 0, 94, 3, 1, 0, 0, 255],
        ] {
            assert!(
                matches!(
                    check(&with_options(opts)),
                    Err(WireError::OptionLength { .. })
                ),
                "{opts:?}"
            );
        }
        // Well-formed ones pass, split or not.
        assert_eq!(
            check(&with_options(&[53, 1, 1, 94, 3, 1, 0, 0, 255])),
            Ok(())
        );
        assert_eq!(
            check(&with_options(&[60, 2, b'a', b'b', 60, 1, b'c', 255])),
            Ok(())
        );
    }
}
