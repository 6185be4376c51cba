//! Sizes as people write them in flags and configs: `512K`, `64M`, `4G`, `1T`, `16MiB`, `1GB`
//! or a plain byte count (K, M, G and T are powers of 1024).

/// Parses a size; the error says what was wrong, for the caller to prefix with the field.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("{text:?}: unknown suffix (K, M, G or T)")),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 512K, 64M, 4G or a byte count"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_and_plain_counts() {
        for (text, want) in [
            ("4096", 4096),
            ("512K", 512 << 10),
            ("64m", 64 << 20),
            ("16MiB", 16 << 20),
            ("1GB", 1 << 30),
            ("2T", 2 << 40),
            (" 8M ", 8 << 20),
        ] {
            assert_eq!(parse_size(text), Ok(want), "{text}");
        }
        assert_eq!(
            parse_size("16X").unwrap_err(),
            "\"16X\": unknown suffix (K, M, G or T)"
        );
        assert!(parse_size("M").is_err());
        assert!(parse_size("-1").is_err());
        assert_eq!(
            parse_size("99999999999G").unwrap_err(),
            "\"99999999999G\" is too large"
        );
    }
}
