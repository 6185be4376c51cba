//! The four compressions, both ways, checked against the command-line tools (gzip, xz, zstd,
//! bzip2) that LAVA itself runs.

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use dispatcher::artifacts::decompress::{self, detect};
use dispatcher::job::model::Compression;

const ALL: [Compression; 4] = [
    Compression::Gz,
    Compression::Xz,
    Compression::Zstd,
    Compression::Bz2,
];

fn tool(c: Compression) -> &'static str {
    match c {
        Compression::Gz => "gzip",
        Compression::Xz => "xz",
        Compression::Zstd => "zstd",
        Compression::Bz2 => "bzip2",
    }
}

/// Runs `cmd args` with `input` on stdin; returns stdout (and asserts success).
fn pipe(cmd: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(out.status.success(), "{cmd} {args:?} failed");
    out.stdout
}

fn data() -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..60_000u32 {
        v.extend_from_slice(format!("line {i} {}\n", i % 97).as_bytes());
    }
    v
}

fn ours(input: &[u8], c: Option<Compression>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = decompress::writer(&mut out, c).unwrap();
    w.write_all(input).unwrap();
    w.finish().unwrap();
    out
}

fn unpack(input: &[u8], c: Option<Compression>) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    decompress::reader(input, c).read_to_end(&mut out)?;
    Ok(out)
}

#[test]
fn our_output_is_read_by_the_tools_and_theirs_by_us() {
    let data = data();
    for c in ALL {
        let packed = ours(&data, Some(c));
        assert!(packed.len() < data.len() / 2, "{c:?} compresses");
        assert_eq!(detect(&packed), Some(c));
        assert_eq!(
            pipe(tool(c), &["-dc"], &packed),
            data,
            "{} reads ours",
            tool(c)
        );
        let theirs = pipe(tool(c), &["-c"], &data);
        assert_eq!(
            unpack(&theirs, Some(c)).unwrap(),
            data,
            "we read {}",
            tool(c)
        );
        assert_eq!(unpack(&packed, Some(c)).unwrap(), data);
    }
    assert_eq!(ours(&data, None), data);
    assert_eq!(unpack(&data, None).unwrap(), data);
}

#[test]
fn xz_uses_the_crc32_check_the_kernel_needs() {
    let packed = ours(b"hello", Some(Compression::Xz));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.xz");
    std::fs::write(&file, &packed).unwrap();
    let out = Command::new("xz")
        .args(["--robot", "-lv"])
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("CRC32"), "{text}");
    // Stream flags byte 7: check type 1 is CRC32.
    assert_eq!(packed[7], 0x01);
}

#[test]
fn concatenated_streams_are_read_whole() {
    for c in ALL {
        let mut both = pipe(tool(c), &["-c"], b"first ");
        if c == Compression::Zstd {
            // A skippable frame between the two.
            both.extend_from_slice(&[0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 1, 2, 3]);
        }
        both.extend(ours(b"second", Some(c)));
        assert_eq!(unpack(&both, Some(c)).unwrap(), b"first second", "{c:?}");
    }
}

#[test]
fn corrupt_and_truncated_streams_are_errors_not_panics() {
    let data = data();
    for c in ALL {
        let packed = ours(&data, Some(c));
        let truncated = &packed[..packed.len() / 2];
        assert!(unpack(truncated, Some(c)).is_err(), "{c:?} truncated");
        let mut flipped = packed.clone();
        for i in (20..flipped.len() - 20).step_by(97) {
            flipped[i] ^= 0x5a;
        }
        let r = unpack(&flipped, Some(c));
        assert!(r.is_err() || r.unwrap() != data, "{c:?} corrupt");
        assert!(
            unpack(b"not compressed at all", Some(c)).is_err(),
            "{c:?} garbage"
        );
    }
}

#[test]
fn empty_input() {
    for c in ALL {
        let packed = ours(b"", Some(c));
        assert_eq!(unpack(&packed, Some(c)).unwrap(), b"");
        assert_eq!(pipe(tool(c), &["-dc"], &packed), b"");
    }
}
