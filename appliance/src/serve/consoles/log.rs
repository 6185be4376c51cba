//! A board's console log: `<state_dir>/consoles/<board>.log`, every line prefixed with the UTC
//! time its first byte arrived (`2026-12-04T13:00:00.123Z `), the line's bytes kept as they
//! came (`\r` included). The appliance's own notes (connected, dropped) are lines of their own
//! starting with `[labboot] `.
//!
//! Rotation: when the file has reached `max_bytes`, the next line starts a new file and the
//! old ones shift (`.1` is the newest, `.<keep>` the oldest, dropped at the next rotation); a
//! line longer than 64 KiB past the cap is cut so the cap holds. `keep: 0` keeps no old file.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Default size at which a log is rotated (4 MiB).
pub const DEFAULT_MAX_BYTES: u64 = 4 * 1024 * 1024;
/// Default number of rotated files kept (`.1` … `.3`).
pub const DEFAULT_KEEP: usize = 3;
/// How far past the cap a line without a newline may grow before the file is rotated anyway.
const LONG_LINE_SLACK: u64 = 64 * 1024;

/// Size cap and rotated files kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSettings {
    /// A log at or above this size is rotated at its next line.
    pub max_bytes: u64,
    /// Rotated files kept.
    pub keep: usize,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            max_bytes: DEFAULT_MAX_BYTES,
            keep: DEFAULT_KEEP,
        }
    }
}

/// One board's console log, open for appending.
pub struct ConsoleLog {
    path: PathBuf,
    file: File,
    size: u64,
    at_line_start: bool,
    settings: LogSettings,
}

/// `2026-12-04T13:00:00.123Z`.
pub fn timestamp(t: SystemTime) -> String {
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = uboot_scripts::image::timestamp::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

/// The log file of `board` under `dir` (`<dir>/<board>.log`).
pub fn log_path(dir: &Path, board: &str) -> PathBuf {
    dir.join(format!("{board}.log"))
}

fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl ConsoleLog {
    /// Opens (appending) the log of `board` in `dir`, creating the directory.
    pub fn open(dir: &Path, board: &str, settings: LogSettings) -> io::Result<ConsoleLog> {
        std::fs::create_dir_all(dir)?;
        let path = log_path(dir, board);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)?;
        let size = file.metadata()?.len();
        // A log the last run left in the middle of a line goes on with a line of its own.
        let mut at_line_start = true;
        if size > 0 {
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(size - 1))?;
            file.read_exact(&mut last)?;
            at_line_start = last[0] == b'\n';
        }
        Ok(ConsoleLog {
            path,
            file,
            size,
            at_line_start,
            settings,
        })
    }

    /// The current file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends bytes from the line, received at `now`.
    pub fn write(&mut self, data: &[u8], now: SystemTime) -> io::Result<()> {
        let stamp = format!("{} ", timestamp(now));
        let mut out = Vec::with_capacity(data.len() + 64);
        let mut rest = data;
        while !rest.is_empty() {
            let over = self.size + out.len() as u64 >= self.settings.max_bytes;
            let too_long =
                self.size + out.len() as u64 >= self.settings.max_bytes + LONG_LINE_SLACK;
            if (over && self.at_line_start) || too_long {
                self.file.write_all(&out)?;
                out.clear();
                if !self.at_line_start {
                    // The cut line ends here and goes on in the new file.
                    self.file.write_all(b"\n")?;
                }
                self.rotate()?;
                self.at_line_start = true;
            }
            if self.at_line_start {
                out.extend_from_slice(stamp.as_bytes());
                self.at_line_start = false;
            }
            // Up to the end of the line, or as much as the cap still allows on a long line.
            let room = (self.settings.max_bytes + LONG_LINE_SLACK)
                .saturating_sub(self.size + out.len() as u64)
                .max(1) as usize;
            let take = match rest.iter().position(|&b| b == b'\n') {
                Some(i) if i < room => {
                    self.at_line_start = true;
                    i + 1
                }
                _ => rest.len().min(room),
            };
            out.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
        }
        self.file.write_all(&out)?;
        self.size += out.len() as u64;
        Ok(())
    }

    /// A line of the appliance's own (`[labboot] text`), on a line of its own.
    pub fn note(&mut self, text: &str, now: SystemTime) -> io::Result<()> {
        if !self.at_line_start {
            self.write(b"\n", now)?;
        }
        self.write(format!("[labboot] {text}\n").as_bytes(), now)
    }

    fn rotate(&mut self) -> io::Result<()> {
        let keep = self.settings.keep;
        if keep > 0 {
            let _ = std::fs::remove_file(rotated(&self.path, keep));
            for n in (1..keep).rev() {
                let from = rotated(&self.path, n);
                if from.exists() {
                    std::fs::rename(&from, rotated(&self.path, n + 1))?;
                }
            }
            std::fs::rename(&self.path, rotated(&self.path, 1))?;
        } else {
            let _ = std::fs::remove_file(&self.path);
        }
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn timestamps_are_utc_with_milliseconds() {
        assert_eq!(timestamp(at(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(at(1_796_389_200_123)), "2026-12-04T13:00:00.123Z");
    }

    #[test]
    fn one_timestamp_per_line_across_chunks_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = ConsoleLog::open(dir.path(), "b1", LogSettings::default()).unwrap();
        log.write(b"U-Boot 2024", at(1_796_389_200_123)).unwrap();
        log.write(b".01\r\n=> ", at(1_796_389_200_500)).unwrap();
        log.note("console dropped", at(1_796_389_201_000)).unwrap();
        drop(log);
        let mut log = ConsoleLog::open(dir.path(), "b1", LogSettings::default()).unwrap();
        log.write(b"\nboot\n", at(1_796_389_202_000)).unwrap();
        log.write(b"half", at(1_796_389_203_000)).unwrap();
        drop(log);
        let mut log = ConsoleLog::open(dir.path(), "b1", LogSettings::default()).unwrap();
        log.note("restarted", at(1_796_389_204_000)).unwrap();
        let text = std::fs::read_to_string(log.path()).unwrap();
        assert_eq!(
            text,
            "2026-12-04T13:00:00.123Z U-Boot 2024.01\r\n\
             2026-12-04T13:00:00.500Z => \n\
             2026-12-04T13:00:01.000Z [labboot] console dropped\n\
             2026-12-04T13:00:02.000Z \n\
             2026-12-04T13:00:02.000Z boot\n\
             2026-12-04T13:00:03.000Z half\n\
             2026-12-04T13:00:04.000Z [labboot] restarted\n"
        );
    }

    #[test]
    fn rotates_at_the_cap_and_keeps_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let settings = LogSettings {
            max_bytes: 1000,
            keep: 2,
        };
        let mut log = ConsoleLog::open(dir.path(), "b1", settings).unwrap();
        for i in 0..200 {
            log.write(format!("line {i:04} of the console\n").as_bytes(), at(0))
                .unwrap();
        }
        let names: Vec<String> = {
            let mut v: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names, ["b1.log", "b1.log.1", "b1.log.2"]);
        for n in &names {
            let text = std::fs::read_to_string(dir.path().join(n)).unwrap();
            assert!(text.len() < 1000 + 60, "{n}: {}", text.len());
            assert!(text.lines().all(|l| l.starts_with("1970-01-01T")), "{n}");
        }
        let newest = std::fs::read_to_string(dir.path().join("b1.log")).unwrap();
        assert!(newest.ends_with("line 0199 of the console\n"));
        let older = std::fs::read_to_string(dir.path().join("b1.log.1")).unwrap();
        let last_older = older.lines().last().unwrap();
        let first_newest = newest.lines().next().unwrap();
        let num = |l: &str| l[30..34].parse::<u32>().unwrap();
        assert_eq!(num(last_older) + 1, num(first_newest), "no line lost");
    }

    #[test]
    fn a_line_without_end_is_cut_past_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let settings = LogSettings {
            max_bytes: 1000,
            keep: 0,
        };
        let mut log = ConsoleLog::open(dir.path(), "b1", settings).unwrap();
        for _ in 0..100 {
            log.write(&[b'x'; 10_000], at(0)).unwrap();
        }
        let size = std::fs::metadata(dir.path().join("b1.log")).unwrap().len();
        assert!(size <= 1000 + LONG_LINE_SLACK + 2, "{size}");
        assert!(!dir.path().join("b1.log.1").exists(), "keep: 0");
    }
}
