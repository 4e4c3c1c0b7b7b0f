//! Durability (issue #4): durable entities and persistent messages survive restarts
//! and `kill -9`, against the real binary and in-process.
//!
//! - [`crash`]: the broker is killed with SIGKILL at seeded pseudo-random moments
//!   (mid-publish, mid-consume, mid-ack) and restarted; what comes back is checked
//!   against a model of what the client was told.
//! - [`corrupt`]: damaged segment files (torn tail, corrupt records in the middle).
//! - [`metadata`]: durable exchanges, queues and bindings come back; transient ones and
//!   transient messages do not.
//! - [`alarm`]: the disk free limit blocks publishers like the memory watermark.
//! - [`paging`]: long durable queues keep their bodies on disk.
//! - [`counts`]: `delivery_count` and `x-delivery-limit` go on across restarts.
//! - [`kept_bodies`]: a kept message does not hold the read buffer it came in.

mod alarm;
mod corrupt;
mod counts;
mod crash;
mod definitions;
mod dormant;
mod kept_bodies;
mod metadata;
mod paging;
mod shutdown;
mod shutdown_drops;

use crate::support::DEADLINE;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_actormq");

/// Segment size of the test brokers: small, so that rolls and reclamation happen.
pub const SEGMENT_SIZE: u64 = 64 * 1024;

/// `actormq serve` in a child process, on an ephemeral port, with its data (and its
/// config file and logs) under one directory. Killed (SIGKILL) when dropped.
pub struct BrokerProcess {
    child: Option<Child>,
    /// Its address, as it printed it.
    pub addr: String,
    /// Kept open: the broker's standard output.
    _stdout: BufReader<ChildStdout>,
    /// Where its standard error goes.
    log: PathBuf,
}

impl BrokerProcess {
    /// Starts a broker on `root/data` (created if missing) and waits for its
    /// "listening" line.
    pub fn start(root: &Path) -> BrokerProcess {
        Self::start_with(root, "")
    }

    /// As [`BrokerProcess::start`], with `storage` (TOML lines) added to the
    /// `[storage]` section of its configuration.
    pub fn start_with(root: &Path, storage: &str) -> BrokerProcess {
        let config = root.join("actormq.toml");
        std::fs::write(
            &config,
            format!(
                "[broker]\nworkers = 2\n\n[storage]\nsegment_size = {SEGMENT_SIZE}\nfsync = \"always\"\n{storage}\n"
            ),
        )
        .expect("the config file");
        let n = std::fs::read_dir(root).map(|d| d.count()).unwrap_or(0);
        let log = root.join(format!("broker-{n}.log"));
        let mut child = Command::new(BIN)
            .current_dir(root)
            .args(["serve", "--config"])
            .arg(&config)
            .env("ACTORMQ__SERVER__BIND", "127.0.0.1:0")
            .env("ACTORMQ__AMQP__BIND", "127.0.0.1:0")
            .env("ACTORMQ__HTTP__BIND", "127.0.0.1:0")
            .env("ACTORMQ__STORAGE__DATA_DIR", root.join("data"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("the log file"))
            .spawn()
            .expect("the binary runs");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        let addr = loop {
            line.clear();
            let n = stdout.read_line(&mut line).expect("the broker's output");
            if n == 0 {
                let _ = child.wait();
                panic!(
                    "the broker exited before listening; its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if let Some(a) = line.trim().strip_prefix("actormq listening on ") {
                break a.to_string();
            }
        };
        BrokerProcess {
            child: Some(child),
            addr,
            _stdout: stdout,
            log,
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill9(mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("kill -9");
            c.wait().expect("reaped");
        }
    }

    /// SIGTERM (graceful shutdown), and waits for a clean exit.
    pub fn stop(mut self) {
        if let Some(mut c) = self.child.take() {
            let term = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status()
                .expect("kill -TERM");
            assert!(term.success());
            let status = c.wait().expect("reaped");
            assert!(status.success(), "graceful exit on SIGTERM: {status:?}");
        }
    }

    /// What it logged so far (warnings and errors), without terminal colours.
    pub fn log(&self) -> String {
        let raw = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                // An escape sequence: up to its final letter.
                for e in chars.by_ref() {
                    if e.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A small seeded generator (splitmix64): the same seed, the same run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// An embedded broker (two workers) on `dir`, with the suite's small segments.
pub fn embedded(dir: &Path) -> actormq::BrokerHandle {
    let mut options = actormq::storage::StorageOptions::in_dir(dir);
    options.segment_size = SEGMENT_SIZE;
    actormq::Broker::builder()
        .workers(2)
        .storage(options)
        .start()
        .expect("the broker starts on its data directory")
}

/// A multi-threaded runtime for the async parts of a blocking test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Runs `fut` with the suite's deadline.
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("not done within {DEADLINE:?}: {what}"),
    }
}

/// The segment files of a data directory, oldest first.
pub fn segments(data: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data.join("messages"))
        .expect("the message log directory")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

/// One frame of a segment file: where it starts, and its payload's range.
#[derive(Debug, Clone, Copy)]
pub struct FrameAt {
    pub start: usize,
    pub payload: (usize, usize),
}

/// The frames of a segment file (as documented in `storage/mod.rs`: a 16-byte header,
/// then `[len u32 LE][crc u32 LE][payload]` frames up to a zero length).
pub fn frames(data: &[u8]) -> Vec<FrameAt> {
    let mut out = Vec::new();
    let mut off = 16;
    while off + 8 <= data.len() {
        let len = u32::from_le_bytes(data[off..off + 4].try_into().unwrap()) as usize;
        if len == 0 || off + 8 + len > data.len() {
            break;
        }
        out.push(FrameAt {
            start: off,
            payload: (off + 8, off + 8 + len),
        });
        off += 8 + len;
    }
    out
}

/// Frames holding a publish record (payload kind 1).
pub fn publish_frames(data: &[u8]) -> Vec<FrameAt> {
    frames(data)
        .into_iter()
        .filter(|f| data[f.payload.0] == 1)
        .collect()
}
