//! `labboot nbd` driven by libnbd (Debian's python3-libnbd, the library behind nbdsh): write
//! refusal on `ro`, per-connection copy-on-write, persistence on `rw`, reads past the end,
//! 50 concurrent connections, and the copy-on-write limit.

mod nbd_common;

use nbd_common::{libnbd_python, pattern_image, python, sha256, Nbd};

#[test]
fn ro_refuses_writes_with_eperm_and_reads_past_the_end_fail_cleanly() {
    if !libnbd_python() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = pattern_image(dir.path(), "m.img", 4 << 20);
    let before = sha256(&img);
    let nbd = Nbd::start(&[format!("master={}", img.display())], &[]);
    let out = python(
        r#"
import errno, sys, nbd
uri, path = sys.argv[1], sys.argv[2]
base = open(path, "rb").read()
h = nbd.NBD()
h.set_strict_mode(0)  # let every bad request reach the server instead of libnbd refusing it
h.connect_uri(uri)
assert h.is_read_only() == 1
size = h.get_size()
def fails(what, errnum, f):
    try:
        f()
    except nbd.Error as e:
        assert e.errnum == errnum, f"{what}: errno {e.errnum}, wanted {errnum}: {e}"
        print(f"{what}: {errno.errorcode[e.errnum]}")
        return
    raise AssertionError(f"{what} succeeded")
fails("write", errno.EPERM, lambda: h.pwrite(b"x" * 512, 0))
fails("write_zeroes", errno.EPERM, lambda: h.zero(4096, 0))
fails("trim", errno.EPERM, lambda: h.trim(4096, 0))
fails("read past the end", errno.EINVAL, lambda: h.pread(4096, size - 100))
fails("read beyond the end", errno.EINVAL, lambda: h.pread(1, size))
# The connection survives every refusal.
assert h.pread(4096, size - 4096) == base[-4096:]
h.flush()
h.shutdown()
# With libnbd's own checks on, the client refuses before sending; still an error, never data.
h = nbd.NBD()
h.connect_uri(uri)
fails("strict write", errno.EPERM, lambda: h.pwrite(b"x", 0))
try:
    h.pread(10, size - 5)
    raise AssertionError("strict read past the end succeeded")
except nbd.Error as e:
    print("strict read past the end:", e.errnum)
print("ok")
"#,
        &[&nbd.uri("master"), img.to_str().unwrap()],
    );
    assert!(out.contains("write: EPERM"), "{out}");
    assert!(out.contains("read past the end: EINVAL"), "{out}");
    assert!(out.trim_end().ends_with("ok"), "{out}");
    assert_eq!(sha256(&img), before);
}

#[test]
fn cow_writes_are_seen_by_their_connection_only_and_the_base_never_changes() {
    if !libnbd_python() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = pattern_image(dir.path(), "m.img", (8 << 20) + 1000);
    let before = sha256(&img);
    let nbd = Nbd::start(&[format!("master={}:cow", img.display())], &[]);
    let out = python(
        r#"
import sys, nbd
uri, path = sys.argv[1], sys.argv[2]
base = open(path, "rb").read()
a = nbd.NBD(); a.connect_uri(uri)
b = nbd.NBD(); b.connect_uri(uri)
size = a.get_size()
assert size == len(base)
writes = [(0, b"\xaa" * 512), (4000, b"\xbb" * 10000), (size - 700, b"\xcc" * 700),
          (1 << 20, bytes(range(256)) * 4096)]
model = bytearray(base)
for off, data in writes:
    a.pwrite(data, off)
    model[off:off + len(data)] = data
a.zero(8192, 20000)
model[20000:28192] = bytes(8192)
a.trim(4096 * 2, 4096 * 300)
model[4096 * 300:4096 * 302] = bytes(8192)
a.pwrite(b"fua!", 123456, nbd.CMD_FLAG_FUA)
model[123456:123460] = b"fua!"
a.flush()
# Same connection: every write is read back, in one read and in pieces.
assert a.pread(size, 0) == bytes(model), "cow read-back differs"
for off in range(0, size, 999_983):
    n = min(70_001, size - off)
    assert a.pread(n, off) == bytes(model[off:off + n])
# Another connection, open at the same time, sees the base only.
assert b.pread(size, 0) == base, "a cow write leaked to another connection"
a.shutdown()
# After reconnecting everything is gone.
c = nbd.NBD(); c.connect_uri(uri)
assert c.pread(size, 0) == base, "cow writes survived a reconnect"
print("ok")
"#,
        &[&nbd.uri("master"), img.to_str().unwrap()],
    );
    assert_eq!(out.trim(), "ok");
    assert_eq!(sha256(&img), before, "the cow base file changed");
}

#[test]
fn rw_writes_persist_after_flush() {
    if !libnbd_python() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = pattern_image(dir.path(), "job.img", 2 << 20);
    let mut model = std::fs::read(&img).unwrap();
    let nbd = Nbd::start(&[format!("job={}:rw", img.display())], &[]);
    python(
        r#"
import sys, nbd
h = nbd.NBD(); h.connect_uri(sys.argv[1])
assert h.can_multi_conn() == 1 and h.can_flush() == 1 and h.can_fua() == 1
h.pwrite(b"persisted" * 1000, 70000)
h.pwrite(b"fua", 5, nbd.CMD_FLAG_FUA)
h.zero(65536, 1 << 20, nbd.CMD_FLAG_NO_HOLE)
h.flush()
h.shutdown()
h = nbd.NBD(); h.connect_uri(sys.argv[1])
assert h.pread(9, 70000) == b"persisted"
"#,
        &[&nbd.uri("job")],
    );
    model[70000..79000].copy_from_slice(&b"persisted".repeat(1000));
    model[5..8].copy_from_slice(b"fua");
    model[1 << 20..(1 << 20) + 65536].fill(0);
    assert!(
        std::fs::read(&img).unwrap() == model,
        "the rw file does not hold the flushed writes"
    );
}

#[test]
fn fifty_concurrent_connections_read_correct_bytes() {
    if !libnbd_python() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = pattern_image(dir.path(), "m.img", 32 << 20);
    let nbd = Nbd::start(
        &[
            format!("master={}", img.display()),
            format!("overlay={}:cow", img.display()),
        ],
        &[],
    );
    let out = python(
        r#"
import random, sys, threading, nbd
master, overlay, path = sys.argv[1], sys.argv[2], sys.argv[3]
base = open(path, "rb").read()
handles = []
for i in range(50):
    h = nbd.NBD()
    h.connect_uri(master if i % 2 == 0 else overlay)
    handles.append(h)
errors = []
def reader(i, h):
    rng = random.Random(i)
    try:
        for _ in range(40):
            n = rng.choice([1, 511, 4096, 65536, 300001, 1 << 20])
            off = rng.randrange(0, len(base) - n + 1)
            if h.pread(n, off) != base[off:off + n]:
                errors.append(f"connection {i}: wrong bytes at {off}+{n}")
                return
    except Exception as e:
        errors.append(f"connection {i}: {e}")
threads = [threading.Thread(target=reader, args=(i, h)) for i, h in enumerate(handles)]
for t in threads: t.start()
for t in threads: t.join()
assert not errors, errors
# Many requests in flight on one connection, completing in any order.
h = handles[0]
cookies = {}
for k in range(64):
    off = random.Random(k).randrange(0, len(base) - 65536)
    buf = nbd.Buffer(65536)
    cookies[h.aio_pread(buf, off)] = (buf, off)
while h.aio_in_flight() > 0:
    h.poll(-1)
for cookie, (buf, off) in cookies.items():
    assert h.aio_command_completed(cookie)
    assert buf.to_bytearray() == base[off:off + 65536]
print("ok", len(handles))
"#,
        &[
            &nbd.uri("master"),
            &nbd.uri("overlay"),
            img.to_str().unwrap(),
        ],
    );
    assert_eq!(out.trim(), "ok 50");
}

#[test]
fn the_cow_limit_gives_enospc_not_a_crash() {
    if !libnbd_python() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = pattern_image(dir.path(), "m.img", 16 << 20);
    let nbd = Nbd::start(
        &[format!("master={}:cow", img.display())],
        &["--cow-memory", "1M", "--cow-limit", "2M"],
    );
    let out = python(
        r#"
import errno, sys, nbd
h = nbd.NBD(); h.connect_uri(sys.argv[1])
written = 0
chunk = b"\x5a" * 262144
try:
    for off in range(0, 16 << 20, len(chunk)):
        h.pwrite(chunk, off)
        written += len(chunk)
    raise AssertionError("16 MiB fit in a 2 MiB overlay")
except nbd.Error as e:
    assert e.errnum == errno.ENOSPC, e
# What fit (in memory and in the spill file) still reads back; the connection still works.
assert 1 << 20 < written < 2 << 20, written
assert h.pread(written, 0) == b"\x5a" * written
h.pwrite(b"again", 10)
assert h.pread(5, 10) == b"again"
# A second connection has its own budget.
g = nbd.NBD(); g.connect_uri(sys.argv[1])
g.pwrite(chunk, 0)
print("ok", written)
"#,
        &[&nbd.uri("master")],
    );
    assert!(out.starts_with("ok "), "{out}");
    let lines = nbd.process.lines();
    assert!(
        lines.iter().any(|l| l.contains("overlay full")),
        "the ENOSPC is logged:\n{}",
        lines.join("\n")
    );
}
