//! ONC RPC (RFC 5531) calls and replies, and TCP record marking, without I/O.
//!
//! [`RecordBuffer`] keeps "is a whole record here?" apart from parsing: the socket loop feeds it
//! bytes and takes out complete records, each capped at [`MAX_RECORD`] so a client cannot make
//! the server buffer without bound. [`Call::parse`] reads the call header and credentials; the
//! reply helpers write accepted and denied replies around a procedure's results.

use super::xdr::{Reader, Writer, XdrError};

/// The largest record accepted: a 1 MiB WRITE plus its header, with room to spare.
pub const MAX_RECORD: usize = 2 * 1024 * 1024;

/// Longest credential or verifier body (RFC 5531).
const MAX_AUTH: usize = 400;

/// `AUTH_NONE`.
pub const AUTH_NONE: u32 = 0;
/// `AUTH_SYS` (also called `AUTH_UNIX`).
pub const AUTH_SYS: u32 = 1;

/// Whole records cut out of a TCP byte stream (record marking, RFC 5531 §11).
#[derive(Debug, Default)]
pub struct RecordBuffer {
    pending: Vec<u8>,
    record: Vec<u8>,
}

/// A stream that cannot be a sequence of RPC records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record of {0} bytes or more exceeds the limit of {MAX_RECORD}")]
pub struct RecordTooLarge(pub usize);

impl RecordBuffer {
    /// An empty buffer.
    pub fn new() -> RecordBuffer {
        RecordBuffer::default()
    }

    /// Appends bytes read from the socket.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    /// Whether a record is partly received (an EOF now cuts a call short).
    pub fn is_mid_record(&self) -> bool {
        !self.pending.is_empty() || !self.record.is_empty()
    }

    /// The next complete record, `Ok(None)` when more bytes are needed.
    pub fn next_record(&mut self) -> Result<Option<Vec<u8>>, RecordTooLarge> {
        loop {
            if self.pending.len() < 4 {
                return Ok(None);
            }
            let mark = u32::from_be_bytes([
                self.pending[0],
                self.pending[1],
                self.pending[2],
                self.pending[3],
            ]);
            let last = mark & 0x8000_0000 != 0;
            let len = (mark & 0x7fff_ffff) as usize;
            let total = self.record.len().saturating_add(len);
            if total > MAX_RECORD {
                return Err(RecordTooLarge(total));
            }
            if self.pending.len() < 4 + len {
                return Ok(None);
            }
            self.record.extend_from_slice(&self.pending[4..4 + len]);
            self.pending.drain(..4 + len);
            if last {
                return Ok(Some(std::mem::take(&mut self.record)));
            }
        }
    }
}

/// The `AUTH_SYS` credential of a call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credential {
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
    /// Supplementary groups (at most 16).
    pub gids: Vec<u32>,
}

/// The header of an RPC call; the procedure's arguments follow in `args`.
#[derive(Debug)]
pub struct Call<'a> {
    /// Transaction id, echoed in the reply.
    pub xid: u32,
    /// RPC version; only 2 is served.
    pub rpcvers: u32,
    /// Program number.
    pub prog: u32,
    /// Program version.
    pub vers: u32,
    /// Procedure number.
    pub proc_: u32,
    /// The caller's `AUTH_SYS` credential, `None` for `AUTH_NONE`.
    pub cred: Option<Credential>,
    /// Credential flavor as sent.
    pub cred_flavor: u32,
    /// Why an `AUTH_SYS` credential body could not be read (answered with `AUTH_BADCRED`).
    pub bad_cred: Option<XdrError>,
    /// The arguments, still encoded.
    pub args: Reader<'a>,
}

impl<'a> Call<'a> {
    /// Parses a call header. `Ok(None)` means a reply or other message that is silently ignored.
    pub fn parse(record: &'a [u8]) -> Result<Option<Call<'a>>, (u32, XdrError)> {
        let mut r = Reader::new(record);
        let xid = r.u32("xid").map_err(|e| (0, e))?;
        let parse = |r: &mut Reader<'a>| -> Result<Option<Call<'a>>, XdrError> {
            if r.u32("mtype")? != 0 {
                return Ok(None);
            }
            let rpcvers = r.u32("rpcvers")?;
            let prog = r.u32("prog")?;
            let vers = r.u32("vers")?;
            let proc_ = r.u32("proc")?;
            let cred_flavor = r.u32("cred.flavor")?;
            let body = r.opaque(MAX_AUTH, "cred.body")?;
            let (cred, bad_cred) = match cred_flavor {
                AUTH_SYS => match parse_auth_sys(body) {
                    Ok(c) => (Some(c), None),
                    Err(e) => (None, Some(e)),
                },
                _ => (None, None),
            };
            let _verf_flavor = r.u32("verf.flavor")?;
            r.opaque(MAX_AUTH, "verf.body")?;
            Ok(Some(Call {
                xid,
                rpcvers,
                prog,
                vers,
                proc_,
                cred,
                cred_flavor,
                bad_cred,
                args: r.clone(),
            }))
        };
        parse(&mut r).map_err(|e| (xid, e))
    }
}

fn parse_auth_sys(body: &[u8]) -> Result<Credential, XdrError> {
    let mut r = Reader::new(body);
    let _stamp = r.u32("auth_sys.stamp")?;
    r.opaque(255, "auth_sys.machinename")?;
    let uid = r.u32("auth_sys.uid")?;
    let gid = r.u32("auth_sys.gid")?;
    let n = r.u32("auth_sys.gids")? as usize;
    if n > 16 {
        return Err(XdrError::TooLong {
            field: "auth_sys.gids",
            len: n,
            max: 16,
        });
    }
    let mut gids = Vec::with_capacity(n);
    for _ in 0..n {
        gids.push(r.u32("auth_sys.gids")?);
    }
    Ok(Credential { uid, gid, gids })
}

/// How an accepted call ended (RFC 5531 `accept_stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// Executed; results follow.
    Success,
    /// The program is not served here.
    ProgUnavail,
    /// The version is not served; the supported range follows.
    ProgMismatch {
        /// Lowest version served.
        low: u32,
        /// Highest version served.
        high: u32,
    },
    /// The procedure does not exist.
    ProcUnavail,
    /// The arguments could not be decoded.
    GarbageArgs,
}

/// Starts the reply to `xid`, accepted with `accept`; the caller appends results on success.
///
/// The first four bytes are room for the record mark, filled in by [`finish_record`].
pub fn accepted(xid: u32, accept: Accept) -> Writer {
    let mut w = Writer::with_prefix(&[0; 4], 256);
    w.u32(xid).u32(1).u32(0).u32(AUTH_NONE).u32(0);
    match accept {
        Accept::Success => w.u32(0),
        Accept::ProgUnavail => w.u32(1),
        Accept::ProgMismatch { low, high } => w.u32(2).u32(low).u32(high),
        Accept::ProcUnavail => w.u32(3),
        Accept::GarbageArgs => w.u32(4),
    };
    w
}

/// A denied reply: `AUTH_ERROR` with `auth_stat` (e.g. 5, `AUTH_TOOWEAK`).
/// `auth_stat` AUTH_BADCRED: the credential is malformed (RFC 5531 §9).
pub const AUTH_BADCRED: u32 = 1;

/// `auth_stat` AUTH_TOOWEAK: the flavor is not accepted; the client may retry with another.
pub const AUTH_TOOWEAK: u32 = 5;

/// A denied reply: `AUTH_ERROR` with `auth_stat`.
pub fn auth_error(xid: u32, auth_stat: u32) -> Writer {
    let mut w = Writer::with_prefix(&[0; 4], 32);
    w.u32(xid).u32(1).u32(1).u32(1).u32(auth_stat);
    w
}

/// A denied reply: `RPC_MISMATCH`, only version 2 served.
pub fn rpc_mismatch(xid: u32) -> Writer {
    let mut w = Writer::with_prefix(&[0; 4], 32);
    w.u32(xid).u32(1).u32(1).u32(0).u32(2).u32(2);
    w
}

/// Fills in the record mark of a reply started by [`accepted`] and friends: one last fragment.
pub fn finish_record(w: Writer) -> Vec<u8> {
    let mut bytes = w.into_bytes();
    let len = (bytes.len() - 4) as u32 | 0x8000_0000;
    bytes[..4].copy_from_slice(&len.to_be_bytes());
    bytes
}

/// Like [`finish_record`] for a reply whose last `more` bytes are sent after these ones.
pub fn finish_record_with(w: Writer, more: usize) -> Vec<u8> {
    let mut bytes = w.into_bytes();
    let len = (bytes.len() - 4 + more) as u32 | 0x8000_0000;
    bytes[..4].copy_from_slice(&len.to_be_bytes());
    bytes
}

/// Strips the record-mark room of a reply, for datagram transports.
pub fn finish_datagram(w: Writer) -> Vec<u8> {
    let mut bytes = w.into_bytes();
    bytes.drain(..4);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call_bytes(cred: &[u8]) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(9).u32(0).u32(2).u32(100003).u32(3).u32(1);
        w.u32(AUTH_SYS).opaque(cred).u32(0).u32(0);
        w.u32(0xdead);
        w.into_bytes()
    }

    #[test]
    fn records_in_fragments() {
        let mut b = RecordBuffer::new();
        let mut stream = vec![0, 0, 0, 2, b'a', b'b'];
        stream.extend_from_slice(&[0x80, 0, 0, 1, b'c']);
        b.extend(&stream[..7]);
        assert_eq!(b.next_record().unwrap(), None);
        assert!(b.is_mid_record());
        b.extend(&stream[7..]);
        assert_eq!(b.next_record().unwrap(), Some(b"abc".to_vec()));
        assert!(!b.is_mid_record());
        b.extend(&[0xff, 0xff, 0xff, 0xff]);
        assert!(b.next_record().is_err());
    }

    #[test]
    fn call_with_auth_sys() {
        let mut cred = Writer::new();
        cred.u32(1)
            .opaque(b"board")
            .u32(1000)
            .u32(100)
            .u32(2)
            .u32(4)
            .u32(27);
        let bytes = call_bytes(&cred.into_bytes());
        let mut call = Call::parse(&bytes).unwrap().unwrap();
        assert_eq!(
            (call.xid, call.prog, call.vers, call.proc_),
            (9, 100003, 3, 1)
        );
        assert_eq!(
            call.cred,
            Some(Credential {
                uid: 1000,
                gid: 100,
                gids: vec![4, 27]
            })
        );
        assert_eq!(call.args.u32("arg").unwrap(), 0xdead);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let mut cred = Writer::new();
        cred.u32(1).opaque(b"b").u32(0).u32(0).u32(0);
        let bytes = call_bytes(&cred.into_bytes());
        for n in 0..bytes.len() - 4 {
            assert!(Call::parse(&bytes[..n]).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn reply_record_mark() {
        let rec = finish_record(accepted(5, Accept::ProcUnavail));
        assert_eq!(&rec[..4], &(0x8000_0000u32 | 24).to_be_bytes());
        assert_eq!(rec.len(), 28);
    }
}
