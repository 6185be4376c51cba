//! `labboot uboot mkscript` against the real `mkimage`, and `labboot uboot inspect` against the
//! real `dumpimage -l`, on generated scripts: sizes from one byte to 1 MiB, every architecture,
//! names from empty to the 32-byte limit, several SOURCE_DATE_EPOCH values and multi-part images.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use labboot_tests::binary::labboot_bin;
use labboot_tests::require;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

struct Case {
    arch: &'static str,
    name: String,
    parts: Vec<Vec<u8>>,
    epoch: Option<&'static str>,
}

fn script_of_len(rng: &mut StdRng, len: usize) -> Vec<u8> {
    let mut text = Vec::with_capacity(len);
    while text.len() < len {
        let line = format!(
            "setenv v{} {:x}\n",
            rng.random_range(0..1000),
            rng.random::<u64>()
        );
        text.extend_from_slice(line.as_bytes());
    }
    text.truncate(len);
    text
}

fn cases() -> Vec<Case> {
    let mut rng = StdRng::seed_from_u64(0x1abb007);
    let arches = ["arm", "arm64", "x86", "x86_64", "riscv"];
    let sizes = [
        1usize,
        2,
        3,
        4,
        5,
        63,
        64,
        511,
        512,
        513,
        4095,
        4096,
        65_537,
        300_001,
        1 << 20,
    ];
    let names = [
        "",
        "boot",
        "labboot bootstrap",
        "n",
        &"x".repeat(31),
        &"y".repeat(32),
    ];
    let epochs = [
        Some("0"),
        Some("1700000000"),
        Some("-1"),
        Some(" 12abc"),
        Some("4294967297"),
        Some("99999999999999999999"),
        Some("nonsense"),
    ];
    let mut cases = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        cases.push(Case {
            arch: arches[i % arches.len()],
            name: names[i % names.len()].to_string(),
            parts: vec![script_of_len(&mut rng, size)],
            epoch: epochs[i % epochs.len()],
        });
    }
    // A script of one newline (the smallest "empty" script mkimage accepts).
    cases.push(Case {
        arch: "arm64",
        name: "empty".into(),
        parts: vec![b"\n".to_vec()],
        epoch: Some("0"),
    });
    // Multi-part images: padding between parts.
    for (i, lens) in [[1usize, 5], [4, 4], [7, 1 << 16], [3, 3]]
        .iter()
        .enumerate()
    {
        cases.push(Case {
            arch: arches[(i + 2) % arches.len()],
            name: format!("multi{i}"),
            parts: lens.iter().map(|&l| script_of_len(&mut rng, l)).collect(),
            epoch: Some("1234567890"),
        });
    }
    cases
}

fn run(mut cmd: Command, epoch: Option<&str>) -> Output {
    cmd.env_remove("SOURCE_DATE_EPOCH").env("TZ", "UTC");
    if let Some(e) = epoch {
        cmd.env("SOURCE_DATE_EPOCH", e);
    }
    cmd.output().expect("run command")
}

fn write_parts(dir: &Path, i: usize, parts: &[Vec<u8>]) -> Vec<PathBuf> {
    parts
        .iter()
        .enumerate()
        .map(|(j, p)| {
            let path = dir.join(format!("case{i}-part{j}.txt"));
            std::fs::write(&path, p).unwrap();
            path
        })
        .collect()
}

#[test]
fn mkscript_is_byte_identical_to_mkimage() {
    if !require::tool("mkimage") || !require::tool("dumpimage") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cases = cases();
    assert!(cases.len() >= 20);
    for (i, case) in cases.iter().enumerate() {
        let inputs = write_parts(dir.path(), i, &case.parts);
        let ours = dir.path().join(format!("case{i}.labboot"));
        let theirs = dir.path().join(format!("case{i}.mkimage"));

        let mut cmd = Command::new(labboot_bin());
        cmd.args([
            "uboot", "mkscript", "--arch", case.arch, "--name", &case.name, "-o",
        ])
        .arg(&ours)
        .args(&inputs);
        let out = run(cmd, case.epoch);
        assert!(
            out.status.success(),
            "case {i}: labboot failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        let joined = inputs
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let mut cmd = Command::new("mkimage");
        cmd.args([
            "-A", case.arch, "-O", "linux", "-T", "script", "-C", "none", "-n", &case.name, "-d",
            &joined,
        ])
        .arg(&theirs);
        let out = run(cmd, case.epoch);
        assert!(
            out.status.success(),
            "case {i}: mkimage failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        let a = std::fs::read(&ours).unwrap();
        let b = std::fs::read(&theirs).unwrap();
        assert_eq!(
            a.len(),
            b.len(),
            "case {i} ({} {:?}): lengths differ",
            case.arch,
            case.name
        );
        if let Some(at) = a.iter().zip(&b).position(|(x, y)| x != y) {
            panic!(
                "case {i} ({} {:?}, epoch {:?}): first difference at byte {at}",
                case.arch, case.name, case.epoch
            );
        }

        // The listing matches dumpimage's, but for the Offset lines where dumpimage prints a
        // host address.
        let mut cmd = Command::new(labboot_bin());
        cmd.args(["uboot", "inspect"]).arg(&theirs);
        let ours = run(cmd, None);
        assert!(
            ours.status.success(),
            "case {i}: inspect failed: {}",
            String::from_utf8_lossy(&ours.stderr)
        );
        let mut cmd = Command::new("dumpimage");
        cmd.arg("-l").arg(&theirs);
        let theirs_listing = run(cmd, None);
        let strip = |o: &Output| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| !l.trim_start().starts_with("Offset = "))
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            strip(&ours),
            strip(&theirs_listing),
            "case {i}: listing differs from dumpimage -l"
        );
    }
}

#[test]
fn empty_input_is_refused_like_mkimage() {
    if !require::tool("mkimage") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, b"").unwrap();
    let out = Command::new(labboot_bin())
        .args(["uboot", "mkscript", "--arch", "arm64", "--name", "e", "-o"])
        .arg(dir.path().join("e.img"))
        .arg(&empty)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is empty"));
    assert!(
        !dir.path().join("e.img").exists(),
        "no output file on failure"
    );
    let out = Command::new("mkimage")
        .args([
            "-A", "arm64", "-O", "linux", "-T", "script", "-C", "none", "-n", "e", "-d",
        ])
        .arg(&empty)
        .arg(dir.path().join("m.img"))
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "mkimage accepts empty input now; revisit labboot's refusal"
    );
}

#[test]
fn long_names_are_refused_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("s.txt");
    std::fs::write(&script, b"echo hi\n").unwrap();
    let out = Command::new(labboot_bin())
        .args([
            "uboot",
            "mkscript",
            "--arch",
            "arm",
            "--name",
            &"n".repeat(33),
            "-o",
        ])
        .arg(dir.path().join("s.img"))
        .arg(&script)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("image name is 33 bytes long; the image header holds at most 32"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
}
