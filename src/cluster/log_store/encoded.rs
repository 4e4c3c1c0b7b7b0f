//! Entries as they are encoded in the log's records, kept for the cluster's frames
//! ([`Encoded`]), so that an entry is encoded once on every member instead of once
//! per copy: a quorum queue's leader encoded each entry (up to a thousand messages)
//! for its own log, then again for each follower's append; each follower encoded
//! what it had just decoded from the frame once more for its log.
//!
//! The record's body (`[len][crc][MessagePack entry]`) and an entry in an append
//! frame are the same bytes, the entry's MessagePack encoding, so:
//! - the leader's log keeps the bodies it has just written; the append frames to its
//!   followers copy them in (`src/cluster/quorum/append_frame.rs`);
//! - a follower keeps the bytes each received entry was decoded from while openraft
//!   appends it, and its log writes them as the record's body.
//!
//! Entries are known by their log id: two entries with the same log id are the same
//! entry (Raft's log matching), so bytes kept for one may stand for any copy of it.
//! What is kept is bounded: the leader's entries go once every live follower has been
//! sent them (a follower whose sends fail does not hold them back), a follower's once
//! openraft has appended them, and never more than [`LIMIT`] bytes in all.

use super::{invalid, put_record, LogStore, Logged};
use crate::cluster::NodeId;
use bytes::Bytes;
use openraft::{Entry, LogId};
use serde::{de::DeserializeOwned, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// Most bytes of encoded entries one group member keeps (the oldest go first): a
/// few appends' worth, as a follower that lags further reads entries encoded again.
pub const LIMIT: usize = 8 << 20;

/// The encoded entries of one log, by index.
#[derive(Debug, Default)]
pub struct Encoded {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: BTreeMap<u64, (LogId<NodeId>, Bytes)>,
    bytes: usize,
    /// The peers the leader replicates to (one client each, sometimes two while
    /// openraft replaces one), by node.
    peers: HashMap<NodeId, Peer>,
    counts: Counts,
}

/// How entries were written and sent through an [`Encoded`], since it was made.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Entries copied into append frames from their kept encodings.
    pub copied: u64,
    /// Entries encoded into append frames (not kept).
    pub encoded: u64,
    /// Records written from a received entry's bytes.
    pub received: u64,
    /// Appends that failed and replication clients dropped: after one, the entries
    /// the peer lacks may have gone from here, and are encoded again for it.
    pub lost: u64,
}

#[derive(Debug, Default)]
struct Peer {
    clients: usize,
    /// The last index the peer is known to hold (answered a successful append).
    holds: Option<u64>,
    /// Its last send failed: it does not hold entries back until one succeeds.
    failing: bool,
}

impl Encoded {
    /// Nothing kept yet.
    pub fn new() -> Encoded {
        Encoded::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether bytes the log encodes are worth keeping: some peer is replicated to.
    pub fn wanted(&self) -> bool {
        !self.lock().peers.is_empty()
    }

    /// The bytes of the entry `log_id`, if kept.
    pub fn get(&self, log_id: &LogId<NodeId>) -> Option<Bytes> {
        let inner = self.lock();
        match inner.entries.get(&log_id.index) {
            Some((id, bytes)) if id == log_id => Some(bytes.clone()),
            _ => None,
        }
    }

    /// Keeps `bytes` as the encoding of the entry `log_id` (replacing whatever was
    /// kept at its index), within [`LIMIT`].
    pub fn keep(&self, log_id: LogId<NodeId>, bytes: Bytes) {
        let mut inner = self.lock();
        inner.bytes += bytes.len();
        if let Some((_, old)) = inner.entries.insert(log_id.index, (log_id, bytes)) {
            inner.bytes -= old.len();
        }
        while inner.bytes > LIMIT {
            let Some((_, (_, old))) = inner.entries.pop_first() else {
                break;
            };
            inner.bytes -= old.len();
        }
    }

    /// Forgets the entries of `log_ids` (those still kept under these ids).
    pub fn forget(&self, log_ids: &[LogId<NodeId>]) {
        let mut inner = self.lock();
        for id in log_ids {
            if inner.entries.get(&id.index).is_some_and(|(k, _)| k == id) {
                let (_, old) = inner.entries.remove(&id.index).expect("present");
                inner.bytes -= old.len();
            }
        }
    }

    /// Forgets the entries from `index` on (the log was truncated there).
    pub fn forget_from(&self, index: u64) {
        let mut inner = self.lock();
        let gone = inner.entries.split_off(&index);
        inner.bytes -= gone.values().map(|(_, b)| b.len()).sum::<usize>();
    }

    /// A client replicating to `peer` was made.
    pub fn peer_added(&self, peer: NodeId) {
        self.lock().peers.entry(peer).or_default().clients += 1;
    }

    /// A client replicating to `peer` was dropped.
    pub fn peer_dropped(&self, peer: NodeId) {
        let mut inner = self.lock();
        inner.counts.lost += 1;
        if let Some(p) = inner.peers.get_mut(&peer) {
            p.clients = p.clients.saturating_sub(1);
            if p.clients == 0 {
                inner.peers.remove(&peer);
            }
        }
        inner.release();
    }

    /// `peer` answered an append: it holds the log up to `upto`, or failed to.
    pub fn sent(&self, peer: NodeId, upto: Option<u64>, ok: bool) {
        let mut inner = self.lock();
        if !ok {
            inner.counts.lost += 1;
        }
        let Some(p) = inner.peers.get_mut(&peer) else {
            return;
        };
        p.failing = !ok;
        if ok {
            p.holds = p.holds.max(upto);
        }
        inner.release();
    }

    /// Counts `copied` entries copied into a frame and `encoded` encoded into it.
    pub fn count_sent(&self, copied: usize, encoded: usize) {
        let mut inner = self.lock();
        inner.counts.copied += copied as u64;
        inner.counts.encoded += encoded as u64;
    }

    /// How entries were written and sent so far.
    pub fn counts(&self) -> Counts {
        self.lock().counts
    }

    /// The bytes kept, for tests.
    #[cfg(test)]
    pub fn kept_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// The indexes kept, for tests.
    #[cfg(test)]
    pub fn kept(&self) -> Vec<u64> {
        self.lock().entries.keys().copied().collect()
    }
}

impl Inner {
    /// Drops the entries every peer that answers already holds.
    fn release(&mut self) {
        let answering = self.peers.values().filter(|p| !p.failing);
        let Some(low) = answering.map(|p| p.holds).min() else {
            return;
        };
        let Some(low) = low else {
            return;
        };
        let kept = self.entries.split_off(&(low + 1));
        let gone = std::mem::replace(&mut self.entries, kept);
        self.bytes -= gone.values().map(|(_, b)| b.len()).sum::<usize>();
    }
}

/// Appends the record of an entry already encoded (`body`, its MessagePack bytes) to
/// `out`; answers its size. The same record as [`put_record`] of the entry.
pub(super) fn put_encoded_record(out: &mut Vec<u8>, body: &[u8]) -> std::io::Result<usize> {
    let Ok(len32) = u32::try_from(body.len()) else {
        return Err(invalid(format!("a log record of {} bytes", body.len())));
    };
    out.extend_from_slice(&len32.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    out.extend_from_slice(body);
    Ok(body.len() + 8)
}

impl<C> LogStore<C>
where
    C: Logged,
    Entry<C>: Serialize + DeserializeOwned + Clone,
{
    /// Appends `e`'s record to `out`: from its encoding held in [`Encoded`] when
    /// there is one (as received), else encoded here. Answers the record's size and
    /// whether it was encoded here.
    pub(super) fn put_entry(
        &self,
        out: &mut Vec<u8>,
        e: &Entry<C>,
    ) -> std::io::Result<(usize, bool)> {
        match self.encoded.as_ref().and_then(|k| k.get(&e.log_id)) {
            Some(body) => {
                let n = put_encoded_record(out, &body)?;
                if let Some(k) = &self.encoded {
                    k.lock().counts.received += 1;
                }
                Ok((n, false))
            }
            None => put_record(out, e).map(|n| (n, true)),
        }
    }

    /// [`Self::append_file`] of a log that replicates to peers: the bodies of the
    /// records encoded here are kept in `encoded` for the frames to the followers, as
    /// slices of the append's buffer (not reused then, so sized from the last one).
    pub(super) fn append_kept(
        &self,
        encoded: &Encoded,
        entries: &[Entry<C>],
        first: u64,
    ) -> std::io::Result<Vec<usize>> {
        use std::sync::atomic::Ordering;
        let hint = self.last_append.load(Ordering::Relaxed);
        let mut bytes = Vec::with_capacity(hint + hint / 4);
        let mut sizes = Vec::with_capacity(entries.len());
        let mut fresh = Vec::new();
        for e in entries {
            let at = bytes.len();
            let (n, here) = self.put_entry(&mut bytes, e)?;
            if here {
                fresh.push((e.log_id, at + 8..at + n));
            }
            sizes.push(n);
        }
        self.files().append(first, &bytes)?;
        self.last_append.store(bytes.len(), Ordering::Relaxed);
        let bytes = Bytes::from(bytes);
        for (log_id, range) in fresh {
            encoded.keep(log_id, bytes.slice(range));
        }
        Ok(sizes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn id(term: u64, index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    #[test]
    fn an_entry_is_found_by_its_whole_log_id() {
        let e = Encoded::new();
        e.keep(id(1, 5), Bytes::from_static(b"five"));
        assert_eq!(e.get(&id(1, 5)).as_deref(), Some(&b"five"[..]));
        // Same index, another leader's entry: not this one.
        assert_eq!(e.get(&id(2, 5)), None);
        e.forget(&[id(2, 5)]);
        assert_eq!(e.kept(), [5]);
        e.forget(&[id(1, 5)]);
        assert_eq!((e.kept(), e.kept_bytes()), (vec![], 0));
    }

    #[test]
    fn the_oldest_go_past_the_limit_and_a_truncation_drops_the_rest() {
        let e = Encoded::new();
        let mb = Bytes::from(vec![0u8; 1 << 20]);
        for i in 1..=10 {
            e.keep(id(1, i), mb.clone());
        }
        assert_eq!(e.kept(), (3..=10).collect::<Vec<_>>());
        assert_eq!(e.kept_bytes(), LIMIT);
        e.forget_from(7);
        assert_eq!(e.kept(), [3, 4, 5, 6]);
        assert_eq!(e.kept_bytes(), 4 << 20);
    }

    #[test]
    fn entries_go_once_every_answering_peer_holds_them() {
        let e = Encoded::new();
        assert!(!e.wanted(), "no peer: a follower keeps nothing it encodes");
        e.peer_added(2);
        e.peer_added(3);
        assert!(e.wanted());
        for i in 1..=4 {
            e.keep(id(1, i), Bytes::from_static(b"x"));
        }
        e.sent(2, Some(3), true);
        assert_eq!(e.kept(), [1, 2, 3, 4], "peer 3 has none yet");
        e.sent(3, Some(2), true);
        assert_eq!(e.kept(), [3, 4]);
        // Peer 3 stops answering: it holds nothing back.
        e.sent(3, None, false);
        assert_eq!(e.kept(), [4]);
        // A heartbeat (nothing new) that succeeds brings it back at what it held.
        e.sent(3, Some(2), true);
        e.keep(id(1, 5), Bytes::from_static(b"x"));
        assert_eq!(e.kept(), [4, 5]);
        // Its client gone (a removed member): peer 2 alone decides.
        e.peer_dropped(3);
        e.sent(2, Some(5), true);
        assert_eq!(e.kept(), Vec::<u64>::new());
        e.peer_dropped(2);
        assert!(!e.wanted());
    }
}
