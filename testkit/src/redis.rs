//! A private `redis-server` for one test: on a free loopback port, nothing saved to disk,
//! killed when dropped. A test that needs Redis fails (never skips) when `redis-server` is
//! missing: Debian's `redis-server` package, which `cargo xtask setup` installs.
//!
//! [`Redis::query`] sends one command and reads its reply (RESP, std only), for a test to
//! look at or tamper with what the server holds.

use crate::process::Process;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`, killed on drop.
pub struct Redis {
    process: Option<Process>,
    pub port: u16,
    /// `requirepass`, if started with one.
    password: Option<String>,
}

/// A reply, as RESP2 has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

/// `redis-server` from `PATH`, else Debian's; panics saying how to install it.
pub fn server_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("redis-server"))
        .find(|p| p.is_file());
    let path = on_path.unwrap_or_else(|| PathBuf::from("/usr/bin/redis-server"));
    assert!(
        path.is_file(),
        "redis-server not found (on PATH or at /usr/bin/redis-server): install Debian's redis-server \
         (`apt-get install redis-server`; `cargo xtask setup` does)"
    );
    path
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or_else(|e| panic!("no free port: {e}"))
}

impl Redis {
    /// A new server on a free port.
    pub fn start() -> Redis {
        Self::start_on(free_port(), None)
    }

    /// A new server on a free port that wants `password` (`requirepass`).
    pub fn start_with_password(password: &str) -> Redis {
        Self::start_on(free_port(), Some(password))
    }

    /// A new server on `port` (e.g. the port of one the test killed), empty.
    pub fn start_on(port: u16, password: Option<&str>) -> Redis {
        let mut cmd = Command::new(server_binary());
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(password) = password {
            cmd.args(["--requirepass", password]);
        }
        let process = Process::spawn("redis-server", &mut cmd).unwrap_or_else(|e| panic!("cannot start redis-server: {e}"));
        let mut redis = Redis { process: Some(process), port, password: password.map(str::to_owned) };
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            match redis.query(&["PING"]) {
                Ok(Reply::Status(s)) if s == "PONG" => return redis,
                answer => {
                    if let Some(status) = redis.process.as_mut().and_then(Process::exited) {
                        panic!("redis-server on port {port} exited ({status}) before answering: {answer:?}");
                    }
                    assert!(Instant::now() < until, "redis-server on port {port} not answering PING after 10 s: {answer:?}");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }

    /// `redis://127.0.0.1:<port>/0` (with the password, if any).
    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// SIGKILL, as a crash would; the port is free again once this returns.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Sends one command (authenticating first if the server wants a password) and reads
    /// its reply.
    pub fn query(&self, args: &[&str]) -> std::io::Result<Reply> {
        let stream = TcpStream::connect_timeout(&self.addr(), Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut writer = stream;
        if let Some(password) = &self.password {
            writer.write_all(&encode(&["AUTH", password]))?;
            read_reply(&mut reader)?;
        }
        writer.write_all(&encode(args))?;
        read_reply(&mut reader)
    }

    /// The keys matching `pattern` (`KEYS`: fine for a test's handful).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        match self.query(&["KEYS", pattern]) {
            Ok(Reply::Array(items)) => items
                .into_iter()
                .filter_map(|r| match r {
                    Reply::Bulk(Some(b)) => String::from_utf8(b).ok(),
                    _ => None,
                })
                .collect(),
            other => panic!("KEYS {pattern}: {other:?}"),
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A command as RESP: an array of bulk strings.
pub fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads one RESP2 reply.
pub fn read_reply(reader: &mut impl BufRead) -> std::io::Result<Reply> {
    let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
    }
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at(line.len().min(1));
    let number = || rest.parse::<i64>().map_err(|_| bad(format!("not a number in {line:?}")));
    Ok(match kind {
        "+" => Reply::Status(rest.to_owned()),
        "-" => Reply::Error(rest.to_owned()),
        ":" => Reply::Integer(number()?),
        "$" => match number()? {
            n if n < 0 => Reply::Bulk(None),
            n => {
                let mut data = vec![0; n as usize + 2];
                reader.read_exact(&mut data)?;
                data.truncate(n as usize);
                Reply::Bulk(Some(data))
            }
        },
        "*" => match number()? {
            n if n < 0 => Reply::Array(Vec::new()),
            n => (0..n).map(|_| read_reply(reader)).collect::<std::io::Result<_>>().map(Reply::Array)?,
        },
        _ => return Err(bad(format!("not a RESP reply: {line:?}"))),
    })
}
