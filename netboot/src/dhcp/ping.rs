//! ICMP echo probes for the opt-in ping-check ([`super::engine`] decides when to probe).
//!
//! A raw ICMP socket is used, not the unprivileged ICMP datagram socket: the latter is disabled
//! by default inside new network namespaces (`net.ipv4.ping_group_range = 1 0`), and the server
//! runs as root anyway (it needs CAP_NET_RAW for `SO_BINDTODEVICE`). Each probe opens its own
//! socket bound to the served interface, so the echo leaves there and only replies arriving
//! there count; a kernel filter (`ICMP_FILTER`) passes echo replies only, and a reply counts
//! only if it comes from the probed address with our identifier and sequence number.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use crate::error::ServerError;

const ECHO_REPLY: u8 = 0;
const ECHO_REQUEST: u8 = 8;
/// `SOL_RAW` / `ICMP_FILTER` of linux/icmp.h: a bit mask of ICMP types the socket drops.
const SOL_RAW: libc::c_int = 255;
const ICMP_FILTER: libc::c_int = 1;
const PAYLOAD: &[u8] = b"labboot dhcp ping-check";

/// Sends ICMP echo requests on one interface and waits a bounded time for the reply.
#[derive(Debug)]
pub struct Pinger {
    interface: String,
    timeout: Duration,
    ident: u16,
    seq: AtomicU16,
}

impl Pinger {
    /// A pinger for `interface` that waits `timeout` for each answer.
    pub fn new(interface: &str, timeout: Duration) -> Pinger {
        Pinger {
            interface: interface.to_string(),
            timeout,
            ident: (std::process::id() & 0xffff) as u16,
            seq: AtomicU16::new(0),
        }
    }

    /// Opens one probe socket to find out early whether probes can work (needs CAP_NET_RAW).
    pub fn check(&self) -> Result<(), ServerError> {
        self.socket().map(drop)
    }

    /// How long a probe waits for the answer.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn socket(&self) -> Result<Socket, ServerError> {
        let ctx = |what: &'static str, error: io::Error| ServerError::Interface {
            name: self.interface.clone(),
            port: None,
            what,
            error,
        };
        let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))
            .map_err(|e| ctx("ping-check: cannot open a raw ICMP socket", e))?;
        sock.bind_device(Some(self.interface.as_bytes()))
            .map_err(|e| ctx("ping-check: cannot bind to the interface", e))?;
        let filter: u32 = !(1u32 << ECHO_REPLY);
        // SAFETY: a valid fd and a pointer to a live u32 of the size passed.
        let rc = unsafe {
            use std::os::fd::AsRawFd;
            libc::setsockopt(
                sock.as_raw_fd(),
                SOL_RAW,
                ICMP_FILTER,
                (&filter as *const u32).cast(),
                std::mem::size_of::<u32>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(ctx(
                "ping-check: cannot set ICMP_FILTER",
                io::Error::last_os_error(),
            ));
        }
        sock.set_nonblocking(true)
            .map_err(|e| ctx("ping-check: cannot make the socket non-blocking", e))?;
        Ok(sock)
    }

    /// Pings `ip` once: `Ok(true)` if it answered within the timeout.
    ///
    /// Must be called inside a tokio runtime.
    pub async fn probe(&self, ip: Ipv4Addr) -> io::Result<bool> {
        // A raw socket is a datagram socket to the kernel: tokio's UdpSocket drives its
        // sendto/recvfrom just as well, and registers it with the reactor safely.
        let sock = self.socket().map_err(io::Error::other)?;
        let sock = UdpSocket::from_std(std::net::UdpSocket::from(sock))?;
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let request = echo_request(self.ident, seq);
        sock.send_to(&request, SocketAddrV4::new(ip, 0)).await?;
        let wait = async {
            let mut buf = [0u8; 1500];
            loop {
                let n = sock.recv(&mut buf).await?;
                if is_reply(&buf[..n], ip, self.ident, seq) {
                    return Ok::<bool, io::Error>(true);
                }
            }
        };
        match tokio::time::timeout(self.timeout, wait).await {
            Ok(answered) => answered,
            Err(_elapsed) => Ok(false),
        }
    }
}

/// The RFC 1071 Internet checksum of `bytes`.
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMP echo request (type 8) with our identifier and sequence number.
fn echo_request(ident: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![ECHO_REQUEST, 0, 0, 0];
    p.extend_from_slice(&ident.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(PAYLOAD);
    let sum = checksum(&p);
    p[2..4].copy_from_slice(&sum.to_be_bytes());
    p
}

/// Whether a datagram read from the raw socket (IPv4 header included) is the echo reply of
/// `ip` to our request `(ident, seq)`.
fn is_reply(datagram: &[u8], ip: Ipv4Addr, ident: u16, seq: u16) -> bool {
    let Some(&first) = datagram.first() else {
        return false;
    };
    let ihl = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || ihl < 20 || datagram.len() < ihl + 8 {
        return false;
    }
    let src = Ipv4Addr::new(datagram[12], datagram[13], datagram[14], datagram[15]);
    let icmp = &datagram[ihl..];
    src == ip
        && icmp[0] == ECHO_REPLY
        && icmp[1] == 0
        && icmp[4..6] == ident.to_be_bytes()
        && icmp[6..8] == seq.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request_checksums_to_zero() {
        let p = echo_request(0x1234, 7);
        assert_eq!(p[0], ECHO_REQUEST);
        assert_eq!(&p[4..8], &[0x12, 0x34, 0, 7]);
        // The checksum over a packet that includes its checksum is 0 (RFC 1071).
        assert_eq!(checksum(&p), 0);
    }

    #[test]
    fn only_the_matching_reply_counts() {
        let ip = Ipv4Addr::new(10, 0, 0, 5);
        let mut d = vec![
            0x45u8, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 5, 10, 0, 0, 1,
        ];
        let mut icmp = echo_request(9, 3);
        icmp[0] = ECHO_REPLY;
        d.extend_from_slice(&icmp);
        assert!(is_reply(&d, ip, 9, 3));
        assert!(
            !is_reply(&d, Ipv4Addr::new(10, 0, 0, 6), 9, 3),
            "other source"
        );
        assert!(!is_reply(&d, ip, 9, 4), "other sequence number");
        assert!(!is_reply(&d, ip, 8, 3), "other identifier");
        assert!(!is_reply(&d[..25], ip, 9, 3), "truncated");
        d[20] = ECHO_REQUEST;
        assert!(!is_reply(&d, ip, 9, 3), "a request is no reply");
    }
}
