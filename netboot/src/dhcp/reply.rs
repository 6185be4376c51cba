//! Building OFFER, ACK and NAK messages (dhcproto in, dhcproto out).
//!
//! Boot options go into every OFFER/ACK whether or not option 55 asked for them: U-Boot's
//! request list (1, 3, 6, 12, 17) omits 66/67, yet it reads the header's `file` and option 67.
//! Replies are padded to the 300-byte BOOTP minimum because some boot ROMs drop shorter ones.

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode};
use dhcproto::{Encodable, Encoder};

use super::config::DhcpSettings;

/// The smallest reply sent (BOOTP's fixed size).
pub const MIN_REPLY_LEN: usize = 300;

/// What goes into an OFFER/ACK besides the message type.
#[derive(Debug, Clone, Copy)]
pub struct Grant<'a> {
    /// yiaddr: the address given (unspecified for an INFORM answer).
    pub ip: Ipv4Addr,
    /// The lease time to state; `None` for an INFORM answer (no 51/58/59).
    pub lease_time: Option<u32>,
    /// The boot file for this client.
    pub boot_file: Option<&'a str>,
}

/// A reply skeleton: BOOTREPLY with the request's xid, flags, giaddr and chaddr.
fn skeleton(req: &Message, kind: MessageType, s: &DhcpSettings) -> Message {
    let mut m = Message::default();
    m.set_opcode(Opcode::BootReply)
        .set_htype(req.htype())
        .set_chaddr(&req.chaddr()[..usize::from(req.hlen()).min(16)])
        .set_xid(req.xid())
        .set_flags(req.flags())
        .set_giaddr(req.giaddr())
        .set_secs(0);
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    m.opts_mut()
        .insert(DhcpOption::ServerIdentifier(s.server_ip()));
    m
}

/// An OFFER, ACK (lease) or INFORM-ACK (`grant.lease_time == None`) with the boot options.
pub fn grant(req: &Message, kind: MessageType, grant: Grant<'_>, s: &DhcpSettings) -> Message {
    let mut m = skeleton(req, kind, s);
    m.set_yiaddr(grant.ip).set_siaddr(s.next_server());
    if grant.lease_time.is_none() {
        // INFORM: the client keeps its address; echo ciaddr so it recognises the answer.
        m.set_ciaddr(req.ciaddr());
    }
    m.set_sname_str(s.tftp_server_name());
    let opts = m.opts_mut();
    if let Some(t) = grant.lease_time {
        opts.insert(DhcpOption::AddressLeaseTime(t));
        opts.insert(DhcpOption::Renewal(t / 2));
        opts.insert(DhcpOption::Rebinding(t / 8 * 7));
    }
    opts.insert(DhcpOption::SubnetMask(s.netmask()));
    if let Some(r) = s.router() {
        opts.insert(DhcpOption::Router(vec![r]));
    }
    if !s.dns().is_empty() {
        opts.insert(DhcpOption::DomainNameServer(s.dns().to_vec()));
    }
    opts.insert(DhcpOption::TFTPServerName(
        s.tftp_server_name().as_bytes().to_vec(),
    ));
    if let Some(file) = grant.boot_file {
        opts.insert(DhcpOption::BootfileName(file.as_bytes().to_vec()));
        m.set_fname_str(file);
    }
    m
}

/// A NAK: no address, no boot options, with a message (option 56) saying why.
pub fn nak(req: &Message, why: &str, s: &DhcpSettings) -> Message {
    let mut m = skeleton(req, MessageType::Nak, s);
    m.opts_mut()
        .insert(DhcpOption::Message(why.chars().take(200).collect()));
    m
}

/// Encodes `msg` into `out` (cleared first), padded to [`MIN_REPLY_LEN`].
pub fn encode_into(msg: &Message, out: &mut Vec<u8>) -> Result<(), dhcproto::error::EncodeError> {
    out.clear();
    msg.encode(&mut Encoder::new(out))?;
    if out.len() < MIN_REPLY_LEN {
        out.resize(MIN_REPLY_LEN, 0);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::config::{DhcpConfig, DEFAULT_LEASE_TIME};
    use dhcproto::v4::OptionCode;
    use dhcproto::{Decodable, Decoder};

    fn settings() -> DhcpSettings {
        DhcpSettings::try_from(DhcpConfig {
            interface: "lab0".into(),
            server_ip: Ipv4Addr::new(10, 0, 0, 1),
            pool: "10.0.0.100-10.0.0.199".into(),
            netmask: None,
            router: Some(Ipv4Addr::new(10, 0, 0, 254)),
            dns: vec![Ipv4Addr::new(10, 0, 0, 53)],
            lease_time: DEFAULT_LEASE_TIME,
            lease_file: None,
            boot_file: None,
            arch_boot_files: Default::default(),
            next_server: Some(Ipv4Addr::new(10, 0, 0, 2)),
            tftp_server_name: None,
            bindings: vec![],
            ping_check_ms: 0,
        })
        .unwrap()
    }

    #[test]
    fn ack_carries_the_boot_options() {
        let req = Message::decode(&mut Decoder::new(include_bytes!(
            "../../tests/data/uboot-2023.01-request.bin"
        )))
        .unwrap();
        let s = settings();
        let g = Grant {
            ip: Ipv4Addr::new(10, 0, 0, 100),
            lease_time: Some(3600),
            boot_file: Some("labboot/boot.scr"),
        };
        let mut bytes = Vec::new();
        encode_into(&grant(&req, MessageType::Ack, g, &s), &mut bytes).unwrap();
        assert!(bytes.len() >= MIN_REPLY_LEN);
        let m = Message::decode(&mut Decoder::new(&bytes)).unwrap();
        assert_eq!(m.opcode(), Opcode::BootReply);
        assert_eq!(m.xid(), req.xid());
        assert_eq!(m.chaddr(), req.chaddr());
        assert_eq!(m.yiaddr(), Ipv4Addr::new(10, 0, 0, 100));
        assert_eq!(m.siaddr(), Ipv4Addr::new(10, 0, 0, 2));
        // dhcproto keeps the terminating NUL of the fixed fields when decoding.
        assert_eq!(m.fname_str().unwrap().unwrap(), "labboot/boot.scr\0");
        assert_eq!(m.sname_str().unwrap().unwrap(), "10.0.0.2\0");
        let o = m.opts();
        assert_eq!(o.msg_type(), Some(MessageType::Ack));
        assert_eq!(
            o.get(OptionCode::BootfileName),
            Some(&DhcpOption::BootfileName(b"labboot/boot.scr".to_vec()))
        );
        assert_eq!(
            o.get(OptionCode::TFTPServerName),
            Some(&DhcpOption::TFTPServerName(b"10.0.0.2".to_vec()))
        );
        assert_eq!(
            o.get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 0, 1)))
        );
        assert_eq!(
            o.get(OptionCode::AddressLeaseTime),
            Some(&DhcpOption::AddressLeaseTime(3600))
        );
        assert_eq!(
            o.get(OptionCode::SubnetMask),
            Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
        );
        assert_eq!(
            o.get(OptionCode::Router),
            Some(&DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 0, 254)]))
        );
        assert_eq!(
            o.get(OptionCode::DomainNameServer),
            Some(&DhcpOption::DomainNameServer(vec![Ipv4Addr::new(
                10, 0, 0, 53
            )]))
        );
    }

    #[test]
    fn nak_has_no_address() {
        let req = Message::decode(&mut Decoder::new(include_bytes!(
            "../../tests/data/uboot-2023.01-request.bin"
        )))
        .unwrap();
        let m = nak(&req, "wrong address", &settings());
        assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(m.opts().msg_type(), Some(MessageType::Nak));
        assert!(m.opts().get(OptionCode::AddressLeaseTime).is_none());
    }
}
