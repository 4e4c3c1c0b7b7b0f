//! `PUT /api/users/{name}` with a RabbitMQ password hash, as RabbitMQ takes it:
//! `password_hash` with `hashing_algorithm = rabbit_password_hashing_sha256` (or no
//! algorithm: RabbitMQ's default), then a login with the password it hashes; an empty
//! hash is a user that cannot log in with a password.

use crate::mgmt::http::{server, Http};
use base64ct::{Base64, Encoding};
use serde_json::json;
use sha2::{Digest, Sha256};

/// RabbitMQ's `rabbit_password_hashing_sha256`: base64(salt ‖ SHA-256(salt ‖ password)).
fn rabbit_hash(salt: [u8; 4], password: &str) -> String {
    let mut raw = salt.to_vec();
    raw.extend_from_slice(
        &Sha256::new()
            .chain_update(salt)
            .chain_update(password)
            .finalize(),
    );
    Base64::encode_string(&raw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_user_takes_rabbitmq_sha256_hashes() {
    let s = server();
    let http = Http::guest(&s);
    let hash = rabbit_hash([1, 2, 3, 4], "copied");
    let body = json!({"password_hash": hash, "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": "monitoring"});
    let r = http.put("/api/users/ops", &body.to_string()).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let ops = Http::new(&s).user("ops", "copied");
    assert_eq!(ops.get("/api/whoami").await.status, 200);
    let wrong = Http::new(&s).user("ops", "guessed");
    assert_eq!(wrong.get("/api/whoami").await.status, 401);
    // Shown back as RabbitMQ shows it.
    let u = http.get("/api/users/ops").await.json();
    assert_eq!(u["password_hash"], hash.as_str());
    assert_eq!(u["hashing_algorithm"], "rabbit_password_hashing_sha256");

    // Without an algorithm a non-PHC hash is RabbitMQ's default, SHA-256.
    let hash = rabbit_hash([9, 9, 9, 9], "second");
    let r = http
        .put(
            "/api/users/ops",
            &json!({"password_hash": hash, "tags": "monitoring"}).to_string(),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        Http::new(&s)
            .user("ops", "second")
            .get("/api/whoami")
            .await
            .status,
        200
    );

    // Refusals name what is wrong.
    for (body, says) in [
        (
            json!({"password_hash": "bm90IGEgaGFzaA==", "hashing_algorithm": "rabbit_password_hashing_sha256"}),
            "4-byte salt",
        ),
        (
            json!({"password_hash": "abc", "hashing_algorithm": "rabbit_password_hashing_md5"}),
            "not supported",
        ),
        (
            json!({"password_hash": "%%%", "hashing_algorithm": "rabbit_password_hashing_sha256"}),
            "base64",
        ),
    ] {
        let r = http.put("/api/users/bad", &body.to_string()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.text().contains(says), "{body}: {}", r.text());
    }

    // An empty hash: a user with no password (EXTERNAL only), as in RabbitMQ.
    let r = http
        .put(
            "/api/users/certonly",
            &json!({"password_hash": ""}).to_string(),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        Http::new(&s)
            .user("certonly", "")
            .get("/api/whoami")
            .await
            .status,
        401
    );
}
