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

/// Checks and decodes one datagram.
pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
    check(bytes)?;
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
