//! The lease events the engine produces: what an ACK, RELEASE, DECLINE and expiry tell.

use dhcproto::v4::{DhcpOption, MessageType};

use super::classify::{ClientKey, Identity, MacAddr};
use super::config::DEFAULT_LEASE_TIME;
use super::engine::unix_secs;
use super::engine_tests::{at, config, dora, engine, mac, packet, vci, SERVER};
use super::events::{LeaseEvent, LeaseEventKind};

#[test]
fn an_ack_carries_identity_mac_address_and_lease_time() {
    let mut e = engine(config());
    // The DISCOVER's OFFER is no lease yet: no event.
    let o = e
        .handle(
            &packet(mac(1), MessageType::Discover, vec![vci("b7")]),
            at(0),
        )
        .unwrap();
    assert!(o.event.is_none());
    let offered = o.reply.unwrap().0.yiaddr();
    let o = e
        .handle(
            &packet(
                mac(1),
                MessageType::Request,
                vec![
                    vci("b7"),
                    DhcpOption::ServerIdentifier(SERVER),
                    DhcpOption::RequestedIpAddress(offered),
                ],
            ),
            at(10),
        )
        .unwrap();
    let ev: LeaseEvent = o.event.expect("an ACK comes with its event");
    assert!(o.commit.is_some(), "published only once this is durable");
    assert_eq!(ev.kind, LeaseEventKind::Acked);
    assert_eq!(ev.identity, Some(Identity::Board("b7".into())));
    assert_eq!(ev.board_id(), Some("b7"));
    assert_eq!(ev.key(), ClientKey::Id(Identity::Board("b7".into())));
    assert_eq!(ev.mac, MacAddr(mac(1)));
    assert_eq!(ev.ip, offered);
    assert_eq!(ev.lease_time, DEFAULT_LEASE_TIME);
    assert_eq!(
        ev.expires,
        unix_secs(at(10)) + u64::from(DEFAULT_LEASE_TIME)
    );

    // A client without identity is known by its MAC.
    let ip = dora(&mut e, mac(2), vec![], at(20));
    let mut renew = packet(mac(2), MessageType::Request, vec![]);
    renew.set_ciaddr(ip);
    let ev = e.handle(&renew, at(30)).unwrap().event.unwrap();
    assert_eq!(
        (ev.kind, ev.identity.clone(), ev.ip),
        (LeaseEventKind::Acked, None, ip)
    );
    assert_eq!(ev.board_id(), None);
    assert_eq!(ev.key(), ClientKey::Mac(MacAddr(mac(2))));
}

#[test]
fn release_and_decline_end_a_lease() {
    let mut e = engine(config());
    let ip = dora(&mut e, mac(1), vec![vci("b1")], at(0));
    let mut rel = packet(
        mac(1),
        MessageType::Release,
        vec![vci("b1"), DhcpOption::ServerIdentifier(SERVER)],
    );
    rel.set_ciaddr(ip);
    let ev = e.handle(&rel, at(5)).unwrap().event.unwrap();
    assert_eq!(ev.kind, LeaseEventKind::Released);
    assert_eq!((ev.board_id(), ev.ip), (Some("b1"), ip));
    assert_eq!((ev.lease_time, ev.expires), (0, unix_secs(at(5))));

    let ip = dora(&mut e, mac(2), vec![], at(6));
    let dec = packet(
        mac(2),
        MessageType::Decline,
        vec![DhcpOption::RequestedIpAddress(ip)],
    );
    let ev = e.handle(&dec, at(7)).unwrap().event.unwrap();
    assert_eq!(
        (ev.kind, ev.ip, ev.mac),
        (LeaseEventKind::Declined, ip, MacAddr(mac(2)))
    );
    // Ignored requests change nothing and tell nothing.
    assert!(e.handle(&dec, at(8)).is_err());
}

#[test]
fn expiry_is_reported_once_and_renewals_push_it_back() {
    let mut c = config();
    c.lease_time = 100;
    let mut e = engine(c);
    let a = dora(&mut e, mac(1), vec![vci("a")], at(0));
    let b = dora(&mut e, mac(2), vec![vci("b")], at(10));
    assert!(e.expired(at(50)).is_empty());
    // `b` renews before its end.
    let mut renew = packet(mac(2), MessageType::Request, vec![vci("b")]);
    renew.set_ciaddr(b);
    e.handle(&renew, at(90)).unwrap();
    let ev = e.expired(at(120));
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].kind, LeaseEventKind::Expired);
    assert_eq!((ev[0].board_id(), ev[0].ip), (Some("a"), a));
    assert_eq!(ev[0].expires, unix_secs(at(100)));
    // Reported once, although the lease stays in the table.
    assert!(e.expired(at(130)).is_empty());
    assert!(e.leases().iter().any(|l| l.ip == a));
    let ev = e.expired(at(200));
    assert_eq!(ev.len(), 1);
    assert_eq!((ev[0].board_id(), ev[0].ip), (Some("b"), b));
    // A released lease is gone and never expires.
    let c2 = dora(&mut e, mac(3), vec![], at(300));
    let mut rel = packet(mac(3), MessageType::Release, vec![]);
    rel.set_ciaddr(c2);
    e.handle(&rel, at(301)).unwrap();
    assert!(e.expired(at(1000)).is_empty());
}

#[test]
fn the_first_sweep_reports_leases_that_ended_before_it() {
    let mut c = config();
    c.lease_time = 100;
    let mut e = engine(c);
    dora(&mut e, mac(1), vec![], at(0));
    let ev = e.expired(at(500));
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].identity, None);
    assert_eq!(ev[0].mac, MacAddr(mac(1)));
}
