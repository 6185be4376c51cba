//! `labboot nfs` killed with SIGKILL while a client has UNSTABLE WRITEs and COMMITs in flight
//! on an `rw` export (issue 16): every range covered by a COMMIT reply is still in the file
//! after the kill and reads back byte-identical through a server restarted on the same
//! directory and port, asked with the file handle from before the kill (no new MOUNT); for the
//! sequential WRITE+COMMIT rounds the range has also left the page cache for the disk when the
//! reply arrives (cachestat shows no dirty page), which a kill alone could not show. The
//! restarted server answers WRITE and COMMIT with a new write verifier (RFC 1813, COMMIT), so a
//! client knows it must resend its uncommitted writes; the test does so, commits, and reads
//! everything back. Writes not covered by a COMMIT before the kill may or may not have
//! survived it: nothing is asserted about them.

mod fault_common;
mod nfs_common;

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fault_common::{block, unwritten_pages};
use netboot::nfs::xdr::{Reader, Writer};
use nfs_common::{export_arg, start, Client, NFS};

/// Size of one WRITE; offsets are multiples of it, so no two writes share a page.
const BLOCK: u64 = 32 * 1024;
/// Blocks [0, 20) are written and committed, in 4 rounds of 5.
const ROUNDS: u64 = 4;
const PER_ROUND: u64 = 5;
/// Blocks [20, 24) are never written: a hole, zeroes.
const GAP: std::ops::Range<u64> = 20..24;
/// Blocks [24, 28) are written UNSTABLE and acknowledged, never committed before the kill.
const ACKED: std::ops::Range<u64> = 24..28;
/// Blocks [28, 64) are written UNSTABLE by a pipelining client, over and over with a COMMIT
/// now and then, until the kill.
const PIPELINED: std::ops::Range<u64> = 28..64;

/// What the writes to block `s` after the committed rounds carry (those carry `block(s, ..)`).
fn late_seed(s: u64) -> u64 {
    1000 + s
}

/// One NFSv3 call record (with its record mark) as root, for the pipelining client.
fn call_record(xid: u32, proc_: u32, args: &[u8]) -> Vec<u8> {
    let mut cred = Writer::new();
    cred.u32(0).opaque(b"faults").u32(0).u32(0).u32(0);
    let mut w = Writer::new();
    w.u32(0)
        .u32(xid)
        .u32(0)
        .u32(2)
        .u32(NFS)
        .u32(3)
        .u32(proc_)
        .u32(1)
        .opaque(&cred.into_bytes())
        .u32(0)
        .u32(0)
        .fixed(args);
    let mut bytes = w.into_bytes();
    let mark = (bytes.len() as u32 - 4) | 0x8000_0000;
    bytes[..4].copy_from_slice(&mark.to_be_bytes());
    bytes
}

/// What a pipelined call was.
enum Call {
    /// An UNSTABLE WRITE of this block.
    Write(u64),
    /// A COMMIT, sent when these blocks' WRITEs had been answered.
    Commit(Vec<u64>),
}

/// State of the pipelining client.
#[derive(Default)]
struct Pipe {
    /// Bytes of the WRITEs sent or being sent.
    sent_bytes: AtomicU64,
    replies: AtomicU64,
    /// Calls sent and not yet answered, by xid.
    pending: Mutex<HashMap<u32, Call>>,
    /// Blocks whose WRITE has been answered (a block's data never changes).
    acked: Mutex<BTreeSet<u64>>,
    /// Blocks covered by an answered COMMIT: acknowledged before that COMMIT was sent.
    committed: Mutex<BTreeSet<u64>>,
    commits: AtomicU64,
    verifiers: Mutex<Vec<[u8; 8]>>,
    errors: Mutex<Vec<String>>,
    done: AtomicBool,
}

impl Pipe {
    /// Takes one reply record (after its record mark).
    fn reply(&self, record: &[u8]) {
        let mut r = Reader::new(record);
        let xid = r.u32("xid").unwrap();
        assert_eq!(r.u32("mtype").unwrap(), 1, "a reply");
        assert_eq!(r.u32("stat").unwrap(), 0, "accepted");
        r.u32("verf.flavor").unwrap();
        r.opaque(400, "verf.body").unwrap();
        assert_eq!(r.u32("accept_stat").unwrap(), 0, "SUCCESS");
        let status = r.u32("status").unwrap();
        if r.bool("pre_op_attr follows").unwrap() {
            r.fixed(24, "wcc_attr").unwrap();
        }
        if r.bool("post_op_attr follows").unwrap() {
            r.fixed(84, "fattr3").unwrap();
        }
        let call = self
            .pending
            .lock()
            .unwrap()
            .remove(&xid)
            .expect("a call sent");
        if status != 0 {
            self.errors
                .lock()
                .unwrap()
                .push(format!("xid {xid}: status {status}"));
            return;
        }
        if let Call::Write(_) = call {
            r.u32("count").unwrap();
            assert_eq!(r.u32("committed").unwrap(), 0, "UNSTABLE");
        }
        let verf: [u8; 8] = r.fixed(8, "verf").unwrap().try_into().unwrap();
        let mut verfs = self.verifiers.lock().unwrap();
        if !verfs.contains(&verf) {
            verfs.push(verf);
        }
        match call {
            Call::Write(s) => {
                self.acked.lock().unwrap().insert(s);
            }
            Call::Commit(covered) => {
                self.committed.lock().unwrap().extend(covered);
                self.commits.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

/// Sends UNSTABLE WRITEs of the [`PIPELINED`] blocks round and round on one connection, with
/// a COMMIT after every 8, without waiting for replies (a second thread reads them), until the
/// connection dies.
fn pipeline(port: u16, fh: Vec<u8>, pipe: Arc<Pipe>) -> Vec<std::thread::JoinHandle<()>> {
    let mut out = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut input = out.try_clone().unwrap();
    input
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let p = Arc::clone(&pipe);
    let reader = std::thread::spawn(move || {
        let mut mark = [0u8; 4];
        while input.read_exact(&mut mark).is_ok() {
            let len = (u32::from_be_bytes(mark) & 0x7fff_ffff) as usize;
            let mut record = vec![0u8; len];
            if input.read_exact(&mut record).is_err() {
                break;
            }
            p.reply(&record);
            p.replies.fetch_add(1, Ordering::SeqCst);
        }
        p.done.store(true, Ordering::SeqCst);
    });
    let writer = std::thread::spawn(move || {
        // The arguments made beforehand, so the client keeps ahead of the server.
        let args: Vec<Vec<u8>> = PIPELINED
            .map(|s| {
                let mut a = Writer::new();
                a.opaque(&fh).u64(s * BLOCK).u32(BLOCK as u32).u32(0);
                a.opaque(&block(late_seed(s), BLOCK as usize));
                a.into_bytes()
            })
            .collect();
        let mut xid = 1_000_000u32;
        for (n, s) in PIPELINED.cycle().enumerate() {
            xid += 1;
            pipe.pending.lock().unwrap().insert(xid, Call::Write(s));
            let record = call_record(xid, 7, &args[(s - PIPELINED.start) as usize]);
            pipe.sent_bytes.fetch_add(BLOCK, Ordering::SeqCst);
            if out.write_all(&record).is_err() {
                break;
            }
            if n % 8 == 7 {
                xid += 1;
                let mut a = Writer::new();
                a.opaque(&fh).u64(0).u32(0);
                let covered = pipe.acked.lock().unwrap().iter().copied().collect();
                pipe.pending
                    .lock()
                    .unwrap()
                    .insert(xid, Call::Commit(covered));
                if out
                    .write_all(&call_record(xid, 21, &a.into_bytes()))
                    .is_err()
                {
                    break;
                }
            }
        }
        let _ = out.shutdown(Shutdown::Both);
    });
    vec![reader, writer]
}

/// Dirty pages left in a range right after the reply that should have written it out; `0`
/// where the kernel cannot tell (see [`unwritten_pages`]), with `measured` cleared.
fn dirty_after_reply(path: &Path, slot: u64, measured: &mut bool) -> u64 {
    match unwritten_pages(path, slot * BLOCK, BLOCK) {
        Some(n) => n,
        None => {
            *measured = false;
            0
        }
    }
}

/// READ of `count` bytes at `offset`, which must all be there.
fn read_exact(c: &mut Client, fh: &[u8], offset: u64, count: u64) -> Vec<u8> {
    let (data, _eof) = c.read(fh, offset, count as u32).unwrap();
    assert_eq!(data.len() as u64, count, "short READ at {offset}");
    data
}

#[test]
fn committed_writes_survive_sigkill_and_the_verifier_changes() {
    let t0 = Instant::now();
    let d = tempfile::tempdir().unwrap();
    let exp = d.path().join("exp");
    std::fs::create_dir(&exp).unwrap();
    let path = exp.join("disk.img");
    std::fs::write(&path, b"").unwrap();
    // Writable by anyone: the clients call as root, which the export squashes to nobody.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let args = vec!["--export".to_string(), export_arg("exp", &exp, "rw")];
    let mut server = start(0, &args);
    let port = server.port;
    // The first start builds labboot when it is out of date: timed apart from the rest.
    let setup = t0.elapsed();
    let t0 = Instant::now();
    let mut c = server.client(0, 0);
    let root = c.mount("/exp").unwrap();
    let (fh, _) = c.lookup(&root, "disk.img").unwrap();

    // Rounds of UNSTABLE writes, each made durable by a COMMIT.
    let mut verf = None;
    let mut committed = Vec::new();
    let mut cachestat = true;
    let mut dirty = Vec::new();
    for round in 0..ROUNDS {
        let slots: Vec<u64> = (round * PER_ROUND..(round + 1) * PER_ROUND).collect();
        for &s in &slots {
            let (how, v) = c
                .write(&fh, s * BLOCK, &block(s, BLOCK as usize), 0)
                .unwrap();
            assert_eq!(how, 0, "an UNSTABLE write stays UNSTABLE");
            assert_eq!(
                *verf.get_or_insert(v),
                v,
                "one verifier per server instance"
            );
        }
        let v = c.commit(&fh).unwrap();
        assert_eq!(Some(v), verf, "COMMIT answers with the WRITEs' verifier");
        for &s in &slots {
            match dirty_after_reply(&path, s, &mut cachestat) {
                0 => {}
                n => dirty.push(format!("block {s}: {n} pages")),
            }
        }
        committed.extend(slots);
    }
    let verf1 = verf.unwrap();
    assert!(
        dirty.is_empty(),
        "ranges still dirty in the page cache after their COMMIT reply (the server replied \
         before fsync): {dirty:?}"
    );

    // Acknowledged UNSTABLE writes never committed, then a pipelining client with writes in
    // flight; kill -9 while it sends.
    for s in ACKED {
        let (how, v) = c
            .write(&fh, s * BLOCK, &block(late_seed(s), BLOCK as usize), 0)
            .unwrap();
        assert_eq!((how, v), (0, verf1));
    }
    // The control: the same check on writes nobody committed (usually still dirty; the kernel
    // may have written some back on its own, so only printed).
    let control: Option<u64> = ACKED
        .map(|s| unwritten_pages(&path, s * BLOCK, BLOCK))
        .sum();
    drop(c);
    let pipe = Arc::new(Pipe::default());
    let threads = pipeline(port, fh.clone(), Arc::clone(&pipe));
    let deadline = Instant::now() + Duration::from_secs(20);
    while pipe.replies.load(Ordering::SeqCst) < 40 || pipe.committed.lock().unwrap().len() < 8 {
        assert!(
            Instant::now() < deadline && !pipe.done.load(Ordering::SeqCst),
            "the pipelining client got only {} replies: {:?}",
            pipe.replies.load(Ordering::SeqCst),
            pipe.errors.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    server.process.kill();
    let killed_at = Instant::now();
    for t in threads {
        t.join().unwrap();
    }
    let commits = pipe.commits.load(Ordering::SeqCst);
    let acked_writes = pipe.replies.load(Ordering::SeqCst) - commits;
    let sent = pipe.sent_bytes.load(Ordering::SeqCst);
    let pipe_committed = pipe.committed.lock().unwrap().clone();
    let (writes_in_flight, commits_in_flight) = {
        let pending = pipe.pending.lock().unwrap();
        let commits = pending
            .values()
            .filter(|c| matches!(c, Call::Commit(_)))
            .count();
        (pending.len() - commits, commits)
    };
    assert!(
        pipe.errors.lock().unwrap().is_empty(),
        "{:?}",
        pipe.errors.lock().unwrap()
    );
    assert_eq!(
        *pipe.verifiers.lock().unwrap(),
        [verf1],
        "the pipelined WRITEs and COMMITs carry the same verifier"
    );
    assert!(
        sent > acked_writes * BLOCK,
        "writes were still in flight at the kill ({sent} bytes sent, {acked_writes} answered)"
    );
    assert!(
        !pipe_committed.is_empty(),
        "the pipelined COMMITs covered some blocks"
    );

    // The file itself, before any new server opens it.
    let file = std::fs::read(&path).unwrap();
    for &s in &committed {
        let at = (s * BLOCK) as usize;
        assert!(
            file.get(at..at + BLOCK as usize) == Some(&block(s, BLOCK as usize)[..]),
            "committed block {s} is not in the file after kill -9"
        );
    }
    for &s in &pipe_committed {
        let at = (s * BLOCK) as usize;
        assert!(
            file.get(at..at + BLOCK as usize) == Some(&block(late_seed(s), BLOCK as usize)[..]),
            "block {s}, covered by a pipelined COMMIT, is not in the file after kill -9"
        );
    }

    // Restart on the same directory and port; the old handle, no new MOUNT.
    let restart = Instant::now();
    let server = start(port, &args);
    let up = restart.elapsed();
    let mut c = server.client(0, 0);
    let attr = c
        .getattr(&fh)
        .expect("the old handle works after the restart");
    let recovered = killed_at.elapsed();
    assert!(attr.size >= (GAP.start * BLOCK), "size {}", attr.size);
    for &s in &committed {
        assert!(
            read_exact(&mut c, &fh, s * BLOCK, BLOCK) == block(s, BLOCK as usize),
            "committed block {s} reads back other bytes after the restart"
        );
    }
    for &s in &pipe_committed {
        assert!(
            read_exact(&mut c, &fh, s * BLOCK, BLOCK) == block(late_seed(s), BLOCK as usize),
            "block {s}, covered by a pipelined COMMIT, reads back other bytes after the restart"
        );
    }
    let committed_bytes = (committed.len() + pipe_committed.len()) as u64 * BLOCK;

    // A new verifier: the client learns that its uncommitted writes may be lost and resends
    // them (RFC 1813, COMMIT), then commits again under the new verifier.
    let mut resend: Vec<u64> = ACKED
        .chain(PIPELINED)
        .filter(|s| !pipe_committed.contains(s))
        .collect();
    let first = resend.remove(0);
    let (how, verf2) = c
        .write(
            &fh,
            first * BLOCK,
            &block(late_seed(first), BLOCK as usize),
            0,
        )
        .unwrap();
    assert_eq!(how, 0);
    assert_ne!(
        verf2, verf1,
        "the restarted server answers WRITE with the old write verifier: clients would never \
         resend writes lost in the kill"
    );
    let v = c.commit(&fh).unwrap();
    assert_eq!(v, verf2, "COMMIT after the restart: the new verifier");
    for &s in &resend {
        let (_, v) = c
            .write(&fh, s * BLOCK, &block(late_seed(s), BLOCK as usize), 0)
            .unwrap();
        assert_eq!(v, verf2);
    }
    assert_eq!(c.commit(&fh).unwrap(), verf2);
    for s in ACKED.chain(PIPELINED) {
        match dirty_after_reply(&path, s, &mut cachestat) {
            0 => {}
            n => panic!("block {s}: {n} pages still dirty after the COMMIT reply"),
        }
        assert!(
            read_exact(&mut c, &fh, s * BLOCK, BLOCK) == block(late_seed(s), BLOCK as usize),
            "block {s} reads back other bytes after the resend"
        );
    }
    for &s in &committed {
        assert!(read_exact(&mut c, &fh, s * BLOCK, BLOCK) == block(s, BLOCK as usize));
    }
    let gap = read_exact(
        &mut c,
        &fh,
        GAP.start * BLOCK,
        (GAP.end - GAP.start) * BLOCK,
    );
    assert!(gap.iter().all(|&b| b == 0), "blocks no one wrote changed");
    assert_eq!(
        c.getattr(&fh).unwrap().size,
        PIPELINED.end * BLOCK,
        "file size"
    );

    eprintln!(
        "nfs: {committed_bytes} bytes committed before the kill: {} blocks of {BLOCK} in \
         {ROUNDS} COMMITs, {} blocks by {commits} COMMITs of a pipelining client; killed with \
         {writes_in_flight} WRITEs ({sent} bytes sent, {} answered) and {commits_in_flight} \
         COMMITs of it in flight, and {} bytes of acknowledged uncommitted WRITEs; page-cache \
         check after each COMMIT: {}",
        committed.len(),
        pipe_committed.len(),
        acked_writes * BLOCK,
        (ACKED.end - ACKED.start) * BLOCK,
        match (cachestat, control) {
            (true, Some(n)) => format!(
                "0 dirty pages (control: {n} of {} pages of the uncommitted writes dirty)",
                (ACKED.end - ACKED.start) * BLOCK / 4096
            ),
            _ => "not available here".to_string(),
        }
    );
    eprintln!(
        "nfs: verifier {} before the kill, {} after; restarted in {:.0} ms, old handle answered \
         {:.0} ms after the kill; {} uncommitted blocks resent and committed; test took {:.1} s \
         after {:.1} s of setup (building labboot if needed)",
        hex(&verf1),
        hex(&verf2),
        up.as_secs_f64() * 1e3,
        recovered.as_secs_f64() * 1e3,
        resend.len() + 1,
        t0.elapsed().as_secs_f64(),
        setup.as_secs_f64()
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
