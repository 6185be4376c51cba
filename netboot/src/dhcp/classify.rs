//! Who is asking: the client's MAC, board identity and architecture, read from what it sent.
//!
//! Classification follows what clients really send, not what the RFCs say they should. U-Boot
//! 2023.01 (captured in `netboot/tests/data/`) sends option 60 `U-Boot.armv8` (`U-Boot.armv7` on
//! 32-bit) unless `bootp_vci` overrides it, option 93 = 0x0016 on arm64 and 0x0015 on arm32 unless
//! `bootp_arch` overrides it, option 94, option 97 only when `pxeuuid` is set, and never option 61.
//! So the identity comes from option 60 `labboot:<board_id>` (written by the bootstrap script
//! through `bootp_vci`) or from option 97, and option 61 is deliberately not used as a key: the
//! clients that send it (udhcpc, dhclient) fill it with their MAC, which says nothing more.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};

/// The option-60 prefix that carries a board identity: `labboot:<board_id>`.
pub const VCI_PREFIX: &str = "labboot:";

/// An Ethernet hardware address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = String;

    /// Parses `aa:bb:cc:dd:ee:ff` (or with `-` separators).
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(format!(
                "`{s}` is not a MAC address (want aa:bb:cc:dd:ee:ff)"
            ));
        }
        let mut mac = [0u8; 6];
        for (byte, part) in mac.iter_mut().zip(&parts) {
            if part.len() != 2 {
                return Err(format!(
                    "`{s}` is not a MAC address (want aa:bb:cc:dd:ee:ff)"
                ));
            }
            *byte = u8::from_str_radix(part, 16)
                .map_err(|_| format!("`{s}` is not a MAC address (bad hex `{part}`)"))?;
        }
        Ok(MacAddr(mac))
    }
}

/// A board identity a client presented, stronger than its (clonable) MAC.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Identity {
    /// `labboot:<board_id>` in option 60 (U-Boot's `bootp_vci`, set by the bootstrap script).
    Board(String),
    /// Option 97 (RFC 4578 client machine identifier; U-Boot's `pxeuuid`): type 0 + 16 bytes.
    Uuid([u8; 16]),
}

impl Identity {
    /// Parses the form [`Display`](fmt::Display) writes: `uuid:<8-4-4-4-12 hex>` or a board id.
    pub fn parse(s: &str) -> Result<Identity, String> {
        if let Some(hex) = s.strip_prefix("uuid:") {
            let digits: String = hex.chars().filter(|c| *c != '-').collect();
            if digits.len() != 32 {
                return Err(format!("`{s}`: a UUID has 32 hex digits"));
            }
            let mut uuid = [0u8; 16];
            for (i, byte) in uuid.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16)
                    .map_err(|_| format!("`{s}`: bad hex in UUID"))?;
            }
            return Ok(Identity::Uuid(uuid));
        }
        if valid_board_id(s) {
            Ok(Identity::Board(s.to_string()))
        } else {
            Err(format!(
                "`{s}` is not a board id (1-64 characters of A-Z a-z 0-9 . _ -) nor uuid:<hex>"
            ))
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Board(id) => f.write_str(id),
            Identity::Uuid(u) => {
                write!(f, "uuid:")?;
                for (i, b) in u.iter().enumerate() {
                    if matches!(i, 4 | 6 | 8 | 10) {
                        f.write_str("-")?;
                    }
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }
    }
}

/// Whether `id` is an acceptable board id: 1-64 characters of `A-Z a-z 0-9 . _ -`.
pub fn valid_board_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && !id.starts_with("uuid:")
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// What a lease is keyed by: the identity when the client presented one, else its MAC.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClientKey {
    /// A board identity.
    Id(Identity),
    /// A MAC address, for clients without identity.
    Mac(MacAddr),
}

impl fmt::Display for ClientKey {
    /// `board:<id>`, `uuid:<uuid>` or `mac:<mac>`; never contains whitespace.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientKey::Id(Identity::Board(id)) => write!(f, "board:{id}"),
            ClientKey::Id(uuid @ Identity::Uuid(_)) => write!(f, "{uuid}"),
            ClientKey::Mac(mac) => write!(f, "mac:{mac}"),
        }
    }
}

impl FromStr for ClientKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(id) = s.strip_prefix("board:") {
            if valid_board_id(id) {
                return Ok(ClientKey::Id(Identity::Board(id.to_string())));
            }
            return Err(format!("`{s}`: bad board id"));
        }
        if s.starts_with("uuid:") {
            return Identity::parse(s).map(ClientKey::Id);
        }
        if let Some(mac) = s.strip_prefix("mac:") {
            return mac.parse().map(ClientKey::Mac);
        }
        Err(format!("`{s}` is not a client key (board:, uuid: or mac:)"))
    }
}

/// A client's architecture, for choosing a per-architecture boot file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Arch {
    /// 64-bit ARM (U-Boot armv8: option 93 = 0x16, or UEFI 0x0b).
    Arm64,
    /// 32-bit ARM (U-Boot armv7: option 93 = 0x15, or UEFI 0x0a).
    Arm32,
    /// x86 PC BIOS (option 93 = 0).
    X86Bios,
    /// x86-64 UEFI (option 93 = 7 or 9).
    X64Efi,
    /// Any other option-93 value.
    Other(u16),
}

impl Arch {
    /// Names accepted in configuration (`arch_boot_files` keys).
    pub const NAMES: [&'static str; 4] = ["arm64", "arm32", "x86-bios", "x64-efi"];

    /// Maps an option-93 value, U-Boot's private 0x15/0x16 included.
    pub fn from_code(code: u16) -> Arch {
        match code {
            0x16 | 0x0b | 0x13 | 0x18 => Arch::Arm64,
            0x15 | 0x0a | 0x12 | 0x17 => Arch::Arm32,
            0x00 => Arch::X86Bios,
            0x07 | 0x09 | 0x10 => Arch::X64Efi,
            other => Arch::Other(other),
        }
    }

    /// The configuration name of this architecture, if it has one.
    pub fn name(self) -> Option<&'static str> {
        match self {
            Arch::Arm64 => Some("arm64"),
            Arch::Arm32 => Some("arm32"),
            Arch::X86Bios => Some("x86-bios"),
            Arch::X64Efi => Some("x64-efi"),
            Arch::Other(_) => None,
        }
    }
}

impl FromStr for Arch {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "arm64" => Ok(Arch::Arm64),
            "arm32" => Ok(Arch::Arm32),
            "x86-bios" => Ok(Arch::X86Bios),
            "x64-efi" => Ok(Arch::X64Efi),
            _ => Err(format!(
                "unknown architecture `{s}` (one of {})",
                Arch::NAMES.join(", ")
            )),
        }
    }
}

/// Why a packet was not classified (it is dropped with this as the log line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClassifyError {
    /// The packet is a BOOTREPLY (another server's answer, or a reflection attempt).
    #[error("not a BOOTREQUEST")]
    NotRequest,
    /// Not Ethernet, or a hardware address length other than 6.
    #[error("hardware type/length {htype}/{hlen} is not Ethernet")]
    NotEthernet {
        /// The htype byte.
        htype: u8,
        /// The hlen byte.
        hlen: u8,
    },
    /// No option 53 (or a BOOTP-only client).
    #[error("no DHCP message type (option 53)")]
    NoMessageType,
}

/// Everything the lease logic needs to know about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// The DHCP message type (option 53).
    pub msg_type: MessageType,
    /// The hardware address (chaddr).
    pub mac: MacAddr,
    /// The board identity, when the client presented one.
    pub identity: Option<Identity>,
    /// The architecture, from option 93 or else option 60.
    pub arch: Option<Arch>,
    /// Option 60 as sent (lossy UTF-8), for logs.
    pub vendor_class: Option<String>,
    /// Option 50, the address the client asks for.
    pub requested_ip: Option<Ipv4Addr>,
    /// Option 54, the server the client selected.
    pub server_id: Option<Ipv4Addr>,
}

impl ClientInfo {
    /// The key its lease is stored under: identity when present, else MAC.
    pub fn key(&self) -> ClientKey {
        match &self.identity {
            Some(id) => ClientKey::Id(id.clone()),
            None => ClientKey::Mac(self.mac),
        }
    }

    /// `id=<identity>` or `id=-`, for log lines.
    pub fn id_for_log(&self) -> String {
        match &self.identity {
            Some(id) => id.to_string(),
            None => "-".to_string(),
        }
    }
}

/// Reads the client's MAC, identity and architecture from a decoded request.
pub fn classify(msg: &Message) -> Result<ClientInfo, ClassifyError> {
    if msg.opcode() != dhcproto::v4::Opcode::BootRequest {
        return Err(ClassifyError::NotRequest);
    }
    let htype = u8::from(msg.htype());
    if htype != 1 || msg.hlen() != 6 {
        return Err(ClassifyError::NotEthernet {
            htype,
            hlen: msg.hlen(),
        });
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&msg.chaddr()[..6]);
    let opts = msg.opts();
    let msg_type = opts.msg_type().ok_or(ClassifyError::NoMessageType)?;

    let vci = match opts.get(OptionCode::ClassIdentifier) {
        Some(DhcpOption::ClassIdentifier(bytes)) => Some(bytes.as_slice()),
        _ => None,
    };
    let board = vci
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.strip_prefix(VCI_PREFIX))
        .map(|id| id.trim_end_matches('\0'))
        .filter(|id| valid_board_id(id))
        .map(|id| Identity::Board(id.to_string()));
    let uuid = match opts.get(OptionCode::ClientMachineIdentifier) {
        Some(DhcpOption::ClientMachineIdentifier(bytes)) => uuid_from_option97(bytes),
        _ => None,
    };

    let arch = match opts.get(OptionCode::ClientSystemArchitecture) {
        Some(DhcpOption::ClientSystemArchitecture(a)) => Some(Arch::from_code(u16::from(*a))),
        _ => vci.and_then(arch_from_vci),
    };

    Ok(ClientInfo {
        msg_type,
        mac: MacAddr(mac),
        identity: board.or(uuid.map(Identity::Uuid)),
        arch,
        vendor_class: vci.map(|v| String::from_utf8_lossy(v).into_owned()),
        requested_ip: match opts.get(OptionCode::RequestedIpAddress) {
            Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
            _ => None,
        },
        server_id: match opts.get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
            _ => None,
        },
    })
}

/// Option 97 as RFC 4578 defines it (type 0, 16 bytes). Anything else is not an identity.
fn uuid_from_option97(bytes: &[u8]) -> Option<[u8; 16]> {
    match bytes {
        [0, rest @ ..] if rest.len() == 16 && rest.iter().any(|b| *b != 0) => {
            let mut uuid = [0u8; 16];
            uuid.copy_from_slice(rest);
            Some(uuid)
        }
        _ => None,
    }
}

/// The architecture U-Boot (`U-Boot.armv8`) or PXE (`PXEClient:Arch:00011:…`) states in option 60.
fn arch_from_vci(vci: &[u8]) -> Option<Arch> {
    let vci = std::str::from_utf8(vci).ok()?;
    if let Some(cpu) = vci.strip_prefix("U-Boot.") {
        return match cpu {
            "armv8" | "arm64" | "aarch64" => Some(Arch::Arm64),
            c if c.starts_with("armv") || c == "arm" => Some(Arch::Arm32),
            _ => None,
        };
    }
    let code = vci.strip_prefix("PXEClient:Arch:")?.get(..5)?;
    code.parse::<u16>().ok().map(Arch::from_code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::{Decodable, Decoder};

    fn decode(bytes: &[u8]) -> Message {
        Message::decode(&mut Decoder::new(bytes)).expect("fixture decodes")
    }

    const DISCOVER_DEFAULT: &[u8] = include_bytes!("../../tests/data/uboot-2023.01-discover.bin");
    const REQUEST_DEFAULT: &[u8] = include_bytes!("../../tests/data/uboot-2023.01-request.bin");
    const DISCOVER_PXE: &[u8] = include_bytes!("../../tests/data/uboot-2023.01-discover-pxe.bin");
    const DISCOVER_UUID: &[u8] = include_bytes!("../../tests/data/uboot-2023.01-discover-uuid.bin");
    const REQUEST_UUID: &[u8] = include_bytes!("../../tests/data/uboot-2023.01-request-uuid.bin");

    #[test]
    fn real_uboot_default_discover() {
        let msg = decode(DISCOVER_DEFAULT);
        let info = classify(&msg).unwrap();
        assert_eq!(info.msg_type, MessageType::Discover);
        assert_eq!(info.mac.to_string(), "52:52:52:52:52:52");
        assert_eq!(info.arch, Some(Arch::Arm64), "option 93 = 0x0016");
        assert_eq!(info.vendor_class.as_deref(), Some("U-Boot.armv8"));
        assert_eq!(info.identity, None);
        assert_eq!(info.key(), ClientKey::Mac(info.mac));
        // What U-Boot really sends: 93, 94, never 61; no 97 without pxeuuid.
        assert!(msg.opts().get(OptionCode::ClientIdentifier).is_none());
        assert!(msg
            .opts()
            .get(OptionCode::ClientMachineIdentifier)
            .is_none());
        assert_eq!(
            msg.opts().get(OptionCode::ClientNetworkInterface),
            Some(&DhcpOption::ClientNetworkInterface(1, 0, 0))
        );
        assert!(
            !msg.flags().broadcast(),
            "U-Boot does not set the broadcast flag"
        );
        assert_eq!(msg.ciaddr(), Ipv4Addr::UNSPECIFIED);
    }

    #[test]
    fn real_uboot_request_carries_server_and_address() {
        let info = classify(&decode(REQUEST_DEFAULT)).unwrap();
        assert_eq!(info.msg_type, MessageType::Request);
        assert_eq!(info.server_id, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(info.requested_ip, Some(Ipv4Addr::new(10, 0, 2, 15)));
        assert_eq!(info.arch, Some(Arch::Arm64));
    }

    #[test]
    fn real_uboot_with_bootp_arch_and_pxe_vci() {
        // `bootp_arch 0xb` and a PXEClient VCI, as `pxe get` sets it.
        let info = classify(&decode(DISCOVER_PXE)).unwrap();
        assert_eq!(info.arch, Some(Arch::Arm64));
        assert_eq!(
            info.vendor_class.as_deref(),
            Some("PXEClient:Arch:00011:UNDI:003000")
        );
        assert_eq!(info.identity, None);
    }

    #[test]
    fn real_uboot_with_pxeuuid_is_identified_by_uuid() {
        for bytes in [DISCOVER_UUID, REQUEST_UUID] {
            let info = classify(&decode(bytes)).unwrap();
            let id = info.identity.clone().expect("option 97 gives an identity");
            assert_eq!(id.to_string(), "uuid:01234567-89ab-cdef-0123-456789abcdef");
            assert_eq!(Identity::parse(&id.to_string()).unwrap(), id);
            assert_eq!(info.key(), ClientKey::Id(id));
            // A VCI that is not `labboot:` is just a vendor class.
            assert_eq!(info.vendor_class.as_deref(), Some("NetbootLab:board"));
        }
    }

    #[test]
    fn labboot_vci_wins_over_uuid() {
        let mut msg = decode(DISCOVER_UUID);
        msg.opts_mut()
            .insert(DhcpOption::ClassIdentifier(b"labboot:board7".to_vec()));
        let info = classify(&msg).unwrap();
        assert_eq!(info.identity, Some(Identity::Board("board7".into())));
        assert_eq!(info.key().to_string(), "board:board7");
        // No option 93 → the architecture comes from nowhere for a labboot VCI.
        msg.opts_mut().remove(OptionCode::ClientSystemArchitecture);
        assert_eq!(classify(&msg).unwrap().arch, None);
    }

    #[test]
    fn arch_from_vci_without_option_93() {
        let mut msg = decode(DISCOVER_DEFAULT);
        msg.opts_mut().remove(OptionCode::ClientSystemArchitecture);
        assert_eq!(classify(&msg).unwrap().arch, Some(Arch::Arm64));
        msg.opts_mut()
            .insert(DhcpOption::ClassIdentifier(b"U-Boot.armv7".to_vec()));
        assert_eq!(classify(&msg).unwrap().arch, Some(Arch::Arm32));
        msg.opts_mut()
            .insert(DhcpOption::ClientSystemArchitecture(0x15.into()));
        assert_eq!(classify(&msg).unwrap().arch, Some(Arch::Arm32));
    }

    #[test]
    fn bad_board_ids_are_not_identities() {
        let mut msg = decode(DISCOVER_DEFAULT);
        for vci in [&b"labboot:"[..], b"labboot:a b", b"labboot:\xff"] {
            msg.opts_mut()
                .insert(DhcpOption::ClassIdentifier(vci.to_vec()));
            assert_eq!(classify(&msg).unwrap().identity, None, "{vci:?}");
        }
    }

    #[test]
    fn keys_round_trip() {
        for s in [
            "board:board-7.a_b",
            "uuid:01234567-89ab-cdef-0123-456789abcdef",
            "mac:52:52:52:52:52:52",
        ] {
            assert_eq!(s.parse::<ClientKey>().unwrap().to_string(), s);
        }
        assert!("board:".parse::<ClientKey>().is_err());
        assert!("mac:52:52".parse::<ClientKey>().is_err());
        assert!("x".parse::<ClientKey>().is_err());
    }

    #[test]
    fn replies_are_not_requests() {
        let mut msg = decode(DISCOVER_DEFAULT);
        msg.set_opcode(dhcproto::v4::Opcode::BootReply);
        assert_eq!(classify(&msg), Err(ClassifyError::NotRequest));
    }
}
