//! Per-device and per-user request rates: token buckets, refilled continuously.
//!
//! Every authenticated request takes one token from its device's bucket and one from its
//! user's. A request that finds either empty is refused with `429 Too Many Requests` and a
//! `Retry-After` saying when a token will be there; it takes nothing from either bucket.
//! Buckets exist only for devices and users that hold valid tokens, so their number is bounded
//! by the accounts, not by what a client sends; full buckets are dropped when the table grows.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mesh_core::id::{DeviceId, UserId};

/// Request rates allowed per device and per user.
///
/// A rate of zero switches that limit off. The defaults let a device make 100 requests a
/// second with bursts of 1000 (a first sync of a large mesh), and a user (all their devices
/// together) 400 a second with bursts of 4000.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    /// Requests per second one device may sustain (0: no limit).
    pub device_per_second: u32,
    /// How many requests one device may make at once after being quiet.
    pub device_burst: u32,
    /// Requests per second one user's devices together may sustain (0: no limit).
    pub user_per_second: u32,
    /// How many requests one user's devices may make at once after being quiet.
    pub user_burst: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            device_per_second: 100,
            device_burst: 1000,
            user_per_second: 400,
            user_burst: 4000,
        }
    }
}

impl RateLimits {
    /// No limits at all.
    pub fn off() -> Self {
        RateLimits {
            device_per_second: 0,
            device_burst: 0,
            user_per_second: 0,
            user_burst: 0,
        }
    }
}

/// Past this many buckets in a table, the full ones are dropped (they hold nothing a fresh one
/// would not).
const PRUNE_AT: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug)]
struct Table<K> {
    per_second: u32,
    burst: u32,
    /// The configured rate and burst, before they are shared between processes.
    configured: (u32, u32),
    buckets: HashMap<K, Bucket>,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new(per_second: u32, burst: u32) -> Self {
        Table {
            per_second,
            burst: burst.max(1),
            configured: (per_second, burst.max(1)),
            buckets: HashMap::new(),
        }
    }

    /// This process's part of the configured rate when `n` processes serve the same
    /// accounts: a `1/n` share each (at least one request a second and a burst of one), so
    /// that together they never allow more than the configured rate.
    fn share(&mut self, n: u32) {
        let n = n.max(1);
        let (rate, burst) = self.configured;
        self.per_second = if rate == 0 {
            0
        } else {
            rate.div_ceil(n).max(1)
        };
        self.burst = (burst / n).max(1);
    }

    fn on(&self) -> bool {
        self.per_second > 0
    }

    /// The bucket of `key`, refilled up to `now`.
    fn refill(&mut self, key: &K, now: Instant) -> Bucket {
        let burst = f64::from(self.burst);
        let rate = f64::from(self.per_second);
        let b = self.buckets.get(key).copied().unwrap_or(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        Bucket {
            tokens: (b.tokens + elapsed * rate).min(burst),
            at: now,
        }
    }

    /// How long until `b` holds a whole token.
    fn wait(&self, b: Bucket) -> Duration {
        Duration::from_secs_f64(((1.0 - b.tokens) / f64::from(self.per_second)).max(0.0))
    }

    fn store(&mut self, key: &K, b: Bucket) {
        if self.buckets.len() >= PRUNE_AT && !self.buckets.contains_key(key) {
            let burst = f64::from(self.burst);
            let rate = f64::from(self.per_second);
            let now = b.at;
            self.buckets.retain(|_, v| {
                v.tokens + now.saturating_duration_since(v.at).as_secs_f64() * rate < burst
            });
        }
        self.buckets.insert(key.clone(), b);
    }
}

/// The hub's rate limiter.
#[derive(Debug)]
pub(crate) struct Limiter {
    inner: Mutex<(Table<DeviceId>, Table<UserId>)>,
}

impl Limiter {
    pub fn new(limits: &RateLimits) -> Self {
        Limiter {
            inner: Mutex::new((
                Table::new(limits.device_per_second, limits.device_burst),
                Table::new(limits.user_per_second, limits.user_burst),
            )),
        }
    }

    /// Shares the configured rates with `processes` processes in all (PostgreSQL hubs learn
    /// how many serve the database from its heartbeat table).
    pub fn set_share(&self, processes: u32) {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        guard.0.share(processes);
        guard.1.share(processes);
    }

    /// Takes a token for one request of `device` of `user`, or says how long to wait.
    pub fn check(&self, user: &UserId, device: &DeviceId) -> Result<(), Duration> {
        self.check_at(user, device, Instant::now())
    }

    fn check_at(&self, user: &UserId, device: &DeviceId, now: Instant) -> Result<(), Duration> {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (devices, users) = &mut *guard;
        let d = devices.on().then(|| devices.refill(device, now));
        let u = users.on().then(|| users.refill(user, now));
        let mut wait = Duration::ZERO;
        if let Some(b) = d {
            wait = wait.max(devices.wait(b));
        }
        if let Some(b) = u {
            wait = wait.max(users.wait(b));
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        if let Some(mut b) = d {
            b.tokens -= 1.0;
            devices.store(device, b);
        }
        if let Some(mut b) = u {
            b.tokens -= 1.0;
            users.store(user, b);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(u: &str, d: &str) -> (UserId, DeviceId) {
        (u.parse().unwrap(), d.parse().unwrap())
    }

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let l = Limiter::new(&RateLimits {
            device_per_second: 10,
            device_burst: 5,
            user_per_second: 0,
            user_burst: 0,
        });
        let (u, d) = ids("ann", "laptop");
        let t0 = Instant::now();
        for _ in 0..5 {
            l.check_at(&u, &d, t0).unwrap();
        }
        let wait = l.check_at(&u, &d, t0).unwrap_err();
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100));
        // A tenth of a second later one more request passes, and only one.
        let t1 = t0 + Duration::from_millis(100);
        l.check_at(&u, &d, t1).unwrap();
        assert!(l.check_at(&u, &d, t1).is_err());
    }

    #[test]
    fn the_user_limit_spans_devices_and_refusals_take_nothing() {
        let l = Limiter::new(&RateLimits {
            device_per_second: 100,
            device_burst: 3,
            user_per_second: 1,
            user_burst: 4,
        });
        let (u, a) = ids("ann", "laptop");
        let (_, b) = ids("ann", "phone");
        let (v, c) = ids("bob", "laptop2");
        let t = Instant::now();
        for _ in 0..3 {
            l.check_at(&u, &a, t).unwrap();
        }
        assert!(l.check_at(&u, &a, t).is_err(), "device burst spent");
        l.check_at(&u, &b, t).unwrap();
        let wait = l.check_at(&u, &b, t).unwrap_err();
        assert!(
            wait > Duration::from_millis(900),
            "user burst spent: {wait:?}"
        );
        // Another user is not affected.
        l.check_at(&v, &c, t).unwrap();
        // The refused request of the phone took nothing from its device bucket.
        let later = t + Duration::from_secs(1);
        l.check_at(&u, &b, later).unwrap();
    }

    #[test]
    fn a_share_of_the_rate_per_process_keeps_the_sum_under_the_limit() {
        let l = Limiter::new(&RateLimits {
            device_per_second: 10,
            device_burst: 20,
            user_per_second: 0,
            user_burst: 0,
        });
        l.set_share(4);
        let (u, d) = ids("ann", "a");
        let t0 = Instant::now();
        let passed = (0..20).filter(|_| l.check_at(&u, &d, t0).is_ok()).count();
        assert_eq!(passed, 5, "a quarter of the burst");
        l.set_share(1);
        let later = t0 + Duration::from_secs(10);
        let passed = (0..30)
            .filter(|_| l.check_at(&u, &d, later).is_ok())
            .count();
        assert_eq!(passed, 20, "alone again: the whole burst");
    }

    #[test]
    fn zero_rates_switch_limits_off() {
        let l = Limiter::new(&RateLimits::off());
        let (u, d) = ids("ann", "laptop");
        let t = Instant::now();
        for _ in 0..10_000 {
            l.check_at(&u, &d, t).unwrap();
        }
    }
}
