//! Slowing password guessing: each failed login from a client address makes the next
//! attempts from that address wait (100 ms after the first failure, doubling per
//! failure, at most 5 s), and the refusal itself is held as long. Only that address
//! waits, on a timer: other clients log in at full speed, and no thread is held. A
//! success, or a minute without failures, forgets the address.

use crate::error::{BrokerError, ErrorCode};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The wait after the first failure.
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest wait, however many failures.
const MAX_DELAY: Duration = Duration::from_secs(5);
/// An address with no failure for this long starts again from nothing.
const FORGET_AFTER: Duration = Duration::from_secs(60);
/// Addresses remembered at most (a flood from many addresses cannot grow it further:
/// stale entries are dropped first, then the table starts afresh).
const MAX_PEERS: usize = 65_536;

/// One address's recent failures.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    /// No attempt from the address is checked before this.
    until: Instant,
}

/// Failed logins per client address.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    peers: Mutex<HashMap<IpAddr, Failures>>,
}

/// The wait after `count` failures in a row.
fn delay(count: u32) -> Duration {
    let doublings = count.saturating_sub(1).min(16);
    (FIRST_DELAY * 2u32.pow(doublings)).min(MAX_DELAY)
}

impl LoginThrottle {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Failures>> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long an attempt from `peer` must wait before it is checked.
    pub fn pending(&self, peer: IpAddr, now: Instant) -> Duration {
        self.lock()
            .get(&peer)
            .map_or(Duration::ZERO, |f| f.until.saturating_duration_since(now))
    }

    /// Records a failure from `peer`; returns the failures in a row and the wait now
    /// imposed on that address.
    pub fn failed(&self, peer: IpAddr, now: Instant) -> (u32, Duration) {
        let mut peers = self.lock();
        if peers.len() >= MAX_PEERS && !peers.contains_key(&peer) {
            peers.retain(|_, f| now.saturating_duration_since(f.until) < FORGET_AFTER);
            if peers.len() >= MAX_PEERS {
                peers.clear();
            }
        }
        let f = peers.entry(peer).or_insert(Failures {
            count: 0,
            until: now,
        });
        if now.saturating_duration_since(f.until) >= FORGET_AFTER {
            f.count = 0;
        }
        f.count = f.count.saturating_add(1);
        let wait = delay(f.count);
        f.until = now + wait;
        (f.count, wait)
    }

    /// A successful login from `peer`: its failures are forgotten.
    pub fn succeeded(&self, peer: IpAddr) {
        self.lock().remove(&peer);
    }

    /// Addresses with failures remembered now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no address is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Checks a login (password hashing off the async threads) with the wait the client
/// address has earned before it, and a refusal held for the wait it earns. Both
/// protocols log in through here.
pub(crate) async fn login_slowed(
    shared: std::sync::Arc<crate::server::ServerShared>,
    user: String,
    password: String,
    peer: IpAddr,
) -> Result<(), BrokerError> {
    let wait = shared.login_throttle.pending(peer, Instant::now());
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    let users = shared.users.clone();
    let res = tokio::task::spawn_blocking(move || users.login(&user, &password, peer))
        .await
        .unwrap_or_else(|_| Err(BrokerError::internal("the login check failed")));
    match &res {
        Ok(()) => shared.login_throttle.succeeded(peer),
        Err(e) if e.code() == ErrorCode::AccessRefused => {
            let (failures, wait) = shared.login_throttle.failed(peer, Instant::now());
            tracing::warn!(%peer, failures, delay_ms = wait.as_millis() as u64, "failed login: this address's next attempts are slowed");
            tokio::time::sleep(wait).await;
        }
        Err(_) => {}
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn failures_grow_the_wait_up_to_the_cap_for_that_address_only() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        assert_eq!(t.failed(A, now), (1, FIRST_DELAY));
        assert_eq!(t.failed(A, now), (2, FIRST_DELAY * 2));
        assert_eq!(t.failed(A, now), (3, FIRST_DELAY * 4));
        for _ in 0..40 {
            t.failed(A, now);
        }
        assert_eq!(t.pending(A, now), MAX_DELAY);
        assert_eq!(t.pending(B, now), Duration::ZERO);
    }

    #[test]
    fn success_or_a_quiet_minute_forgets_the_address() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        t.failed(A, now);
        t.failed(A, now);
        t.succeeded(A);
        assert!(t.is_empty());
        t.failed(B, now);
        t.failed(B, now);
        let later = now + FORGET_AFTER + MAX_DELAY;
        assert_eq!(t.failed(B, later), (1, FIRST_DELAY));
    }

    #[test]
    fn the_table_is_bounded() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        for i in 0..(MAX_PEERS as u32 + 10) {
            t.failed(IpAddr::V4(Ipv4Addr::from(i)), now);
        }
        assert!(t.len() <= MAX_PEERS);
    }
}
