//! XDR (RFC 4506) decoding and encoding, bounded by construction.
//!
//! The decoder never allocates more than the bytes it has in hand: a length field larger than the
//! rest of the record, or larger than the caller's limit, is an error, not an allocation. So a
//! malformed call costs at most the record it came in (itself capped by [`super::rpc`]) and can
//! never panic or exhaust memory.

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XdrError {
    /// The record ended in the middle of a field.
    #[error("record ends inside `{0}`")]
    Short(&'static str),
    /// A length field exceeds the protocol's limit for that field.
    #[error("`{field}` is {len} bytes, more than the limit of {max}")]
    TooLong {
        /// The field, as named in the RFC.
        field: &'static str,
        /// Its announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A discriminant or boolean has a value the RFC does not define.
    #[error("`{field}` has the undefined value {value}")]
    BadValue {
        /// The field, as named in the RFC.
        field: &'static str,
        /// The value received.
        value: u32,
    },
}

/// Reads XDR items from a borrowed record.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], XdrError> {
        if self.buf.len() < n {
            return Err(XdrError::Short(field));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// An unsigned 32-bit integer.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, XdrError> {
        let b = self.take(4, field)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// An unsigned 64-bit integer (XDR "hyper").
    pub fn u64(&mut self, field: &'static str) -> Result<u64, XdrError> {
        let hi = u64::from(self.u32(field)?);
        let lo = u64::from(self.u32(field)?);
        Ok(hi << 32 | lo)
    }

    /// A boolean; anything but 0 or 1 is an error.
    pub fn bool(&mut self, field: &'static str) -> Result<bool, XdrError> {
        match self.u32(field)? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(XdrError::BadValue { field, value }),
        }
    }

    /// Fixed-length opaque data of `n` bytes (plus padding).
    pub fn fixed(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], XdrError> {
        let data = self.take(n, field)?;
        self.take(pad(n), field)?;
        Ok(data)
    }

    /// Variable-length opaque data of at most `max` bytes.
    pub fn opaque(&mut self, max: usize, field: &'static str) -> Result<&'a [u8], XdrError> {
        let len = self.u32(field)? as usize;
        if len > max {
            return Err(XdrError::TooLong { field, len, max });
        }
        self.fixed(len, field)
    }
}

/// Padding needed after `n` bytes to reach a multiple of four.
pub fn pad(n: usize) -> usize {
    (4 - n % 4) % 4
}

/// Appends XDR items to a growing buffer.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Writer {
        Writer::default()
    }

    /// A writer whose buffer starts with `prefix` (e.g. room for a record mark).
    pub fn with_prefix(prefix: &[u8], capacity: usize) -> Writer {
        let mut buf = Vec::with_capacity(capacity.max(prefix.len()));
        buf.extend_from_slice(prefix);
        Writer { buf }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Cuts the buffer back to `len` bytes (to drop a partly written item).
    pub fn truncate(&mut self, len: usize) {
        self.buf.truncate(len);
    }

    /// The encoded bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// Mutable access to the encoded bytes (to patch a length written earlier).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// An unsigned 32-bit integer.
    pub fn u32(&mut self, v: u32) -> &mut Writer {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// An unsigned 64-bit integer.
    pub fn u64(&mut self, v: u64) -> &mut Writer {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// A boolean.
    pub fn bool(&mut self, v: bool) -> &mut Writer {
        self.u32(u32::from(v))
    }

    /// Fixed-length opaque data (plus padding).
    pub fn fixed(&mut self, data: &[u8]) -> &mut Writer {
        self.buf.extend_from_slice(data);
        self.buf.extend_from_slice(&[0u8; 3][..pad(data.len())]);
        self
    }

    /// Makes room for `n` more bytes at once (e.g. before a large READ reply).
    pub fn reserve(&mut self, n: usize) {
        self.buf.reserve(n);
    }

    /// Variable-length opaque data of at most `max` bytes that `fill` writes in place (saving a
    /// copy of large READ payloads); returns what `fill` returned, the number of bytes used.
    pub fn opaque_in_place<E>(
        &mut self,
        max: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<usize, E>,
    ) -> Result<usize, E> {
        let at = self.buf.len();
        self.u32(0);
        self.buf.resize(at + 4 + max, 0);
        let n = match fill(&mut self.buf[at + 4..]) {
            Ok(n) => n.min(max),
            Err(e) => {
                self.buf.truncate(at);
                return Err(e);
            }
        };
        self.buf[at..at + 4].copy_from_slice(&(n as u32).to_be_bytes());
        self.buf.truncate(at + 4 + n);
        self.buf.extend_from_slice(&[0u8; 3][..pad(n)]);
        Ok(n)
    }

    /// Variable-length opaque data; callers keep it under the field's limit.
    pub fn opaque(&mut self, data: &[u8]) -> &mut Writer {
        self.u32(data.len() as u32);
        self.fixed(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut w = Writer::new();
        w.u32(7).u64(1 << 40 | 5).bool(true).opaque(b"abcde");
        let bytes = w.into_bytes();
        assert_eq!(bytes.len(), 4 + 8 + 4 + 4 + 8);
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u32("a").unwrap(), 7);
        assert_eq!(r.u64("b").unwrap(), 1 << 40 | 5);
        assert!(r.bool("c").unwrap());
        assert_eq!(r.opaque(5, "d").unwrap(), b"abcde");
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn opaque_written_in_place() {
        let mut w = Writer::new();
        let n = w
            .opaque_in_place(16, |b| {
                b[..5].copy_from_slice(b"hello");
                Ok::<_, ()>(5)
            })
            .unwrap();
        assert_eq!(n, 5);
        w.u32(9);
        let bytes = w.into_bytes();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.opaque(16, "data").unwrap(), b"hello");
        assert_eq!(r.u32("next").unwrap(), 9);
        let mut w = Writer::new();
        assert!(w.opaque_in_place(16, |_| Err::<usize, _>(())).is_err());
        assert!(w.is_empty());
    }

    #[test]
    fn lengths_are_checked_before_use() {
        let mut w = Writer::new();
        w.u32(u32::MAX);
        let bytes = w.into_bytes();
        assert!(matches!(
            Reader::new(&bytes).opaque(usize::MAX, "name"),
            Err(XdrError::Short("name"))
        ));
        assert!(matches!(
            Reader::new(&bytes).opaque(255, "name"),
            Err(XdrError::TooLong { max: 255, .. })
        ));
        assert_eq!(
            Reader::new(&[0, 0, 0, 2]).bool("eof"),
            Err(XdrError::BadValue {
                field: "eof",
                value: 2
            })
        );
    }
}
