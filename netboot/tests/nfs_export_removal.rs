//! Removing an NFS export closes the connections that used it, and only those.
//!
//! The server runs in-process on 127.0.0.1 with a table made before it
//! ([`NfsServer::with_table`]); a raw NFSv3/MOUNT client on blocking sockets mounts, reads, and
//! watches its connection after the export is removed from the table.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use netboot::nfs::xdr::{Reader, Writer};
use netboot::nfs::{ExportConfig, ExportTable, NfsConfig, NfsServer, NfsSettings};

const NFS: u32 = 100_003;
const MOUNT: u32 = 100_005;
const NFS3ERR_STALE: u32 = 70;
const MNT3ERR_NOENT: u32 = 2;

/// One TCP connection speaking RPC as root with AUTH_SYS.
struct Client {
    stream: TcpStream,
    xid: u32,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Client { stream, xid: 0 }
    }

    fn send(&mut self, prog: u32, proc_: u32, args: &[u8]) -> std::io::Result<()> {
        self.xid += 1;
        let mut cred = Writer::new();
        cred.u32(0).opaque(b"test").u32(0).u32(0).u32(0);
        let mut w = Writer::new();
        w.u32(0)
            .u32(self.xid)
            .u32(0)
            .u32(2)
            .u32(prog)
            .u32(3)
            .u32(proc_);
        w.u32(1).opaque(&cred.into_bytes()).u32(0).u32(0);
        w.fixed(args);
        let mut bytes = w.into_bytes();
        let mark = (bytes.len() as u32 - 4) | 0x8000_0000;
        bytes[..4].copy_from_slice(&mark.to_be_bytes());
        self.stream.write_all(&bytes)
    }

    /// One call; the results after the accepted-SUCCESS header.
    fn call(&mut self, prog: u32, proc_: u32, args: &[u8]) -> Vec<u8> {
        self.send(prog, proc_, args).expect("send call");
        let mut mark = [0u8; 4];
        self.stream
            .read_exact(&mut mark)
            .expect("reply record mark");
        let mark = u32::from_be_bytes(mark);
        assert!(mark & 0x8000_0000 != 0, "one fragment");
        let mut record = vec![0u8; (mark & 0x7fff_ffff) as usize];
        self.stream.read_exact(&mut record).expect("reply");
        let mut r = Reader::new(&record);
        assert_eq!(r.u32("xid").unwrap(), self.xid);
        assert_eq!(r.u32("mtype").unwrap(), 1);
        assert_eq!(r.u32("stat").unwrap(), 0);
        r.u32("verf.flavor").unwrap();
        r.opaque(400, "verf.body").unwrap();
        assert_eq!(r.u32("accept_stat").unwrap(), 0);
        record[record.len() - r.remaining()..].to_vec()
    }

    fn mount(&mut self, path: &str) -> Result<Vec<u8>, u32> {
        let mut a = Writer::new();
        a.opaque(path.as_bytes());
        let body = self.call(MOUNT, 1, &a.into_bytes());
        let mut r = Reader::new(&body);
        match r.u32("status").unwrap() {
            0 => Ok(r.opaque(64, "fh").unwrap().to_vec()),
            s => Err(s),
        }
    }

    fn getattr(&mut self, fh: &[u8]) -> Result<(), u32> {
        let mut a = Writer::new();
        a.opaque(fh);
        let body = self.call(NFS, 1, &a.into_bytes());
        match Reader::new(&body).u32("status").unwrap() {
            0 => Ok(()),
            s => Err(s),
        }
    }

    fn lookup(&mut self, dir: &[u8], name: &str) -> Vec<u8> {
        let mut a = Writer::new();
        a.opaque(dir).opaque(name.as_bytes());
        let body = self.call(NFS, 3, &a.into_bytes());
        let mut r = Reader::new(&body);
        assert_eq!(r.u32("status").unwrap(), 0, "LOOKUP {name}");
        r.opaque(64, "fh").unwrap().to_vec()
    }

    fn read(&mut self, fh: &[u8], count: u32) -> Vec<u8> {
        let mut a = Writer::new();
        a.opaque(fh).u64(0).u32(count);
        let body = self.call(NFS, 6, &a.into_bytes());
        let mut r = Reader::new(&body);
        assert_eq!(r.u32("status").unwrap(), 0, "READ");
        if r.bool("attributes follow").unwrap() {
            r.fixed(84, "fattr3").unwrap();
        }
        let _count = r.u32("count").unwrap();
        let _eof = r.bool("eof").unwrap();
        r.opaque(count as usize, "data").unwrap().to_vec()
    }

    /// Whether the server closed this connection: a read sees EOF or a reset (not a timeout).
    fn closed_by_server(&mut self) -> bool {
        let mut b = [0u8; 64];
        match self.stream.read(&mut b) {
            Ok(0) => true,
            Ok(n) => panic!("{n} unexpected bytes"),
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    }
}

fn export(name: &str, dir: &std::path::Path) -> ExportConfig {
    ExportConfig::parse_spec(&format!("{name}={}:ro", dir.display())).unwrap()
}

#[test]
fn removing_an_export_closes_the_connections_that_used_it() {
    let job = tempfile::tempdir().unwrap();
    std::fs::write(job.path().join("f"), b"kernel bytes").unwrap();
    let other = tempfile::tempdir().unwrap();

    // The table exists before the server, as the appliance will make it.
    let table = ExportTable::new();
    table.add(&export("/jobs/7", job.path())).unwrap();
    table.add(&export("/master", other.path())).unwrap();
    let config = NfsConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..NfsConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = NfsServer::with_table(NfsSettings::try_from(config).unwrap(), table.clone());
    assert_eq!(server.table().names(), ["/jobs/7", "/master"]);
    let listener = runtime.block_on(server.bind()).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = runtime.spawn(server.run(listener, async {
        let _ = stopped.await;
    }));

    // Like the kernel: MOUNT on one connection, NFS on another.
    let mut mounter = Client::connect(addr);
    let root = mounter.mount("/jobs/7").unwrap();
    let mut nfs = Client::connect(addr);
    let f = nfs.lookup(&root, "f");
    assert_eq!(nfs.read(&f, 100), b"kernel bytes");
    // Another board, on another export; and a client that only listed the exports.
    let mut board = Client::connect(addr);
    let master = board.mount("/master").unwrap();
    board.getattr(&master).unwrap();
    let mut lister = Client::connect(addr);
    lister.call(MOUNT, 5, &[]);
    assert_eq!(table.connections("/jobs/7"), Some(2));
    assert_eq!(table.connections("/master"), Some(1));

    assert!(table.remove("/jobs/7"));

    // Both connections that resolved into the export are closed by the server.
    assert!(nfs.closed_by_server(), "the NFS connection is closed");
    assert!(mounter.closed_by_server(), "the MOUNT connection is closed");
    // The others stay open and keep working.
    board.getattr(&master).unwrap();
    lister.call(MOUNT, 0, &[]);
    // A new call with the removed export's handle is refused, and so is mounting it again.
    let mut again = Client::connect(addr);
    assert_eq!(again.getattr(&root), Err(NFS3ERR_STALE));
    assert_eq!(again.getattr(&f), Err(NFS3ERR_STALE));
    assert_eq!(again.mount("/jobs/7"), Err(MNT3ERR_NOENT));
    // Calls that found nothing made it no user of anything; now it uses /master.
    again.getattr(&master).unwrap();
    assert_eq!(table.connections("/master"), Some(2));

    stop.send(()).unwrap();
    runtime.block_on(running).unwrap().unwrap();
}
