//! Blocks of a stream's records read from its files, shared by its readers: consumers
//! reading the same part of a stream (four replays from `first`, say) read each record
//! once (and decode it at most once: see [`super::codec::StoredMessage`]).
//!
//! A block is a run of consecutive records of one segment, read by the first reader
//! that needed them (kept as stored: slices of the segment's mapping), kept with each
//! record's file position. A reader whose offset falls inside a block takes its
//! records from there and goes on at the block's end, so readers that started at
//! different offsets fall onto the same block boundaries after their first block.
//! Records never change once written, so a block stays valid until retention removes
//! its segment ([`BlockCache::trim`]); the oldest blocks go first beyond the budget.

use super::StreamRecord;
use bytes::Bytes;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// Bytes of blocks a stream keeps (accounted record bytes).
pub const CACHE_BYTES: u64 = 8 * 1024 * 1024;

/// Consecutive decoded records of one segment.
#[derive(Debug)]
pub struct Block {
    /// The offset of `records[0]`.
    pub start: u64,
    /// The segment (its first offset) they are in.
    pub segment: u64,
    /// The segment's mapping, to go on reading after the block.
    pub map: Bytes,
    /// The records.
    pub records: Vec<StreamRecord>,
    /// The file position of each record, and after the last one.
    pub positions: Vec<usize>,
    /// Accounted bytes of the records as read (stored).
    pub bytes: u64,
    /// Accounted bytes of the messages decoded from its records since (for AMQP and
    /// embedded readers; see [`BlockCache::decoded`]).
    pub decoded: AtomicU64,
}

impl Block {
    /// The offset after the block's last record.
    pub fn end(&self) -> u64 {
        self.start + self.records.len() as u64
    }

    /// Accounted bytes: the records as read, and the messages decoded from them.
    fn held(&self) -> u64 {
        self.bytes + self.decoded.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
struct Inner {
    blocks: BTreeMap<u64, Arc<Block>>,
    order: VecDeque<u64>,
    bytes: u64,
    /// Starts of the blocks being read ([`BlockCache::find_or_claim`]).
    reading: HashSet<u64>,
}

/// The shared blocks of one stream.
#[derive(Default)]
pub struct BlockCache {
    inner: Mutex<Inner>,
    /// Signalled when a claimed block is read (or its reader gave up).
    read: Condvar,
    bytes: AtomicU64,
    budget: u64,
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlockCache({} bytes)", self.bytes())
    }
}

impl BlockCache {
    /// An empty cache holding up to `budget` accounted bytes.
    pub fn new(budget: u64) -> Self {
        BlockCache {
            budget,
            ..Default::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The block holding `offset`, if cached.
    pub fn find(&self, offset: u64) -> Option<Arc<Block>> {
        let inner = self.lock();
        let (_, b) = inner.blocks.range(..=offset).next_back()?;
        (offset < b.end()).then(|| b.clone())
    }

    /// The block holding `offset` if cached; otherwise a claim to read the block
    /// starting there. Readers at the same offset (four replays in step) would each
    /// read and check the same frames at once: the first claims the block, the others
    /// wait until it is in the cache and take it from there. A claim ends when it is
    /// dropped (after [`Self::insert`], or on an error: a waiting reader then claims it).
    pub fn find_or_claim(&self, offset: u64) -> Result<Arc<Block>, Claim<'_>> {
        let mut inner = self.lock();
        loop {
            if let Some((_, b)) = inner.blocks.range(..=offset).next_back() {
                if offset < b.end() {
                    return Ok(b.clone());
                }
            }
            if inner.reading.insert(offset) {
                return Err(Claim {
                    cache: self,
                    start: offset,
                });
            }
            inner = self.read.wait(inner).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Keeps `block` (unless one starting at the same offset is there), dropping the
    /// oldest beyond the budget.
    pub fn insert(&self, block: Arc<Block>) {
        if block.records.is_empty() {
            return;
        }
        let mut inner = self.lock();
        if inner.blocks.contains_key(&block.start) {
            return;
        }
        inner.bytes += block.held();
        inner.order.push_back(block.start);
        inner.blocks.insert(block.start, block);
        self.shrink(&mut inner);
    }

    /// A reader decoded messages of `block`'s records, `bytes` of them accounted: a
    /// block in the cache holds them from now on (each record keeps its decoded
    /// message for any later reader), so they count against the budget.
    pub fn decoded(&self, block: &Arc<Block>, bytes: u64) {
        let mut inner = self.lock();
        block.decoded.fetch_add(bytes, Ordering::Relaxed);
        let held = inner
            .blocks
            .get(&block.start)
            .is_some_and(|b| Arc::ptr_eq(b, block));
        if held {
            inner.bytes += bytes;
            self.shrink(&mut inner);
        }
    }

    /// Drops the oldest blocks while above the budget (the newest always stays).
    fn shrink(&self, inner: &mut Inner) {
        while inner.bytes > self.budget && inner.order.len() > 1 {
            let Some(old) = inner.order.pop_front() else {
                break;
            };
            if let Some(b) = inner.blocks.remove(&old) {
                inner.bytes -= b.held();
            }
        }
        self.bytes.store(inner.bytes, Ordering::Relaxed);
    }

    /// Drops the blocks below `first` (retention removed their segments).
    pub fn trim(&self, first: u64) {
        let mut inner = self.lock();
        let gone: Vec<u64> = inner.blocks.range(..first).map(|(k, _)| *k).collect();
        for k in gone {
            if let Some(b) = inner.blocks.remove(&k) {
                inner.bytes -= b.held();
            }
        }
        let Inner { blocks, order, .. } = &mut *inner;
        order.retain(|k| blocks.contains_key(k));
        self.bytes.store(inner.bytes, Ordering::Relaxed);
    }

    /// Accounted bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// A reader's claim to read the block starting at an offset ([`BlockCache::find_or_claim`]).
pub struct Claim<'a> {
    cache: &'a BlockCache,
    start: u64,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.cache.lock().reading.remove(&self.start);
        self.cache.read.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    fn block(start: u64, n: usize) -> Arc<Block> {
        let records = (0..n)
            .map(|i| StreamRecord::new(0, Arc::new(Message::new("", "s", format!("m{i}")))))
            .collect();
        Arc::new(Block {
            start,
            segment: 0,
            map: Bytes::new(),
            records,
            positions: vec![0; n + 1],
            bytes: 1,
            decoded: Default::default(),
        })
    }

    #[test]
    fn readers_at_the_same_offset_wait_for_the_one_reading_the_block() {
        let cache = BlockCache::new(CACHE_BYTES);
        let claim = cache
            .find_or_claim(10)
            .expect_err("nothing cached: a claim");
        std::thread::scope(|s| {
            let waiter = s.spawn(|| cache.find_or_claim(12).ok());
            let other = s.spawn(|| cache.find_or_claim(10).ok());
            // Another offset is claimed at once.
            assert!(waiter.join().unwrap().is_none(), "12 is not being read");
            let b = block(10, 5);
            cache.insert(b.clone());
            drop(claim);
            let got = other
                .join()
                .unwrap()
                .expect("the block read by the claimer");
            assert!(Arc::ptr_eq(&got, &b));
        });
        // A claimer that gives up (an error) lets a waiting reader claim it.
        let claim = cache.find_or_claim(20).expect_err("a claim");
        std::thread::scope(|s| {
            let other = s.spawn(|| cache.find_or_claim(20).is_err());
            drop(claim);
            assert!(other.join().unwrap(), "claimed in turn");
        });
    }
}
