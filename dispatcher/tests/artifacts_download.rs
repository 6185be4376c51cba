//! Downloads over HTTP (a tiny server on 127.0.0.1 started by the test), file:// URLs and
//! plain paths: checksums, decompression, error classes and messages.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use dispatcher::artifacts::download::{fetch, fetch_with, FetchOptions};
use dispatcher::artifacts::{decompress, Progress};
use dispatcher::job::model::{Artifact, Compression};
use dispatcher::ErrorKind;

/// What the test server answers for a path.
#[derive(Clone)]
enum Reply {
    /// 200 with this body.
    Ok(Vec<u8>),
    /// This status, empty body.
    Status(u16),
    /// 200 announcing more bytes than are sent, then closing.
    Short(Vec<u8>),
    /// Accept, read the request, never answer.
    Hang,
    /// 302 to this path.
    Redirect(String),
}

/// Starts the server on a free port of 127.0.0.1; returns its base URL.
fn serve(routes: Vec<(&str, Reply)>) -> String {
    let routes: Arc<HashMap<String, Reply>> = Arc::new(
        routes
            .into_iter()
            .map(|(p, r)| (p.to_string(), r))
            .collect(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let routes = routes.clone();
            thread::spawn(move || answer(stream, &routes));
        }
    });
    format!("http://{addr}")
}

fn answer(mut stream: TcpStream, routes: &HashMap<String, Reply>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
    let reply = routes.get(&path).cloned().unwrap_or(Reply::Status(404));
    let _ = match reply {
        Reply::Ok(body) => write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .and_then(|_| stream.write_all(&body)),
        Reply::Status(code) => write!(
            stream,
            "HTTP/1.1 {code} Whatever\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
        Reply::Short(body) => write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len() + 1000
        )
        .and_then(|_| stream.write_all(&body)),
        Reply::Hang => {
            thread::sleep(Duration::from_secs(5));
            Ok(())
        }
        Reply::Redirect(to) => write!(
            stream,
            "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    };
}

fn artifact(key: &str, url: &str) -> Artifact {
    Artifact {
        key: key.into(),
        url: url.into(),
        ..Artifact::default()
    }
}

fn sha256_of(data: &[u8]) -> String {
    let mut h = dispatcher::artifacts::checksum::Hashes::new();
    h.update(data);
    h.finish().sha256
}

fn md5_of(data: &[u8]) -> String {
    let mut h = dispatcher::artifacts::checksum::Hashes::new();
    h.update(data);
    h.finish().md5
}

fn compress(data: &[u8], c: Compression) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = decompress::writer(&mut out, Some(c)).unwrap();
    w.write_all(data).unwrap();
    w.finish().unwrap();
    out
}

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

fn no_progress() -> impl FnMut(Progress) {
    |_| {}
}

#[test]
fn http_download_with_checksums_and_progress() {
    let data = payload(300_000);
    let base = serve(vec![("/images/zImage", Reply::Ok(data.clone()))]);
    let dir = tempfile::tempdir().unwrap();
    let mut a = artifact("kernel", &format!("{base}/images/zImage"));
    a.sha256 = Some(sha256_of(&data).to_uppercase());
    a.md5 = Some(md5_of(&data));
    let mut reports = Vec::new();
    let got = fetch(&a, dir.path(), &mut |p| reports.push(p)).unwrap();
    assert_eq!(got.path, dir.path().join("zImage"));
    assert_eq!(std::fs::read(&got.path).unwrap(), data);
    assert_eq!(got.size, data.len() as u64);
    assert_eq!(got.sha256, sha256_of(&data));
    assert_eq!(got.md5, md5_of(&data));
    assert_eq!(got.decompressed, None);
    let last = reports.last().unwrap();
    assert_eq!(last.done, data.len() as u64);
    assert_eq!(last.total, Some(data.len() as u64));
    assert!(reports.len() > 2);
    assert!(reports.windows(2).all(|w| w[0].done <= w[1].done));
    // Only the final file is left: no temporary names.
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&got.path).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o644);
}

#[test]
fn checksum_mismatch_is_a_job_error_and_leaves_nothing() {
    let data = payload(1000);
    let base = serve(vec![("/k", Reply::Ok(data.clone()))]);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{base}/k");
    let mut a = artifact("kernel", &url);
    a.sha256 = Some("00".repeat(32));
    let e = fetch(&a, dir.path(), &mut no_progress()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::JobError);
    assert_eq!(
        e.message,
        format!(
            "kernel: sha256 of {url} is {}, the job says {}",
            sha256_of(&data),
            "00".repeat(32)
        )
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    let mut a = artifact("dtb", &url);
    a.md5 = Some("ab".repeat(16));
    let e = fetch(&a, dir.path(), &mut no_progress()).unwrap_err();
    assert!(
        e.message.starts_with(&format!("dtb: md5 of {url} is ")),
        "{}",
        e.message
    );
}

#[test]
fn http_status_errors_name_status_and_url() {
    let base = serve(vec![
        ("/gone", Reply::Status(410)),
        ("/boom", Reply::Status(503)),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{base}/missing.dtb");
    let e = fetch(&artifact("dtb", &url), dir.path(), &mut no_progress()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::JobError);
    assert_eq!(e.message, format!("dtb: {url} returned 404 Not Found"));
    let e = fetch(
        &artifact("dtb", &format!("{base}/gone")),
        dir.path(),
        &mut no_progress(),
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::JobError);
    assert!(e.message.contains("returned 410"), "{}", e.message);
    let e = fetch(
        &artifact("dtb", &format!("{base}/boom")),
        dir.path(),
        &mut no_progress(),
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::InfrastructureError);
    assert!(
        e.message.contains(&format!("{base}/boom returned 503")),
        "{}",
        e.message
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn redirects_are_followed() {
    let data = payload(5000);
    let base = serve(vec![
        ("/old/Image", Reply::Redirect("/new/Image".into())),
        ("/new/Image", Reply::Ok(data.clone())),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let got = fetch(
        &artifact("kernel", &format!("{base}/old/Image")),
        dir.path(),
        &mut no_progress(),
    )
    .unwrap();
    assert_eq!(got.path, dir.path().join("Image"));
    assert_eq!(std::fs::read(&got.path).unwrap(), data);
}

#[test]
fn network_failures_are_infrastructure_errors() {
    let base = serve(vec![
        ("/short", Reply::Short(payload(100))),
        ("/hang", Reply::Hang),
    ]);
    let dir = tempfile::tempdir().unwrap();

    let e = fetch(
        &artifact("kernel", &format!("{base}/short")),
        dir.path(),
        &mut no_progress(),
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::InfrastructureError, "{}", e.message);
    assert!(
        e.message.contains(&format!("{base}/short")),
        "{}",
        e.message
    );

    let options = FetchOptions {
        read_timeout: Duration::from_millis(300),
        ..FetchOptions::default()
    };
    let start = std::time::Instant::now();
    let e = fetch_with(
        &artifact("kernel", &format!("{base}/hang")),
        dir.path(),
        &options,
        &mut no_progress(),
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::InfrastructureError, "{}", e.message);
    assert!(
        e.message.contains("timed out") || e.message.contains("timeout"),
        "{}",
        e.message
    );
    assert!(start.elapsed() < Duration::from_secs(4));

    // A port nobody listens on.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/zImage");
    let e = fetch(&artifact("kernel", &url), dir.path(), &mut no_progress()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InfrastructureError, "{}", e.message);
    assert!(
        e.message.starts_with("kernel: ") && e.message.contains(&url),
        "{}",
        e.message
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn deadline_and_cancel() {
    let data = payload(10_000);
    let base = serve(vec![("/k", Reply::Ok(data))]);
    let dir = tempfile::tempdir().unwrap();
    let a = artifact("kernel", &format!("{base}/k"));
    let options = FetchOptions {
        deadline: Some(std::time::Instant::now()),
        ..FetchOptions::default()
    };
    let e = fetch_with(&a, dir.path(), &options, &mut no_progress()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InfrastructureError, "{}", e.message);
    let cancel = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let options = FetchOptions {
        cancel: Some(cancel),
        ..FetchOptions::default()
    };
    let e = fetch_with(&a, dir.path(), &options, &mut no_progress()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Canceled);
}

#[test]
fn local_paths_and_file_urls() {
    let src = tempfile::tempdir().unwrap();
    let data = payload(70_000);
    let file = src.path().join("my dtb.dtb");
    std::fs::write(&file, &data).unwrap();
    let dir = tempfile::tempdir().unwrap();

    let mut a = artifact("dtb", file.to_str().unwrap());
    a.sha256 = Some(sha256_of(&data));
    let got = fetch(&a, dir.path(), &mut no_progress()).unwrap();
    assert_eq!(got.path, dir.path().join("my dtb.dtb"));
    assert_eq!(std::fs::read(&got.path).unwrap(), data);

    let url = format!("file://{}", file.to_str().unwrap().replace(' ', "%20"));
    let mut reports = Vec::new();
    let got = fetch(&artifact("dtb", &url), dir.path(), &mut |p| reports.push(p)).unwrap();
    assert_eq!(got.path, dir.path().join("my%20dtb.dtb"));
    assert_eq!(got.size, data.len() as u64);
    assert_eq!(reports.last().unwrap().total, Some(data.len() as u64));

    let missing = src.path().join("nope");
    let e = fetch(
        &artifact("kernel", missing.to_str().unwrap()),
        dir.path(),
        &mut no_progress(),
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::JobError);
    assert_eq!(
        e.message,
        format!("kernel: {} does not exist", missing.display())
    );

    let e = fetch(
        &artifact("kernel", &format!("file://{}", src.path().display())),
        dir.path(),
        &mut no_progress(),
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::JobError);
    assert!(e.message.contains("directory"), "{}", e.message);
}

#[test]
fn kernels_are_decompressed_after_the_check() {
    let data = payload(200_000);
    let mut routes = Vec::new();
    let kinds = [
        (Compression::Gz, "zImage.gz", "zImage"),
        (Compression::Xz, "Image.xz", "Image"),
        (Compression::Zstd, "Image.zst", "Image"),
        (Compression::Bz2, "vmlinux.bz2", "vmlinux"),
    ];
    let bodies: Vec<Vec<u8>> = kinds.iter().map(|(c, _, _)| compress(&data, *c)).collect();
    for ((c, name, _), body) in kinds.iter().zip(&bodies) {
        routes.push((
            Box::leak(format!("/{}/{name}", c.as_str()).into_boxed_str()) as &str,
            Reply::Ok(body.clone()),
        ));
    }
    let base = serve(routes);
    for ((c, name, final_name), body) in kinds.iter().zip(&bodies) {
        let dir = tempfile::tempdir().unwrap();
        let mut a = artifact("kernel", &format!("{base}/{}/{name}", c.as_str()));
        a.compression = Some(*c);
        a.sha256 = Some(sha256_of(body));
        let got = fetch(&a, dir.path(), &mut no_progress()).unwrap();
        assert_eq!(got.path, dir.path().join(final_name), "{c:?}");
        assert_eq!(got.decompressed, Some(*c));
        assert_eq!(got.size, body.len() as u64, "size counts the bytes fetched");
        assert_eq!(got.sha256, sha256_of(body), "checksum of the bytes fetched");
        assert_eq!(std::fs::read(&got.path).unwrap(), data, "{c:?}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "{c:?}");
    }
}

#[test]
fn ramdisk_rootfs_and_modules_stay_compressed() {
    let body = compress(&payload(5000), Compression::Gz);
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("initrd.cpio.gz");
    std::fs::write(&file, &body).unwrap();
    for key in ["ramdisk", "nfsrootfs", "modules"] {
        let dir = tempfile::tempdir().unwrap();
        let mut a = artifact(key, file.to_str().unwrap());
        a.compression = Some(Compression::Gz);
        let got = fetch(&a, dir.path(), &mut no_progress()).unwrap();
        assert_eq!(got.path, dir.path().join("initrd.cpio.gz"), "{key}");
        assert_eq!(got.decompressed, None);
        assert_eq!(std::fs::read(&got.path).unwrap(), body);
    }
}

#[test]
fn corrupt_compressed_data_is_a_job_error() {
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("zImage.gz");
    let mut body = compress(&payload(50_000), Compression::Gz);
    let n = body.len();
    body[n / 2] ^= 0xff;
    body[n / 2 + 1] ^= 0xff;
    std::fs::write(&file, &body).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut a = artifact("kernel", file.to_str().unwrap());
    a.compression = Some(Compression::Gz);
    let e = fetch(&a, dir.path(), &mut no_progress()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::JobError, "{}", e.message);
    assert!(
        e.message.starts_with("kernel: ") && e.message.contains("gz"),
        "{}",
        e.message
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn an_existing_file_is_replaced() {
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("k");
    std::fs::write(&file, b"new").unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("k"), b"old contents").unwrap();
    let got = fetch(
        &artifact("kernel", file.to_str().unwrap()),
        dir.path(),
        &mut no_progress(),
    )
    .unwrap();
    assert_eq!(std::fs::read(got.path).unwrap(), b"new");
    assert!(Path::new(&dir.path().join("k")).exists());
}
