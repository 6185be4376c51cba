//! One transmission request against one [`Backend`]: checks first ([`check`], pure), then the
//! blocking operation ([`execute`], on a connection's worker thread), producing the complete
//! reply bytes. Reads that can be spliced from the page cache skip [`execute`] (see
//! `transmit`) but pass the same [`check`].
//!
//! Every request that reaches here gets a reply: offsets and lengths outside the export, flags
//! the command does not take, writes to a read-only export and unknown commands are answered
//! with the protocol's error numbers before any byte of the file is touched.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Encoder;

use super::codec::{Command, Reply, ReplyEncoder, Request};
use super::export::{Backend, ExportMode, OpError};
use super::proto::{errno, *};

/// Checks a request against an export of `size` bytes in `mode`; `Err` is the error reply.
pub fn check(req: &Request, size: u64, mode: ExportMode) -> Result<(), OpError> {
    let allowed_flags = match req.command {
        Command::Write(_) | Command::Trim => CMD_FLAG_FUA,
        Command::WriteZeroes => CMD_FLAG_FUA | CMD_FLAG_NO_HOLE,
        _ => 0,
    };
    if req.flags & !allowed_flags != 0 {
        return Err(OpError::new(
            errno::EINVAL,
            format!(
                "flags {:#x} not valid for {:?}",
                req.flags,
                name(&req.command)
            ),
        ));
    }
    let writes = matches!(
        req.command,
        Command::Write(_) | Command::Trim | Command::WriteZeroes
    );
    if writes && mode == ExportMode::ReadOnly {
        return Err(OpError::new(errno::EPERM, "export is read-only"));
    }
    let in_range = req
        .offset
        .checked_add(u64::from(req.len))
        .is_some_and(|end| end <= size);
    let out_of_range = || {
        format!(
            "{} of {} bytes at {} is outside the export ({size} bytes)",
            name(&req.command),
            req.len,
            req.offset
        )
    };
    match &req.command {
        Command::Read => {
            if req.len > MAX_PAYLOAD {
                return Err(OpError::new(
                    errno::EINVAL,
                    format!(
                        "read of {} bytes is above the {MAX_PAYLOAD}-byte limit",
                        req.len
                    ),
                ));
            }
            if !in_range {
                return Err(OpError::new(errno::EINVAL, out_of_range()));
            }
        }
        Command::Write(data) => {
            if data.len() != req.len as usize {
                return Err(OpError::new(errno::EINVAL, "payload length mismatch"));
            }
            if !in_range {
                return Err(OpError::new(errno::ENOSPC, out_of_range()));
            }
        }
        Command::WriteZeroes => {
            if !in_range {
                return Err(OpError::new(errno::ENOSPC, out_of_range()));
            }
        }
        Command::Trim | Command::Cache => {
            if !in_range {
                return Err(OpError::new(errno::EINVAL, out_of_range()));
            }
        }
        Command::Flush | Command::Disconnect => {}
        Command::Unknown(kind) => {
            return Err(OpError::new(
                errno::EINVAL,
                format!("unknown command {kind}"),
            ))
        }
    }
    Ok(())
}

/// Checks and runs `req` on `backend` (blocking) and returns the bytes of its reply.
///
/// Disconnect requests never reach here: they have no reply.
pub fn execute(req: Request, backend: &Backend, encoder: ReplyEncoder) -> (Bytes, Option<OpError>) {
    let handle = req.handle;
    let result = check(&req, backend.size(), backend.mode()).and_then(|()| {
        let fua = req.flags & CMD_FLAG_FUA != 0;
        let (offset, len) = (req.offset, u64::from(req.len));
        match req.command {
            Command::Read => {
                let mut buf = BytesMut::with_capacity(encoder.data_header_len() + req.len as usize);
                encoder.data_header(handle, offset, req.len, &mut buf);
                backend.read_append(offset, req.len as usize, &mut buf)?;
                return Ok(Some(buf));
            }
            Command::Write(data) => backend.write(offset, &data, fua),
            Command::Flush => backend.flush(),
            Command::Trim => backend.trim(offset, len, fua),
            Command::WriteZeroes => {
                backend.write_zeroes(offset, len, req.flags & CMD_FLAG_NO_HOLE != 0, fua)
            }
            Command::Cache => backend.cache(offset, len),
            Command::Disconnect | Command::Unknown(_) => Ok(()),
        }
        .map(|()| None)
    });
    let mut enc = encoder;
    let mut out = BytesMut::with_capacity(64);
    match result {
        Ok(Some(data)) => (data.freeze(), None),
        Ok(None) => {
            enc.encode(Reply::Done { handle }, &mut out)
                .expect("encoding into memory cannot fail");
            (out.freeze(), None)
        }
        Err(e) => (error_reply(handle, &e, encoder), Some(e)),
    }
}

/// The bytes of the error reply to request `handle`.
pub(super) fn error_reply(handle: u64, e: &OpError, mut encoder: ReplyEncoder) -> Bytes {
    let mut out = BytesMut::with_capacity(64);
    encoder
        .encode(
            Reply::Error {
                handle,
                errno: e.errno,
                message: e.message.clone(),
            },
            &mut out,
        )
        .expect("encoding into memory cannot fail");
    out.freeze()
}

/// The protocol's name of a command, for messages.
pub fn name(command: &Command) -> &'static str {
    match command {
        Command::Read => "NBD_CMD_READ",
        Command::Write(_) => "NBD_CMD_WRITE",
        Command::Disconnect => "NBD_CMD_DISC",
        Command::Flush => "NBD_CMD_FLUSH",
        Command::Trim => "NBD_CMD_TRIM",
        Command::Cache => "NBD_CMD_CACHE",
        Command::WriteZeroes => "NBD_CMD_WRITE_ZEROES",
        Command::Unknown(_) => "unknown command",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(command: Command, flags: u16, offset: u64, len: u32) -> Request {
        Request {
            handle: 1,
            flags,
            offset,
            len,
            command,
        }
    }

    #[test]
    fn checks_ranges_flags_modes_and_commands() {
        let ro = ExportMode::ReadOnly;
        let rw = ExportMode::ReadWrite;
        let e = |r: Request, mode| check(&r, 4096, mode).map_err(|e| e.errno);
        assert_eq!(e(req(Command::Read, 0, 0, 4096), ro), Ok(()));
        assert_eq!(e(req(Command::Read, 0, 1, 4096), ro), Err(errno::EINVAL));
        assert_eq!(
            e(req(Command::Read, 0, u64::MAX, 2), ro),
            Err(errno::EINVAL)
        );
        assert_eq!(
            e(req(Command::Read, 0, 0, u32::MAX), ro),
            Err(errno::EINVAL)
        );
        assert_eq!(
            e(req(Command::Read, CMD_FLAG_FUA, 0, 1), ro),
            Err(errno::EINVAL)
        );
        let w = |n: usize| Command::Write(Bytes::from(vec![0; n]));
        assert_eq!(e(req(w(1), 0, 0, 1), ro), Err(errno::EPERM));
        assert_eq!(e(req(w(1), CMD_FLAG_FUA, 4095, 1), rw), Ok(()));
        assert_eq!(e(req(w(2), 0, 4095, 2), rw), Err(errno::ENOSPC));
        assert_eq!(e(req(w(2), 0, 0, 3), rw), Err(errno::EINVAL));
        assert_eq!(
            e(req(Command::WriteZeroes, CMD_FLAG_NO_HOLE, 0, 4096), rw),
            Ok(())
        );
        assert_eq!(
            e(req(Command::Trim, CMD_FLAG_NO_HOLE, 0, 1), rw),
            Err(errno::EINVAL)
        );
        assert_eq!(e(req(Command::Trim, 0, 0, 1), ro), Err(errno::EPERM));
        assert_eq!(e(req(Command::Cache, 0, 4000, 200), ro), Err(errno::EINVAL));
        assert_eq!(e(req(Command::Flush, 0, 0, 0), ro), Ok(()));
        assert_eq!(
            e(req(Command::Unknown(77), 0, 0, 0), rw),
            Err(errno::EINVAL)
        );
    }
}
