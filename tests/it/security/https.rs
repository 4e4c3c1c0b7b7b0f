//! The management API over TLS (`http.tls_bind`): a GET through a tokio-rustls client
//! that trusts the test CA, and a certificate replaced on disk reaching new HTTPS
//! connections after a reload (what SIGHUP does).

use super::pki::{connector, localhost, Pki};
use crate::support::{TestServer, DEADLINE};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn https_server(pki: &Pki) -> TestServer {
    TestServer::with(|s| {
        s.http.tls_bind = vec!["127.0.0.1:0".into()];
        s.tls.cert_file = Some(pki.path("server.pem"));
        s.tls.key_file = Some(pki.path("server.key"));
    })
}

/// GET `path` as guest over HTTPS; the whole response (the server closes after it).
async fn get(pki: &Pki, addr: SocketAddr, path: &str) -> String {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = tokio::time::timeout(DEADLINE, connector(pki, None).connect(localhost(), tcp))
        .await
        .expect("a handshake in time")
        .expect("the HTTPS listener's certificate chains to the test CA");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\nConnection: close\r\n\r\n"
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(DEADLINE, tls.read_to_end(&mut out))
        .await
        .expect("a response in time")
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_the_overview_with_the_tls_certificate() {
    let pki = Pki::new();
    let server = https_server(&pki);
    let addr = server.handle().https_addrs()[0];
    let r = get(&pki, addr, "/api/overview").await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("\"management_version\""), "{r}");
    let r = get(&pki, addr, "/api/overview").await;
    assert!(
        r.starts_with("HTTP/1.1 200"),
        "a second connection too: {r}"
    );
    // The listener is one of the node's, under RabbitMQ's protocol name.
    let r = get(&pki, addr, "/api/overview").await;
    assert!(r.contains("\"https\""), "listed as https: {r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_on_the_https_port_gets_no_answer_and_a_bad_ca_fails() {
    let pki = Pki::new();
    let server = https_server(&pki);
    let addr = server.handle().https_addrs()[0];
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /api/overview HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, tcp.read_to_end(&mut out)).await;
    assert!(!out.starts_with(b"HTTP/1.1 200"), "no API in clear text");
    // A client that trusts another CA refuses the server.
    let other = Pki::new();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(connector(&other, None)
        .connect(localhost(), tcp)
        .await
        .is_err());
}
