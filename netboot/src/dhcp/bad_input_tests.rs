//! The DHCP bad-input matrix (issue 16): one row per malformed or hostile datagram — truncated
//! packets, options running past the end, option overload (RFC 2131 §4.1, option 52), a
//! 1,500-byte packet, server messages and BOOTREPLYs, and REQUEST/RELEASE/DECLINE aimed at another
//! client's address — each fed through [`wire::decode`] and [`Engine::handle`] exactly as the
//! socket loop does, with the answer RFC 2131 calls for: no reply, an OFFER, or a NAK with its
//! reason. After every row the server still serves: a new client's DISCOVER gets an OFFER of a
//! free address, and the client holding 10.0.0.100 renews it with an ACK (nobody took it away).

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};

use super::config::DhcpConfig;
use super::engine::Engine;
use super::engine_tests;
use super::reply::encode_into;
use super::wire;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// The address the victim client holds.
const VICTIM_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
const VICTIM: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
const ATTACKER: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];

/// The engine tests' lab (server 10.0.0.1), with a pool of 100 and one boot file.
fn engine() -> Engine {
    engine_tests::engine(DhcpConfig {
        pool: "10.0.0.100-10.0.0.199".into(),
        router: None,
        lease_time: 3600,
        boot_file: Some("boot.scr".into()),
        arch_boot_files: Default::default(),
        ..engine_tests::config()
    })
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

/// A raw BOOTREQUEST from `mac` (ciaddr `ciaddr`), magic cookie, then `options` as given (no END
/// is added: rows say where theirs is).
fn raw(mac: [u8; 6], ciaddr: Ipv4Addr, options: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 240];
    p[0] = 1; // BOOTREQUEST
    p[1] = 1; // Ethernet
    p[2] = 6;
    p[4..8].copy_from_slice(&[0xde, 0xad, mac[5], 0x01]);
    p[12..16].copy_from_slice(&ciaddr.octets());
    p[28..34].copy_from_slice(&mac);
    p[236..240].copy_from_slice(&[99, 130, 83, 99]);
    p.extend_from_slice(options);
    p
}

/// A DHCP message of type `kind` (option 53) from `mac` with `extra` option bytes, then END.
fn msg(mac: [u8; 6], kind: u8, extra: &[u8]) -> Vec<u8> {
    let mut o = vec![53, 1, kind];
    o.extend_from_slice(extra);
    o.push(255);
    raw(mac, Ipv4Addr::UNSPECIFIED, &o)
}

const DISCOVER: u8 = 1;
const OFFER: u8 = 2;
const REQUEST: u8 = 3;
const DECLINE: u8 = 4;
const RELEASE: u8 = 7;

/// Option bytes: requested address (50).
fn requested(ip: Ipv4Addr) -> Vec<u8> {
    let mut v = vec![50, 4];
    v.extend_from_slice(&ip.octets());
    v
}

/// Option bytes: server identifier (54).
fn server_id(ip: Ipv4Addr) -> Vec<u8> {
    let mut v = vec![54, 4];
    v.extend_from_slice(&ip.octets());
    v
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// What a row expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Dropped or ignored: nothing is sent.
    NoReply,
    /// An OFFER (of some free address, never the victim's).
    Offer,
    /// A NAK whose message (option 56) contains this text.
    Nak(&'static str),
}

struct Row {
    name: &'static str,
    bytes: Vec<u8>,
    expect: Expect,
}

/// A DISCOVER whose options live in `file` (and `sname`) by option overload (52 = `which`).
fn overloaded(mac: [u8; 6], which: u8, file: &[u8], sname: &[u8]) -> Vec<u8> {
    let mut p = raw(mac, Ipv4Addr::UNSPECIFIED, &[52, 1, which, 255]);
    p[108..108 + file.len()].copy_from_slice(file);
    p[44..44 + sname.len()].copy_from_slice(sname);
    p
}

/// A DISCOVER of exactly `len` bytes: a long private option (224), pads, END last.
fn long_discover(mac: [u8; 6], len: usize) -> Vec<u8> {
    let mut o = vec![53, 1, DISCOVER];
    for _ in 0..4 {
        o.extend_from_slice(&[224, 255]);
        o.extend_from_slice(&[0x5a; 255]);
    }
    let mut p = raw(mac, Ipv4Addr::UNSPECIFIED, &o);
    p.resize(len - 1, 0);
    p.push(255);
    p
}

#[rustfmt::skip]
fn rows() -> Vec<Row> {
    use Expect::*;
    let row = |name, bytes, expect| Row { name, bytes, expect };
    let a = ATTACKER;
    // Rows that get an OFFER use another client, so the attacker holds nothing of its own.
    let b = [0x52, 0x54, 0, 0, 0, 3];
    let whole = msg(a, DISCOVER, &[]);
    let mut bootreply = whole.clone();
    bootreply[0] = 2;
    let mut hlen16 = whole.clone();
    hlen16[2] = 16;
    let mut no_magic = whole.clone();
    no_magic[236] = 0;
    let other_net = Ipv4Addr::new(192, 168, 7, 7);
    let mut relayed = whole.clone();
    relayed[24..28].copy_from_slice(&[172, 16, 0, 1]);
    let mut after_end = msg(b, DISCOVER, &[]);
    after_end.extend_from_slice(&[60, 200, 1, 2, 3]);
    vec![
        // Framing (netboot::dhcp::wire): dropped before the engine sees them.
        row("empty datagram", Vec::new(), NoReply),
        row("1 byte", vec![1], NoReply),
        row("header cut at 100 bytes", whole[..100].to_vec(), NoReply),
        row("header cut at 239 bytes", whole[..239].to_vec(), NoReply),
        row("header and cookie only, no options", whole[..240].to_vec(), NoReply),
        row("no magic cookie (plain BOOTP)", no_magic, NoReply),
        row("option 60 claims 20 bytes, 1 follows", raw(a, Ipv4Addr::UNSPECIFIED, &[53, 1, 1, 60, 20, b'x']), NoReply),
        row("option code without a length byte", raw(a, Ipv4Addr::UNSPECIFIED, &[53, 1, 1, 60]), NoReply),
        row("option 53 claims 255 bytes", raw(a, Ipv4Addr::UNSPECIFIED, &[53, 255, 1]), NoReply),
        row("option 53 of length 0", raw(a, Ipv4Addr::UNSPECIFIED, &[53, 0, 255]), NoReply),
        row("option 94 of length 2 (dhcproto would assert)", msg(a, DISCOVER, &[94, 2, 1, 0]), NoReply),
        row("options after END are ignored", after_end, Offer),
        row("1,500-byte DISCOVER", long_discover(b, 1500), Offer),
        // Option overload (RFC 2131 §4.1): the options in `file`/`sname` count as options.
        row("overload: message type in file", overloaded(b, 1, &[53, 1, DISCOVER, 255], &[]), Offer),
        row("overload: message type in sname", overloaded(b, 2, &[], &[53, 1, DISCOVER, 255]), Offer),
        row("overload: options in both fields", overloaded(b, 3, &[53, 1, DISCOVER, 255], &[60, 3, b'a', b'b', b'c', 255]), Offer),
        row("overload: option past the end of file", overloaded(a, 1, &[53, 1, DISCOVER, 60, 200], &[]), NoReply),
        row("overload: value 4 is not defined", overloaded(a, 4, &[53, 1, DISCOVER, 255], &[]), NoReply),
        // Not a client request (RFC 2131 §4.3: the server answers DISCOVER/REQUEST/INFORM only).
        row("BOOTREPLY", bootreply, NoReply),
        row("hardware address length 16", hlen16, NoReply),
        row("an OFFER sent to the server", msg(a, OFFER, &[]), NoReply),
        row("unknown message type 200", msg(a, 200, &[]), NoReply),
        row("relayed from another subnet", relayed, NoReply),
        // Another client's address (RFC 2131 §4.3.2).
        row("REQUEST (selecting) for another client's address", msg(a, REQUEST, &cat(&[&requested(VICTIM_IP), &server_id(SERVER)])), Nak("address not available")),
        row("REQUEST (init-reboot) for another client's address", msg(a, REQUEST, &requested(VICTIM_IP)), Nak("address not available")),
        row("REQUEST (renewing) with another client's ciaddr", raw(a, VICTIM_IP, &[53, 1, REQUEST, 255]), Nak("address not available")),
        row("REQUEST for an address off the network", msg(a, REQUEST, &requested(other_net)), Nak("address not on this network")),
        row("REQUEST naming no address", msg(a, REQUEST, &[]), NoReply),
        row("REQUEST selecting another server", msg(a, REQUEST, &cat(&[&requested(VICTIM_IP), &server_id(Ipv4Addr::new(10, 0, 0, 9))])), NoReply),
        row("RELEASE of another client's address", raw(a, VICTIM_IP, &[53, 1, RELEASE, 54, 4, 10, 0, 0, 1, 255]), NoReply),
        row("DECLINE of another client's address", msg(a, DECLINE, &cat(&[&requested(VICTIM_IP), &server_id(SERVER)])), NoReply),
    ]
}

/// What the socket loop would send for `bytes`: the reply, if any (encoded, as it must be).
fn answer(e: &mut Engine, bytes: &[u8], now: SystemTime) -> Option<Message> {
    let msg = wire::decode(bytes).ok()?;
    let outcome = e.handle(&msg, now).ok()?;
    let (reply, _) = outcome.reply?;
    let mut out = Vec::new();
    encode_into(&reply, &mut out).expect("replies encode");
    Some(reply)
}

fn kind(m: &Message) -> Option<MessageType> {
    m.opts().msg_type()
}

#[test]
fn every_bad_datagram_gets_its_answer_and_the_server_keeps_serving() {
    let mut e = engine();
    // The victim takes 10.0.0.100.
    let offer = answer(&mut e, &msg(VICTIM, DISCOVER, &[]), at(0)).expect("victim OFFER");
    assert_eq!(offer.yiaddr(), VICTIM_IP);
    let req = msg(
        VICTIM,
        REQUEST,
        &cat(&[&requested(VICTIM_IP), &server_id(SERVER)]),
    );
    let ack = answer(&mut e, &req, at(0)).expect("victim ACK");
    assert_eq!(kind(&ack), Some(MessageType::Ack));

    let rows = rows();
    assert!(rows.len() >= 30, "{} rows", rows.len());
    for (i, row) in rows.iter().enumerate() {
        let name = row.name;
        let now = at(10 + i as u64);
        let got = answer(&mut e, &row.bytes, now);
        match (row.expect, &got) {
            (Expect::NoReply, None) => {}
            (Expect::Offer, Some(m)) if kind(m) == Some(MessageType::Offer) => {
                assert_ne!(
                    m.yiaddr(),
                    VICTIM_IP,
                    "{name}: offered the victim's address"
                );
            }
            (Expect::Nak(why), Some(m)) if kind(m) == Some(MessageType::Nak) => {
                match m.opts().get(OptionCode::Message) {
                    Some(DhcpOption::Message(text)) => {
                        assert!(text.contains(why), "{name}: NAK says {text:?}")
                    }
                    other => panic!("{name}: NAK without a message: {other:?}"),
                }
                assert!(
                    m.yiaddr().is_unspecified(),
                    "{name}: a NAK gives no address"
                );
            }
            (want, got) => panic!(
                "{name}: expected {want:?}, got {:?}",
                got.as_ref().map(kind)
            ),
        }
        // Still serving: a new client gets an OFFER of a free address…
        let mut newcomer = [0x52, 0x54, 0, 0, 1, 0];
        newcomer[5] = i as u8;
        let offer = answer(&mut e, &msg(newcomer, DISCOVER, &[]), now)
            .unwrap_or_else(|| panic!("after {name}: no OFFER for a new client"));
        assert_eq!(kind(&offer), Some(MessageType::Offer), "after {name}");
        assert_ne!(offer.yiaddr(), VICTIM_IP, "after {name}");
        // …and the victim renews its address (unicast, ciaddr set): nobody took it.
        let renew = raw(VICTIM, VICTIM_IP, &[53, 1, REQUEST, 255]);
        let ack = answer(&mut e, &renew, now)
            .unwrap_or_else(|| panic!("after {name}: no answer to the victim's renewal"));
        assert_eq!(kind(&ack), Some(MessageType::Ack), "after {name}: {ack:?}");
        assert_eq!(ack.yiaddr(), VICTIM_IP, "after {name}");
    }
}
