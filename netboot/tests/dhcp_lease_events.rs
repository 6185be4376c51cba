//! The DHCP server publishes lease events once the lease log holds them.
//!
//! The server runs in-process on 127.0.0.1 with a lease log (no privilege needed): the client
//! poses as a relay agent (giaddr 127.0.0.1), so replies come back by unicast to its own port
//! ([`Server::with_peer_ports`]) instead of a broadcast on port 68.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, SystemTime};

use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use netboot::dhcp::{
    engine_with_store, events, DhcpConfig, DhcpSettings, Identity, LeaseEvent, LeaseEventKind,
    MacAddr, Server,
};
use tokio::sync::broadcast;

const SERVER_IP: Ipv4Addr = Ipv4Addr::LOCALHOST;
const MAC: [u8; 6] = [0x52, 0x54, 0, 0xab, 0xcd, 0x01];

fn settings(lease_file: &std::path::Path) -> DhcpSettings {
    let yaml = format!(
        "dhcp:\n  interface: lo\n  server_ip: {SERVER_IP}\n  pool: 127.0.0.100-127.0.0.120\n  \
         lease_time: 600\n  lease_file: {}\n",
        lease_file.display()
    );
    DhcpSettings::try_from(DhcpConfig::from_yaml_section(&yaml).unwrap()).unwrap()
}

/// A relayed request from board `b9`.
fn request(kind: MessageType, xid: u32, opts: Vec<DhcpOption>) -> Vec<u8> {
    let mut m = Message::default();
    m.set_opcode(Opcode::BootRequest)
        .set_chaddr(&MAC)
        .set_xid(xid)
        .set_giaddr(SERVER_IP);
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    m.opts_mut()
        .insert(DhcpOption::ClassIdentifier(b"labboot:b9".to_vec()));
    for o in opts {
        m.opts_mut().insert(o);
    }
    m.to_vec().unwrap()
}

fn exchange(client: &UdpSocket, server: SocketAddr, packet: &[u8]) -> Message {
    client.send_to(packet, server).unwrap();
    let mut buf = [0u8; 1500];
    let (n, _) = client.recv_from(&mut buf).expect("a reply");
    Message::decode(&mut Decoder::new(&buf[..n])).unwrap()
}

async fn next_event(rx: &mut broadcast::Receiver<LeaseEvent>) -> LeaseEvent {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("an event within 10 s")
        .expect("the channel is open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_and_releases_are_published_after_the_lease_log_holds_them() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("leases");
    let (engine, store) = engine_with_store(settings(&log), SystemTime::now()).unwrap();
    let socket = tokio::net::UdpSocket::bind((SERVER_IP, 0)).await.unwrap();
    let server_addr = socket.local_addr().unwrap();
    let client = UdpSocket::bind((SERVER_IP, 0)).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let port = client.local_addr().unwrap().port();

    // One subscriber through the server, one through a channel made beforehand.
    let (sender, mut early) = events::channel();
    let server = Server::new(socket, engine, store)
        .with_peer_ports(port, port)
        .with_lease_events(sender);
    let mut late = server.lease_events();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));

    let client = std::sync::Arc::new(client);
    let c = client.clone();
    let ack = tokio::task::spawn_blocking(move || {
        let offer = exchange(&c, server_addr, &request(MessageType::Discover, 1, vec![]));
        assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
        let ip = offer.yiaddr();
        exchange(
            &c,
            server_addr,
            &request(
                MessageType::Request,
                2,
                vec![
                    DhcpOption::ServerIdentifier(SERVER_IP),
                    DhcpOption::RequestedIpAddress(ip),
                ],
            ),
        )
    })
    .await
    .unwrap();
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    let ip = ack.yiaddr();

    let ev = next_event(&mut early).await;
    assert_eq!(ev.kind, LeaseEventKind::Acked);
    assert_eq!(ev.identity, Some(Identity::Board("b9".into())));
    assert_eq!(ev.board_id(), Some("b9"));
    assert_eq!(ev.mac, MacAddr(MAC));
    assert_eq!(ev.ip, ip);
    assert_eq!(ev.lease_time, 600);
    // Durable before it was published.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(&format!("bind {ip} board:b9 ")),
        "the lease log holds the lease:\n{text}"
    );
    assert_eq!(next_event(&mut late).await, ev);

    // RELEASE has no reply; its event comes once the `free` record is durable.
    let mut release = Message::decode(&mut Decoder::new(&request(
        MessageType::Release,
        3,
        vec![DhcpOption::ServerIdentifier(SERVER_IP)],
    )))
    .unwrap();
    release.set_ciaddr(ip);
    let mut bytes = Vec::new();
    release.encode(&mut Encoder::new(&mut bytes)).unwrap();
    client.send_to(&bytes, server_addr).unwrap();
    let ev = next_event(&mut early).await;
    assert_eq!(
        (ev.kind, ev.ip, ev.board_id()),
        (LeaseEventKind::Released, ip, Some("b9"))
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(&format!("free {ip} board:b9")),
        "the lease log holds the release:\n{text}"
    );
    assert_eq!(next_event(&mut late).await, ev);

    stop.send(()).unwrap();
    let engine = running.await.unwrap().unwrap();
    assert!(engine.leases().is_empty());
}
