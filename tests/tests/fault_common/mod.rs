//! Shared by the fault tests (`nbd_faults`, `nfs_faults`): how many pages of a file range are
//! still only in memory (dirty or under writeback), by cachestat(2), and test data that both a
//! writer and a later reader can regenerate.
//!
//! A SIGKILLed server leaves the page cache behind, so reading the file back after a restart
//! only shows that no write was held in the server's own memory. That a FLUSH or COMMIT reply
//! came after the bytes reached the disk shows in the page cache itself: right after the reply
//! the range has no dirty page left (the kernel's own writeback starts only after 30 s). Ask
//! before anything else writes to the file: the page cache keeps dirtiness per folio, and a
//! large folio may span neighbouring ranges, so a later write next door shows as dirty here.

#![allow(dead_code)] // each test file uses a different part

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

/// cachestat(2): the same number on every architecture (the unified table since 5.x).
const SYS_CACHESTAT: libc::c_long = 451;

#[repr(C)]
struct CachestatRange {
    off: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct Cachestat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

/// Pages of `path` in `offset..offset + len` that are dirty or under writeback; `None` where
/// the kernel cannot tell (no cachestat before Linux 6.5, or a tmpfs, which never writes back).
pub fn unwritten_pages(path: &Path, offset: u64, len: u64) -> Option<u64> {
    let file = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    // SAFETY: an all-zero statfs is a valid value of this plain C struct.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatfs writes into the struct we own, on a descriptor we own.
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut fs) } != 0 || fs.f_type == libc::TMPFS_MAGIC {
        return None;
    }
    let range = CachestatRange { off: offset, len };
    let mut stat = Cachestat::default();
    // SAFETY: cachestat reads `range` and writes `stat`, both live for the call; flags is 0.
    let rc = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const CachestatRange,
            &mut stat as *mut Cachestat,
            0u32,
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        // Too old a kernel, or a seccomp filter that does not know the call.
        if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) {
            return None;
        }
        panic!("cachestat {}: {e}", path.display());
    }
    Some(stat.nr_dirty + stat.nr_writeback)
}

/// `len` bytes that depend on `seed` only (splitmix64 words), so a block written before a crash
/// can be written again, or checked, after it.
pub fn block(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut i = 0u64;
    while out.len() < len {
        let mut z = seed
            .wrapping_mul(0x1000_0000_01b3)
            .wrapping_add(i)
            .wrapping_add(1)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}
