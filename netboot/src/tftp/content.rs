//! What a read request serves: a file or bytes in memory, always with a known size.
//!
//! The size must be known up front because the `tsize` option reports it and because the
//! transfer state machine decides from it which block is the last one. File reads happen in
//! large chunks on tokio's blocking pool ([`BlockReader`]), so a slow disk never stalls the
//! runtime and a 512-byte block does not cost a thread hop.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Bytes read from disk per blocking-pool trip.
const CHUNK: usize = 256 * 1024;

/// The largest content converted to netascii in memory.
pub const NETASCII_LIMIT: u64 = 64 * 1024 * 1024;

/// The body of a file to send: a regular file or bytes generated for this request.
#[derive(Debug, Clone)]
pub struct Content {
    repr: Repr,
}

#[derive(Debug, Clone)]
enum Repr {
    File { file: Arc<File>, len: u64 },
    Bytes(Arc<[u8]>),
}

impl Content {
    /// In-memory content, e.g. a boot script rendered for one board.
    pub fn from_bytes(bytes: impl Into<Arc<[u8]>>) -> Content {
        Content {
            repr: Repr::Bytes(bytes.into()),
        }
    }

    /// An open regular file; its size is taken now.
    pub fn from_file(file: File) -> io::Result<Content> {
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        Ok(Content {
            repr: Repr::File {
                file: Arc::new(file),
                len: meta.len(),
            },
        })
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        match &self.repr {
            Repr::File { len, .. } => *len,
            Repr::Bytes(b) => b.len() as u64,
        }
    }

    /// Whether the content has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads everything into memory (blocking); used for netascii and tests.
    pub fn read_all(&self) -> io::Result<Vec<u8>> {
        match &self.repr {
            Repr::Bytes(b) => Ok(b.to_vec()),
            Repr::File { file, len } => {
                let mut buf = vec![0; usize::try_from(*len).map_err(io::Error::other)?];
                file.read_exact_at(&mut buf, 0)?;
                Ok(buf)
            }
        }
    }

    /// The netascii form (LF → CR LF, CR → CR NUL), built in memory (blocking).
    ///
    /// Refused above [`NETASCII_LIMIT`]: netascii is for small text files, and converting on the
    /// fly would make block offsets depend on everything before them.
    pub fn to_netascii(&self) -> io::Result<Content> {
        if self.len() > NETASCII_LIMIT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("netascii transfers are limited to {NETASCII_LIMIT} bytes"),
            ));
        }
        let raw = self.read_all()?;
        let mut out = Vec::with_capacity(raw.len() + raw.len() / 16);
        for b in raw {
            match b {
                b'\n' => out.extend_from_slice(b"\r\n"),
                b'\r' => out.extend_from_slice(b"\r\0"),
                b => out.push(b),
            }
        }
        Ok(Content::from_bytes(out))
    }
}

/// Hands out the payload of block `n` (1-based, absolute) of a content at a fixed block size.
#[derive(Debug)]
pub struct BlockReader {
    content: Content,
    blksize: usize,
    cache_start: u64,
    cache: Vec<u8>,
}

impl BlockReader {
    /// A reader over `content` cut into blocks of `blksize` bytes.
    pub fn new(content: Content, blksize: u16) -> BlockReader {
        BlockReader {
            content,
            blksize: usize::from(blksize.max(1)),
            cache_start: 0,
            cache: Vec::new(),
        }
    }

    /// The payload of block `n` (may be empty for the final block).
    pub async fn block(&mut self, n: u64) -> io::Result<&[u8]> {
        let len = self.content.len();
        let start = (n.saturating_sub(1)).saturating_mul(self.blksize as u64);
        if start > len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("block {n} is past the end of a {len}-byte file"),
            ));
        }
        let want = (len - start).min(self.blksize as u64) as usize;
        match &self.content.repr {
            Repr::Bytes(b) => Ok(&b[start as usize..start as usize + want]),
            Repr::File { file, .. } => {
                let cached = start >= self.cache_start
                    && start + want as u64 <= self.cache_start + self.cache.len() as u64;
                if !cached {
                    let chunk = (CHUNK / self.blksize).max(1) * self.blksize;
                    let to_read = (len - start).min(chunk as u64) as usize;
                    let file = Arc::clone(file);
                    let mut buf = std::mem::take(&mut self.cache);
                    let (buf, res) = tokio::task::spawn_blocking(move || {
                        buf.resize(to_read, 0);
                        let res = file.read_exact_at(&mut buf, start);
                        (buf, res)
                    })
                    .await
                    .map_err(io::Error::other)?;
                    self.cache = buf;
                    if let Err(e) = res {
                        self.cache.clear();
                        return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
                            io::Error::new(e.kind(), "file shrank during the transfer")
                        } else {
                            e
                        });
                    }
                    self.cache_start = start;
                }
                let off = (start - self.cache_start) as usize;
                Ok(&self.cache[off..off + want])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn netascii_translates_line_ends() {
        let c = Content::from_bytes(&b"a\nb\rc"[..]);
        let n = c.to_netascii().unwrap();
        assert_eq!(n.read_all().unwrap(), b"a\r\nb\r\0c");
        assert_eq!(n.len(), 7);
    }

    #[tokio::test]
    async fn blocks_of_a_file_match_its_bytes() {
        let mut f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..700_000u32).map(|i| (i * 7 % 251) as u8).collect();
        f.write_all(&data).unwrap();
        let c = Content::from_file(f).unwrap();
        assert_eq!(c.len(), data.len() as u64);
        let mut r = BlockReader::new(c, 1000);
        // Forward, then backwards (a go-back retransmission), then the short last block.
        for n in [1u64, 2, 300, 299, 1, 700] {
            let got = r.block(n).await.unwrap().to_vec();
            let s = (n as usize - 1) * 1000;
            assert_eq!(got, &data[s..(s + 1000).min(data.len())], "block {n}");
        }
        assert_eq!(r.block(701).await.unwrap(), b"");
        assert!(r.block(702).await.is_err());
    }

    #[tokio::test]
    async fn blocks_of_bytes_and_empty_final_block() {
        let mut r = BlockReader::new(Content::from_bytes(vec![1u8; 1024]), 512);
        assert_eq!(r.block(1).await.unwrap().len(), 512);
        assert_eq!(r.block(2).await.unwrap().len(), 512);
        assert_eq!(r.block(3).await.unwrap().len(), 0);
    }

    #[test]
    fn directories_are_not_content() {
        let d = tempfile::tempdir().unwrap();
        let f = File::open(d.path()).unwrap();
        assert!(Content::from_file(f).is_err());
    }
}
