//! Bodies of every size reach native consumers byte for byte, from the tail cache and
//! from the segment files, over plain TCP (where a stored body goes to the socket by
//! reference, its own `writev` slice after the frame head) and over TLS (where it is
//! copied behind the head, as TLS needs the plaintext in one place).

use super::*;
use crate::security::pki::Pki;
use actormq::client::TlsOptions;

/// Sizes around the by-reference threshold, the writer's gathering and copy limits,
/// and large enough that a `writev` is cut short by the socket's buffer.
const SIZES: [usize; 14] = [
    0, 1, 8, 255, 256, 257, 1000, 1024, 4096, 65_535, 65_536, 70_000, 300_000, 700_000,
];

/// Body `i`: bytes that differ with `i` and with their position.
fn body(i: usize) -> Vec<u8> {
    let len = SIZES[i % SIZES.len()];
    (0..len)
        .map(|j| (j as u32).wrapping_mul(2_654_435_761).rotate_left(i as u32) as u8)
        .collect()
}

const N: usize = 3 * SIZES.len();

async fn client(server: &TestServer, pki: &Pki, tls: bool) -> Client {
    let options = if tls {
        let addr = server.handle().native_tls_addr().expect("a TLS listener");
        ConnectOptions {
            tls: Some(TlsOptions::with_ca(pki.path("ca.pem"))),
            connect_timeout: DEADLINE,
            ..ConnectOptions::new(addr.to_string())
        }
    } else {
        ConnectOptions::new(server.addr.to_string())
    };
    Client::connect(options).await.expect("connects")
}

/// Reads the stream from `first` over plain TCP and over TLS; every body as published.
async fn read_all(server: &TestServer, pki: &Pki, from_where: &str) {
    for tls in [false, true] {
        let c = client(server, pki, tls).await;
        let mut sub = c.consume("s", &from("first")).await.unwrap();
        let got = take(&mut sub, N).await;
        for (i, d) in got.iter().enumerate() {
            let want = body(i);
            assert!(
                d.body[..] == want[..],
                "{from_where}, tls {tls}, record {i}: body of {} bytes, {} expected",
                d.body.len(),
                want.len()
            );
        }
        assert_eq!(
            offsets(&got),
            (0..N as i64).collect::<Vec<_>>(),
            "tls {tls}"
        );
        c.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_of_every_size_arrive_whole_over_tcp_and_tls_from_the_tail_and_the_files() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_path_buf();
    let start = || {
        let dir = dir.clone();
        TestServer::with(|s| {
            pki.server_settings(s);
            s.storage.data_dir = dir;
        })
    };
    {
        let server = start();
        let c = connect(&server).await;
        c.declare_queue("s", &stream()).await.unwrap();
        let mut confirms = Vec::new();
        for i in 0..N {
            confirms.push(c.publish("", "s", body(i)).await.unwrap());
        }
        for confirm in confirms {
            within("a confirm", confirm).await.unwrap();
        }
        read_all(&server, &pki, "from the tail cache").await;
    }
    // Restarted: every record is read back from the segment files.
    let server = start();
    read_all(&server, &pki, "from the files").await;
}
