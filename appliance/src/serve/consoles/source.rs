//! How a board's serial line is opened: a command whose stdin/stdout is the line (`telnet
//! host port`, `socat`, the virtual board's FIFO script; its own process group, ended as a
//! whole), a raw TCP port (ser2net in raw mode; TCP keepalive notices a dead peer), or a
//! local tty (raw mode and the baud rate set with termios).
//!
//! A command must not outlive the appliance: a second reader of the same FIFO or telnet port
//! would take the line's bytes. Beside it runs a watchdog (`sh`, its own process group) that
//! waits on a pipe only the appliance holds and kills the command's group when the pipe ends,
//! SIGKILL of the appliance included; what escapes both is found by the `LABBOOT_CONSOLE`
//! marker in its environment ([`kill_stale`]) before the line is opened again.
//!
//! Every open line is two file descriptors, read with `poll(2)` so the keeper can stop
//! between reads, and written on a thread of its own.

use std::fs::File;
use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long a TCP connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a board's line comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `sh -c COMMAND`, its stdin and stdout being the line.
    Command(String),
    /// Raw TCP to `HOST:PORT`.
    Tcp(String),
    /// A local serial port.
    Tty {
        /// The device (`/dev/ttyUSB0`).
        path: PathBuf,
        /// Its baud rate.
        baud: u32,
    },
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Command(c) => write!(f, "command '{c}'"),
            Source::Tcp(a) => write!(f, "tcp {a}"),
            Source::Tty { path, baud } => write!(f, "tty {} at {baud} baud", path.display()),
        }
    }
}

/// An open line.
pub struct Line {
    /// What the board says.
    pub reader: File,
    /// What goes to the board (taken by the writer thread).
    pub writer: Option<File>,
    child: Option<Running>,
    tcp: bool,
}

/// A running command and its watchdog.
struct Running {
    child: Child,
    watchdog: Option<Child>,
}

/// The environment variable that marks a console command's processes with their owner.
pub const OWNER_VAR: &str = "LABBOOT_CONSOLE";

impl Source {
    /// Opens the line; a command's processes carry `LABBOOT_CONSOLE=<owner>` in their
    /// environment (see [`kill_stale`]).
    pub fn open(&self, owner: &str) -> io::Result<Line> {
        match self {
            Source::Command(command) => {
                let mut child = Command::new("sh")
                    .arg("-c")
                    .arg(command)
                    .env(OWNER_VAR, owner)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    // Its own process group, so closing ends every process the command started.
                    .process_group(0)
                    .spawn()?;
                let (stdout, stdin) = (child.stdout.take(), child.stdin.take());
                let mut running = Running {
                    child,
                    watchdog: None,
                };
                let (Some(stdout), Some(stdin)) = (stdout, stdin) else {
                    return Err(io::Error::other("the command has no stdin/stdout"));
                };
                running.watchdog = Some(
                    watchdog(running.child.id(), owner)
                        .map_err(|e| io::Error::other(format!("its watchdog: {e}")))?,
                );
                Ok(Line {
                    reader: File::from(OwnedFd::from(stdout)),
                    writer: Some(File::from(OwnedFd::from(stdin))),
                    child: Some(running),
                    tcp: false,
                })
            }
            Source::Tcp(addr) => {
                let mut last =
                    io::Error::new(io::ErrorKind::NotFound, format!("{addr}: no address"));
                for a in addr.to_socket_addrs()? {
                    match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
                        Ok(s) => {
                            let _ = s.set_nodelay(true);
                            keepalive(&s);
                            let writer = s.try_clone()?;
                            return Ok(Line {
                                reader: File::from(OwnedFd::from(s)),
                                writer: Some(File::from(OwnedFd::from(writer))),
                                child: None,
                                tcp: true,
                            });
                        }
                        Err(e) => last = e,
                    }
                }
                Err(last)
            }
            Source::Tty { path, baud } => {
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    // Non-blocking only to open: without CLOCAL yet, an open waits for the
                    // modem's carrier.
                    .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
                    .open(path)?;
                set_raw(&file, *baud)?;
                // SAFETY: fcntl(2) on the descriptor just opened.
                unsafe {
                    let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
                    if flags < 0
                        || libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK)
                            < 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                }
                let writer = file.try_clone()?;
                Ok(Line {
                    reader: file,
                    writer: Some(writer),
                    child: None,
                    tcp: false,
                })
            }
        }
    }
}

impl Line {
    /// Whether the command behind the line has exited (its status), for a command.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.child.try_wait().ok().flatten())
    }

    /// Ends the line: a command's whole process group is killed and reaped, a socket shut
    /// down (so the writer thread's pending write fails too).
    pub fn close(mut self) {
        if self.tcp {
            // SAFETY: shutdown(2) on a socket this line owns.
            unsafe {
                libc::shutdown(self.reader.as_raw_fd(), libc::SHUT_RDWR);
            }
        }
        // Dropping the command kills it (see `Running`'s Drop).
        self.child = None;
    }
}

/// Kills the processes a previous run left behind (SIGKILLed, it could not end its console
/// commands): those whose environment has `LABBOOT_CONSOLE=<owner>`. Their number.
pub fn kill_stale(owner: &str) -> usize {
    let wanted = format!("{OWNER_VAR}={owner}");
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if pid as u32 == me {
            continue;
        }
        let Ok(env) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if env.split(|&b| b == 0).any(|v| v == wanted.as_bytes()) {
            // SAFETY: kill(2) on a process found carrying this board's marker.
            if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                killed += 1;
            }
        }
    }
    killed
}

impl Drop for Running {
    /// Kills the command's group, then the watchdog; the leader is reaped last, so its group
    /// id cannot be reused while the watchdog could still signal it.
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on the process group this line's command leads (not reaped yet).
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        if let Some(w) = self.watchdog.as_mut() {
            let _ = w.kill();
            let _ = w.wait();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sh` in a process group of its own, reading a pipe whose write end only this process holds
/// (the returned child's stdin, close-on-exec): when the pipe ends — the line closed, or the
/// appliance gone, SIGKILL included — it kills process group `pgid`.
fn watchdog(pgid: u32, owner: &str) -> io::Result<Child> {
    Command::new("sh")
        .arg("-c")
        .arg(r#"read x; kill -KILL "-$1""#)
        .arg("labboot-console-watchdog")
        .arg(pgid.to_string())
        .env(OWNER_VAR, owner)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
}

/// TCP keepalive: a peer that vanished is noticed within about a minute.
fn keepalive(s: &TcpStream) {
    let fd = s.as_raw_fd();
    let set = |level: libc::c_int, name: libc::c_int, value: libc::c_int| {
        // SAFETY: setsockopt(2) with an int option on a socket we own.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    };
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 30);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 10);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3);
}

/// The termios speed constant of a baud rate, if the kernel has one.
pub fn baud_constant(baud: u32) -> Option<libc::speed_t> {
    Some(match baud {
        1200 => libc::B1200,
        2400 => libc::B2400,
        4800 => libc::B4800,
        9600 => libc::B9600,
        19200 => libc::B19200,
        38400 => libc::B38400,
        57600 => libc::B57600,
        115200 => libc::B115200,
        230400 => libc::B230400,
        460800 => libc::B460800,
        500000 => libc::B500000,
        576000 => libc::B576000,
        921600 => libc::B921600,
        1000000 => libc::B1000000,
        1500000 => libc::B1500000,
        2000000 => libc::B2000000,
        3000000 => libc::B3000000,
        4000000 => libc::B4000000,
        _ => return None,
    })
}

/// Raw mode (no echo, no line editing, no translation, 8N1, no flow control), `baud` both
/// ways, reads returning as soon as a byte is there.
fn set_raw(file: &File, baud: u32) -> io::Result<()> {
    let speed = baud_constant(baud).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unsupported baud rate {baud}"),
        )
    })?;
    let fd = file.as_raw_fd();
    // SAFETY: termios calls on an open tty descriptor with a zero-initialised struct that
    // tcgetattr fills before it is read.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut t) != 0 {
            return Err(io::Error::last_os_error());
        }
        libc::cfmakeraw(&mut t);
        t.c_cflag |= libc::CLOCAL | libc::CREAD;
        t.c_cflag &= !(libc::CSTOPB | libc::CRTSCTS | libc::PARENB);
        t.c_iflag &= !(libc::IXON | libc::IXOFF | libc::IXANY);
        t.c_cc[libc::VMIN] = 1;
        t.c_cc[libc::VTIME] = 0;
        if libc::cfsetispeed(&mut t, speed) != 0 || libc::cfsetospeed(&mut t, speed) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::tcsetattr(fd, libc::TCSANOW, &t) != 0 {
            return Err(io::Error::last_os_error());
        }
        libc::tcflush(fd, libc::TCIFLUSH);
    }
    Ok(())
}

/// Waits up to `timeout` for `file` to be readable (or hung up); whether it is.
pub fn readable(file: &File, timeout: Duration) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd: file.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: poll(2) on one pollfd that lives across the call.
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    match n {
        n if n < 0 => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            }
        }
        0 => Ok(false),
        _ => Ok(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_command_line_echoes_and_its_group_dies_on_close() {
        let mut line = Source::Command("cat".into()).open("test").unwrap();
        line.writer.as_ref().unwrap().write_all(b"hello\n").unwrap();
        assert!(readable(&line.reader, Duration::from_secs(5)).unwrap());
        let mut buf = [0u8; 64];
        let n = line.reader.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello\n");
        assert!(line.exited().is_none());
        line.close();
    }

    #[test]
    fn stale_commands_of_a_previous_run_are_found_by_their_marker() {
        let owner = format!("/tmp/labboot-test-{}/b1", std::process::id());
        let line = Source::Command("sleep 600 & exec sleep 601".into())
            .open(&owner)
            .unwrap();
        let pid = line.child.as_ref().unwrap().child.id() as i32;
        std::thread::sleep(Duration::from_millis(300));
        // As if the appliance had died: the line is forgotten, its processes live on.
        std::mem::forget(line);
        assert_eq!(kill_stale("/tmp/no-such-owner"), 0);
        assert_eq!(kill_stale(&owner), 3, "both sleeps and the watchdog");
        let mut status = 0;
        // SAFETY: waitpid(2) on our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFSIGNALED(status));
    }

    #[test]
    fn the_watchdog_kills_the_group_when_its_pipe_ends() {
        let mut line = Source::Command("sleep 600 & exec sleep 601".into())
            .open("test-watchdog")
            .unwrap();
        let running = line.child.as_mut().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(running.child.try_wait().unwrap().is_none());
        // What happens when the appliance is gone: the pipe's write end closes.
        drop(running.watchdog.as_mut().unwrap().stdin.take());
        let status = running.child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(running.watchdog.as_mut().unwrap().wait().unwrap().success());
    }

    #[test]
    fn a_tcp_line_and_a_pty_in_raw_mode() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let mut line = Source::Tcp(addr).open("test").unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        peer.write_all(b"U-Boot\r\n").unwrap();
        assert!(readable(&line.reader, Duration::from_secs(5)).unwrap());
        let mut buf = [0u8; 64];
        let n = line.reader.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"U-Boot\r\n");
        line.writer.as_ref().unwrap().write_all(b"\n").unwrap();
        line.close();
        assert_eq!(peer.read(&mut buf).unwrap(), 1);
        assert_eq!(peer.read(&mut buf).unwrap(), 0, "shut down");
        assert!(Source::Tcp("127.0.0.1:1".into()).open("test").is_err());

        // A pseudo-terminal's slave stands for a USB serial adapter.
        // SAFETY: posix_openpt/grantpt/unlockpt/ptsname_r on the master we open here.
        let (master, slave) = unsafe {
            let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
            assert!(m >= 0);
            assert_eq!(libc::grantpt(m), 0);
            assert_eq!(libc::unlockpt(m), 0);
            let mut name = [0 as libc::c_char; 128];
            assert_eq!(libc::ptsname_r(m, name.as_mut_ptr(), name.len()), 0);
            let name = std::ffi::CStr::from_ptr(name.as_ptr());
            (
                <File as std::os::fd::FromRawFd>::from_raw_fd(m),
                PathBuf::from(name.to_string_lossy().into_owned()),
            )
        };
        let mut master = master;
        let mut line = Source::Tty {
            path: slave,
            baud: 115200,
        }
        .open("test")
        .unwrap();
        // Raw: no echo, no CR/LF translation.
        master.write_all(b"=> \r").unwrap();
        assert!(readable(&line.reader, Duration::from_secs(5)).unwrap());
        let n = line.reader.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"=> \r");
        line.writer.as_ref().unwrap().write_all(b"ver\n").unwrap();
        assert!(readable(&master, Duration::from_secs(5)).unwrap());
        let n = master.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ver\n");
        line.close();
        assert!(Source::Tty {
            path: "/dev/null".into(),
            baud: 115200
        }
        .open("test")
        .is_err());
        assert_eq!(baud_constant(1234), None);
    }
}
