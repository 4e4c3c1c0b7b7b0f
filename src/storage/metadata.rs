//! [`MetadataStore`]: the durable exchanges, queues, bindings and users of every
//! virtual host, kept as one snapshot file replaced atomically on every change.
//!
//! The snapshot is plain data (no broker or actix types): the registry converts its
//! specs to and from these structs. The file is `data_dir/metadata.amq`: the magic
//! `AMQMETA1`, then one `[len][crc32][payload]` frame whose payload is the snapshot in
//! MessagePack with field names (so fields can be added with `#[serde(default)]`).
//!
//! A save writes `metadata.amq.tmp`, fsyncs it, renames it over the old file and fsyncs
//! the directory: after a crash the file is the old snapshot or the new one, never a mix.
//! Saves run on a thread of the store's own and coalesce: when several are queued, only
//! the newest is written and all of them complete after it.

use super::completion::{Completer, Completion};
use super::disk::frame::{self, FrameAt};
use super::error::StorageError;
use super::fsutil::{sync_dir, DirLock};
use crate::message::FieldTable;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

/// The magic at the start of the metadata file; the last character is the version.
const MAGIC: &[u8; 8] = b"AMQMETA1";

/// The metadata file's name in `data_dir`.
pub const FILE_NAME: &str = "metadata.amq";

/// A durable exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredExchange {
    /// The exchange's name.
    pub name: String,
    /// Its type name (`direct`, `fanout`, `topic`, `headers`, or a registered one).
    pub kind: String,
    /// Always true for a stored exchange; kept so a spec round-trips unchanged.
    pub durable: bool,
    /// Deleted when its last binding goes.
    pub auto_delete: bool,
    /// Reachable only through exchange-to-exchange bindings.
    pub internal: bool,
    /// Declare arguments.
    #[serde(default)]
    pub arguments: FieldTable,
}

/// A durable queue (exclusive queues never outlive their connection, so never stored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredQueue {
    /// The queue's name.
    pub name: String,
    /// Always true for a stored queue; kept so a spec round-trips unchanged.
    pub durable: bool,
    /// Deleted when its last consumer leaves.
    pub auto_delete: bool,
    /// Declare arguments (`x-message-ttl`, `x-max-length`, ...).
    #[serde(default)]
    pub arguments: FieldTable,
}

/// Where a stored binding leads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredBindingTarget {
    /// A queue, by name.
    Queue(String),
    /// An exchange, by name.
    Exchange(String),
}

/// A binding between durable entities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredBinding {
    /// The source exchange.
    pub source: String,
    /// The destination queue or exchange.
    pub destination: StoredBindingTarget,
    /// The binding key.
    pub routing_key: String,
    /// The binding arguments.
    #[serde(default)]
    pub arguments: FieldTable,
}

/// The durable entities of one virtual host.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StoredVhost {
    /// Durable exchanges (the predeclared `amq.*` ones need not be listed).
    #[serde(default)]
    pub exchanges: Vec<StoredExchange>,
    /// Durable queues.
    #[serde(default)]
    pub queues: Vec<StoredQueue>,
    /// Bindings whose source and destination are both durable.
    #[serde(default)]
    pub bindings: Vec<StoredBinding>,
    /// Policies and operator policies.
    #[serde(default)]
    pub policies: Vec<StoredPolicy>,
}

/// A policy or operator policy (see [`crate::definitions::Policy`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredPolicy {
    /// Its name.
    pub name: String,
    /// An operator policy (else a policy).
    #[serde(default)]
    pub operator: bool,
    /// The regular expression on names.
    pub pattern: String,
    /// `queues`, `exchanges` or `all`.
    pub apply_to: String,
    /// Higher wins.
    #[serde(default)]
    pub priority: i64,
    /// RabbitMQ's definition keys.
    #[serde(default)]
    pub definition: FieldTable,
}

/// A user created at run time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredUser {
    /// The user name.
    pub name: String,
    /// A PHC string (PBKDF2-SHA256), never the password.
    pub password_hash: String,
    /// Virtual hosts the user may open.
    #[serde(default)]
    pub vhosts: Vec<String>,
    /// Refused from anywhere but loopback.
    #[serde(default)]
    pub loopback_only: bool,
    /// User tags (`administrator`, `monitoring`, ...).
    #[serde(default)]
    pub tags: Vec<String>,
    /// The patterns of the virtual hosts of `vhosts` where they are not `.*` x3 (a
    /// record written before patterns existed has none: its grants read as `.*` x3).
    #[serde(default)]
    pub permissions: Vec<StoredPermission>,
    /// Topic permissions.
    #[serde(default)]
    pub topic_permissions: Vec<StoredTopicPermission>,
}

/// A user's permission patterns in one virtual host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredPermission {
    /// The virtual host.
    pub vhost: String,
    /// Configure pattern.
    pub configure: String,
    /// Write pattern.
    pub write: String,
    /// Read pattern.
    pub read: String,
}

/// A user's topic permission on one exchange of one virtual host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredTopicPermission {
    /// The virtual host.
    pub vhost: String,
    /// The exchange.
    pub exchange: String,
    /// Write pattern (routing keys published with).
    pub write: String,
    /// Read pattern (binding keys bound with).
    pub read: String,
}

/// Everything durable but the messages.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MetadataSnapshot {
    /// Virtual hosts by name, with their entities.
    #[serde(default)]
    pub vhosts: BTreeMap<String, StoredVhost>,
    /// The users (seeded from the settings on first start, then changed at run time).
    #[serde(default)]
    pub users: Vec<StoredUser>,
    /// True once the broker-wide definitions (virtual hosts, users) are kept here: from
    /// then on they come from this snapshot, and the settings no longer seed them.
    #[serde(default)]
    pub seeded: bool,
    /// True once the settings' users were seeded here: they are not seeded again, even
    /// when every user has been deleted.
    #[serde(default)]
    pub users_seeded: bool,
    /// The users seeded from the settings and not put or deleted since (a cluster
    /// node's own users, see `BrokerDefinitions::seeded_users`).
    #[serde(default)]
    pub seeded_users: std::collections::BTreeSet<String>,
    /// The cluster's name, once given (`PUT /api/cluster-name`).
    #[serde(default)]
    pub cluster_name: Option<String>,
    /// Virtual host limits (`max-connections`, `max-queues`), of the vhosts that have any.
    #[serde(default)]
    pub vhost_limits: BTreeMap<String, crate::definitions::VhostLimits>,
}

/// Reads the snapshot in `data_dir`; a missing file is an empty snapshot, a damaged
/// one an error (starting without the durable entities would silently lose them).
pub fn load(data_dir: &Path) -> Result<MetadataSnapshot, StorageError> {
    let path = data_dir.join(FILE_NAME);
    let data = match fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(MetadataSnapshot::default())
        }
        Err(e) => return Err(StorageError::io("reading", &path, e)),
    };
    let corrupt = |reason: String| StorageError::Corrupt {
        path: path.clone(),
        reason,
    };
    if data.len() < MAGIC.len() || &data[..MAGIC.len()] != MAGIC {
        return Err(corrupt("not a metadata file (bad magic)".into()));
    }
    match frame::read_at(&data, MAGIC.len()) {
        FrameAt::Good { payload, next } if next == data.len() => rmp_serde::from_slice(payload)
            .map_err(|e| corrupt(format!("undecodable snapshot: {e}"))),
        FrameAt::Good { .. } => Err(corrupt("trailing bytes after the snapshot".into())),
        other => Err(corrupt(format!("damaged snapshot frame ({other:?})"))),
    }
}

/// Writes `snapshot` to `data_dir` atomically (temp file, fsync, rename, fsync dir).
pub fn write(data_dir: &Path, snapshot: &MetadataSnapshot) -> Result<(), StorageError> {
    let path = data_dir.join(FILE_NAME);
    let tmp = data_dir.join(format!("{FILE_NAME}.tmp"));
    let mut buf = MAGIC.to_vec();
    frame::encode_with(&mut buf, |b| {
        rmp_serde::encode::write_named(b, snapshot).map_err(|e| StorageError::Encode(e.to_string()))
    })?;
    let result = File::create(&tmp).and_then(|mut f| {
        f.write_all(&buf)?;
        f.sync_all()
    });
    result.map_err(|e| StorageError::io("writing", &tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| StorageError::io("replacing", &path, e))?;
    sync_dir(data_dir)
}

/// The metadata snapshot file with a saving thread of its own.
pub struct MetadataStore {
    /// Saves to the thread (taken on drop to stop it).
    tx: Option<mpsc::Sender<(MetadataSnapshot, Completer)>>,
    /// The saving thread, joined on drop.
    thread: Option<JoinHandle<()>>,
    /// The data directory.
    dir: PathBuf,
    /// Keeps other processes from writing the same file.
    _lock: DirLock,
}

impl MetadataStore {
    /// Opens the metadata in `data_dir` (created if missing) and answers the snapshot
    /// found there. Blocks while it reads: call it at start-up.
    pub fn open(data_dir: &Path) -> Result<(MetadataStore, MetadataSnapshot), StorageError> {
        fs::create_dir_all(data_dir).map_err(|e| StorageError::io("creating", data_dir, e))?;
        let lock = DirLock::acquire(data_dir, data_dir.join("metadata.lock"))?;
        let snapshot = load(data_dir)?;
        let (tx, rx) = mpsc::channel::<(MetadataSnapshot, Completer)>();
        let dir = data_dir.to_path_buf();
        let thread_dir = dir.clone();
        let thread = std::thread::Builder::new()
            .name("actormq-storage-metadata".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut latest = first.0;
                    let mut waiting = vec![first.1];
                    while let Ok((s, c)) = rx.try_recv() {
                        latest = s;
                        waiting.push(c);
                    }
                    let result = write(&thread_dir, &latest);
                    if let Err(e) = &result {
                        tracing::error!(error = %e, "cannot save the metadata snapshot");
                    }
                    for c in waiting {
                        c.complete(result.clone());
                    }
                }
            })
            .map_err(|e| StorageError::io("starting the metadata thread for", &dir, e))?;
        Ok((
            MetadataStore {
                tx: Some(tx),
                thread: Some(thread),
                dir,
                _lock: lock,
            },
            snapshot,
        ))
    }

    /// Replaces the stored snapshot with `snapshot`; resolves once it is on disk.
    /// Saves are applied in call order.
    pub fn save(&self, snapshot: MetadataSnapshot) -> Completion {
        let (done, completion) = Completion::pending();
        match &self.tx {
            Some(tx) => {
                if let Err(mpsc::SendError((_, done))) = tx.send((snapshot, done)) {
                    done.complete(Err(StorageError::Closed));
                }
            }
            None => done.complete(Err(StorageError::Closed)),
        }
        completion
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for MetadataStore {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::FieldValue;

    fn sample() -> MetadataSnapshot {
        let mut args = FieldTable::new();
        args.insert("x-max-length".into(), FieldValue::Int(10));
        let vhost = StoredVhost {
            exchanges: vec![StoredExchange {
                name: "orders".into(),
                kind: "topic".into(),
                durable: true,
                auto_delete: false,
                internal: false,
                arguments: FieldTable::new(),
            }],
            queues: vec![StoredQueue {
                name: "jobs".into(),
                durable: true,
                auto_delete: false,
                arguments: args.clone(),
            }],
            bindings: vec![StoredBinding {
                source: "orders".into(),
                destination: StoredBindingTarget::Queue("jobs".into()),
                routing_key: "order.*".into(),
                arguments: FieldTable::new(),
            }],
            policies: vec![StoredPolicy {
                name: "cap".into(),
                operator: false,
                pattern: "^jobs$".into(),
                apply_to: "queues".into(),
                priority: 1,
                definition: args.clone(),
            }],
        };
        let mut s = MetadataSnapshot::default();
        s.vhosts.insert("/".into(), vhost);
        s.users.push(StoredUser {
            name: "app".into(),
            password_hash: "$pbkdf2-sha256$...".into(),
            vhosts: vec!["/".into()],
            loopback_only: false,
            tags: vec!["administrator".into()],
            permissions: vec![StoredPermission {
                vhost: "/".into(),
                configure: "^app\\.".into(),
                write: ".*".into(),
                read: "".into(),
            }],
            topic_permissions: vec![StoredTopicPermission {
                vhost: "/".into(),
                exchange: "amq.topic".into(),
                write: "^{username}\\.".into(),
                read: ".*".into(),
            }],
        });
        s.seeded = true;
        s
    }

    #[test]
    fn a_saved_snapshot_is_loaded_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let (store, found) = MetadataStore::open(dir.path()).unwrap();
        assert_eq!(found, MetadataSnapshot::default());
        store.save(MetadataSnapshot::default()).wait().unwrap();
        store.save(sample()).wait().unwrap();
        drop(store);
        let (_store, found) = MetadataStore::open(dir.path()).unwrap();
        assert_eq!(found, sample());
        assert!(!dir.path().join("metadata.amq.tmp").exists());
    }

    #[test]
    fn the_last_of_many_saves_wins() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = MetadataStore::open(dir.path()).unwrap();
        let mut pending = Vec::new();
        for i in 0..50 {
            let mut s = sample();
            s.users[0].name = format!("user{i}");
            pending.push(store.save(s));
        }
        for c in pending {
            c.wait().unwrap();
        }
        assert_eq!(load(dir.path()).unwrap().users[0].name, "user49");
    }

    #[test]
    fn a_damaged_snapshot_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &sample()).unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut data = fs::read(&path).unwrap();
        let n = data.len();
        data[n - 3] ^= 0xff;
        fs::write(&path, &data).unwrap();
        let e = load(dir.path()).unwrap_err();
        assert!(e.to_string().contains("metadata.amq"), "{e}");
        fs::write(&path, &data[..n / 2]).unwrap();
        assert!(load(dir.path()).is_err());
    }

    #[test]
    fn a_leftover_temp_file_does_not_matter() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &sample()).unwrap();
        fs::write(dir.path().join("metadata.amq.tmp"), b"half a snapshot").unwrap();
        assert_eq!(load(dir.path()).unwrap(), sample());
    }
}
