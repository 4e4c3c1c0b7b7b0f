//! TLS listeners: the native client over TLS, refusals of untrusted servers and of
//! clients without a trusted certificate, and AMQP over TLS (raw frames through a
//! tokio-rustls client).

use super::amqp_raw;
use super::pki::Pki;
use crate::support::{TestServer, DEADLINE};
use actormq::client::{Client, ConnectOptions, ConsumeOptions, QueueOptions, TlsOptions};
use actormq::settings::TlsVerify;
use futures_util::StreamExt;
use std::sync::Arc;

fn tls_server(pki: &Pki, tweak: impl FnOnce(&mut actormq::Settings)) -> TestServer {
    TestServer::with(|s| {
        pki.server_settings(s);
        tweak(s);
    })
}

fn native_tls(server: &TestServer, tls: TlsOptions) -> ConnectOptions {
    let addr = server
        .handle()
        .native_tls_addr()
        .expect("a native TLS listener");
    ConnectOptions {
        tls: Some(tls),
        connect_timeout: DEADLINE,
        ..ConnectOptions::new(addr.to_string())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_native_client_publishes_and_consumes() {
    let pki = Pki::new();
    let server = tls_server(&pki, |_| {});
    let client = Client::connect(native_tls(&server, TlsOptions::with_ca(pki.path("ca.pem"))))
        .await
        .expect("connects over TLS");
    client
        .declare_queue("secret", &QueueOptions::default())
        .await
        .unwrap();
    client
        .publish("", "secret", "over TLS")
        .await
        .unwrap()
        .await
        .expect("confirmed");
    let mut consumer = client
        .consume("secret", &ConsumeOptions::prefetch(10))
        .await
        .unwrap();
    let d = tokio::time::timeout(DEADLINE, consumer.next())
        .await
        .expect("a delivery in time")
        .expect("a delivery")
        .unwrap();
    assert_eq!(&d.body[..], b"over TLS");
    d.ack().unwrap();
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_with_an_untrusted_ca_is_refused() {
    let pki = Pki::new();
    let server = tls_server(&pki, |_| {});
    let e = Client::connect(native_tls(
        &server,
        TlsOptions::with_ca(pki.path("other-ca.pem")),
    ))
    .await
    .expect_err("a server certificate of another CA is not trusted");
    let text = e.to_string();
    assert!(text.starts_with("TLS with "), "{text}");
    assert!(text.contains("certificate"), "{text}");
    // The listener goes on serving trusted clients.
    Client::connect(native_tls(&server, TlsOptions::with_ca(pki.path("ca.pem"))))
        .await
        .expect("a trusted client still connects");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verify_peer_refuses_clients_without_a_trusted_certificate() {
    let pki = Pki::new();
    let server = tls_server(&pki, |s| {
        s.tls.verify = TlsVerify::Peer;
        s.tls.ca_file = Some(pki.path("ca.pem"));
        s.tls.fail_if_no_peer_cert = true;
    });
    let ca = || TlsOptions::with_ca(pki.path("ca.pem"));
    assert!(
        Client::connect(native_tls(&server, ca())).await.is_err(),
        "a client without a certificate is refused"
    );
    let stranger = ca().client_cert(pki.path("stranger.pem"), pki.path("stranger.key"));
    assert!(
        Client::connect(native_tls(&server, stranger))
            .await
            .is_err(),
        "a certificate of another CA is refused"
    );
    let ours = ca().client_cert(pki.path("client.pem"), pki.path("client.key"));
    let client = Client::connect(native_tls(&server, ours))
        .await
        .expect("a client with a certificate of the CA connects");
    client
        .declare_queue("q", &QueueOptions::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_speaks_amqp_after_the_tls_handshake() {
    use rustls_pki_types::pem::PemObject;
    use tokio_rustls::rustls;
    let pki = Pki::new();
    let server = tls_server(&pki, |_| {});
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(pki.path("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    #[allow(deprecated)] // ring: the provider the broker uses
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(server.handle().amqps_addrs()[0])
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the AMQPS listener");
    let answer = amqp_raw::handshake(&mut tls, 2047).await;
    assert_eq!(&answer[..4], &[0, 10, 0, 41], "connection.open-ok");
    let listed = server.handle().front_end().connections().list();
    assert!(listed.iter().any(|c| c.protocol == "amqp"), "{listed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_text_on_the_tls_port_is_dropped_and_the_broker_goes_on() {
    let pki = Pki::new();
    let server = tls_server(&pki, |_| {});
    let plain = ConnectOptions {
        connect_timeout: DEADLINE,
        ..ConnectOptions::new(server.handle().native_tls_addr().unwrap().to_string())
    };
    assert!(Client::connect(plain).await.is_err());
    crate::support::eventually("the dropped socket is counted out", || {
        let n = server.handle().connections();
        async move { n == 0 }
    })
    .await;
    Client::connect(ConnectOptions::new(server.addr.to_string()))
        .await
        .expect("the plain listener is unaffected");
}
