//! RabbitMQ's definitions format (what `GET /api/definitions` exports and `POST`
//! imports, and `rabbitmqctl export_definitions` writes), as serde types: so a file
//! exported from RabbitMQ imports here and one exported here imports into RabbitMQ.
//! Unknown fields are ignored; fields RabbitMQ may leave out default.
//!
//! Password hashes: ours are PHC strings (PBKDF2-SHA256), exported with the algorithm
//! name [`OUR_HASHING`]. RabbitMQ's default, [`RABBIT_SHA256`] (base64 of a 4-byte salt
//! followed by SHA-256(salt ‖ password)), is imported as a PHC string of the id
//! `rabbit-sha256` that logins verify as RabbitMQ does, and exported back in
//! RabbitMQ's form; so users move both ways without knowing their passwords. Other
//! RabbitMQ algorithms (MD5, SHA-512) are refused naming the user.

use crate::message::FieldTable;
use base64ct::{Base64, Base64Unpadded, Encoding};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Our hashing algorithm's name in the definitions format.
pub const OUR_HASHING: &str = "pbkdf2_sha256_phc";
/// RabbitMQ's default hashing algorithm's name.
pub const RABBIT_SHA256: &str = "rabbit_password_hashing_sha256";
/// The PHC id of an imported RabbitMQ SHA-256 hash.
const RABBIT_PHC: &str = "$rabbit-sha256$";

fn yes() -> bool {
    true
}

/// A whole definitions file (broker-wide), or one vhost's (no users, vhosts or
/// permissions; items without `vhost`).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DefinitionsFile {
    /// The RabbitMQ version whose format this is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rabbit_version: Option<String>,
    /// The same, as newer RabbitMQ versions name it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rabbitmq_version: Option<String>,
    /// The product that exported it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product_name: Option<String>,
    /// Its version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product_version: Option<String>,
    /// Users.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<UserItem>>,
    /// Virtual hosts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vhosts: Option<Vec<VhostItem>>,
    /// Permissions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Vec<PermissionItem>>,
    /// Topic permissions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic_permissions: Option<Vec<TopicPermissionItem>>,
    /// Runtime parameters: the `vhost-limits` ones are read and written (see
    /// [`super::limits`]); others are ignored on import.
    pub parameters: Vec<Value>,
    /// Global parameters (none here; ignored on import).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global_parameters: Option<Vec<Value>>,
    /// Policies.
    pub policies: Vec<PolicyItem>,
    /// Operator policies (an actormq addition: RabbitMQ's export leaves them out).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub operator_policies: Vec<PolicyItem>,
    /// Queues.
    pub queues: Vec<QueueItem>,
    /// Exchanges.
    pub exchanges: Vec<ExchangeItem>,
    /// Bindings.
    pub bindings: Vec<BindingItem>,
}

/// User tags: RabbitMQ wrote `"a,b"` before 3.9 and `["a","b"]` since; both read.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Tags {
    /// `"administrator,monitoring"`.
    Text(String),
    /// `["administrator", "monitoring"]`.
    List(Vec<String>),
}

impl Default for Tags {
    fn default() -> Self {
        Tags::List(Vec::new())
    }
}

impl Tags {
    /// The tags, trimmed, empty ones dropped.
    pub fn to_vec(&self) -> Vec<String> {
        let v: Vec<String> = match self {
            Tags::Text(s) => s.split(',').map(str::to_string).collect(),
            Tags::List(v) => v.clone(),
        };
        v.into_iter()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect()
    }
}

impl Serialize for Tags {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_vec().serialize(s)
    }
}

/// One user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserItem {
    /// The name.
    pub name: String,
    /// The hash, in the form `hashing_algorithm` says.
    #[serde(default)]
    pub password_hash: String,
    /// [`OUR_HASHING`] or [`RABBIT_SHA256`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashing_algorithm: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Tags,
    /// Limits (none here).
    #[serde(default)]
    pub limits: Value,
}

/// One virtual host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VhostItem {
    /// The name.
    pub name: String,
    /// Free text (not kept here).
    #[serde(default)]
    pub description: String,
    /// Vhost tags (not kept here).
    #[serde(default)]
    pub tags: Vec<String>,
}

/// One user's topic permission on one exchange of one vhost.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopicPermissionItem {
    /// The user.
    pub user: String,
    /// The vhost.
    pub vhost: String,
    /// The (topic) exchange.
    pub exchange: String,
    /// Write pattern (routing keys).
    #[serde(default)]
    pub write: String,
    /// Read pattern (binding keys).
    #[serde(default)]
    pub read: String,
}

/// One user's permission on one vhost: RabbitMQ's three patterns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PermissionItem {
    /// The user.
    pub user: String,
    /// The vhost.
    pub vhost: String,
    /// Configure pattern.
    #[serde(default)]
    pub configure: String,
    /// Write pattern.
    #[serde(default)]
    pub write: String,
    /// Read pattern.
    #[serde(default)]
    pub read: String,
}

/// One policy or operator policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyItem {
    /// Its vhost (absent in a vhost's own file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vhost: Option<String>,
    /// Its name.
    pub name: String,
    /// The regular expression on names.
    pub pattern: String,
    /// `queues`, `exchanges` or `all`.
    #[serde(rename = "apply-to", default = "all")]
    pub apply_to: String,
    /// The settings.
    #[serde(default)]
    pub definition: FieldTable,
    /// Higher wins.
    #[serde(default)]
    pub priority: i64,
}

fn all() -> String {
    "all".to_string()
}

/// One queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueItem {
    /// Its name.
    pub name: String,
    /// Its vhost (absent in a vhost's own file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vhost: Option<String>,
    /// Survives a restart.
    #[serde(default = "yes")]
    pub durable: bool,
    /// Deleted when its last consumer leaves.
    #[serde(default)]
    pub auto_delete: bool,
    /// Declare arguments.
    #[serde(default)]
    pub arguments: FieldTable,
}

/// One exchange.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExchangeItem {
    /// Its name.
    pub name: String,
    /// Its vhost (absent in a vhost's own file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vhost: Option<String>,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Survives a restart.
    #[serde(default = "yes")]
    pub durable: bool,
    /// Deleted when its last binding goes.
    #[serde(default)]
    pub auto_delete: bool,
    /// Reachable only through exchange-to-exchange bindings.
    #[serde(default)]
    pub internal: bool,
    /// Declare arguments.
    #[serde(default)]
    pub arguments: FieldTable,
}

/// One binding.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BindingItem {
    /// The source exchange.
    pub source: String,
    /// Its vhost (absent in a vhost's own file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vhost: Option<String>,
    /// The destination's name.
    pub destination: String,
    /// `queue` or `exchange`.
    pub destination_type: String,
    /// The binding key.
    #[serde(default)]
    pub routing_key: String,
    /// Binding arguments.
    #[serde(default)]
    pub arguments: FieldTable,
}

/// The hash kept for an imported user's `password_hash` in `algorithm` (see the
/// module docs); the error says why it cannot be used.
pub fn import_hash(hash: &str, algorithm: Option<&str>) -> Result<String, String> {
    use pbkdf2::password_hash::PasswordHash;
    if hash.is_empty() {
        // RabbitMQ's user without a password: no password login.
        return Ok(String::new());
    }
    match algorithm {
        Some(OUR_HASHING) | None if PasswordHash::new(hash).is_ok() => Ok(hash.to_string()),
        Some(RABBIT_SHA256) => {
            let raw = Base64::decode_vec(hash)
                .map_err(|_| format!("password_hash is not base64 ({RABBIT_SHA256})"))?;
            if raw.len() != 4 + 32 {
                return Err(format!(
                    "password_hash of {} bytes: {RABBIT_SHA256} is a 4-byte salt and a 32-byte SHA-256",
                    raw.len()
                ));
            }
            Ok(format!(
                "{RABBIT_PHC}{}${}",
                Base64Unpadded::encode_string(&raw[..4]),
                Base64Unpadded::encode_string(&raw[4..])
            ))
        }
        Some(OUR_HASHING) => Err("password_hash is not a PHC string".to_string()),
        None => Err(format!(
            "password_hash without hashing_algorithm is RabbitMQ's legacy MD5: not supported (give {RABBIT_SHA256} or {OUR_HASHING} hashes)"
        )),
        Some(other) => Err(format!(
            "hashing_algorithm '{other}' is not supported (only {RABBIT_SHA256} and {OUR_HASHING})"
        )),
    }
}

/// A stored hash as the definitions format writes it: (password_hash, algorithm).
pub fn export_hash(hash: &str) -> (String, &'static str) {
    match rabbit_parts(hash) {
        Some((mut salt, digest)) => {
            salt.extend_from_slice(&digest);
            (Base64::encode_string(&salt), RABBIT_SHA256)
        }
        None => (hash.to_string(), OUR_HASHING),
    }
}

/// The salt and digest of an imported RabbitMQ SHA-256 hash.
fn rabbit_parts(hash: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let rest = hash.strip_prefix(RABBIT_PHC)?;
    let (salt, digest) = rest.split_once('$')?;
    Some((
        Base64Unpadded::decode_vec(salt).ok()?,
        Base64Unpadded::decode_vec(digest).ok()?,
    ))
}

/// True when `hash` is an imported RabbitMQ SHA-256 hash.
pub fn is_rabbit_hash(hash: &str) -> bool {
    hash.starts_with(RABBIT_PHC)
}

/// Checks `password` against an imported RabbitMQ SHA-256 hash, as RabbitMQ does:
/// SHA-256(salt ‖ password) equals the digest.
pub fn verify_rabbit_hash(password: &str, hash: &str) -> bool {
    let Some((salt, digest)) = rabbit_parts(hash) else {
        return false;
    };
    let mut h = Sha256::new();
    h.update(&salt);
    h.update(password.as_bytes());
    let computed = h.finalize();
    // Constant time over the digest's length.
    computed.len() == digest.len()
        && computed
            .iter()
            .zip(&digest)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RabbitMQ's hash of `password`: base64(salt ‖ SHA-256(salt ‖ password)).
    fn rabbit(salt: [u8; 4], password: &str) -> String {
        let mut h = Sha256::new();
        h.update(salt);
        h.update(password.as_bytes());
        let mut raw = salt.to_vec();
        raw.extend_from_slice(&h.finalize());
        Base64::encode_string(&raw)
    }

    #[test]
    fn rabbit_sha256_hashes_import_verify_and_export_unchanged() {
        let exported = rabbit([0x90, 0x8d, 0xc6, 0x0a], "s3cret");
        let kept = import_hash(&exported, Some(RABBIT_SHA256)).unwrap();
        assert!(is_rabbit_hash(&kept));
        assert!(verify_rabbit_hash("s3cret", &kept));
        assert!(!verify_rabbit_hash("s3cret!", &kept));
        assert_eq!(export_hash(&kept), (exported, RABBIT_SHA256));
    }

    #[test]
    fn other_algorithms_and_bad_hashes_are_refused_saying_why() {
        let e = import_hash("abc", Some("rabbit_password_hashing_md5")).unwrap_err();
        assert!(e.contains("not supported"), "{e}");
        let e = import_hash("AAAA", Some(RABBIT_SHA256)).unwrap_err();
        assert!(e.contains("4-byte salt"), "{e}");
        assert!(import_hash("garbage", None).is_err());
        let ours = crate::server::auth::hash_password("pw");
        assert_eq!(import_hash(&ours, Some(OUR_HASHING)).unwrap(), ours);
        assert_eq!(export_hash(&ours).1, OUR_HASHING);
    }

    #[test]
    fn a_rabbitmq_export_parses() {
        let file: DefinitionsFile = serde_json::from_str(
            r#"{"rabbit_version":"3.12.4","users":[{"name":"ops","password_hash":"x","hashing_algorithm":"rabbit_password_hashing_sha256","tags":"administrator,monitoring","limits":{}}],
            "vhosts":[{"name":"/"}],"permissions":[{"user":"ops","vhost":"/","configure":".*","write":".*","read":".*"}],
            "policies":[{"vhost":"/","name":"ttl","pattern":"^q","apply-to":"queues","definition":{"message-ttl":1000},"priority":1}],
            "queues":[{"name":"q","vhost":"/","durable":true,"auto_delete":false,"arguments":{"x-queue-type":"classic"}}],
            "exchanges":[{"name":"x","vhost":"/","type":"topic","durable":true,"auto_delete":false,"internal":false,"arguments":{}}],
            "bindings":[{"source":"x","vhost":"/","destination":"q","destination_type":"queue","routing_key":"a.*","arguments":{}}]}"#,
        )
        .unwrap();
        let users = file.users.unwrap();
        assert_eq!(users[0].tags.to_vec(), ["administrator", "monitoring"]);
        assert_eq!(file.policies[0].apply_to, "queues");
        assert_eq!(file.bindings[0].destination_type, "queue");
    }
}
