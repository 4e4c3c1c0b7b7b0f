//! Hostile clients against a spawned `actormq serve`: a thousand half-open sockets, a
//! slowloris, a consumer that never reads, and sockets that never log in. Each time a
//! normal client publishes and consumes meanwhile, and the broker's resident memory
//! (`/proc/<pid>/status`) stays under a generous bound. The figures are printed (run
//! with `--nocapture`); nothing here asserts on time.

use super::amqp_raw;
use crate::support::{eventually, DEADLINE};
use actormq::client::{Client, ConnectOptions, ConsumeOptions, QueueOptions};
use futures_util::StreamExt;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_actormq");

/// What the broker may hold resident, whatever the hostile clients do (a debug build
/// idles at a few tens of MiB).
const RSS_BOUND_KIB: u64 = 256 * 1024;

/// `actormq serve` in a child process, killed when dropped.
struct Serve {
    child: Child,
    native: SocketAddr,
    amqp: SocketAddr,
    log: PathBuf,
    _stdout: BufReader<ChildStdout>,
    _dir: tempfile::TempDir,
}

impl Serve {
    /// Starts a broker with `server.handshake_timeout_ms = handshake_ms`.
    fn start(handshake_ms: u64) -> Serve {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let log = dir.path().join("broker.log");
        let mut child = Command::new(BIN)
            .arg("serve")
            .env("ACTORMQ__SERVER__BIND", "127.0.0.1:0")
            .env("ACTORMQ__AMQP__BIND", "127.0.0.1:0")
            .env("ACTORMQ__HTTP__BIND", "127.0.0.1:0")
            .env("ACTORMQ__STORAGE__DATA_DIR", dir.path().join("data"))
            .env("ACTORMQ__BROKER__WORKERS", "2")
            .env(
                "ACTORMQ__SERVER__HANDSHAKE_TIMEOUT_MS",
                handshake_ms.to_string(),
            )
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("the log file"))
            .spawn()
            .expect("the binary runs");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let (mut native, mut amqp) = (None, None);
        let mut line = String::new();
        while native.is_none() {
            line.clear();
            if stdout.read_line(&mut line).expect("the broker's output") == 0 {
                let _ = child.wait();
                panic!(
                    "the broker exited: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            let l = line.trim();
            if let Some(a) = l.strip_prefix("actormq AMQP listening on ") {
                amqp = Some(a.parse().expect("an address"));
            } else if let Some(a) = l.strip_prefix("actormq listening on ") {
                native = Some(a.parse().expect("an address"));
            }
        }
        Serve {
            child,
            native: native.expect("native"),
            amqp: amqp.expect("the AMQP listener"),
            log,
            _stdout: stdout,
            _dir: dir,
        }
    }

    fn status(&self, key: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc/<pid>/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {status}"))
    }

    /// Resident memory now, in KiB.
    fn rss_kib(&self) -> u64 {
        self.status("VmRSS:")
    }

    /// Sockets the broker has open (listeners and accepted connections): its file
    /// descriptors that link to `socket:[inode]`.
    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| {
                d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                    .filter(|l| l.to_string_lossy().starts_with("socket:"))
                    .count()
            })
            .unwrap_or(0)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn client(&self) -> Client {
        Client::connect(ConnectOptions::new(self.native.to_string()))
            .await
            .expect("a normal client connects")
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Raises this process's open-file limit (inherited by the broker it spawns) to at
/// least `n` when the hard limit allows; answers the soft limit then in force.
fn raise_nofile(n: libc::rlim_t) -> libc::rlim_t {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < n {
            lim.rlim_cur = lim.rlim_max.min(n);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
    }
    lim.rlim_cur
}

/// A normal client's round trip: `n` messages published (confirmed) to `queue`, then
/// consumed and acked.
async fn round_trip(client: &Client, queue: &str, n: usize) {
    let work = async {
        client
            .declare_queue(queue, &QueueOptions::default())
            .await
            .expect("declare");
        let mut confirms = Vec::new();
        for i in 0..n {
            confirms.push(
                client
                    .publish("", queue, format!("m{i}"))
                    .await
                    .expect("publish"),
            );
        }
        for c in confirms {
            c.await.expect("confirmed");
        }
        let mut consumer = client
            .consume(queue, &ConsumeOptions::prefetch(100))
            .await
            .expect("consume");
        for i in 0..n {
            let d = consumer.next().await.expect("a delivery").expect("ok");
            assert_eq!(d.body, format!("m{i}").as_bytes());
            d.ack().expect("ack");
        }
        consumer.cancel().await.expect("cancel");
    };
    tokio::time::timeout(DEADLINE, work)
        .await
        .unwrap_or_else(|_| panic!("the normal client was not served within {DEADLINE:?}"));
}

/// Reads `s` until the broker closes it.
async fn closed_by_broker(mut s: TcpStream) {
    let mut sink = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut sink))
        .await
        .expect("the broker closes the socket in time")
        .expect("a clean close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_half_open_sockets_leave_memory_bounded_and_clients_served() {
    const SOCKETS: usize = 1000;
    // Each socket is a descriptor here and one in the broker: 1,000 plus headroom.
    let limit = raise_nofile(4096);
    assert!(
        limit >= 2 * SOCKETS as libc::rlim_t,
        "RLIMIT_NOFILE {limit} too low"
    );
    let serve = Serve::start(600_000);
    let client = serve.client().await;
    round_trip(&client, "warm", 10).await;
    let (rss0, fds0) = (serve.rss_kib(), serve.fds());
    let mut held = Vec::with_capacity(SOCKETS);
    for i in 0..SOCKETS {
        let mut s = match i % 3 {
            0 | 1 => TcpStream::connect(serve.native).await,
            _ => TcpStream::connect(serve.amqp).await,
        }
        .expect("connect");
        match i % 3 {
            // Silent.
            0 => {}
            // A native length prefix announcing a frame just under the largest
            // allowed (16 MiB), then two bytes of it.
            1 => s
                .write_all(&[0x00, 0xff, 0xff, 0xf0, 0x81, 0xa5])
                .await
                .unwrap(),
            // Half an AMQP protocol header.
            _ => s.write_all(b"AMQP").await.unwrap(),
        }
        held.push(s);
    }
    eventually("the broker holds every socket", || {
        let n = serve.fds();
        async move { n >= fds0 + SOCKETS }
    })
    .await;
    round_trip(&client, "during", 200).await;
    let fresh = serve.client().await;
    round_trip(&fresh, "fresh", 50).await;
    let rss1 = serve.rss_kib();
    eprintln!(
        "{SOCKETS} half-open sockets: broker RSS {rss0} KiB before, {rss1} KiB with them \
         ({} bytes per socket), sockets {fds0} -> {}",
        (rss1.saturating_sub(rss0) * 1024) / SOCKETS as u64,
        serve.fds()
    );
    assert!(rss1 < RSS_BOUND_KIB, "RSS {rss1} KiB");
    drop(held);
    eventually("the broker releases the sockets", || {
        let n = serve.fds();
        async move { n <= fds0 + 1 }
    })
    .await;
    round_trip(&client, "after", 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_that_do_not_log_in_in_time_are_dropped_and_logged_with_their_address() {
    let serve = Serve::start(300);
    // A client that logged in is never dropped by the handshake timeout.
    let client = serve.client().await;
    let silent = TcpStream::connect(serve.native).await.unwrap();
    let mut half = TcpStream::connect(serve.amqp).await.unwrap();
    half.write_all(b"AMQP\x00").await.unwrap();
    // AMQP up to connection.start, then nothing: authentication never comes.
    let mut started = TcpStream::connect(serve.amqp).await.unwrap();
    started.write_all(b"AMQP\x00\x00\x09\x01").await.unwrap();
    let (t, _, p) = amqp_raw::frame(&mut started).await;
    assert_eq!((t, &p[..4]), (1, &[0, 10, 0, 10][..]), "connection.start");
    let peers = [
        silent.local_addr().unwrap(),
        half.local_addr().unwrap(),
        started.local_addr().unwrap(),
    ];
    closed_by_broker(silent).await;
    closed_by_broker(half).await;
    closed_by_broker(started).await;
    eventually("each drop is logged with the peer address", || {
        let log = serve.log();
        let ok =
            peers.iter().all(|p| log.contains(&p.to_string())) && log.contains("handshake timeout");
        async move { ok }
    })
    .await;
    // Well past the timeout, the client that logged in is still served.
    round_trip(&client, "q", 20).await;
}

/// A native hello frame, whole.
fn native_hello() -> Vec<u8> {
    use actormq::protocol::{encode_client, ClientFrame, Hello, PROTOCOL_VERSION};
    let mut out = bytes::BytesMut::new();
    let hello = ClientFrame::Hello(Hello {
        version: PROTOCOL_VERSION,
        user: "guest".into(),
        password: "guest".into(),
        vhost: "/".into(),
        client: "slowloris".into(),
        heartbeat_secs: None,
        mechanism: None,
    });
    encode_client(&hello, &mut out).unwrap();
    out.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_clients_leave_memory_bounded_and_clients_served() {
    const EACH: usize = 50;
    raise_nofile(1024);
    let serve = Serve::start(600_000);
    let client = serve.client().await;
    round_trip(&client, "warm", 10).await;
    let rss0 = serve.rss_kib();
    // Before login: a native hello and an AMQP protocol header and start-ok, a byte at
    // a time. After login: an AMQP publish whose 100 KiB body frame comes a byte at a
    // time.
    let hello = native_hello();
    let mut amqp_open = b"AMQP\x00\x00\x09\x01".to_vec();
    let mut start_ok = vec![0, 0, 0, 0, 5];
    start_ok.extend_from_slice(b"PLAIN");
    start_ok.extend_from_slice(&12u32.to_be_bytes());
    start_ok.extend_from_slice(b"\0guest\0guest");
    start_ok.extend_from_slice(b"\x05en_US");
    amqp_open.extend(amqp_raw::method(0, 10, 11, &start_ok));
    let mut body = vec![3u8, 0, 1];
    body.extend_from_slice(&(100 * 1024u32).to_be_bytes());
    body.extend(std::iter::repeat_n(b'x', 1000));
    let mut slow: Vec<(TcpStream, Vec<u8>)> = Vec::new();
    for _ in 0..EACH {
        slow.push((
            TcpStream::connect(serve.native).await.unwrap(),
            hello.clone(),
        ));
        slow.push((
            TcpStream::connect(serve.amqp).await.unwrap(),
            amqp_open.clone(),
        ));
    }
    for _ in 0..EACH {
        let mut s = TcpStream::connect(serve.amqp).await.unwrap();
        let answer = amqp_raw::handshake(&mut s, 16).await;
        assert_eq!(&answer[..4], &[0, 10, 0, 41], "connection.open-ok");
        s.write_all(&amqp_raw::method(1, 20, 10, &[0]))
            .await
            .unwrap();
        amqp_raw::frame(&mut s).await;
        let mut publish = vec![0, 0, 0];
        publish.extend([1, b'q', 0]);
        let mut lead = amqp_raw::method(1, 60, 40, &publish);
        // Content header: class 60, weight 0, body size 100 KiB, no properties.
        let mut header = vec![0, 60, 0, 0];
        header.extend_from_slice(&(100 * 1024u64).to_be_bytes());
        header.extend_from_slice(&[0, 0]);
        lead.extend([2, 0, 1]);
        lead.extend_from_slice(&(header.len() as u32).to_be_bytes());
        lead.extend(header);
        lead.push(0xCE);
        s.write_all(&lead).await.unwrap();
        slow.push((s, body.clone()));
    }
    // The slow clients are paced by the normal one: a byte from each per round trip,
    // never the last byte of their frame (so that none ever completes).
    for round in 0..100 {
        for (s, bytes) in slow.iter_mut() {
            if round + 1 < bytes.len() {
                s.write_all(&bytes[round..round + 1]).await.unwrap();
            }
        }
        round_trip(&client, &format!("r{}", round % 4), 2).await;
    }
    let rss1 = serve.rss_kib();
    eprintln!(
        "{} slowloris sockets, up to 100 bytes each: broker RSS {rss0} KiB before, {rss1} KiB after",
        slow.len()
    );
    assert!(rss1 < RSS_BOUND_KIB, "RSS {rss1} KiB");
    // The trickle did not break the framing: the broker still holds every socket open.
    for (s, _) in &slow {
        assert!(s.peer_addr().is_ok());
    }
    let fresh = serve.client().await;
    round_trip(&fresh, "fresh", 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_never_reads_leaves_memory_bounded_and_clients_served() {
    const MESSAGES: usize = 20_000;
    const SIZE: usize = 1024;
    let serve = Serve::start(10_000);
    let client = serve.client().await;
    round_trip(&client, "warm", 10).await;
    let rss0 = serve.rss_kib();
    client
        .declare_queue("flood", &QueueOptions::default())
        .await
        .unwrap();
    // An AMQP consumer (no-ack, no prefetch limit) that never reads its socket.
    let mut deaf = TcpStream::connect(serve.amqp).await.unwrap();
    let answer = amqp_raw::handshake(&mut deaf, 16).await;
    assert_eq!(&answer[..4], &[0, 10, 0, 41], "connection.open-ok");
    deaf.write_all(&amqp_raw::method(1, 20, 10, &[0]))
        .await
        .unwrap();
    amqp_raw::frame(&mut deaf).await;
    // basic.consume: reserved, queue "flood", tag "", no_ack, table {}.
    let mut consume = vec![0, 0, 5];
    consume.extend_from_slice(b"flood");
    consume.extend([0, 0b10, 0, 0, 0, 0]);
    deaf.write_all(&amqp_raw::method(1, 60, 20, &consume))
        .await
        .unwrap();
    let (_, _, p) = amqp_raw::frame(&mut deaf).await;
    assert_eq!(&p[..4], &[0, 60, 0, 21], "basic.consume-ok");
    // From here on `deaf` is never read.
    let body = vec![b'f'; SIZE];
    let mut confirms = Vec::new();
    for i in 0..MESSAGES {
        confirms.push(client.publish("", "flood", &body).await.expect("publish"));
        if i % 1000 == 999 {
            for c in confirms.drain(..) {
                c.await.expect("confirmed");
            }
            round_trip(&client, "ok", 5).await;
        }
    }
    for c in confirms {
        c.await.expect("confirmed");
    }
    let fresh = serve.client().await;
    round_trip(&fresh, "fresh", 50).await;
    let rss1 = serve.rss_kib();
    let passive = QueueOptions {
        passive: true,
        ..Default::default()
    };
    let left = client.declare_queue("flood", &passive).await.unwrap();
    eprintln!(
        "a consumer that never reads, {MESSAGES} x {SIZE} B published to it: broker RSS \
         {rss0} KiB before, {rss1} KiB after; {} messages still in its queue",
        left.messages
    );
    assert!(rss1 < RSS_BOUND_KIB, "RSS {rss1} KiB");
    // The broker stopped writing to the deaf consumer (its write buffer bound): the
    // rest waits in the queue rather than in the connection.
    assert!(
        left.messages > 0,
        "everything was pushed to a consumer that never reads"
    );
    drop(deaf);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_tables_before_login_are_refused_and_the_broker_goes_on() {
    let serve = Serve::start(10_000);
    let client = serve.client().await;
    // connection.start-ok whose client properties nest 500 arrays (2.5 KB): it used to
    // overflow the stack of the thread parsing it, aborting the broker.
    let mut nested = b"V".to_vec();
    for _ in 0..500 {
        let mut outer = vec![b'A'];
        outer.extend_from_slice(&(nested.len() as u32).to_be_bytes());
        outer.extend(nested);
        nested = outer;
    }
    let mut args = (nested.len() as u32 + 2).to_be_bytes().to_vec();
    args.extend_from_slice(&[1, b'k']);
    args.extend(nested);
    args.extend_from_slice(b"\x05PLAIN\0\0\0\x0c\0guest\0guest\x05en_US");
    let mut s = TcpStream::connect(serve.amqp).await.unwrap();
    s.write_all(b"AMQP\x00\x00\x09\x01").await.unwrap();
    amqp_raw::frame(&mut s).await;
    s.write_all(&amqp_raw::method(0, 10, 11, &args))
        .await
        .unwrap();
    let (_, _, p) = amqp_raw::frame(&mut s).await;
    let (code, text) = amqp_raw::close_of(&p);
    assert_eq!(code, 502, "{text}");
    closed_by_broker(s).await;
    round_trip(&client, "q", 10).await;
}
