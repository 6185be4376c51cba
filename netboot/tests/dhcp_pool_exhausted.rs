//! A DISCOVER the pool has no address for gets no reply, and is counted in
//! `METRICS.dhcp.pool_exhausted` (the engine's throttled warning is tested in its unit tests).
//!
//! The server runs in-process on 127.0.0.1 with a one-address pool; the client poses as a relay
//! agent (giaddr 127.0.0.1), so replies come back by unicast to its own port.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode};
use dhcproto::{Decodable, Decoder, Encodable};
use netboot::dhcp::{DhcpConfig, DhcpSettings, Engine, Server};
use netboot::metrics::METRICS;

const SERVER_IP: Ipv4Addr = Ipv4Addr::LOCALHOST;

fn discover(mac: u8) -> Vec<u8> {
    let mut m = Message::default();
    m.set_opcode(Opcode::BootRequest)
        .set_chaddr(&[0x52, 0x54, 0, 0, 0, mac])
        .set_xid(u32::from(mac))
        .set_giaddr(SERVER_IP);
    m.opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Discover));
    m.to_vec().unwrap()
}

fn reply(client: &UdpSocket, server: SocketAddr, packet: &[u8]) -> Option<Message> {
    client.send_to(packet, server).unwrap();
    let mut buf = [0u8; 1500];
    match client.recv_from(&mut buf) {
        Ok((n, _)) => Some(Message::decode(&mut Decoder::new(&buf[..n])).unwrap()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => panic!("recv: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovers_refused_for_a_full_pool_are_counted() {
    let yaml = format!(
        "dhcp:\n  interface: lo\n  server_ip: {SERVER_IP}\n  pool: 127.0.0.100-127.0.0.100\n"
    );
    let settings = DhcpSettings::try_from(DhcpConfig::from_yaml_section(&yaml).unwrap()).unwrap();
    let socket = tokio::net::UdpSocket::bind((SERVER_IP, 0)).await.unwrap();
    let server_addr = socket.local_addr().unwrap();
    let client = UdpSocket::bind((SERVER_IP, 0)).unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let port = client.local_addr().unwrap().port();
    let server = Server::new(socket, Engine::new(settings), None).with_peer_ports(port, port);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));

    let before = METRICS.dhcp.pool_exhausted.get();
    let (offer, refused) = tokio::task::spawn_blocking(move || {
        let offer = reply(&client, server_addr, &discover(1)).expect("an OFFER");
        let refused: Vec<Option<Message>> = (2..=4)
            .map(|mac| reply(&client, server_addr, &discover(mac)))
            .collect();
        (offer, refused)
    })
    .await
    .unwrap();
    assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
    assert_eq!(offer.yiaddr(), Ipv4Addr::new(127, 0, 0, 100));
    assert!(
        refused.iter().all(Option::is_none),
        "no reply for a full pool: {refused:?}"
    );
    // Counted once each (the server counts after deciding; give it a moment).
    let deadline = Instant::now() + Duration::from_secs(5);
    while METRICS.dhcp.pool_exhausted.get() < before + 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(METRICS.dhcp.pool_exhausted.get() - before, 3);

    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
}
