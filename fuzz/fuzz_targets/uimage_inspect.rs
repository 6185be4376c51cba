//! uImage (legacy U-Boot image) headers: `uboot_scripts::image::inspect` (what `labboot`
//! shows of a script image, every offset bounds-checked), and the dispatcher's reading of a
//! kernel's or ramdisk's header (`dispatcher::artifacts::uimage::unwrap`, for files a job
//! downloads).
//!
//! Input: byte 0 bit 0 set means "fix the CRCs first": the target writes the data CRC (over the
//! bytes the header announces, as far as they exist) and then the header CRC into the image, so
//! the fuzzer gets past both checks to the part tables (a CRC is not something it can guess).
//! The rest of the input is the image.
//!
//! Checked besides "no panic": the two readers agree (an image `inspect` accepts unwraps to its
//! data; one it refuses only for its part table still unwraps), every listed part lies inside
//! the image, a header re-encodes to its own bytes, and the listing prints.

#![no_main]

use dispatcher::artifacts::uimage::unwrap;
use libfuzzer_sys::fuzz_target;
use uboot_scripts::image::header::{Header, HEADER_LEN};
use uboot_scripts::image::{inspect, InspectError};

/// Writes the data CRC and then the header CRC of a legacy image in place.
fn fix_crcs(image: &mut [u8]) {
    if image.len() < HEADER_LEN {
        return;
    }
    let size = u32::from_be_bytes(image[12..16].try_into().unwrap()) as usize;
    let end = (HEADER_LEN + size).min(image.len());
    let dcrc = crc32fast::hash(&image[HEADER_LEN..end]);
    image[24..28].copy_from_slice(&dcrc.to_be_bytes());
    image[4..8].fill(0);
    let hcrc = crc32fast::hash(&image[..HEADER_LEN]);
    image[4..8].copy_from_slice(&hcrc.to_be_bytes());
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut owned = rest.to_vec();
    if mode & 1 == 1 {
        fix_crcs(&mut owned);
    }
    let image = &owned[..];
    let listed = inspect(image);
    let unwrapped = unwrap(image, "fuzz.img");
    match &listed {
        Ok(listing) => {
            let data = unwrapped
                .as_ref()
                .expect("inspect accepted what unwrap refuses");
            let size = listing.header.data_size as usize;
            assert_eq!(*data, &image[HEADER_LEN..HEADER_LEN + size]);
            for (i, p) in listing.parts.iter().enumerate() {
                let part = listing
                    .part(image, i)
                    .expect("a listed part is inside the image");
                assert_eq!(part.len(), p.len as usize);
                assert!(p.offset >= HEADER_LEN && p.offset + part.len() <= HEADER_LEN + size);
            }
            assert_eq!(listing.header.to_bytes()[..], image[..HEADER_LEN]);
            assert_eq!(
                Header::parse(&listing.header.to_bytes()).as_ref(),
                Some(&listing.header)
            );
            let _ = listing.header.name_str();
            let _ = format!("{listing}");
        }
        Err(e) => {
            let _ = (e.check(), e.to_string());
            if unwrapped.is_ok() {
                assert!(
                    matches!(e, InspectError::PartTable(_)),
                    "unwrap accepted, inspect: {e}"
                );
            }
        }
    }
});
