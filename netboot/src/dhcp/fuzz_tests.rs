//! Fuzz-ish robustness: random bytes, every truncation and random mutations of real U-Boot
//! packets go through decoding and the engine exactly as the socket loop does; none may panic.

use std::net::Ipv4Addr;
use std::time::{Duration, UNIX_EPOCH};

use dhcproto::v4::Message;
use dhcproto::{Decodable, Decoder};

use super::config::{DhcpConfig, DhcpSettings};
use super::engine::Engine;
use super::reply::encode_into;
use super::wire::check;

const FIXTURES: [&[u8]; 6] = [
    include_bytes!("../../tests/data/uboot-2023.01-discover.bin"),
    include_bytes!("../../tests/data/uboot-2023.01-request.bin"),
    include_bytes!("../../tests/data/uboot-2023.01-discover-pxe.bin"),
    include_bytes!("../../tests/data/uboot-2023.01-request-pxe.bin"),
    include_bytes!("../../tests/data/uboot-2023.01-discover-uuid.bin"),
    include_bytes!("../../tests/data/uboot-2023.01-request-uuid.bin"),
];

/// xorshift64*: deterministic, so a failure is reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn engine() -> Engine {
    Engine::new(
        DhcpSettings::try_from(DhcpConfig {
            interface: "lab0".into(),
            server_ip: Ipv4Addr::new(10, 0, 2, 2),
            pool: "10.0.2.15-10.0.2.20".into(),
            netmask: None,
            router: None,
            dns: vec![],
            lease_time: 3600,
            lease_file: None,
            boot_file: Some("boot.scr".into()),
            arch_boot_files: Default::default(),
            next_server: None,
            tftp_server_name: None,
            bindings: vec![],
            ping_check_ms: 0,
        })
        .unwrap(),
    )
}

/// What the socket loop does with one datagram; returns whether it decoded.
fn feed(e: &mut Engine, bytes: &[u8], t: u64) -> bool {
    // Plain dhcproto after our check (no catch_unwind): proves the check alone keeps the
    // parser from panicking.
    if check(bytes).is_err() {
        return false;
    }
    let Ok(msg) = Message::decode(&mut Decoder::new(bytes)) else {
        return false;
    };
    if let Ok(outcome) = e.handle(&msg, UNIX_EPOCH + Duration::from_secs(t)) {
        if let Some((reply, _)) = outcome.reply {
            let mut out = Vec::new();
            encode_into(&reply, &mut out).expect("our replies always encode");
        }
    }
    true
}

#[test]
fn truncations_of_real_packets() {
    let mut e = engine();
    for (i, pkt) in FIXTURES.iter().enumerate() {
        let mut decoded = 0;
        for len in 0..=pkt.len() {
            decoded += usize::from(feed(&mut e, &pkt[..len], 1000 + i as u64));
        }
        // The fixed header is 236 bytes + 4 magic: shorter never decodes.
        assert!(decoded <= pkt.len() + 1 - 240, "fixture {i}");
        assert!(feed(&mut e, pkt, 1000), "fixture {i} decodes whole");
    }
}

#[test]
fn random_bytes() {
    let mut e = engine();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for round in 0..20_000u64 {
        let len = rng.below(700);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        feed(&mut e, &bytes, round);
    }
}

#[test]
fn mutations_of_real_packets() {
    let mut e = engine();
    let mut rng = Rng(0x0dd_ba11_cafe_f00d);
    for round in 0..30_000u64 {
        let mut pkt = FIXTURES[rng.below(FIXTURES.len())].to_vec();
        for _ in 0..=rng.below(8) {
            let i = rng.below(pkt.len());
            match rng.below(3) {
                0 => pkt[i] = rng.next() as u8,
                1 => pkt.truncate(i.max(1)),
                // Option area: plant a length byte larger than what follows.
                _ => {
                    if pkt.len() > 242 {
                        let j = 240 + rng.below(pkt.len() - 240);
                        pkt[j] = 0xff - (rng.below(4) as u8);
                    }
                }
            }
            if pkt.is_empty() {
                break;
            }
        }
        feed(&mut e, &pkt, round / 10);
    }
    // After all that garbage the engine still serves a real client.
    assert!(feed(&mut e, FIXTURES[0], 5000));
}
