//! DHCP: datagrams through netboot's framing check, dhcproto's decoder and the engine, as the
//! server's socket loop handles them (`dhcp::server::Server::on_packet` → `decide`), with the
//! replies encoded as they would be sent.
//!
//! Input: frames (see `common`), one datagram each, fed to one fresh engine in order. The tag's
//! low 7 bits are minutes passing before the datagram (so leases expire and offers go stale), its
//! top bit whether a ping-check probe the engine asks for is answered (then, as the server does,
//! the same request is handled again).
//!
//! dhcproto is called *without* the server's `catch_unwind` guard: `wire::check` alone must keep
//! it from panicking (see `netboot/src/dhcp/wire.rs`).

#![no_main]

mod common;

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dhcproto::v4::Message;
use dhcproto::{Decodable, Decoder};
use libfuzzer_sys::fuzz_target;
use netboot::dhcp::reply::encode_into;
use netboot::dhcp::{wire, DhcpConfig, DhcpSettings, Engine};

/// A small pool (exhaustion is reachable), bindings by MAC and by identity, per-arch boot files
/// and ping-check on, so every branch of the engine can be reached.
const CONFIG: &str = "
dhcp:
  interface: lab0
  server_ip: 10.0.2.2
  pool: 10.0.2.15-10.0.2.18
  router: 10.0.2.1
  dns: [10.0.2.3]
  lease_time: 600
  boot_file: boot.scr
  arch_boot_files: {arm64: grubaa64.efi, x86-bios: pxelinux.0}
  ping_check_ms: 300
  bindings:
    - {mac: '52:52:52:52:52:52', ip: 10.0.2.30}
    - {id: board-1, ip: 10.0.2.31, boot_file: board-1.scr}
    - {id: 'uuid:00112233-4455-6677-8899-aabbccddeeff', ip: 10.0.2.32}
";

fn settings() -> DhcpSettings {
    static SETTINGS: OnceLock<DhcpSettings> = OnceLock::new();
    SETTINGS
        .get_or_init(|| {
            let config = DhcpConfig::from_yaml_section(CONFIG).expect("fuzz config parses");
            DhcpSettings::try_from(config).expect("fuzz config is valid")
        })
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let mut engine = Engine::new(settings());
    let mut now: SystemTime = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut out = Vec::with_capacity(576);
    for frame in common::frames(data, 64) {
        now += Duration::from_secs(60 * u64::from(frame.tag & 0x7f));
        let _ = engine.expired(now);
        let bytes = frame.bytes;
        if wire::check(bytes).is_err() {
            // The server drops it; `decode` must agree.
            assert!(wire::decode(bytes).is_err());
            continue;
        }
        let Ok(msg) = Message::decode(&mut Decoder::new(bytes)) else {
            continue;
        };
        // As the server does: a probe's result comes back, then the same request again.
        for _ in 0..2 {
            let Ok(outcome) = engine.handle(&msg, now) else {
                break;
            };
            if let Some((reply, _to)) = outcome.reply {
                encode_into(&reply, &mut out).expect("our replies always encode");
                // What we send must be a packet we (and so clients) can parse back.
                wire::decode(&out).expect("our replies decode");
            }
            let Some(ip) = outcome.probe else {
                break;
            };
            engine.probed(ip, frame.tag & 0x80 != 0, now);
        }
    }
});
