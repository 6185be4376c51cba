//! The copy-on-write overlay of one `cow` connection: the blocks it wrote, kept apart from the
//! read-only base and dropped with the connection.
//!
//! Dirty blocks ([`BLOCK`] bytes each) live in a sparse map. Their bytes stay in memory until
//! [`OverlayLimits::memory`] is used up; later blocks go to a temporary file that is unlinked at
//! once (`O_TMPFILE`), so nothing is left behind even on SIGKILL. When [`OverlayLimits::total`]
//! would be exceeded the write fails with [`OverlayFull`] (ENOSPC for the client) and changes
//! nothing: a board that writes too much gets an I/O error, the appliance never runs out of
//! memory. Zeroed or trimmed blocks are recorded without data. Each map entry is charged
//! [`ENTRY_COST`] bytes against the memory limit on top of its data, so even huge trims are bounded.
//!
//! The overlay does no I/O on the base itself: callers read the base first and let
//! [`Overlay::patch`] lay the dirty blocks over it, and give writes a `base` function to fill the
//! untouched part of a partially written block.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// Overlay granularity in bytes.
pub const BLOCK: u64 = 4096;

/// Bytes charged against the limits for each dirty block's bookkeeping.
pub const ENTRY_COST: u64 = 64;

/// How much one connection's overlay may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayLimits {
    /// Bytes kept in memory (data + bookkeeping) before blocks spill to a temporary file.
    pub memory: u64,
    /// Bytes in memory and on disk together; beyond this, writes fail with ENOSPC.
    pub total: u64,
    /// Directory for the spill file (`None`: the system's temporary directory).
    pub spill_dir: Option<PathBuf>,
}

/// A write refused because the overlay reached [`OverlayLimits::total`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("copy-on-write overlay full: {used} of {limit} bytes used, {wanted} more needed")]
pub struct OverlayFull {
    /// Bytes in use.
    pub used: u64,
    /// Bytes this write would add.
    pub wanted: u64,
    /// The limit.
    pub limit: u64,
}

/// Why an overlay write failed.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    /// The limit was reached.
    #[error(transparent)]
    Full(#[from] OverlayFull),
    /// Reading the base or the spill file failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// One run of a read split by [`Overlay::pieces`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// `len` bytes of the base at `offset`.
    Base {
        /// Byte offset in the base.
        offset: u64,
        /// Length in bytes.
        len: u64,
    },
    /// The next `len` bytes of the dirty copy.
    Dirty {
        /// Length in bytes.
        len: u64,
    },
}

#[derive(Debug)]
enum Slot {
    Zero,
    Memory(Box<[u8]>),
    Spilled(u64),
}

/// One connection's dirty blocks.
#[derive(Debug)]
pub struct Overlay {
    limits: OverlayLimits,
    blocks: BTreeMap<u64, Slot>,
    memory_used: u64,
    total_used: u64,
    spill: Option<File>,
    spill_next: u64,
    spill_free: Vec<u64>,
}

impl Overlay {
    /// An empty overlay.
    pub fn new(limits: OverlayLimits) -> Overlay {
        Overlay {
            limits,
            blocks: BTreeMap::new(),
            memory_used: 0,
            total_used: 0,
            spill: None,
            spill_next: 0,
            spill_free: Vec::new(),
        }
    }

    /// Whether nothing was written yet (reads can skip [`Self::patch`]).
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Splits the `len` bytes at `offset` into runs of base bytes and runs of dirty bytes, in
    /// order; the dirty bytes are copied to the end of `dirty`. A read is then the base runs
    /// taken from the file (spliced, not copied) with the dirty runs between them.
    pub fn pieces(
        &self,
        offset: u64,
        len: u64,
        pieces: &mut Vec<Piece>,
        dirty: &mut Vec<u8>,
    ) -> io::Result<()> {
        let end = offset.saturating_add(len);
        let mut at = offset;
        if len > 0 && !self.blocks.is_empty() {
            for (&index, slot) in self.blocks.range(offset / BLOCK..=(end - 1) / BLOCK) {
                let block_start = index * BLOCK;
                let from = block_start.max(offset);
                let to = (block_start + BLOCK).min(end);
                if from > at {
                    pieces.push(Piece::Base {
                        offset: at,
                        len: from - at,
                    });
                }
                let within = (from - block_start) as usize..(to - block_start) as usize;
                match slot {
                    Slot::Zero => dirty.resize(dirty.len() + within.len(), 0),
                    Slot::Memory(data) => dirty.extend_from_slice(&data[within]),
                    Slot::Spilled(n) => {
                        let start = dirty.len();
                        dirty.resize(start + within.len(), 0);
                        self.spill_file()?
                            .read_exact_at(&mut dirty[start..], n * BLOCK + within.start as u64)?;
                    }
                }
                match pieces.last_mut() {
                    Some(Piece::Dirty { len }) if from == at => *len += to - from,
                    _ => pieces.push(Piece::Dirty { len: to - from }),
                }
                at = to;
            }
        }
        if at < end {
            pieces.push(Piece::Base {
                offset: at,
                len: end - at,
            });
        }
        Ok(())
    }

    /// Bytes in memory and bytes in the spill file, bookkeeping included.
    pub fn usage(&self) -> (u64, u64) {
        (self.memory_used, self.total_used - self.memory_used)
    }

    /// Overwrites the bytes of `buf` (which holds the base at `offset`) with the dirty blocks.
    pub fn patch(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if self.blocks.is_empty() || buf.is_empty() {
            return Ok(());
        }
        let end = offset + buf.len() as u64;
        let first = offset / BLOCK;
        let last = (end - 1) / BLOCK;
        let mut scratch = Vec::new();
        for (&index, slot) in self.blocks.range(first..=last) {
            let block_start = index * BLOCK;
            let from = block_start.max(offset);
            let to = (block_start + BLOCK).min(end);
            let dst = &mut buf[(from - offset) as usize..(to - offset) as usize];
            let within = (from - block_start) as usize..(to - block_start) as usize;
            match slot {
                Slot::Zero => dst.fill(0),
                Slot::Memory(data) => dst.copy_from_slice(&data[within]),
                Slot::Spilled(at) => {
                    scratch.resize(BLOCK as usize, 0);
                    self.spill_file()?.read_exact_at(&mut scratch, at * BLOCK)?;
                    dst.copy_from_slice(&scratch[within]);
                }
            }
        }
        Ok(())
    }

    /// Writes `data` at `offset`; `base(block_offset, block)` fills a whole base block when only
    /// part of it is written. Nothing changes when the overlay is full.
    pub fn write(
        &mut self,
        offset: u64,
        data: &[u8],
        base: &dyn Fn(u64, &mut [u8]) -> io::Result<()>,
    ) -> Result<(), OverlayError> {
        if data.is_empty() {
            return Ok(());
        }
        let end = offset + data.len() as u64;
        self.reserve(offset, end, true)?;
        let mut block = vec![0u8; BLOCK as usize];
        for index in offset / BLOCK..=(end - 1) / BLOCK {
            let block_start = index * BLOCK;
            let from = block_start.max(offset);
            let to = (block_start + BLOCK).min(end);
            let src = &data[(from - offset) as usize..(to - offset) as usize];
            if to - from == BLOCK {
                block.copy_from_slice(src);
            } else {
                self.current(index, &mut block, base)?;
                block[(from - block_start) as usize..(to - block_start) as usize]
                    .copy_from_slice(src);
            }
            self.store(index, &block)?;
        }
        Ok(())
    }

    /// Zeroes `len` bytes at `offset` (WRITE_ZEROES and TRIM: both read back as zeroes).
    pub fn zero(
        &mut self,
        offset: u64,
        len: u64,
        base: &dyn Fn(u64, &mut [u8]) -> io::Result<()>,
    ) -> Result<(), OverlayError> {
        if len == 0 {
            return Ok(());
        }
        let end = offset + len;
        self.reserve(offset, end, false)?;
        let mut block = vec![0u8; BLOCK as usize];
        for index in offset / BLOCK..=(end - 1) / BLOCK {
            let block_start = index * BLOCK;
            let from = block_start.max(offset);
            let to = (block_start + BLOCK).min(end);
            if to - from == BLOCK {
                self.release(index);
                self.blocks.insert(index, Slot::Zero);
                self.memory_used += ENTRY_COST;
                self.total_used += ENTRY_COST;
            } else {
                self.current(index, &mut block, base)?;
                block[(from - block_start) as usize..(to - block_start) as usize].fill(0);
                self.store(index, &block)?;
            }
        }
        Ok(())
    }

    /// Checks that blocks `offset..end` fit, counting only blocks not yet holding what they need.
    fn reserve(&self, offset: u64, end: u64, with_data: bool) -> Result<(), OverlayFull> {
        let (first, last) = (offset / BLOCK, (end - 1) / BLOCK);
        let mut wanted = 0u64;
        let mut present = 0u64;
        let mut present_zero = 0u64;
        for (_, slot) in self.blocks.range(first..=last) {
            present += 1;
            if matches!(slot, Slot::Zero) {
                present_zero += 1;
            }
        }
        let count = last - first + 1;
        wanted += (count - present) * ENTRY_COST;
        if with_data {
            wanted += (count - present + present_zero) * BLOCK;
        } else {
            // Partial edge blocks need data; whole blocks only an entry.
            let edges =
                u64::from(!offset.is_multiple_of(BLOCK)) + u64::from(!end.is_multiple_of(BLOCK));
            wanted += edges.min(count) * BLOCK;
        }
        if self.total_used + wanted > self.limits.total {
            return Err(OverlayFull {
                used: self.total_used,
                wanted,
                limit: self.limits.total,
            });
        }
        Ok(())
    }

    /// The block's current content: overlay if dirty, else the base.
    fn current(
        &self,
        index: u64,
        block: &mut [u8],
        base: &dyn Fn(u64, &mut [u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        match self.blocks.get(&index) {
            Some(Slot::Zero) => block.fill(0),
            Some(Slot::Memory(data)) => block.copy_from_slice(data),
            Some(Slot::Spilled(at)) => self.spill_file()?.read_exact_at(block, at * BLOCK)?,
            None => base(index * BLOCK, block)?,
        }
        Ok(())
    }

    /// Stores a whole block, in memory while the memory limit allows, else in the spill file.
    fn store(&mut self, index: u64, block: &[u8]) -> io::Result<()> {
        match self.blocks.get_mut(&index) {
            Some(Slot::Memory(data)) => {
                data.copy_from_slice(block);
                return Ok(());
            }
            Some(Slot::Spilled(at)) => {
                let at = *at;
                return self.spill_file()?.write_all_at(block, at * BLOCK);
            }
            Some(Slot::Zero) => {
                self.blocks.remove(&index);
                self.memory_used -= ENTRY_COST;
                self.total_used -= ENTRY_COST;
            }
            None => {}
        }
        let cost = BLOCK + ENTRY_COST;
        if self.memory_used + cost <= self.limits.memory {
            self.blocks.insert(index, Slot::Memory(block.into()));
            self.memory_used += cost;
        } else {
            let at = match self.spill_free.pop() {
                Some(at) => at,
                None => {
                    self.spill_next += 1;
                    self.spill_next - 1
                }
            };
            if self.spill.is_none() {
                let file = match &self.limits.spill_dir {
                    Some(dir) => tempfile::tempfile_in(dir)?,
                    None => tempfile::tempfile()?,
                };
                self.spill = Some(file);
            }
            self.spill_file()?.write_all_at(block, at * BLOCK)?;
            self.blocks.insert(index, Slot::Spilled(at));
            // The entry itself lives in memory even when its data is on disk.
            self.memory_used += ENTRY_COST;
        }
        self.total_used += cost;
        Ok(())
    }

    /// Forgets a block, returning its memory or spill slot.
    fn release(&mut self, index: u64) {
        match self.blocks.remove(&index) {
            Some(Slot::Memory(_)) => {
                self.memory_used -= BLOCK + ENTRY_COST;
                self.total_used -= BLOCK + ENTRY_COST;
            }
            Some(Slot::Spilled(at)) => {
                self.spill_free.push(at);
                self.memory_used -= ENTRY_COST;
                self.total_used -= BLOCK + ENTRY_COST;
            }
            Some(Slot::Zero) => {
                self.memory_used -= ENTRY_COST;
                self.total_used -= ENTRY_COST;
            }
            None => {}
        }
    }

    fn spill_file(&self) -> io::Result<&File> {
        self.spill
            .as_ref()
            .ok_or_else(|| io::Error::other("overlay spill file missing"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A base of 10 blocks + 100 bytes whose byte `i` is `i % 251`.
    const SIZE: u64 = 10 * BLOCK + 100;

    fn base(offset: u64, buf: &mut [u8]) -> io::Result<()> {
        for (i, b) in buf.iter_mut().enumerate() {
            let at = offset + i as u64;
            *b = if at < SIZE { (at % 251) as u8 } else { 0 };
        }
        Ok(())
    }

    fn read(o: &Overlay, offset: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        base(offset, &mut buf).unwrap();
        o.patch(offset, &mut buf).unwrap();
        buf
    }

    fn limits(memory: u64, total: u64) -> OverlayLimits {
        OverlayLimits {
            memory,
            total,
            spill_dir: None,
        }
    }

    /// A read rebuilt from [`Overlay::pieces`]: base runs from `base`, dirty runs in between.
    fn read_by_pieces(o: &Overlay, offset: u64, len: usize) -> Vec<u8> {
        let (mut pieces, mut dirty) = (Vec::new(), Vec::new());
        o.pieces(offset, len as u64, &mut pieces, &mut dirty)
            .unwrap();
        let (mut out, mut used) = (Vec::new(), 0usize);
        for p in pieces {
            match p {
                Piece::Base { offset, len } => {
                    let mut b = vec![0; len as usize];
                    base(offset, &mut b).unwrap();
                    out.extend(b);
                }
                Piece::Dirty { len } => {
                    out.extend_from_slice(&dirty[used..used + len as usize]);
                    used += len as usize;
                }
            }
        }
        assert_eq!(used, dirty.len());
        out
    }

    #[test]
    fn pieces_rebuild_the_same_bytes_as_patch() {
        // Memory limit of two blocks: later blocks spill to the file.
        let mut o = Overlay::new(limits(2 * (BLOCK + ENTRY_COST), 1 << 20));
        o.write(BLOCK + 10, &[7; 100], &base).unwrap();
        o.write(3 * BLOCK - 5, &[8; 10], &base).unwrap();
        o.write(5 * BLOCK, &[9; BLOCK as usize], &base).unwrap();
        o.zero(7 * BLOCK, 2 * BLOCK, &base).unwrap();
        assert!(o.usage().1 > 0, "some blocks spilled");
        for (offset, len) in [
            (0, SIZE),
            (1, 5),
            (BLOCK + 50, 3 * BLOCK),
            (6 * BLOCK, 4 * BLOCK + 100),
        ] {
            let len = len as usize;
            assert_eq!(
                read_by_pieces(&o, offset, len),
                read(&o, offset, len),
                "{len} at {offset}"
            );
        }
        let (mut pieces, mut dirty) = (Vec::new(), Vec::new());
        Overlay::new(limits(1 << 20, 1 << 20))
            .pieces(100, 50, &mut pieces, &mut dirty)
            .unwrap();
        assert_eq!(
            pieces,
            [Piece::Base {
                offset: 100,
                len: 50
            }]
        );
    }

    /// A plain in-memory model of the same writes.
    fn model() -> Vec<u8> {
        let mut m = vec![0; SIZE as usize];
        base(0, &mut m).unwrap();
        m
    }

    #[test]
    fn writes_and_zeroes_read_back_over_the_base() {
        for memory in [1 << 20, 3 * (BLOCK + ENTRY_COST), 0] {
            let mut o = Overlay::new(limits(memory, 1 << 20));
            let mut m = model();
            let ops: [(u64, usize, u8); 5] = [
                (100, 50, 0xaa),
                (BLOCK - 10, BLOCK as usize + 20, 0xbb),
                (3 * BLOCK, 2 * BLOCK as usize, 0xcc),
                (SIZE - 30, 30, 0xdd),
                (120, 10, 0xee),
            ];
            for (off, len, v) in ops {
                o.write(off, &vec![v; len], &base).unwrap();
                m[off as usize..off as usize + len].fill(v);
            }
            o.zero(BLOCK / 2, 3 * BLOCK, &base).unwrap();
            m[BLOCK as usize / 2..BLOCK as usize / 2 + 3 * BLOCK as usize].fill(0);
            o.write(2 * BLOCK, &[7; 10], &base).unwrap();
            m[2 * BLOCK as usize..2 * BLOCK as usize + 10].fill(7);
            assert_eq!(read(&o, 0, SIZE as usize), m, "memory limit {memory}");
            assert_eq!(read(&o, 4000, 300), m[4000..4300].to_vec());
            let (mem, disk) = o.usage();
            assert!(mem <= memory.max(16 * ENTRY_COST), "{mem} in memory");
            if memory == 0 {
                assert!(disk > 0 && o.spill.is_some());
            }
        }
    }

    #[test]
    fn the_limit_gives_overlay_full_and_changes_nothing() {
        let mut o = Overlay::new(limits(2 * (BLOCK + ENTRY_COST), 3 * (BLOCK + ENTRY_COST)));
        o.write(0, &vec![1; 2 * BLOCK as usize], &base).unwrap();
        let err = o.write(4 * BLOCK, &vec![2; 2 * BLOCK as usize], &base);
        assert!(matches!(err, Err(OverlayError::Full(_))), "{err:?}");
        assert_eq!(read(&o, 4 * BLOCK, 10), model()[4 * BLOCK as usize..][..10]);
        // Rewriting dirty blocks needs no room; one more block still fits (in the spill file).
        o.write(0, &vec![3; 2 * BLOCK as usize], &base).unwrap();
        o.write(5 * BLOCK, &[4; 1], &base).unwrap();
        assert_eq!(o.usage().1, BLOCK, "data on disk, its entry in memory");
        assert_eq!(
            read(&o, 5 * BLOCK, 2),
            vec![4, ((5 * BLOCK + 1) % 251) as u8]
        );
        assert!(matches!(
            o.write(7 * BLOCK, &[5], &base),
            Err(OverlayError::Full(OverlayFull { .. }))
        ));
        // Zeroing frees data: afterwards there is room again.
        o.zero(0, 2 * BLOCK, &base).unwrap();
        o.write(7 * BLOCK, &[5], &base).unwrap();
        assert_eq!(read(&o, 0, 3), vec![0, 0, 0]);
    }
}
