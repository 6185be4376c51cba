//! The generic bootstrap script every labboot SD card carries, and the board's identity file.
//!
//! The script is the same on every card; what makes a board itself is `labboot.id`, a text file
//! in U-Boot's `env import -t` format (`name=value` lines, `#` comments):
//!
//! ```text
//! board_id=rpi4-07
//! board_token=3f9a…
//! ethaddr=02:00:00:00:00:07      (optional)
//! ```
//!
//! The script loads that file from the device and partition it was itself loaded from
//! (`${devtype} ${devnum}:${distro_bootpart}`, which both distro boot and standard boot set),
//! imports it (clearing the write-once `ethaddr` first with `setenv -f`, so the card's MAC can
//! replace the NIC's, which is put back when the card has none), announces the identity to DHCP through `bootp_vci=labboot:${board_id}`, then
//! fetches `labboot/${board_id}/boot.scr` over TFTP and runs it. When the network step fails it
//! says so and tries again after a pause, so the board never falls through to other boot targets.

use std::fmt;

/// Name of the identity file on the card.
pub const IDENTITY_FILE: &str = "labboot.id";
/// Seconds the bootstrap script waits before it tries the network again.
pub const RETRY_PAUSE_SECS: u32 = 5;
/// Longest board id accepted (it goes into DHCP option 60 and TFTP paths).
pub const MAX_BOARD_ID: usize = 64;

/// A board's identity, as written to its card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Board id: letters, digits, `.`, `_`, `-`; used in TFTP paths and DHCP option 60.
    pub board_id: String,
    /// Secret the board presents to the appliance.
    pub board_token: String,
    /// MAC address to use instead of the NIC's, lower-case `xx:xx:xx:xx:xx:xx`.
    pub ethaddr: Option<String>,
}

/// An identity that cannot be written or was read back wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// A field is empty.
    #[error("{field} is empty")]
    Empty {
        /// Field name.
        field: &'static str,
    },
    /// The board id is too long.
    #[error("board_id is {len} characters long; at most {MAX_BOARD_ID} are allowed")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// A field holds a character it may not.
    #[error("{field} contains {bad:?}; allowed are {allowed}")]
    BadChar {
        /// Field name.
        field: &'static str,
        /// The character.
        bad: char,
        /// What is allowed.
        allowed: &'static str,
    },
    /// The MAC address is malformed.
    #[error("ethaddr {0:?} is not a MAC address like 02:00:00:00:00:01")]
    BadMac(String),
    /// The MAC address is a multicast address, which no NIC may use.
    #[error("ethaddr {0} is a multicast address (lowest bit of the first byte set)")]
    MulticastMac(String),
    /// A line of an identity file could not be read.
    #[error("line {line}: {reason}")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

impl Identity {
    /// Checks and normalises the fields (the MAC is lower-cased).
    pub fn new(
        board_id: &str,
        board_token: &str,
        ethaddr: Option<&str>,
    ) -> Result<Identity, IdentityError> {
        check_board_id(board_id)?;
        if board_token.is_empty() {
            return Err(IdentityError::Empty {
                field: "board_token",
            });
        }
        if let Some(bad) = board_token
            .chars()
            .find(|c| !c.is_ascii_graphic() || matches!(c, '\'' | '"' | '$' | '\\' | ';' | '#'))
        {
            return Err(IdentityError::BadChar {
                field: "board_token",
                bad,
                allowed: "printable ASCII without blanks, quotes, '$', '\\', ';' or '#'",
            });
        }
        let ethaddr = ethaddr.map(normalise_mac).transpose()?;
        Ok(Identity {
            board_id: board_id.to_string(),
            board_token: board_token.to_string(),
            ethaddr,
        })
    }

    /// The identity file's text.
    pub fn to_file(&self) -> String {
        let mut text = String::from("# labboot identity: read by boot.scr with `env import -t`\n");
        text.push_str(&format!("board_id={}\n", self.board_id));
        text.push_str(&format!("board_token={}\n", self.board_token));
        if let Some(mac) = &self.ethaddr {
            text.push_str(&format!("ethaddr={mac}\n"));
        }
        text
    }

    /// Reads an identity file back (as `env import -t` would: `#` lines and blank lines skipped).
    pub fn parse(text: &str) -> Result<Identity, IdentityError> {
        let (mut id, mut token, mut mac) = (None, None, None);
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(IdentityError::BadLine {
                    line: n + 1,
                    reason: format!("{line:?} is not name=value"),
                });
            };
            match key {
                "board_id" => id = Some(value),
                "board_token" => token = Some(value),
                "ethaddr" => mac = Some(value),
                _ => {}
            }
        }
        Identity::new(id.unwrap_or(""), token.unwrap_or(""), mac)
    }
}

/// Checks a board id: 1 to 64 ASCII letters, digits, `.`, `_` or `-`, not starting with `.`
/// (it becomes a TFTP path component and part of DHCP option 60).
pub fn check_board_id(board_id: &str) -> Result<(), IdentityError> {
    if board_id.is_empty() {
        return Err(IdentityError::Empty { field: "board_id" });
    }
    if board_id.len() > MAX_BOARD_ID {
        return Err(IdentityError::TooLong {
            len: board_id.len(),
        });
    }
    if let Some(bad) = board_id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(IdentityError::BadChar {
            field: "board_id",
            bad,
            allowed: "ASCII letters, digits, '.', '_' and '-'",
        });
    }
    if board_id.starts_with('.') {
        return Err(IdentityError::BadChar {
            field: "board_id",
            bad: '.',
            allowed: "a first character other than '.'",
        });
    }
    Ok(())
}

/// A MAC as `aa:bb:cc:dd:ee:ff` (lower case), or why it is not a unicast MAC.
pub fn normalise_mac(mac: &str) -> Result<String, IdentityError> {
    let bytes: Vec<u8> = mac
        .split(':')
        .map(|part| {
            if part.len() == 2 {
                u8::from_str_radix(part, 16).ok()
            } else {
                None
            }
        })
        .collect::<Option<_>>()
        .filter(|b: &Vec<u8>| b.len() == 6)
        .ok_or_else(|| IdentityError::BadMac(mac.to_string()))?;
    let text = bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    if bytes[0] & 1 == 1 {
        return Err(IdentityError::MulticastMac(text));
    }
    Ok(text)
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.board_id)
    }
}

/// The text of the generic bootstrap script (the same on every card).
///
/// The identity file is loaded to `${kernel_addr_r}`, which distro boot defines on every board
/// and which is unused until a kernel is fetched; the board script goes to `${scriptaddr}`.
pub fn bootstrap_script() -> String {
    format!(
        r#"# labboot bootstrap: the same on every card. The board's identity is in {IDENTITY_FILE}.
echo "labboot: bootstrap from ${{devtype}} ${{devnum}}:${{distro_bootpart}}"
setenv board_id
setenv board_token
setenv labboot_nic_mac ${{ethaddr}}
if load ${{devtype}} ${{devnum}}:${{distro_bootpart}} ${{kernel_addr_r}} {IDENTITY_FILE}; then
    setenv -f ethaddr
    env import -t ${{kernel_addr_r}} ${{filesize}}
    if test -z "${{ethaddr}}"; then
        setenv ethaddr ${{labboot_nic_mac}}
    fi
fi
if test -z "${{board_id}}"; then
    echo "labboot: ERROR: no board_id in {IDENTITY_FILE} on ${{devtype}} ${{devnum}}:${{distro_bootpart}}; rewrite this card with labboot sdcard"
    while true; do sleep {RETRY_PAUSE_SECS}; done
fi
echo "labboot: board ${{board_id}} ethaddr ${{ethaddr}}"
setenv autoload no
setenv bootp_vci labboot:${{board_id}}
while true; do
    echo "labboot: DHCP as labboot:${{board_id}}"
    if dhcp; then
        echo "labboot: fetching labboot/${{board_id}}/boot.scr from ${{serverip}}"
        if tftpboot ${{scriptaddr}} labboot/${{board_id}}/boot.scr; then
            source ${{scriptaddr}}
            echo "labboot: the board script returned"
        else
            echo "labboot: ERROR: TFTP of labboot/${{board_id}}/boot.scr from ${{serverip}} failed"
        fi
    else
        echo "labboot: ERROR: no DHCP answer"
    fi
    echo "labboot: network boot failed; retrying in {RETRY_PAUSE_SECS} s"
    sleep {RETRY_PAUSE_SECS}
done
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_round_trip() {
        let id = Identity::new("rpi4-07", "s3cr3t", Some("02:AA:00:00:00:07")).unwrap();
        assert_eq!(id.ethaddr.as_deref(), Some("02:aa:00:00:00:07"));
        let text = id.to_file();
        assert!(text.contains("board_id=rpi4-07\nboard_token=s3cr3t\nethaddr=02:aa:00:00:00:07\n"));
        assert_eq!(Identity::parse(&text).unwrap(), id);
    }

    #[test]
    fn bad_identities_name_the_field() {
        let err = Identity::new("a b", "t", None).unwrap_err();
        assert!(
            err.to_string().starts_with("board_id contains ' '"),
            "{err}"
        );
        let err = Identity::new("a", "t;reset", None).unwrap_err();
        assert!(
            err.to_string().starts_with("board_token contains ';'"),
            "{err}"
        );
        assert_eq!(
            Identity::new("a", "t", Some("01:00:5e:00:00:01")),
            Err(IdentityError::MulticastMac("01:00:5e:00:00:01".into()))
        );
        assert!(matches!(
            Identity::new("a", "t", Some("02:00:00:00:00")),
            Err(IdentityError::BadMac(_))
        ));
        assert!(matches!(
            Identity::new(&"x".repeat(65), "t", None),
            Err(IdentityError::TooLong { len: 65 })
        ));
        assert!(matches!(
            Identity::parse("board_id=a\nnonsense\n"),
            Err(IdentityError::BadLine { line: 2, .. })
        ));
    }

    #[test]
    fn script_fetches_the_board_script() {
        let s = bootstrap_script();
        assert!(s.contains("setenv bootp_vci labboot:${board_id}"));
        assert!(s.contains("tftpboot ${scriptaddr} labboot/${board_id}/boot.scr"));
        assert!(
            s.contains("load ${devtype} ${devnum}:${distro_bootpart} ${kernel_addr_r} labboot.id")
        );
    }
}
