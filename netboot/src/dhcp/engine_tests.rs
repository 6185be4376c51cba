//! Decision tests of [`Engine`] on plain values and a made-up clock.

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder};

use super::classify::{ClientKey, Identity, MacAddr};
use super::config::{BindingConfig, DhcpConfig, DhcpSettings, DEFAULT_LEASE_TIME};
use super::engine::{Destination, Engine, Ignored, Outcome, OFFER_HOLD_SECS};
use super::store::{LeaseRecord, StoredLease};

pub(super) const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

pub(super) fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

pub(super) fn config() -> DhcpConfig {
    DhcpConfig {
        interface: "lab0".into(),
        server_ip: SERVER,
        pool: "10.0.0.100-10.0.0.103".into(),
        netmask: None,
        router: Some(SERVER),
        dns: vec![],
        lease_time: DEFAULT_LEASE_TIME,
        lease_file: None,
        boot_file: Some("default.scr".into()),
        arch_boot_files: [("arm32".to_string(), "arm32.scr".to_string())].into(),
        next_server: None,
        tftp_server_name: None,
        bindings: vec![],
        ping_check_ms: 0,
    }
}

pub(super) fn engine(c: DhcpConfig) -> Engine {
    Engine::new(DhcpSettings::try_from(c).unwrap())
}

pub(super) fn mac(n: u8) -> [u8; 6] {
    [0x52, 0x54, 0, 0, 0, n]
}

pub(super) fn packet(mac: [u8; 6], kind: MessageType, opts: Vec<DhcpOption>) -> Message {
    let mut m = Message::default();
    m.set_opcode(Opcode::BootRequest)
        .set_chaddr(&mac)
        .set_xid(u32::from(mac[5]) << 8 | kind_byte(kind));
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    for o in opts {
        m.opts_mut().insert(o);
    }
    m
}

fn kind_byte(kind: MessageType) -> u32 {
    u32::from(u8::from(kind))
}

pub(super) fn vci(id: &str) -> DhcpOption {
    DhcpOption::ClassIdentifier(format!("labboot:{id}").into_bytes())
}

fn reply(o: &Outcome) -> (&Message, Destination) {
    let (m, d) = o.reply.as_ref().expect("a reply");
    (m, *d)
}

fn boot_file(m: &Message) -> Option<String> {
    match m.opts().get(OptionCode::BootfileName) {
        Some(DhcpOption::BootfileName(b)) => Some(String::from_utf8(b.clone()).unwrap()),
        _ => None,
    }
}

/// DISCOVER then REQUEST (selecting), returning the ACKed address.
pub(super) fn dora(
    e: &mut Engine,
    mac: [u8; 6],
    extra: Vec<DhcpOption>,
    now: SystemTime,
) -> Ipv4Addr {
    let o = e
        .handle(&packet(mac, MessageType::Discover, extra.clone()), now)
        .unwrap();
    let (offer, _) = reply(&o);
    assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
    let ip = offer.yiaddr();
    let mut opts = extra;
    opts.push(DhcpOption::ServerIdentifier(SERVER));
    opts.push(DhcpOption::RequestedIpAddress(ip));
    let o = e
        .handle(&packet(mac, MessageType::Request, opts), now)
        .unwrap();
    let (ack, _) = reply(&o);
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack), "{ack:?}");
    assert_eq!(ack.yiaddr(), ip);
    ip
}

#[test]
fn four_way_exchange() {
    let mut e = engine(config());
    let o = e
        .handle(&packet(mac(1), MessageType::Discover, vec![]), at(0))
        .unwrap();
    let (offer, to) = reply(&o);
    assert_eq!(to, Destination::Broadcast);
    assert!(o.commit.is_none(), "offers are not persisted");
    assert_eq!(offer.yiaddr(), Ipv4Addr::new(10, 0, 0, 100));
    assert_eq!(offer.siaddr(), SERVER);
    assert_eq!(boot_file(offer).as_deref(), Some("default.scr"));
    assert_eq!(offer.fname_str().unwrap().unwrap(), "default.scr");
    assert_eq!(offer.sname_str().unwrap().unwrap(), "10.0.0.1");

    let req = packet(
        mac(1),
        MessageType::Request,
        vec![
            DhcpOption::ServerIdentifier(SERVER),
            DhcpOption::RequestedIpAddress(offer.yiaddr()),
        ],
    );
    let o = e.handle(&req, at(1)).unwrap();
    let (ack, to) = reply(&o);
    assert_eq!(to, Destination::Broadcast);
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(
        o.commit,
        Some(LeaseRecord::Bind(StoredLease {
            key: ClientKey::Mac(MacAddr(mac(1))),
            mac: MacAddr(mac(1)),
            ip: Ipv4Addr::new(10, 0, 0, 100),
            expires: 1_700_000_001 + u64::from(DEFAULT_LEASE_TIME),
        }))
    );
    assert_eq!(o.acked.as_ref().unwrap().ip, Ipv4Addr::new(10, 0, 0, 100));
    // The same client asking again gets the same address.
    assert_eq!(
        dora(&mut e, mac(1), vec![], at(5)),
        Ipv4Addr::new(10, 0, 0, 100)
    );
    assert_eq!(
        dora(&mut e, mac(2), vec![], at(5)),
        Ipv4Addr::new(10, 0, 0, 101)
    );
}

#[test]
fn real_uboot_packets_get_a_lease() {
    let mut c = config();
    c.server_ip = Ipv4Addr::new(10, 0, 2, 2);
    c.router = None;
    c.pool = "10.0.2.15-10.0.2.31".into();
    c.arch_boot_files
        .insert("arm64".into(), "labboot/arm64.scr".into());
    let mut e = engine(c);
    let decode = |b: &[u8]| Message::decode(&mut Decoder::new(b)).unwrap();
    let discover = decode(include_bytes!(
        "../../tests/data/uboot-2023.01-discover.bin"
    ));
    let o = e.handle(&discover, at(0)).unwrap();
    let (offer, to) = reply(&o);
    assert_eq!(
        to,
        Destination::Broadcast,
        "U-Boot has no address and no broadcast flag"
    );
    assert_eq!(offer.yiaddr(), Ipv4Addr::new(10, 0, 2, 15));
    assert_eq!(offer.xid(), discover.xid());
    assert_eq!(
        boot_file(offer).as_deref(),
        Some("labboot/arm64.scr"),
        "arch 0x16 is arm64"
    );
    let request = decode(include_bytes!("../../tests/data/uboot-2023.01-request.bin"));
    let o = e.handle(&request, at(0)).unwrap();
    let (ack, _) = reply(&o);
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(ack.yiaddr(), Ipv4Addr::new(10, 0, 2, 15));
}

#[test]
fn cloned_mac_with_two_identities_gets_two_leases() {
    let mut e = engine(config());
    let a = dora(&mut e, mac(7), vec![vci("board7")], at(0));
    let b = dora(&mut e, mac(7), vec![vci("board8")], at(0));
    assert_ne!(a, b);
    // And a third one with the same MAC and no identity is a third client.
    let c = dora(&mut e, mac(7), vec![], at(0));
    assert!(c != a && c != b);
    let board7 = ClientKey::Id(Identity::Board("board7".into()));
    assert_eq!(e.leases().get(&board7).unwrap().ip, a);
    // Each keeps its address on the next boot.
    assert_eq!(dora(&mut e, mac(7), vec![vci("board8")], at(9)), b);
    assert_eq!(dora(&mut e, mac(7), vec![vci("board7")], at(9)), a);
}

#[test]
fn uuid_identity_follows_the_board_to_another_mac() {
    let mut e = engine(config());
    let mut uuid = vec![0u8];
    uuid.extend(1..=16u8);
    let id = DhcpOption::ClientMachineIdentifier(uuid);
    let a = dora(&mut e, mac(1), vec![id.clone()], at(0));
    let b = dora(&mut e, mac(2), vec![id], at(1));
    assert_eq!(a, b, "keyed by identity, not MAC");
}

#[test]
fn static_bindings_and_boot_files() {
    let mut c = config();
    c.bindings = vec![
        BindingConfig {
            mac: Some("52:54:00:00:00:01".into()),
            id: None,
            ip: Some(Ipv4Addr::new(10, 0, 0, 100)),
            boot_file: None,
        },
        BindingConfig {
            mac: None,
            id: Some("board9".into()),
            ip: Some(Ipv4Addr::new(10, 0, 0, 50)),
            boot_file: Some("b9.scr".into()),
        },
    ];
    let mut e = engine(c);
    // 10.0.0.100 is reserved for mac 1: a stranger skips it.
    assert_eq!(
        dora(&mut e, mac(5), vec![], at(0)),
        Ipv4Addr::new(10, 0, 0, 101)
    );
    assert_eq!(
        dora(&mut e, mac(1), vec![], at(0)),
        Ipv4Addr::new(10, 0, 0, 100)
    );
    let o = e
        .handle(
            &packet(mac(3), MessageType::Discover, vec![vci("board9")]),
            at(0),
        )
        .unwrap();
    let (offer, _) = reply(&o);
    assert_eq!(offer.yiaddr(), Ipv4Addr::new(10, 0, 0, 50));
    assert_eq!(boot_file(offer).as_deref(), Some("b9.scr"));
    // A bound client asking for another address is refused.
    let o = e
        .handle(
            &packet(
                mac(3),
                MessageType::Request,
                vec![
                    vci("board9"),
                    DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 102)),
                ],
            ),
            at(0),
        )
        .unwrap();
    assert_eq!(reply(&o).0.opts().msg_type(), Some(MessageType::Nak));
    // Per-architecture boot file from option 93 (U-Boot arm32 = 0x15).
    let o = e
        .handle(
            &packet(
                mac(6),
                MessageType::Discover,
                vec![DhcpOption::ClientSystemArchitecture(0x15.into())],
            ),
            at(0),
        )
        .unwrap();
    assert_eq!(boot_file(reply(&o).0).as_deref(), Some("arm32.scr"));
}

#[test]
fn request_for_another_server_releases_the_offer() {
    let mut e = engine(config());
    let o = e
        .handle(&packet(mac(1), MessageType::Discover, vec![]), at(0))
        .unwrap();
    let ip = reply(&o).0.yiaddr();
    let other = Ipv4Addr::new(10, 0, 0, 2);
    let req = packet(
        mac(1),
        MessageType::Request,
        vec![
            DhcpOption::ServerIdentifier(other),
            DhcpOption::RequestedIpAddress(ip),
        ],
    );
    assert_eq!(
        e.handle(&req, at(0)).unwrap_err(),
        Ignored::OtherServer(other)
    );
    assert!(e.leases().is_empty());
}

#[test]
fn init_reboot_renew_and_nak() {
    let mut e = engine(config());
    // INIT-REBOOT for a free pool address we have no record of (e.g. lease file lost): ACK.
    let ask = |ip| {
        packet(
            mac(1),
            MessageType::Request,
            vec![DhcpOption::RequestedIpAddress(ip)],
        )
    };
    let o = e.handle(&ask(Ipv4Addr::new(10, 0, 0, 102)), at(0)).unwrap();
    assert_eq!(reply(&o).0.opts().msg_type(), Some(MessageType::Ack));
    // Asking for another address now: NAK, broadcast.
    let o = e.handle(&ask(Ipv4Addr::new(10, 0, 0, 103)), at(0)).unwrap();
    let (nak, to) = reply(&o);
    assert_eq!(nak.opts().msg_type(), Some(MessageType::Nak));
    assert_eq!(to, Destination::Broadcast);
    assert!(o.commit.is_none());
    // Another network: NAK.
    let o = e
        .handle(&ask(Ipv4Addr::new(192, 168, 1, 5)), at(0))
        .unwrap();
    assert_eq!(reply(&o).0.opts().msg_type(), Some(MessageType::Nak));
    // Someone else's address: NAK. An address outside the pool we know nothing of: silence.
    let o = e
        .handle(
            &packet(
                mac(2),
                MessageType::Request,
                vec![DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 102))],
            ),
            at(0),
        )
        .unwrap();
    assert_eq!(reply(&o).0.opts().msg_type(), Some(MessageType::Nak));
    let stranger = packet(
        mac(3),
        MessageType::Request,
        vec![DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 20))],
    );
    assert!(matches!(
        e.handle(&stranger, at(0)),
        Err(Ignored::Unknown(_))
    ));
    // RENEWING: ciaddr set, unicast answer, later expiry persisted.
    let mut renew = packet(mac(1), MessageType::Request, vec![]);
    renew.set_ciaddr(Ipv4Addr::new(10, 0, 0, 102));
    let o = e.handle(&renew, at(1800)).unwrap();
    assert_eq!(
        reply(&o).1,
        Destination::Unicast(Ipv4Addr::new(10, 0, 0, 102))
    );
    match o.commit {
        Some(LeaseRecord::Bind(l)) => {
            assert_eq!(l.expires, 1_700_001_800 + u64::from(DEFAULT_LEASE_TIME))
        }
        other => panic!("expected a bind record, got {other:?}"),
    }
    // No address at all: ignored.
    let bare = packet(mac(1), MessageType::Request, vec![]);
    assert_eq!(e.handle(&bare, at(0)).unwrap_err(), Ignored::NoAddress);
}

#[test]
fn release_decline_inform() {
    let mut e = engine(config());
    let ip = dora(&mut e, mac(1), vec![], at(0));
    let mut rel = packet(
        mac(1),
        MessageType::Release,
        vec![DhcpOption::ServerIdentifier(SERVER)],
    );
    rel.set_ciaddr(ip);
    let o = e.handle(&rel, at(1)).unwrap();
    assert!(o.reply.is_none());
    assert_eq!(
        o.commit,
        Some(LeaseRecord::Free {
            key: ClientKey::Mac(MacAddr(mac(1))),
            ip
        })
    );
    assert!(e.leases().is_empty());
    assert!(matches!(e.handle(&rel, at(1)), Err(Ignored::NotHeld(_))));

    let ip = dora(&mut e, mac(2), vec![], at(2));
    let dec = packet(
        mac(2),
        MessageType::Decline,
        vec![DhcpOption::RequestedIpAddress(ip)],
    );
    let o = e.handle(&dec, at(3)).unwrap();
    assert!(matches!(o.commit, Some(LeaseRecord::Free { .. })));
    // The declined address rests: the client gets another one.
    let next = dora(&mut e, mac(2), vec![], at(4));
    assert_ne!(next, ip);

    let mut inform = packet(mac(9), MessageType::Inform, vec![]);
    inform.set_ciaddr(Ipv4Addr::new(10, 0, 0, 7));
    let o = e.handle(&inform, at(5)).unwrap();
    let (ack, to) = reply(&o);
    assert_eq!(to, Destination::Unicast(Ipv4Addr::new(10, 0, 0, 7)));
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(ack.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(ack.opts().get(OptionCode::AddressLeaseTime).is_none());
    assert_eq!(boot_file(ack).as_deref(), Some("default.scr"));
    assert!(o.commit.is_none() && o.acked.is_none());
}

#[test]
fn pool_exhaustion_and_reuse_of_expired_leases() {
    let mut e = engine(config());
    for n in 1..=4 {
        // mac(1) (10.0.0.100) binds first, so its lease is the first to expire.
        dora(&mut e, mac(n), vec![], at(u64::from(n)));
    }
    let d = packet(mac(5), MessageType::Discover, vec![]);
    assert_eq!(e.handle(&d, at(10)).unwrap_err(), Ignored::PoolExhausted);
    // Offers that were never requested expire after the hold time.
    let mut e2 = engine(config());
    for n in 1..=4 {
        e2.handle(&packet(mac(n), MessageType::Discover, vec![]), at(0))
            .unwrap();
    }
    assert!(e2.handle(&d, at(1)).is_err());
    assert!(e2.handle(&d, at(OFFER_HOLD_SECS + 1)).is_ok());
    // Bound leases expire after the lease time.
    let later = at(u64::from(DEFAULT_LEASE_TIME) + 1);
    assert_eq!(
        dora(&mut e, mac(5), vec![], later),
        Ipv4Addr::new(10, 0, 0, 100)
    );
    assert!(e.leases().get(&ClientKey::Mac(MacAddr(mac(1)))).is_none());
    assert_eq!(e.leases().len(), 4);
}

/// DECLINEs `ip`, held by `mac`.
fn decline(e: &mut Engine, mac: [u8; 6], ip: Ipv4Addr, now: SystemTime) {
    let dec = packet(
        mac,
        MessageType::Decline,
        vec![DhcpOption::RequestedIpAddress(ip)],
    );
    e.handle(&dec, now).expect("DECLINE of a held address");
}

/// The offered address, or why there is none.
fn offer(e: &mut Engine, mac: [u8; 6], now: SystemTime) -> Result<Ipv4Addr, Ignored> {
    let o = e.handle(&packet(mac, MessageType::Discover, vec![]), now)?;
    Ok(reply(&o).0.yiaddr())
}

#[test]
fn a_full_pool_takes_back_expired_offers_expired_leases_and_rested_declines() {
    let lt = u64::from(DEFAULT_LEASE_TIME);
    let mut e = engine(config());
    // 10.0.0.100: bound to mac 1 until lt.
    assert_eq!(dora(&mut e, mac(1), vec![], at(0)), ip(100));
    // 10.0.0.101: offered to mac 2, never requested.
    assert_eq!(offer(&mut e, mac(2), at(0)), Ok(ip(101)));
    // 10.0.0.102: declined by mac 3 at 1, so it rests until 1 + lt.
    assert_eq!(dora(&mut e, mac(3), vec![], at(1)), ip(102));
    decline(&mut e, mac(3), ip(102), at(1));
    // 10.0.0.103: bound to mac 4 until 2 + lt.
    assert_eq!(dora(&mut e, mac(4), vec![], at(2)), ip(103));
    assert_eq!(e.leases().free_len(), 0);
    assert_eq!(e.leases().resting_len(), 1);

    // Nothing has expired yet: full.
    assert_eq!(offer(&mut e, mac(5), at(10)), Err(Ignored::PoolExhausted));
    // The unrequested offer is taken back after the hold time.
    let t = OFFER_HOLD_SECS + 1;
    assert_eq!(dora(&mut e, mac(5), vec![], at(t)), ip(101));
    assert!(e.leases().get(&ClientKey::Mac(MacAddr(mac(2)))).is_none());
    assert_eq!(offer(&mut e, mac(6), at(t)), Err(Ignored::PoolExhausted));
    // The declined address still rests at lt, but mac 1's lease has ended.
    assert_eq!(dora(&mut e, mac(6), vec![], at(lt)), ip(100));
    assert!(e.leases().get(&ClientKey::Mac(MacAddr(mac(1)))).is_none());
    assert_eq!(offer(&mut e, mac(7), at(lt)), Err(Ignored::PoolExhausted));
    // Its rest over, the declined address goes to the next client.
    assert_eq!(dora(&mut e, mac(7), vec![], at(lt + 1)), ip(102));
    assert_eq!(e.leases().resting_len(), 0);
    // Every address is held by a live lease now: full again.
    assert_eq!(
        offer(&mut e, mac(8), at(lt + 1)),
        Err(Ignored::PoolExhausted)
    );
    assert_eq!(e.leases().len(), 4);
}

#[test]
fn refused_discovers_are_warned_about_once_a_minute_with_their_count() {
    let mut e = engine(config());
    for n in 1..=4 {
        dora(&mut e, mac(n), vec![], at(0));
    }
    let (_, lines) = crate::testlog::capture(|| {
        // A flood of DISCOVERs from 100 MACs within a second, then one a minute later.
        for n in 0..100u8 {
            assert_eq!(
                offer(&mut e, mac(100 + n), at(1)),
                Err(Ignored::PoolExhausted)
            );
        }
        assert_eq!(offer(&mut e, mac(99), at(60)), Err(Ignored::PoolExhausted));
        assert_eq!(offer(&mut e, mac(98), at(61)), Err(Ignored::PoolExhausted));
    });
    let warnings: Vec<&String> = lines.iter().filter(|l| l.contains("exhausted")).collect();
    assert_eq!(warnings.len(), 2, "{lines:#?}");
    let first = warnings[0];
    assert!(first.starts_with("WARN"), "{first}");
    assert!(
        first.contains(
            "dhcp: pool 10.0.0.100-10.0.0.103 is exhausted (4 addresses: 4 leased, 0 offered, \
             0 declined and resting); DISCOVERs refused since the last warning: 1, the latest \
             from 52:54:00:00:00:64"
        ),
        "{first}"
    );
    // The 99 DISCOVERs of the flood after the first, the one at 60 s, and this one.
    assert!(
        warnings[1].contains(
            "DISCOVERs refused since the last warning: 101, the latest from 52:54:00:00:00:62"
        ),
        "{}",
        warnings[1]
    );
}

#[test]
fn restored_leases_are_honoured() {
    let mut e = engine(config());
    let a = dora(&mut e, mac(1), vec![vci("b1")], at(0));
    let b = dora(&mut e, mac(2), vec![], at(0));
    let stored: Vec<StoredLease> = e
        .leases()
        .iter()
        .map(|l| StoredLease {
            key: l.key.clone(),
            mac: l.mac,
            ip: l.ip,
            expires: l.expires,
        })
        .collect();
    let mut fresh = engine(config());
    fresh.restore(stored);
    // Newcomer first: it must not get a restored address.
    let c = dora(&mut fresh, mac(3), vec![], at(1));
    assert!(c != a && c != b);
    assert_eq!(dora(&mut fresh, mac(2), vec![], at(1)), b);
    assert_eq!(dora(&mut fresh, mac(1), vec![vci("b1")], at(1)), a);
}

#[test]
fn relayed_requests() {
    let mut e = engine(config());
    let mut d = packet(mac(1), MessageType::Discover, vec![]);
    d.set_giaddr(Ipv4Addr::new(10, 0, 0, 2));
    d.set_flags(Flags::default().set_broadcast());
    let o = e.handle(&d, at(0)).unwrap();
    assert_eq!(reply(&o).1, Destination::Relay(Ipv4Addr::new(10, 0, 0, 2)));
    assert!(reply(&o).0.flags().broadcast(), "flags are echoed");
    d.set_giaddr(Ipv4Addr::new(172, 16, 0, 1));
    assert_eq!(
        e.handle(&d, at(0)).unwrap_err(),
        Ignored::OtherSubnet(Ipv4Addr::new(172, 16, 0, 1))
    );
}

#[test]
fn server_messages_are_ignored() {
    let mut e = engine(config());
    let offer = packet(mac(1), MessageType::Offer, vec![]);
    assert_eq!(
        e.handle(&offer, at(0)).unwrap_err(),
        Ignored::Unhandled(MessageType::Offer)
    );
}

fn ping_checked() -> Engine {
    let mut c = config();
    c.ping_check_ms = 300;
    c.bindings.push(BindingConfig {
        mac: None,
        id: Some("fixed".into()),
        ip: Some(Ipv4Addr::new(10, 0, 0, 50)),
        boot_file: None,
    });
    engine(c)
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, last)
}

#[test]
fn without_ping_check_offers_go_out_at_once() {
    let mut e = engine(config());
    let o = e
        .handle(&packet(mac(1), MessageType::Discover, vec![]), at(0))
        .unwrap();
    assert_eq!(o.probe, None);
    assert_eq!(reply(&o).0.yiaddr(), ip(100));
    assert_eq!(e.probing().count(), 0);
}

#[test]
fn ping_check_probes_new_addresses_and_quarantines_answering_ones() {
    let mut e = ping_checked();
    let discover = packet(mac(1), MessageType::Discover, vec![]);
    // A new address: no reply yet, probe it first.
    let o = e.handle(&discover, at(0)).unwrap();
    assert!(o.reply.is_none() && o.commit.is_none());
    assert_eq!(o.probe, Some(ip(100)));
    // The client's retransmission while the probe runs gets nothing and starts no second probe.
    assert_eq!(
        e.handle(&discover, at(1)).unwrap_err(),
        Ignored::Probing(ip(100))
    );
    // Another client meanwhile is not given the address under test.
    let other = e
        .handle(&packet(mac(2), MessageType::Discover, vec![]), at(1))
        .unwrap();
    assert_eq!(other.probe, Some(ip(101)));
    // Something answered at .100: quarantined; the same DISCOVER again probes the next free one.
    assert!(e.probed(ip(100), true, at(1)));
    assert_eq!(e.probing().collect::<Vec<_>>(), vec![ip(101)]);
    let o = e.handle(&discover, at(1)).unwrap();
    assert_eq!(o.probe, Some(ip(102)));
    // Silence at .102: now the DISCOVER is offered .102, without another probe.
    assert!(!e.probed(ip(102), false, at(2)));
    let o = e.handle(&discover, at(2)).unwrap();
    assert_eq!(o.probe, None);
    let (offer, _) = reply(&o);
    assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
    assert_eq!(offer.yiaddr(), ip(102));
    let req = packet(
        mac(1),
        MessageType::Request,
        vec![
            DhcpOption::ServerIdentifier(SERVER),
            DhcpOption::RequestedIpAddress(ip(102)),
        ],
    );
    assert_eq!(reply(&e.handle(&req, at(2)).unwrap()).0.yiaddr(), ip(102));
    // The client holds .102 now: its next boot is offered it at once.
    let o = e.handle(&discover, at(100)).unwrap();
    assert_eq!((o.probe, reply(&o).0.yiaddr()), (None, ip(102)));
    // The quarantined address is not handed out again during the quarantine...
    e.probed(ip(101), false, at(3));
    assert_eq!(dora(&mut e, mac(2), vec![], at(3)), ip(101));
    let o = e
        .handle(&packet(mac(3), MessageType::Discover, vec![]), at(3))
        .unwrap();
    assert_eq!(o.probe, Some(ip(103)));
    e.probed(ip(103), false, at(3));
    assert_eq!(dora(&mut e, mac(3), vec![], at(3)), ip(103));
    assert_eq!(
        e.handle(&packet(mac(4), MessageType::Discover, vec![]), at(4))
            .unwrap_err(),
        Ignored::PoolExhausted
    );
    // ...but after one lease time it is probed again before anyone gets it.
    let later = at(1 + u64::from(DEFAULT_LEASE_TIME));
    let o = e
        .handle(&packet(mac(4), MessageType::Discover, vec![]), later)
        .unwrap();
    assert_eq!(o.probe, Some(ip(100)));
}

#[test]
fn ping_check_skips_fixed_addresses_and_ignores_stale_results() {
    let mut e = ping_checked();
    // A fixed binding cannot move elsewhere, so it is offered without a probe.
    let o = e
        .handle(
            &packet(mac(1), MessageType::Discover, vec![vci("fixed")]),
            at(0),
        )
        .unwrap();
    assert_eq!((o.probe, reply(&o).0.yiaddr()), (None, ip(50)));
    // A result for an address nobody asked about changes nothing.
    assert!(!e.probed(ip(100), true, at(0)));
    assert!(e.leases().is_free(ip(100)));
    // A probe whose result never comes is started afresh after the offer hold time.
    let discover = packet(mac(2), MessageType::Discover, vec![]);
    assert_eq!(e.handle(&discover, at(0)).unwrap().probe, Some(ip(100)));
    assert!(e.handle(&discover, at(1)).is_err());
    assert_eq!(
        e.handle(&discover, at(OFFER_HOLD_SECS + 1)).unwrap().probe,
        Some(ip(100))
    );
    // An answer that arrives after the client was bound there by an INIT-REBOOT REQUEST does
    // not take the bound lease away.
    let reboot = packet(
        mac(2),
        MessageType::Request,
        vec![DhcpOption::RequestedIpAddress(ip(100))],
    );
    assert_eq!(
        reply(&e.handle(&reboot, at(OFFER_HOLD_SECS + 2)).unwrap())
            .0
            .opts()
            .msg_type(),
        Some(MessageType::Ack)
    );
    assert!(!e.probed(ip(100), true, at(OFFER_HOLD_SECS + 2)));
    assert_eq!(
        e.leases().holder(ip(100)).map(|l| l.key.clone()),
        Some(ClientKey::Mac(MacAddr(mac(2))))
    );
}
