//! Numbers of the NBD protocol (the NBD project's `doc/proto.md`), named as there.
//!
//! Only what this server speaks or must recognise is listed; everything is big-endian on the wire.

/// First magic of the newstyle greeting: `NBDMAGIC`.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// Second magic of the greeting and first field of every option request: `IHAVEOPT`.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Magic of every option reply.
pub const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;

/// Handshake flag: fixed newstyle.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1;
/// Handshake flag: the server may omit the 124 zero bytes after NBD_OPT_EXPORT_NAME.
pub const FLAG_NO_ZEROES: u16 = 2;
/// Client flag: the client speaks fixed newstyle.
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1;
/// Client flag: the client does not want the 124 zero bytes.
pub const FLAG_C_NO_ZEROES: u32 = 2;

/// Option: pick an export by name, old style (no reply on error: the server disconnects).
pub const OPT_EXPORT_NAME: u32 = 1;
/// Option: the client gives up.
pub const OPT_ABORT: u32 = 2;
/// Option: list the exports.
pub const OPT_LIST: u32 = 3;
/// Option: describe an export without selecting it.
pub const OPT_INFO: u32 = 6;
/// Option: describe and select an export.
pub const OPT_GO: u32 = 7;
/// Option: the client wants structured replies.
pub const OPT_STRUCTURED_REPLY: u32 = 8;

/// Option reply: done.
pub const REP_ACK: u32 = 1;
/// Option reply: one export of a LIST.
pub const REP_SERVER: u32 = 2;
/// Option reply: one NBD_INFO item.
pub const REP_INFO: u32 = 3;
/// Option reply error: unknown option.
pub const REP_ERR_UNSUP: u32 = (1 << 31) | 1;
/// Option reply error: refused by policy.
pub const REP_ERR_POLICY: u32 = (1 << 31) | 2;
/// Option reply error: malformed option.
pub const REP_ERR_INVALID: u32 = (1 << 31) | 3;
/// Option reply error: no such export.
pub const REP_ERR_UNKNOWN: u32 = (1 << 31) | 6;
/// Option reply error: option data too long.
pub const REP_ERR_TOO_BIG: u32 = (1 << 31) | 9;

/// NBD_INFO item: size and transmission flags.
pub const INFO_EXPORT: u16 = 0;
/// NBD_INFO item: canonical name.
pub const INFO_NAME: u16 = 1;
/// NBD_INFO item: description.
pub const INFO_DESCRIPTION: u16 = 2;
/// NBD_INFO item: block size constraints.
pub const INFO_BLOCK_SIZE: u16 = 3;

/// Transmission flag: the flags field is valid.
pub const TF_HAS_FLAGS: u16 = 1;
/// Transmission flag: the export is read-only.
pub const TF_READ_ONLY: u16 = 1 << 1;
/// Transmission flag: NBD_CMD_FLUSH is supported.
pub const TF_SEND_FLUSH: u16 = 1 << 2;
/// Transmission flag: NBD_CMD_FLAG_FUA is supported.
pub const TF_SEND_FUA: u16 = 1 << 3;
/// Transmission flag: NBD_CMD_TRIM is supported.
pub const TF_SEND_TRIM: u16 = 1 << 5;
/// Transmission flag: NBD_CMD_WRITE_ZEROES is supported.
pub const TF_SEND_WRITE_ZEROES: u16 = 1 << 6;
/// Transmission flag: several connections see one consistent export.
pub const TF_CAN_MULTI_CONN: u16 = 1 << 8;
/// Transmission flag: NBD_CMD_CACHE is supported.
pub const TF_SEND_CACHE: u16 = 1 << 10;

/// Magic of a transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic of a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Magic of a structured reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Command: read.
pub const CMD_READ: u16 = 0;
/// Command: write (a payload follows the header).
pub const CMD_WRITE: u16 = 1;
/// Command: disconnect.
pub const CMD_DISC: u16 = 2;
/// Command: flush.
pub const CMD_FLUSH: u16 = 3;
/// Command: trim (discard).
pub const CMD_TRIM: u16 = 4;
/// Command: prefetch.
pub const CMD_CACHE: u16 = 5;
/// Command: write zeroes.
pub const CMD_WRITE_ZEROES: u16 = 6;

/// Command flag: force unit access.
pub const CMD_FLAG_FUA: u16 = 1;
/// Command flag (WRITE_ZEROES): do not punch a hole.
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;

/// Structured reply flag: last chunk of this request.
pub const REPLY_FLAG_DONE: u16 = 1;
/// Structured chunk: no payload.
pub const REPLY_TYPE_NONE: u16 = 0;
/// Structured chunk: offset + data.
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
/// Structured chunk: error + message.
pub const REPLY_TYPE_ERROR: u16 = (1 << 15) | 1;

/// Length of a transmission request header.
pub const REQUEST_LEN: usize = 28;
/// Length of a simple reply header.
pub const SIMPLE_REPLY_LEN: usize = 16;
/// Length of a structured reply chunk header.
pub const STRUCTURED_HEADER_LEN: usize = 20;

/// Largest READ or WRITE payload accepted (also the advertised maximum block size).
pub const MAX_PAYLOAD: u32 = 32 << 20;
/// Preferred block size advertised to clients.
pub const PREFERRED_BLOCK: u32 = 4096;

/// Error numbers on the wire (Linux values, as the protocol fixes them).
pub mod errno {
    /// Operation not permitted (writes to a read-only export).
    pub const EPERM: u32 = 1;
    /// Input/output error.
    pub const EIO: u32 = 5;
    /// Out of memory.
    pub const ENOMEM: u32 = 12;
    /// Invalid argument (bad offset, length or flags).
    pub const EINVAL: u32 = 22;
    /// No space left (writes past the end, copy-on-write overlay full).
    pub const ENOSPC: u32 = 28;
    /// Value too large (payload above the maximum).
    pub const EOVERFLOW: u32 = 75;
    /// Not supported (unknown command).
    pub const ENOTSUP: u32 = 95;
    /// Server shutting down.
    pub const ESHUTDOWN: u32 = 108;
}
