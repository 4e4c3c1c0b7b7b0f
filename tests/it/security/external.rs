//! The EXTERNAL mechanism (RabbitMQ's rabbitmq_auth_mechanism_ssl): a client whose
//! certificate the listener verified logs in as the user its CN names, with no
//! password, over AMQPS (raw frames) and the native protocol (the crate's client);
//! a certificate naming no user, and EXTERNAL without a certificate, are refused.

use super::amqp_raw::{close_of, frame, method};
use super::pki::{connector, localhost, Pki};
use crate::support::{TestServer, DEADLINE};
use actormq::client::{Client, ConnectOptions, QueueOptions, TlsOptions};
use actormq::definitions::UserDefinition;
use actormq::settings::TlsVerify;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// TLS listeners that ask for client certificates of the test CA, and the user `app`
/// (the CN of `client.pem`), who has no password.
async fn server(pki: &Pki) -> TestServer {
    let server = TestServer::with(|s| {
        pki.server_settings(s);
        s.tls.verify = TlsVerify::Peer;
        s.tls.ca_file = Some(pki.path("ca.pem"));
    });
    server
        .handle()
        .broker()
        .put_user(UserDefinition::new(
            "app",
            "",
            ["/".to_string()],
            false,
            Vec::new(),
        ))
        .await
        .unwrap();
    server
}

fn shortstr(s: &str) -> Vec<u8> {
    let mut v = vec![s.len() as u8];
    v.extend_from_slice(s.as_bytes());
    v
}

/// Sends the protocol header; answers connection.start's mechanisms.
async fn start<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> String {
    s.write_all(b"AMQP\x00\x00\x09\x01").await.unwrap();
    let (_, _, p) = frame(s).await;
    assert_eq!(&p[..4], &[0, 10, 0, 10], "connection.start");
    // version (2), server properties (long-prefixed table), mechanisms (longstr).
    let table = u32::from_be_bytes([p[6], p[7], p[8], p[9]]) as usize;
    let at = 10 + table;
    let len = u32::from_be_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]]) as usize;
    String::from_utf8_lossy(&p[at + 4..at + 4 + len]).into_owned()
}

/// Sends start-ok with `mechanism` and an empty response; the answer's payload.
async fn start_ok<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, mechanism: &str) -> Vec<u8> {
    let mut args = 0u32.to_be_bytes().to_vec();
    args.extend(shortstr(mechanism));
    args.extend_from_slice(&0u32.to_be_bytes());
    args.extend(shortstr("en_US"));
    s.write_all(&method(0, 10, 11, &args)).await.unwrap();
    frame(s).await.2
}

async fn amqps(pki: &Pki, server: &TestServer, cert: Option<&str>) -> impl AsyncRead + AsyncWrite {
    let tcp = tokio::net::TcpStream::connect(server.handle().amqps_addrs()[0])
        .await
        .unwrap();
    tokio::time::timeout(DEADLINE, connector(pki, cert).connect(localhost(), tcp))
        .await
        .expect("a handshake in time")
        .expect("TLS with the AMQPS listener")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_external_logs_in_as_the_certificate_user() {
    let pki = Pki::new();
    let server = server(&pki).await;
    let mut s = Box::pin(amqps(&pki, &server, Some("client")).await);
    assert_eq!(start(&mut s).await, "EXTERNAL PLAIN AMQPLAIN");
    let tune = start_ok(&mut s, "EXTERNAL").await;
    assert_eq!(&tune[..4], &[0, 10, 0, 30], "connection.tune: logged in");
    let mut args = 2047u16.to_be_bytes().to_vec();
    args.extend_from_slice(&131_072u32.to_be_bytes());
    args.extend_from_slice(&0u16.to_be_bytes());
    s.write_all(&method(0, 10, 31, &args)).await.unwrap();
    let mut args = shortstr("/");
    args.extend(shortstr(""));
    args.push(0);
    s.write_all(&method(0, 10, 40, &args)).await.unwrap();
    assert_eq!(&frame(&mut s).await.2[..4], &[0, 10, 0, 41], "open-ok");
    crate::support::eventually("the connection is listed as app's", || {
        let listed = server.handle().front_end().connections().list();
        async move { listed.iter().any(|c| c.user == "app") }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_external_for_an_unknown_user_or_without_a_certificate_is_refused() {
    let pki = Pki::new();
    let server = server(&pki).await;
    // A certificate of the CA whose CN is no user: 403 as a failed login.
    let mut s = Box::pin(amqps(&pki, &server, Some("ghost")).await);
    assert_eq!(start(&mut s).await, "EXTERNAL PLAIN AMQPLAIN");
    let (code, text) = close_of(&start_ok(&mut s, "EXTERNAL").await);
    assert_eq!(code, 403, "{text}");
    assert!(text.contains("ghost"), "{text}");
    // TLS without a client certificate: EXTERNAL is neither offered nor accepted.
    let mut s = Box::pin(amqps(&pki, &server, None).await);
    assert_eq!(start(&mut s).await, "PLAIN AMQPLAIN");
    let (code, text) = close_of(&start_ok(&mut s, "EXTERNAL").await);
    assert_eq!(code, 403, "{text}");
    assert!(text.contains("EXTERNAL"), "{text}");
    // Plain TCP: the same.
    let amqp = server.handle().amqp_addrs()[0];
    let mut tcp = tokio::net::TcpStream::connect(amqp).await.unwrap();
    assert_eq!(start(&mut tcp).await, "PLAIN AMQPLAIN");
    let (code, text) = close_of(&start_ok(&mut tcp, "EXTERNAL").await);
    assert_eq!(code, 403, "{text}");
}

fn native(server: &TestServer, tls: Option<TlsOptions>) -> ConnectOptions {
    let addr = match &tls {
        Some(_) => server.handle().native_tls_addr().unwrap(),
        None => server.addr,
    };
    ConnectOptions {
        tls,
        connect_timeout: DEADLINE,
        ..ConnectOptions::new(addr.to_string()).external()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_external_logs_in_as_the_certificate_user() {
    let pki = Pki::new();
    let server = server(&pki).await;
    let ca = || TlsOptions::with_ca(pki.path("ca.pem"));
    let app = ca().client_cert(pki.path("client.pem"), pki.path("client.key"));
    let client = Client::connect(native(&server, Some(app)))
        .await
        .expect("EXTERNAL with app's certificate");
    client
        .declare_queue("by-certificate", &QueueOptions::default())
        .await
        .unwrap();
    let listed = server.handle().front_end().connections().list();
    assert!(listed.iter().any(|c| c.user == "app"), "{listed:?}");

    let ghost = ca().client_cert(pki.path("ghost.pem"), pki.path("ghost.key"));
    let e = Client::connect(native(&server, Some(ghost)))
        .await
        .expect_err("no user ghost");
    assert!(e.to_string().contains("ACCESS_REFUSED"), "{e}");
    assert!(e.to_string().contains("ghost"), "{e}");

    let e = Client::connect(native(&server, Some(ca())))
        .await
        .expect_err("no certificate, no EXTERNAL");
    assert!(
        e.to_string().contains("no verified client certificate"),
        "{e}"
    );
    let e = Client::connect(native(&server, None))
        .await
        .expect_err("EXTERNAL on plain TCP");
    assert!(e.to_string().contains("ACCESS_REFUSED"), "{e}");
    // The password user of the same broker is unaffected.
    Client::connect(ConnectOptions::new(server.addr.to_string()))
        .await
        .expect("guest with a password");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_logs_in_with_its_certificate_when_no_password_is_given() {
    use crate::cli::{run_cmd, BIN};
    let pki = Pki::new();
    let server = server(&pki).await;
    let addr = server.handle().native_tls_addr().unwrap().to_string();
    let cli = |cert: &str| {
        let (c, k) = (
            pki.path(&format!("{cert}.pem")),
            pki.path(&format!("{cert}.key")),
        );
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(["declare-queue", "from-cli", "--server", &addr, "--ca-file"])
            .arg(pki.path("ca.pem"))
            .arg("--cert-file")
            .arg(c)
            .arg("--key-file")
            .arg(k);
        run_cmd(&mut cmd, None)
    };
    let out = cli("client");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli("ghost");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ACCESS_REFUSED") && err.contains("ghost"),
        "{err}"
    );
}
