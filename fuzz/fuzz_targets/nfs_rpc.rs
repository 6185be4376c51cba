//! NFS: the TCP byte stream through record marking (`rpc::RecordBuffer`), each record through
//! the RPC call header, credentials and the procedure's XDR arguments into the filesystem layer
//! (`proto::Service::handle_with_file`, as `nfs::server`'s connection threads call it), for
//! NFSv3, MOUNT v3 and portmap v2, on real exports in a scratch directory.
//!
//! Input: byte 0 picks the client address (bit 0: one an export is limited to, or another);
//! the rest are frames (see `common`), each a piece of the stream. File handles cannot be
//! guessed, so in every record the 8-byte tokens `ROOTFH00` (the `rw` export's root), `FILEFH00`
//! (a file), `DIRFH000` (a directory), `LINKFH00` (a symlink) and `ROFH0000` (the `ro` export's
//! root) are replaced by those handles (24 bytes: XDR alignment is kept). Each input starts from
//! the same tree.
//!
//! Checked besides "no panic": every reply is one well-formed record answering the call's xid,
//! and nothing outside the exports changes (the scratch directory's other entries are checked).

#![no_main]

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use netboot::nfs::config::{Access, ExportConfig};
use netboot::nfs::proto::{Reply, Service};
use netboot::nfs::rpc::{self, RecordBuffer};
use netboot::nfs::{fs, ExportTable};

struct Lab {
    service: Service,
    rw: Arc<fs::Export>,
    ro: Arc<fs::Export>,
    rw_dir: PathBuf,
    outside: PathBuf,
}

fn populate(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() && !p.is_symlink() {
            std::fs::remove_dir_all(&p).unwrap();
        } else {
            std::fs::remove_file(&p).unwrap();
        }
    }
    std::fs::write(dir.join("file"), b"hello from the export\n").unwrap();
    std::fs::create_dir(dir.join("dir")).unwrap();
    std::fs::write(dir.join("dir/inner"), vec![0x42; 9000]).unwrap();
    std::os::unix::fs::symlink("file", dir.join("link")).unwrap();
    std::os::unix::fs::symlink("../outside", dir.join("escape")).unwrap();
}

fn lab() -> &'static Lab {
    static LAB: OnceLock<Lab> = OnceLock::new();
    LAB.get_or_init(|| {
        let dir = common::scratch_dir("nfs");
        let rw_dir = dir.join("rw");
        let ro_dir = dir.join("ro");
        let outside = dir.join("outside");
        for d in [&rw_dir, &ro_dir, &outside] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(outside.join("secret"), b"not exported\n").unwrap();
        populate(&rw_dir);
        populate(&ro_dir);
        let table = ExportTable::new();
        let export = |name: &str, dir: &Path, access, clients: Vec<String>| {
            table
                .add(&ExportConfig {
                    name: name.into(),
                    dir: dir.to_path_buf(),
                    access,
                    clients,
                    root_squash: None,
                })
                .unwrap()
        };
        let rw = export("/jobs/42", &rw_dir, Access::Rw, vec![]);
        let ro = export("/master", &ro_dir, Access::Ro, vec!["10.0.0.0/24".into()]);
        let service = Service::new(table);
        service.set_nfs_port(2049);
        Lab {
            service,
            rw,
            ro,
            rw_dir,
            outside,
        }
    })
}

fn handle(e: &fs::Export, path: &str) -> [u8; 24] {
    e.lookup_path(path).expect("fixture exists").0.encode()
}

fn substitute(record: &[u8], tokens: &[([u8; 8], [u8; 24])]) -> Vec<u8> {
    let mut out = Vec::with_capacity(record.len());
    let mut i = 0;
    'next: while i < record.len() {
        for (token, fh) in tokens {
            if record[i..].starts_with(token) {
                out.extend_from_slice(fh);
                i += token.len();
                continue 'next;
            }
        }
        out.push(record[i]);
        i += 1;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&who, rest)) = data.split_first() else {
        return;
    };
    let lab = lab();
    populate(&lab.rw_dir);
    let tokens = [
        (*b"ROOTFH00", handle(&lab.rw, "")),
        (*b"FILEFH00", handle(&lab.rw, "file")),
        (*b"DIRFH000", handle(&lab.rw, "dir")),
        (*b"LINKFH00", handle(&lab.rw, "link")),
        (*b"ROFH0000", handle(&lab.ro, "")),
    ];
    let addr = IpAddr::V4(if who & 1 == 0 {
        Ipv4Addr::new(10, 0, 0, 7)
    } else {
        Ipv4Addr::new(192, 168, 9, 9)
    });
    let mut records = RecordBuffer::new();
    for piece in common::frames(rest, 256) {
        records.extend(piece.bytes);
        loop {
            let record = match records.next_record() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                // The server closes the connection.
                Err(_) => return,
            };
            let record = substitute(&record, &tokens);
            let Some(reply) = lab.service.handle_with_file(&record, addr) else {
                continue;
            };
            let (head, more) = match reply {
                Reply::Bytes(w) => (w, 0),
                Reply::WithFile(w, data) => (w, data.len + netboot::nfs::xdr::pad(data.len)),
            };
            let bytes = rpc::finish_record_with(head, more);
            let mark = u32::from_be_bytes(bytes[..4].try_into().unwrap());
            assert_eq!(mark & 0x8000_0000, 0x8000_0000);
            assert_eq!((mark & 0x7fff_ffff) as usize, bytes.len() - 4 + more);
            assert!(
                bytes.len() >= 4 + 20,
                "reply too short for an RPC reply header"
            );
            assert_eq!(bytes[4..8], record[..4], "reply xid");
            assert!(more <= (1 << 20) + 4, "READ reply of {more} bytes");
        }
    }
    // Nothing escaped the exports.
    let names: Vec<_> = std::fs::read_dir(&lab.outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        ["secret"],
        "the directory beside the exports changed"
    );
    assert_eq!(
        std::fs::read(lab.outside.join("secret")).unwrap(),
        b"not exported\n"
    );
});
