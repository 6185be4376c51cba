//! `labboot nbd` killed with SIGKILL while a libnbd client has writes and FLUSHes in flight on
//! an `rw` export (issue 16): every write covered by a FLUSH reply (made on either of two
//! connections, the export offers multi-conn) or answered with FUA is still in the file after
//! the kill and reads back byte-identical through a restarted server that a new client reaches
//! at once; in the sequential rounds the range has also left the page cache for the disk when
//! the reply arrives (cachestat shows no dirty page), which a kill alone could not show. Writes
//! not covered by a completed FLUSH may or may not be there; nothing is asserted about them.

mod fault_common;
mod nbd_common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fault_common::unwritten_pages;
use nbd_common::{libnbd_python, pattern_image, python, Nbd, PYTHON};
use sha2::{Digest, Sha256};

/// Size of one written block; blocks are page-aligned so no two share a page.
const BLOCK: u64 = 64 * 1024;
/// The export: 128 blocks.
const IMAGE: u64 = 8 << 20;
/// Blocks [0, 28) take the flushed rounds, [28, 32) are never written, [32, 128) take the
/// writes and FLUSHes in flight at the kill.
const UNTOUCHED: std::ops::Range<u64> = 28 * BLOCK..32 * BLOCK;

/// The client: rounds of writes over two connections, each round made durable by a FLUSH on
/// one of them (plus one FUA write per round), each reply followed by a look at the page cache
/// (`-1`: not available); then writes with a FLUSH after every 8, 16 requests in flight at a
/// time, until the server dies under it. It prints each durable range as it learns of it.
const WRITER: &str = r#"
import ctypes, hashlib, os, sys, time, nbd
uri, path, check = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
rounds, per_round, block, first_unflushed, blocks = map(int, sys.argv[4:])
def say(*words):
    print(*words, flush=True)
def sha(data):
    return hashlib.sha256(data).hexdigest()
# cachestat(2), asked right after a reply and before any other write: the page cache keeps
# dirtiness per folio, and a large folio may span the next blocks too.
libc = ctypes.CDLL(None, use_errno=True)
class Range(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]
class Cachestat(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in ("cache", "dirty", "writeback", "evicted", "recent")]
fd = os.open(path, os.O_RDONLY)
def unwritten(off, n):
    if not check:
        return -1
    st = Cachestat()
    rc = libc.syscall(ctypes.c_long(451), ctypes.c_long(fd), ctypes.byref(Range(off, n)),
                      ctypes.byref(st), ctypes.c_uint(0))
    if rc != 0:
        raise OSError(ctypes.get_errno(), "cachestat")
    return st.dirty + st.writeback
a = nbd.NBD(); a.connect_uri(uri)
b = nbd.NBD(); b.connect_uri(uri)
assert a.can_flush() == 1 and a.can_fua() == 1 and a.can_multi_conn() == 1
assert a.get_size() == blocks * block
slot = 0
for r in range(rounds):
    done = []
    cookies = []
    for k in range(per_round):
        h = a if k % 2 == 0 else b
        data = os.urandom(block)
        buf = nbd.Buffer.from_bytearray(bytearray(data))
        cookies.append((h, h.aio_pwrite(buf, slot * block), buf))
        done.append((slot * block, data))
        slot += 1
    for h, cookie, _ in cookies:
        while not h.aio_command_completed(cookie):
            h.poll(1000)
    # The control: the same look before the FLUSH (the writes are usually still dirty).
    say("before-flush", sum(max(unwritten(off, len(data)), 0) for off, data in done))
    # Every write above has completed (on a or b): one FLUSH on one connection covers them all.
    (a if r % 2 == 0 else b).flush()
    dirty = [unwritten(off, len(data)) for off, data in done]
    for (off, data), d in zip(done, dirty):
        say("flushed", off, len(data), sha(data), d)
    data = os.urandom(block)
    b.pwrite(data, slot * block, nbd.CMD_FLAG_FUA)
    say("fua", slot * block, len(data), sha(data), unwritten(slot * block, len(data)))
    slot += 1
say("rounds-done")
# Then writes and FLUSHes in flight together: each block has one content in this phase, so a
# block whose write had completed when a FLUSH was sent is durable once that FLUSH completes,
# whatever else is in flight. (No page-cache check here: neighbours are being rewritten.)
late = {s: os.urandom(block) for s in range(first_unflushed, blocks)}
acked, reported = set(), set()
writes, flushes = {}, {}
completed = late_flushes = sent = 0
slot = first_unflushed
started = time.monotonic()
try:
    while time.monotonic() - started < 30:
        while a.aio_in_flight() < 16:
            buf = nbd.Buffer.from_bytearray(bytearray(late[slot]))
            writes[a.aio_pwrite(buf, slot * block)] = (slot, buf)
            slot = first_unflushed + (slot + 1 - first_unflushed) % (blocks - first_unflushed)
            sent += 1
            if sent % 8 == 0:
                flushes[a.aio_flush()] = set(acked)
        a.poll(1000)
        for cookie in list(writes):
            if a.aio_command_completed(cookie):
                acked.add(writes.pop(cookie)[0])
                completed += 1
                if completed == 64:
                    say("in-flight-running")
        for cookie in list(flushes):
            if a.aio_command_completed(cookie):
                covered = flushes.pop(cookie)
                late_flushes += 1
                for s in sorted(covered - reported):
                    say("late-flushed", s * block, block, sha(late[s]), -1)
                reported |= covered
    say("never-died", completed)
    sys.exit(1)
except Exception as e:
    say("died", completed, len(writes), late_flushes, len(flushes), type(e).__name__,
        str(e).replace("\n", " "))
"#;

/// After the restart: connect (timed) and print the sha256 of each `OFF:LEN` range read.
const READER: &str = r#"
import hashlib, sys, time, nbd
t = time.monotonic()
h = nbd.NBD(); h.connect_uri(sys.argv[1])
print("connected", time.monotonic() - t)
for arg in sys.argv[2:]:
    off, n = map(int, arg.split(":"))
    print(off, hashlib.sha256(h.pread(n, off)).hexdigest())
h.shutdown()
"#;

fn file_sha(file: &std::fs::File, off: u64, len: u64) -> String {
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, off).unwrap();
    format!("{:x}", Sha256::digest(&buf))
}

#[test]
fn flushed_writes_survive_sigkill_and_a_new_client_reads_them() {
    if !libnbd_python() {
        return;
    }
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let img = pattern_image(dir.path(), "job.img", IMAGE);
    let pristine = std::fs::read(&img).unwrap();
    let export = [format!("job={}:rw", img.display())];
    let mut nbd = Nbd::start(&export, &[]);
    // The first start builds labboot when it is out of date: timed apart from the rest.
    let setup = t0.elapsed();
    let t0 = Instant::now();

    let (rounds, per_round) = (4u64, 6u64);
    let first_unflushed = UNTOUCHED.end / BLOCK;
    let cachestat = unwritten_pages(&img, 0, BLOCK).is_some();
    let mut child = Command::new(PYTHON)
        .arg("-c")
        .arg(WRITER)
        .arg(nbd.uri("job"))
        .arg(&img)
        .arg(if cachestat { "1" } else { "0" })
        .args([rounds, per_round, BLOCK, first_unflushed, IMAGE / BLOCK].map(|n| n.to_string()))
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the python libnbd writer");
    let stdout = BufReader::new(child.stdout.take().unwrap());

    // Durable ranges (offset -> (len, sha256)), as the client learnt them from the replies.
    let mut durable: BTreeMap<u64, (u64, String)> = BTreeMap::new();
    let mut still_dirty = Vec::new();
    let mut late = 0u64;
    let mut control = 0u64;
    let mut killed_at = None;
    let mut died = None;
    for line in stdout.lines() {
        let line = line.unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [kind @ ("flushed" | "fua" | "late-flushed"), off, len, sha, dirty] => {
                let (off, len): (u64, u64) = (off.parse().unwrap(), len.parse().unwrap());
                // Pages of the range still only in memory when the reply arrived.
                if *dirty != "0" && *dirty != "-1" {
                    still_dirty.push(format!("{kind} {off}+{len}: {dirty} pages"));
                }
                if *kind == "late-flushed" {
                    late += 1;
                }
                durable.insert(off, (len, sha.to_string()));
            }
            ["before-flush", n] => control += n.parse::<u64>().unwrap(),
            ["rounds-done"] => {}
            ["in-flight-running"] => {
                // 64 writes of this phase have completed; 16 writes and FLUSHes are in flight.
                std::thread::sleep(Duration::from_millis(20));
                nbd.process.kill();
                killed_at = Some(Instant::now());
            }
            ["died", completed, writes, flushes, flushing, ..] => {
                let n = |w: &str| w.parse::<u64>().unwrap();
                died = Some((
                    n(completed),
                    n(writes),
                    n(flushes),
                    n(flushing),
                    line.clone(),
                ));
            }
            _ => panic!("unexpected line from the writer: {line}"),
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "the writer failed ({status})");
    let killed_at = killed_at.expect("the writer reached its unflushed writes");
    let (completed, inflight, late_flushes, flushing, died) =
        died.expect("the writer saw the server die");
    assert_eq!(
        durable.len() as u64 - late,
        rounds * (per_round + 1),
        "every flushed and FUA write of the rounds was reported"
    );
    assert!(inflight > 0, "writes were in flight at the kill: {died}");
    assert!(
        still_dirty.is_empty(),
        "ranges still dirty in the page cache after their FLUSH/FUA reply (the server replied \
         before fdatasync): {still_dirty:?}"
    );
    let flushed_bytes: u64 = durable.values().map(|(len, _)| len).sum();
    eprintln!(
        "nbd: {flushed_bytes} bytes durable: {} flushed/FUA writes of the rounds ({rounds} \
         FLUSHes over 2 connections) and {late} blocks of the last phase, covered by \
         {late_flushes} FLUSHes; killed with {completed} writes of that phase completed, \
         {inflight} writes and {flushing} FLUSHes in flight ({died}); page-cache check after \
         each reply of the rounds: {}",
        durable.len() as u64 - late,
        if cachestat {
            // Only printed: the kernel may have written some back on its own before the FLUSH.
            format!(
                "0 dirty pages (control: {control} of {} pages dirty just before the FLUSHes)",
                rounds * per_round * BLOCK / 4096
            )
        } else {
            "not available here".to_string()
        }
    );

    // The file itself, before any new server opens it.
    let file = std::fs::File::open(&img).unwrap();
    assert_eq!(
        file.metadata().unwrap().len(),
        IMAGE,
        "the image size changed"
    );
    for (&off, (len, sha)) in &durable {
        assert_eq!(
            &file_sha(&file, off, *len),
            sha,
            "the flushed write at {off}+{len} is not in the file after kill -9"
        );
    }
    let mut gap = vec![0u8; (UNTOUCHED.end - UNTOUCHED.start) as usize];
    file.read_exact_at(&mut gap, UNTOUCHED.start).unwrap();
    assert!(
        gap == pristine[UNTOUCHED.start as usize..UNTOUCHED.end as usize],
        "blocks no one wrote changed"
    );

    // Restart on the same file; a new client connects and reads every flushed write back.
    let restart = Instant::now();
    let nbd = Nbd::start(&export, &[]);
    let up = restart.elapsed();
    let ranges: Vec<String> = durable
        .iter()
        .map(|(off, (len, _))| format!("{off}:{len}"))
        .collect();
    let mut args = vec![nbd.uri("job")];
    args.extend(ranges);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = python(READER, &args);
    let recovered = killed_at.elapsed();
    let mut lines = out.lines();
    let connect: f64 = lines
        .next()
        .and_then(|l| l.strip_prefix("connected "))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("reader output: {out}"));
    let mut read_back = 0;
    for line in lines {
        let (off, sha) = line.split_once(' ').unwrap();
        let off: u64 = off.parse().unwrap();
        let (len, want) = &durable[&off];
        assert_eq!(
            sha, want,
            "the restarted server reads other bytes at {off}+{len}"
        );
        read_back += 1;
    }
    assert_eq!(
        read_back,
        durable.len(),
        "every flushed range was read back"
    );
    eprintln!(
        "nbd: restarted in {:.0} ms, new client connected in {:.1} ms, all {read_back} flushed \
         ranges read back byte-identical {:.0} ms after the kill; test took {:.1} s \
         after {:.1} s of setup (building labboot if needed)",
        up.as_secs_f64() * 1e3,
        connect * 1e3,
        recovered.as_secs_f64() * 1e3,
        t0.elapsed().as_secs_f64(),
        setup.as_secs_f64()
    );
}
