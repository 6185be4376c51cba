#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ (run from anywhere; idempotent).

Inputs: U-Boot's own packets (netboot/tests/data, and the capture copied into
fuzz/seeds/uboot-2023.01-arm64-dhcp-tftp.pcap), the repository's fixtures (jobs, device
dictionaries, the master recipe), and small hand-made valid inputs in each target's framing
(fuzz/fuzz_targets/common/mod.rs: [tag u8][len u16 BE][bytes] per frame). uImage seeds come
from `mkimage` when it is installed; device YAML seeds are dictionaries rendered with Python's
Jinja2 when it is installed (as LAVA renders them).
"""
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

FUZZ = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(FUZZ)
CORPUS = os.path.join(FUZZ, "corpus")


def frames(*parts):
    out = b""
    for tag, data in parts:
        out += bytes([tag]) + struct.pack(">H", len(data)) + data
    return out


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def pcap_udp(path):
    """(src_port, dst_port, payload) of every UDP datagram in an Ethernet pcap."""
    d = open(path, "rb").read()
    off, out = 24, []
    while off + 16 <= len(d):
        _, _, incl, _ = struct.unpack("<IIII", d[off:off + 16])
        pkt = d[off + 16:off + 16 + incl]
        off += 16 + incl
        ip = pkt[14:]
        ihl = (ip[0] & 15) * 4
        if ip[9] != 17:
            continue
        sp, dp, ln, _ = struct.unpack(">HHHH", ip[ihl:ihl + 8])
        out.append((sp, dp, ip[ihl + 8:ihl + ln]))
    return out


# --- DHCP: U-Boot's DISCOVER/REQUEST pairs, and RELEASE/DECLINE/INFORM made from them ---------
def dhcp():
    data = os.path.join(ROOT, "netboot/tests/data")
    pkts = {n: open(os.path.join(data, n), "rb").read() for n in sorted(os.listdir(data)) if n.endswith(".bin")}
    for n, p in pkts.items():
        put("dhcp_packet", n.replace(".bin", ""), frames((0, p)))
    for kind in ["", "-pxe", "-uuid"]:
        d, r = pkts[f"uboot-2023.01-discover{kind}.bin"], pkts[f"uboot-2023.01-request{kind}.bin"]
        put("dhcp_packet", f"flow{kind}", frames((0, d), (0, r), (20, r)))
        # The same request an hour later (lease expired), and with the probe answered.
        put("dhcp_packet", f"flow-late{kind}", frames((0x80, d), (0x80, d), (0, r), (61, r)))

        def with_type(p, t):
            i = p.index(bytes([53, 1]), 240)
            return p[:i + 2] + bytes([t]) + p[i + 3:]
        put("dhcp_packet", f"release{kind}", frames((0, d), (0, r), (1, with_type(r, 7))))
        put("dhcp_packet", f"decline{kind}", frames((0, d), (0, r), (1, with_type(r, 4)), (0, d)))
        put("dhcp_packet", f"inform{kind}", frames((0, with_type(r, 8))))
    cap = os.path.join(FUZZ, "seeds/uboot-2023.01-arm64-dhcp-tftp.pcap")
    client = [p for sp, dp, p in pcap_udp(cap) if sp == 68]
    put("dhcp_packet", "capture-all", frames(*[(i % 3, p) for i, p in enumerate(client)]))


# --- TFTP: U-Boot's requests and ACKs from the capture, then hand-made writes ---------------
def tftp():
    cap = os.path.join(FUZZ, "seeds/uboot-2023.01-arm64-dhcp-tftp.pcap")
    udp = pcap_udp(cap)
    rrqs = [p for sp, dp, p in udp if dp == 69 and p[:2] == b"\x00\x01"]
    acks = [p for sp, dp, p in udp if dp == 69 and p[:2] == b"\x00\x04"]
    for i, r in enumerate(rrqs):
        # Limits: blksize 1468, window 4; a 12 KiB file (3 × 4099 bytes).
        put("tftp_packet", f"capture-rrq-{i}", frames((0x35, r), (0, acks[0]), (4, acks[1])))
    ack = lambda n: struct.pack(">HH", 4, n)
    rrq = b"\x00\x01boot.scr\x00octet\x00blksize\x001468\x00tsize\x000\x00windowsize\x004\x00"
    put("tftp_packet", "read-window", frames((0x27, rrq), *[(0, ack(n)) for n in range(0, 12)], (2, b""), (0, ack(12))))
    put("tftp_packet", "read-timeouts", frames((0x17, rrq), (2, b""), (42, b""), (82, b""), (0, ack(0)), (3, b"")))
    put("tftp_packet", "read-netascii", frames((0x20, b"\x00\x01dir/file.txt\x00netascii\x00"), (0, ack(1)), (0, ack(2))))
    put("tftp_packet", "read-error", frames((0x10, rrq), (0, b"\x00\x05\x00\x01gone\x00")))
    data = lambda n, b: struct.pack(">HH", 3, n) + b
    wrq = b"\x00\x02logs/board.log\x00octet\x00blksize\x00512\x00tsize\x001100\x00"
    put("tftp_packet", "write", frames((0x01, wrq), (0, data(1, b"a" * 512)), (0, data(2, b"b" * 512)), (0, data(3, b"c" * 76)), (2, b"")))
    put("tftp_packet", "write-out-of-order", frames((0x05, wrq + b"windowsize\x004\x00"), (0, data(2, b"b" * 512)), (0, data(1, b"a" * 512)), (10, b"")))
    put("tftp_packet", "oack", frames((0, b"\x00\x06blksize\x001468\x00")))
    put("tftp_packet", "bad-names", frames((0, b"\x00\x01../etc/passwd\x00octet\x00"), (0, b"\x00\x01\\x\x00octet\x00")))


# --- NBD ---------------------------------------------------------------------------------------
IHAVEOPT = 0x49484156454F5054
REQ = 0x25609513


def opt(option, data=b""):
    return struct.pack(">QII", IHAVEOPT, option, len(data)) + data


def go(name, infos=(1, 2, 3)):
    return struct.pack(">I", len(name)) + name + struct.pack(">H", len(infos)) + b"".join(struct.pack(">H", i) for i in infos)


def req(kind, off, ln, flags=0, handle=1, payload=b""):
    return struct.pack(">IHHQQI", REQ, flags, kind, handle, off, ln) + payload


def nbd():
    flags = struct.pack(">I", 3)
    reqs = req(0, 0, 4096) + req(1, 100, 50, payload=b"w" * 50) + req(0, 0, 200, handle=2) + req(3, 0, 0) + req(2, 0, 0)
    put("nbd_handshake", "go-master", frames((0, flags + opt(8) + opt(3) + opt(6, go(b"master")) + opt(7, go(b"master"))), (0, reqs)))
    put("nbd_handshake", "export-name", frames((0, struct.pack(">I", 1)), (0, opt(1, b"job-42")), (0, req(1, 0, 4, payload=b"abcd") + req(4, 0, 4096) + req(6, 8192, 4096, flags=3))))
    put("nbd_handshake", "abort", frames((0, flags + opt(5) + opt(7, go(b"nope")) + opt(2))))
    put("nbd_handshake", "split", frames(*[(0, bytes([b])) for b in flags + opt(7, go(b"cow", ()))]))
    for mode, name in [(0, "ro"), (1, "cow"), (2, "rw"), (5, "cow-structured")]:
        seq = (
            req(0, 0, 4096)
            + req(1, 4000, 300, payload=bytes(range(256)) + b"x" * 44)
            + req(0, 3900, 600, handle=3)
            + req(6, 8192, 10000, handle=4)
            + req(0, 8000, 12000, handle=5)
            + req(4, 100000, 5000, handle=6)
            + req(1, 20000, 4096, flags=1, payload=b"y" * 4096)
            + req(0, 16384, 8192, handle=7)
            + req(5, 0, 65536) + req(3, 0, 0) + req(2, 0, 0)
        )
        put("nbd_transmit", name, frames((mode, seq[:100]), (0, seq[100:])))
    # 20 writes of a block each: past the memory limit (spill) and the total one (ENOSPC).
    big = b"".join(req(1, i * 4096, 4096, payload=bytes([i]) * 4096) for i in range(20)) + req(0, 0, 81920)
    put("nbd_transmit", "cow-spill", frames(*[(1, big[i:i + 30000]) for i in range(0, len(big), 30000)]))


# --- NFS: calls with tokens standing for handles -----------------------------------------------
def xdr_u32(*v):
    return b"".join(struct.pack(">I", x) for x in v)


def xdr_u64(v):
    return struct.pack(">Q", v)


def xdr_opaque(b):
    return struct.pack(">I", len(b)) + b + b"\0" * ((4 - len(b) % 4) % 4)


def fh(token):
    return struct.pack(">I", 24) + token


def call(xid, prog, vers, proc, args, uid=0):
    if uid is None:
        cred = xdr_u32(0) + xdr_opaque(b"")
    else:
        cred = xdr_u32(1) + xdr_opaque(xdr_u32(0) + xdr_opaque(b"board") + xdr_u32(uid, uid, 1, uid))
    body = xdr_u32(xid, 0, 2, prog, vers, proc) + cred + xdr_u32(0) + xdr_opaque(b"") + args
    return struct.pack(">I", 0x80000000 | len(body)) + body


def nfs():
    NFS, MNT, PMAP = 100003, 100005, 100000
    sattr = xdr_u32(1, 0o644, 0, 0, 0, 0)  # mode set; uid, gid, size, atime, mtime unset
    sattr_all = xdr_u32(1, 0o600, 1, 1000, 1, 1000, 1) + xdr_u64(10) + xdr_u32(1, 2, 5, 0)
    R, F, D, L, RO = b"ROOTFH00", b"FILEFH00", b"DIRFH000", b"LINKFH00", b"ROFH0000"
    name = xdr_opaque
    calls = {
        "mount": [call(1, MNT, 3, 0, b""), call(2, MNT, 3, 1, xdr_opaque(b"/jobs/42")), call(3, MNT, 3, 1, xdr_opaque(b"/master/")), call(4, MNT, 3, 5, b""), call(5, MNT, 3, 2, b""), call(6, MNT, 3, 3, xdr_opaque(b"/jobs/42"))],
        "portmap": [call(1, PMAP, 2, 0, b""), call(2, PMAP, 2, 3, xdr_u32(NFS, 3, 6, 0)), call(3, PMAP, 2, 4, b""), call(4, PMAP, 2, 1, xdr_u32(1, 2, 3, 4))],
        "getattr": [call(1, NFS, 3, 1, fh(R)), call(2, NFS, 3, 1, fh(F)), call(3, NFS, 3, 1, fh(RO))],
        "setattr": [call(1, NFS, 3, 2, fh(F) + sattr_all + xdr_u32(0)), call(2, NFS, 3, 2, fh(F) + sattr + xdr_u32(1, 0, 0))],
        "lookup": [call(1, NFS, 3, 3, fh(R) + name(b"file")), call(2, NFS, 3, 3, fh(D) + name(b"..")), call(3, NFS, 3, 3, fh(R) + name(b"..")), call(4, NFS, 3, 3, fh(R) + name(b"escape"))],
        "access": [call(1, NFS, 3, 4, fh(F) + xdr_u32(0x3f)), call(2, NFS, 3, 4, fh(R) + xdr_u32(0x3f), uid=1000)],
        "readlink": [call(1, NFS, 3, 5, fh(L))],
        "read": [call(1, NFS, 3, 6, fh(F) + xdr_u64(0) + xdr_u32(4096)), call(2, NFS, 3, 6, fh(F) + xdr_u64(6) + xdr_u32(5), uid=None)],
        "write": [call(1, NFS, 3, 7, fh(F) + xdr_u64(3) + xdr_u32(5, 2) + xdr_opaque(b"HELLO")), call(2, NFS, 3, 21, fh(F) + xdr_u64(0) + xdr_u32(0))],
        "create": [call(1, NFS, 3, 8, fh(R) + name(b"new") + xdr_u32(0) + sattr), call(2, NFS, 3, 8, fh(R) + name(b"new") + xdr_u32(1) + sattr), call(3, NFS, 3, 8, fh(D) + name(b"excl") + xdr_u32(2) + b"12345678", uid=1000)],
        "mkdir": [call(1, NFS, 3, 9, fh(R) + name(b"sub") + sattr), call(2, NFS, 3, 13, fh(R) + name(b"sub"))],
        "symlink": [call(1, NFS, 3, 10, fh(R) + name(b"etc") + sattr + xdr_opaque(b"/etc")), call(2, NFS, 3, 12, fh(R) + name(b"etc"))],
        "mknod": [call(1, NFS, 3, 11, fh(R) + name(b"fifo") + xdr_u32(7) + sattr), call(2, NFS, 3, 11, fh(R) + name(b"null") + xdr_u32(3) + sattr + xdr_u32(1, 3))],
        "rename": [call(1, NFS, 3, 14, fh(R) + name(b"file") + fh(D) + name(b"moved")), call(2, NFS, 3, 15, fh(F) + fh(D) + name(b"hard"))],
        "readdir": [call(1, NFS, 3, 16, fh(R) + xdr_u64(0) + b"\0" * 8 + xdr_u32(4096)), call(2, NFS, 3, 17, fh(R) + xdr_u64(0) + b"\0" * 8 + xdr_u32(1024, 8192)), call(3, NFS, 3, 17, fh(D) + xdr_u64(0) + b"\0" * 8 + xdr_u32(1024, 8192), uid=1000)],
        "fs": [call(1, NFS, 3, 18, fh(R)), call(2, NFS, 3, 19, fh(R)), call(3, NFS, 3, 20, fh(R)), call(4, NFS, 3, 0, b"")],
        "bad-versions": [call(1, NFS, 2, 1, fh(R)), call(2, MNT, 1, 1, b""), call(3, 99, 1, 0, b"")],
    }
    for n, cs in calls.items():
        put("nfs_rpc", n, b"\0" + frames(*[(0, c) for c in cs]))
    # Other address; records split into fragments and pieces.
    rec = call(9, NFS, 3, 1, fh(RO))
    body = rec[4:]
    frag = struct.pack(">I", 10) + body[:10] + struct.pack(">I", 0x80000000 | (len(body) - 10)) + body[10:]
    put("nfs_rpc", "fragments-other-client", b"\x01" + frames((0, frag[:7]), (0, frag[7:])))


# --- uImage: mkimage's own images ---------------------------------------------------------------
def uimage():
    if not shutil.which("mkimage"):
        print("make_seeds: mkimage missing, no uImage seeds", file=sys.stderr)
        return
    with tempfile.TemporaryDirectory() as t:
        a, b = os.path.join(t, "a"), os.path.join(t, "b")
        open(a, "w").write("echo hello\nsetenv bootargs console=ttyAMA0\n")
        open(b, "wb").write(b"\x00" * 300 + b"kernel")
        env = dict(os.environ, SOURCE_DATE_EPOCH="1700000000")
        for name, args in [
            ("script", ["-A", "arm64", "-O", "linux", "-T", "script", "-C", "none", "-n", "boot", "-d", a]),
            ("multi-script", ["-A", "arm", "-O", "linux", "-T", "script", "-C", "none", "-d", f"{a}:{b}"]),
            ("multi", ["-A", "arm", "-O", "linux", "-T", "multi", "-C", "none", "-d", f"{a}:{b}:{a}"]),
            ("kernel", ["-A", "arm", "-O", "linux", "-T", "kernel", "-C", "none", "-a", "0x80008000", "-e", "0x80008000", "-d", b]),
            ("ramdisk", ["-A", "arm64", "-O", "linux", "-T", "ramdisk", "-C", "gzip", "-d", b]),
        ]:
            out = os.path.join(t, name + ".img")
            subprocess.run(["mkimage", *args, out], check=True, env=env, stdout=subprocess.DEVNULL)
            img = open(out, "rb").read()
            put("uimage_inspect", name, b"\x00" + img)
            # CRCs fixed by the target: a part table running past the data.
            if name.startswith("multi"):
                put("uimage_inspect", name + "-fixed-crc", b"\x01" + img[:64] + b"\x00\x00\x10\x00" + img[68:])


# --- YAML and text inputs from the repository's fixtures ----------------------------------------
def texts():
    put("recipe_yaml", "master-arm64.yaml", open(os.path.join(ROOT, "imagebuilder/recipes/master-arm64.yaml"), "rb").read())
    put("recipe_yaml", "small.yaml", """arch: armhf
suite: bookworm
epoch: 0
base: {path: labboot-agent.sh, uid: 1, gid: 2}
packages: [busybox-static, "kmod"]
exclude: [man-db]
users: [{name: lab, uid: 1000, gid: 1000, home: /home/lab, shell: /bin/sh}]
groups: [{name: lab, gid: 1000, members: [lab]}]
directories: [{path: /srv/x/../y, mode: "0750", uid: 1000}]
files: [{path: /usr/sbin/agent, source: labboot-agent.sh, mode: "0755"}]
kernel: {package: linux-image-armmp}
initrd: {modules: [nbd, virtio_net]}
boot: {console: ttyS0}
ext4: {size: 64M}
outputs: [squashfs, tar, initrd, kernel, bootscr, ext4, dtbs]
""")
    jobs = os.path.join(ROOT, "dispatcher/fixtures/jobs")
    for n in sorted(os.listdir(jobs)):
        p = os.path.join(jobs, n)
        if n.endswith(".yaml"):
            put("lava_job", n, open(p, "rb").read())
    bad = os.path.join(jobs, "bad")
    for n in sorted(os.listdir(bad))[:12]:
        put("lava_job", "bad-" + n, open(os.path.join(bad, n), "rb").read())
    devices = os.path.join(ROOT, "dispatcher/fixtures/devices")
    for n in sorted(os.listdir(devices)):
        text = open(os.path.join(devices, n)).read()
        # The dictionary target's own form: template name, then key=value lines.
        lines = [l for l in text.splitlines() if l.startswith("{% set ")]
        ext = text.split("'")[1]
        kv = [ext]
        for l in lines:
            body = l[len("{% set "):-len(" %}")]
            k, v = body.split(" = ", 1)
            if "|" in v or "{" in v:
                continue
            v = v.strip().strip("'")
            if v.startswith("["):
                v = "[" + ",".join(i.strip().strip("'") for i in v[1:-1].split(",")) + "]"
            kv.append(f"{k}={v}")
        put("lava_device", "dict-" + n.replace(".jinja2", ""), b"\x01" + "\n".join(kv).encode())
        try:
            import jinja2
        except ImportError:
            print("make_seeds: no Python jinja2, no rendered device seeds", file=sys.stderr)
            continue
        import shlex
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(os.path.join(ROOT, "dispatcher/device-types")), trim_blocks=True, autoescape=False)
        # labboot's two filters (dispatcher/src/device/pycompat.rs), near enough for seeds.
        env.filters["yaml_quote"] = lambda v: "!!null \"null\"" if v is None or isinstance(v, jinja2.Undefined) else json.dumps(v)
        env.filters["shlex_quote"] = lambda v: shlex.quote(str(v))
        rendered = env.from_string(text).render(scheduled_device_name=n.replace(".jinja2", ""), scheduled_device_type=ext.replace(".jinja2", ""))
        put("lava_device", "yaml-" + n.replace(".jinja2", ""), b"\x00" + rendered.encode())
    # Test shell output: a run with signals, split signals, pattern results.
    run = (
        "<LAVA_SIGNAL_STARTRUN 0_smoke 1234-5678>\n"
        "<LAVA_SIGNAL_TESTSET START net>\n"
        "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=ping RESULT=pass>\n"
        "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=speed RESULT=pass MEASUREMENT=94.2 UNITS=Mbps>\n"
        "<LAVA_SIGNAL_TESTSET STOP>\n"
        "boot: PASS\nmem: FAIL\nbw: PASS 12.5 MBps\n"
        "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=split\n[   12.345678] usb 1-1: new device\n RESULT=fail>\n"
        "<LAVA_SIGNAL_ENDRUN 0_smoke 1234-5678>\n"
        "<LAVA_SIGNAL_STARTRUN 1_plain 9999>\n<LAVA_TEST_RUNNER EXIT>\n"
    ).encode()
    put("test_signals", "run", frames((1, run[:150]), (0, run[150:300]), (1, run[300:])))
    put("test_signals", "raise", frames((1, b"<LAVA_SIGNAL_STARTRUN 1_plain u>\r\n<LAVA_SIGNAL_TESTRAISE oops>\n<LAVA_SIGNAL_TESTREFERENCE TEST_CASE_ID=r RESULT=pass REFERENCE=http://x>\n")))
    put("agent_api", "checkin", json.dumps({"board": "lab-042", "mac": "52:54:00:12:34:56", "macs": ["52:54:00:12:34:56"], "addresses": ["10.0.2.15"], "kernel": "6.1.0-18-arm64", "cpus": 4, "memory_kb": 2048000, "root": "nbd", "uptime": "12.5"}))
    put("agent_api", "result", json.dumps({"exit": 0, "stdout": "aGVsbG8K", "stderr": ""}))
    put("agent_api", "result-bad", json.dumps({"exit": "1", "stdout": "!!"}))


def main():
    cap_src = os.path.join(ROOT, "..", "shared", "captures", "uboot-2023.01-arm64-dhcp-tftp.pcap")
    cap = os.path.join(FUZZ, "seeds/uboot-2023.01-arm64-dhcp-tftp.pcap")
    if not os.path.exists(cap) and os.path.exists(cap_src):
        shutil.copy(cap_src, cap)
    for f in [dhcp, tftp, nbd, nfs, uimage, texts]:
        f()
    for t in sorted(os.listdir(CORPUS)):
        print(f"{t}: {len(os.listdir(os.path.join(CORPUS, t)))} seeds")


if __name__ == "__main__":
    main()
