//! `labboot uboot inspect` on 1,000 damaged images: random byte flips, truncations, and
//! lengths that point past the end with consistent CRCs. It must never panic, must exit with
//! status 1, and must name the check that fails first (the oracle knows which region changed).

use std::process::Command;

use labboot_tests::binary::labboot_bin;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uboot_scripts::image::{build_multi_script, Arch, Header, ScriptSpec};

const HEADER: usize = 64;

fn base_image(rng: &mut StdRng) -> Vec<u8> {
    let parts: Vec<Vec<u8>> = (0..rng.random_range(1..=3))
        .map(|_| {
            let len = rng.random_range(1..3000);
            (0..len).map(|_| rng.random_range(b' '..=b'~')).collect()
        })
        .collect();
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    let spec = ScriptSpec {
        arch: Arch::ALL[rng.random_range(0..Arch::ALL.len())],
        name: "mutant".into(),
        time: rng.random(),
    };
    build_multi_script(&spec, &refs).unwrap()
}

/// Rewrites both CRCs so that only the structural checks can fail.
fn reseal(image: &mut [u8]) {
    let data_crc = crc32fast::hash(&image[HEADER..]);
    image[24..28].copy_from_slice(&data_crc.to_be_bytes());
    let mut h = Header::parse(image).unwrap();
    h.header_crc = h.compute_crc();
    image[..HEADER].copy_from_slice(&h.to_bytes());
}

/// A damaged image and the check that must fail.
fn mutate(rng: &mut StdRng, mut image: Vec<u8>) -> (Vec<u8>, &'static str) {
    let data_len = image.len() - HEADER;
    match rng.random_range(0..6) {
        0 => {
            // Truncate inside the header or inside the data, evenly.
            let len = if rng.random_bool(0.5) {
                rng.random_range(0..HEADER)
            } else {
                rng.random_range(HEADER..image.len())
            };
            image.truncate(len);
            (
                image,
                if len < HEADER {
                    "header-length"
                } else {
                    "data-length"
                },
            )
        }
        1 | 2 => {
            // Flip 1-3 bytes in a region picked evenly (magic, rest of header, data); the
            // earliest region touched decides the check.
            let mut first = usize::MAX;
            for _ in 0..rng.random_range(1..=3) {
                let at = match rng.random_range(0..3) {
                    0 => rng.random_range(0..4),
                    1 => rng.random_range(4..HEADER),
                    _ => rng.random_range(HEADER..image.len()),
                };
                image[at] ^= rng.random_range(1..=255u8);
                first = first.min(at);
            }
            let check = match first {
                0..4 => "magic",
                4..HEADER => "header-crc",
                _ => "data-crc",
            };
            (image, check)
        }
        3 => {
            // Header says there is more data than the file has.
            let extra = rng.random_range(1..1_000_000u32);
            let size = data_len as u32 + extra;
            image[12..16].copy_from_slice(&size.to_be_bytes());
            let mut h = Header::parse(&image).unwrap();
            h.header_crc = h.compute_crc();
            image[..HEADER].copy_from_slice(&h.to_bytes());
            (image, "data-length")
        }
        4 => {
            // A part length pointing past the end, CRCs consistent.
            image[HEADER..HEADER + 4]
                .copy_from_slice(&rng.random_range(data_len as u32..u32::MAX).to_be_bytes());
            reseal(&mut image);
            (image, "part-table")
        }
        _ => {
            // A length table without its terminator.
            let n = data_len / 4;
            for i in 0..n {
                image[HEADER + 4 * i..HEADER + 4 * i + 4].copy_from_slice(&1u32.to_be_bytes());
            }
            reseal(&mut image);
            (image, "part-table")
        }
    }
}

#[test]
fn inspect_never_panics_and_names_the_failed_check() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(20_261_123);
    let mut seen = std::collections::BTreeMap::<&str, usize>::new();
    for i in 0..1000 {
        let base = base_image(&mut rng);
        let (image, check) = mutate(&mut rng, base);
        let path = dir.path().join(format!("m{}.img", i % 8));
        std::fs::write(&path, &image).unwrap();
        let out = Command::new(labboot_bin())
            .args(["uboot", "inspect"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "mutant {i}: exit {:?}, stderr: {stderr}",
            out.status
        );
        assert!(
            !stderr.contains("panicked"),
            "mutant {i} panicked: {stderr}"
        );
        assert!(
            stderr.contains(&format!(": {check} check failed: ")),
            "mutant {i}: expected the {check} check to fail, got: {stderr}"
        );
        *seen.entry(check).or_default() += 1;
    }
    // Every kind of failure was exercised.
    for check in [
        "header-length",
        "magic",
        "header-crc",
        "data-length",
        "data-crc",
        "part-table",
    ] {
        assert!(
            seen.get(check).copied().unwrap_or(0) >= 20,
            "too few {check} cases: {seen:?}"
        );
    }
}

#[test]
fn inspect_accepts_the_undamaged_images() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    for i in 0..20 {
        let image = base_image(&mut rng);
        let path = dir.path().join(format!("ok{i}.img"));
        std::fs::write(&path, &image).unwrap();
        let out = Command::new(labboot_bin())
            .args(["uboot", "inspect"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("Image Name:   mutant"));
    }
}
