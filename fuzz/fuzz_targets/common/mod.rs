//! Helpers shared by the targets.
//!
//! Stateful targets (a server's state machine fed several packets) read their input as frames:
//! `[tag: u8][len: u16 big-endian][len bytes]`, repeated. The tag carries the target's per-frame
//! choices (time passing, which event); a length running past the end takes what is left, so
//! every input is a valid frame sequence and a single raw packet with a 3-byte prefix is one.

#![allow(dead_code)]

/// One frame of a stateful target's input.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// The target's choices for this frame.
    pub tag: u8,
    /// The payload (a packet, a chunk of a stream).
    pub bytes: &'a [u8],
}

/// Splits `data` into frames (at most `max` of them, so an input cannot run unboundedly long).
pub fn frames(mut data: &[u8], max: usize) -> Vec<Frame<'_>> {
    let mut out = Vec::new();
    while data.len() >= 3 && out.len() < max {
        let tag = data[0];
        let len = usize::from(u16::from_be_bytes([data[1], data[2]]));
        let rest = &data[3..];
        let take = len.min(rest.len());
        out.push(Frame {
            tag,
            bytes: &rest[..take],
        });
        data = &rest[take..];
    }
    out
}

/// Encodes frames (for seed corpora and regression tests).
pub fn encode(frames: &[(u8, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (tag, bytes) in frames {
        out.push(*tag);
        out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

/// A scratch directory for this process (on `/dev/shm` where there is one, so file work stays
/// in memory), removed when the process exits, as libFuzzer's runs end with `exit`; those of
/// crashed runs are removed by the next run.
pub fn scratch_dir(name: &str) -> std::path::PathBuf {
    use std::sync::OnceLock;
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    extern "C" fn cleanup() {
        if let Some(dir) = DIR.get() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    DIR.get_or_init(|| {
        let shm = std::path::Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        // A run that crashed (abort: no exit handlers) left its directory; remove those whose
        // process is gone.
        let prefix = format!("labboot-fuzz-{name}.");
        for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = file.strip_prefix(&prefix) {
                if !std::path::Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = base.join(format!("{prefix}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        // SAFETY: registers a plain `extern "C" fn` that only removes a directory.
        unsafe { libc::atexit(cleanup) };
        dir
    })
    .clone()
}
