//! The handshake: the secret's proof, TLS and its reload, the version gate.
use super::*;

async fn pair(server: &Transport, client: &Transport) -> (io::Result<Conn>, Option<Conn>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accept = async {
        let (tcp, peer) = listener.accept().await.unwrap();
        server.accept(tcp, peer).await
    };
    tokio::join!(client.connect(&addr), accept)
}

#[tokio::test]
async fn the_same_secret_passes_and_frames_follow() {
    let (c, s) = pair(
        &Transport::plain("0123456789abcdef"),
        &Transport::plain("0123456789abcdef"),
    )
    .await;
    let (mut c, mut s) = (c.unwrap(), s.unwrap());
    c.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    s.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"ping");
}

#[tokio::test]
async fn a_wrong_secret_is_refused_on_both_sides() {
    let (c, s) = pair(
        &Transport::plain("0123456789abcdef"),
        &Transport::plain("fedcba9876543210"),
    )
    .await;
    assert!(s.is_none());
    let e = c.err().expect("the client is refused");
    assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
    assert!(e.to_string().contains("cluster.secret"), "{e}");
}

/// A node's plain transport announcing `protocol`.
fn speaking(id: u64, protocol: u32) -> Transport {
    Transport {
        me: Speaker::Node(id),
        protocol,
        ..Transport::plain("0123456789abcdef")
    }
}

#[tokio::test]
async fn a_node_of_another_version_is_refused_on_both_sides_with_both_versions() {
    let (c, s) = pair(&speaking(1, 5), &speaking(2, 4)).await;
    assert!(s.is_none(), "the accepting node refuses");
    let e = c.err().expect("the connecting node refuses");
    assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
    let m = Mismatch::of(&e).expect("a version mismatch");
    assert_eq!(
        (m.peer, m.theirs, m.me, m.ours),
        (Some(Speaker::Node(1)), 5, Speaker::Node(2), 4)
    );
    assert!(
        e.to_string()
            .contains("speaks cluster protocol 5, this node (node 2) 4: stop every node"),
        "{e}"
    );
    // The same versions pass.
    let (c, s) = pair(&speaking(1, 5), &speaking(2, 5)).await;
    assert!(c.is_ok() && s.is_some());
}

/// `speaking(id, protocol)` with another secret.
fn speaking_without_the_secret(id: u64, protocol: u32) -> Transport {
    Transport {
        me: Speaker::Node(id),
        protocol,
        ..Transport::plain("not-the-cluster-secret")
    }
}

#[tokio::test]
async fn a_version_announced_without_the_secret_is_not_taken_for_a_mismatch() {
    // The connecting side without the secret: the accepting side checks its proof
    // before its version, and refuses it as a wrong secret.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = speaking(1, 5);
    let accept = async {
        let (tcp, peer) = listener.accept().await.unwrap();
        let mut conn: Conn = Box::new(tcp);
        server.challenge(&mut conn, peer).await
    };
    let client = speaking_without_the_secret(2, 4);
    let (c, s) = tokio::join!(client.connect(&addr), accept);
    let s = s.expect_err("refused");
    assert!(Mismatch::of(&s).is_none(), "taken for a mismatch: {s}");
    assert!(s.to_string().contains("wrong cluster secret"), "{s}");
    let c = c.err().expect("refused");
    assert!(Mismatch::of(&c).is_none(), "{c}");
    // The accepting side without the secret: the connecting side checks its proof
    // before its version.
    let (c, s) = pair(&speaking_without_the_secret(1, 5), &speaking(2, 4)).await;
    assert!(s.is_none());
    let c = c.err().expect("refused");
    assert!(Mismatch::of(&c).is_none(), "taken for a mismatch: {c}");
    assert!(c.to_string().contains("cluster.secret"), "{c}");
}

#[tokio::test]
async fn a_build_from_before_the_gate_is_refused_as_version_0() {
    // A listener speaking the old handshake: its magic and challenge, nothing more.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let old = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut hello = OLD_MAGICS[0].to_vec();
        hello.extend_from_slice(&[7u8; NONCE]);
        tcp.write_all(&hello).await.unwrap();
        let mut rest = Vec::new();
        let _ = tcp.read_to_end(&mut rest).await;
    });
    let e = speaking(3, 9).connect(&addr).await.err().expect("refused");
    let m = Mismatch::of(&e).expect("a version mismatch");
    assert_eq!((m.peer, m.theirs, m.ours), (None, 0, 9));
    assert!(e.to_string().contains("an older actormq"), "{e}");
    drop(e);
    old.await.unwrap();
}

/// Writes `ca.pem` (a new CA named `ca_name`), and `cert.pem` / `key.pem` (its
/// certificate for 127.0.0.1) into `dir`.
fn write_pki(dir: &std::path::Path, ca_name: &str) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, ca_name);
    let ca = params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
}

/// A transport with `cluster.tls` on the files of `dir`.
fn tls_transport(dir: &std::path::Path) -> Transport {
    let settings = TlsSettings {
        cert_file: Some(dir.join("cert.pem")),
        key_file: Some(dir.join("key.pem")),
        ca_file: Some(dir.join("ca.pem")),
        ..Default::default()
    };
    Transport {
        secret: b"0123456789abcdef".to_vec(),
        tls: Some(RwLock::new(Arc::new(tls_pair(&settings).unwrap()))),
        tls_settings: settings,
        handshake_timeout: Duration::from_secs(10),
        me: Speaker::Node(1),
        protocol: CLUSTER_PROTOCOL,
    }
}

fn copy_pki(from: &std::path::Path, to: &std::path::Path) {
    for f in ["ca.pem", "cert.pem", "key.pem"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

#[tokio::test]
async fn a_reload_serves_new_connections_with_the_new_files_and_a_broken_file_keeps_the_old() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_pki(a.path(), "first CA");
    copy_pki(a.path(), b.path());
    let (server, client) = (tls_transport(a.path()), tls_transport(b.path()));
    let joined = |r: (io::Result<Conn>, Option<Conn>)| r.0.is_ok() && r.1.is_some();
    assert!(joined(pair(&server, &client).await));

    std::fs::write(a.path().join("key.pem"), "not a key").unwrap();
    let e = server.reload().unwrap_err();
    assert!(e.contains("key.pem"), "{e}");
    assert!(
        joined(pair(&server, &client).await),
        "the old files stay in use"
    );

    // A new CA on one side only: the two no longer trust each other.
    write_pki(a.path(), "second CA");
    assert_eq!(server.reload(), Ok(true));
    assert!(
        !joined(pair(&server, &client).await),
        "the new files are used"
    );
    copy_pki(a.path(), b.path());
    assert_eq!(client.reload(), Ok(true));
    assert!(joined(pair(&server, &client).await));
    assert_eq!(Transport::plain("0123456789abcdef").reload(), Ok(false));
}

#[test]
fn a_peer_name_is_the_host_of_its_address() {
    assert!(matches!(
        server_name("127.0.0.1:25672").unwrap(),
        ServerName::IpAddress(_)
    ));
    assert!(matches!(
        server_name("[::1]:25672").unwrap(),
        ServerName::IpAddress(_)
    ));
    assert!(matches!(
        server_name("node1.example:25672").unwrap(),
        ServerName::DnsName(_)
    ));
}
