//! The daemon's limits on what callers use at once and how fast they ask: execs running (over
//! all tokens and per token) and requests per second (over all tokens and per token, token
//! buckets that refill continuously). A refusal says what was full and when to retry; the
//! HTTP layer answers it with 429 and `Retry-After`. Sandboxes alive are counted by the
//! daemon itself, where they are made.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sr_policy::operator::ServeConfig;

use crate::tokens::TokenHash;

/// A request refused by a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    /// What was full, as the operator config names it (`serve.maxExecs`, ...).
    pub limit: &'static str,
    /// Its value.
    pub max: u32,
    /// When asking again may succeed.
    pub retry_after: Duration,
}

impl std::fmt::Display for Limited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "over {} ({})", self.limit, self.max)
    }
}

/// A bucket of `rate` requests per second holding at most one second's worth.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(now: Instant, rate: u32) -> Bucket {
        Bucket {
            tokens: f64::from(rate),
            at: now,
        }
    }

    fn refill(&mut self, now: Instant, rate: u32) {
        let rate = f64::from(rate);
        let gained = now.saturating_duration_since(self.at).as_secs_f64() * rate;
        self.tokens = (self.tokens + gained).min(rate);
        self.at = now;
    }

    /// How long until one request is allowed (zero: now).
    fn wait(&self, rate: u32) -> Duration {
        if self.tokens >= 1.0 || rate == 0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((1.0 - self.tokens) / f64::from(rate))
    }
}

#[derive(Default)]
struct Execs {
    total: u32,
    by_token: BTreeMap<[u8; 32], u32>,
}

struct Rates {
    global: Bucket,
    by_token: BTreeMap<[u8; 32], Bucket>,
}

/// Past this many tokens seen, buckets that are full again are forgotten (a caller sending
/// random tokens must not grow the map without bound).
const MAX_BUCKETS: usize = 10_000;

/// The counters behind the limits.
pub struct Limiter {
    max_execs: u32,
    max_execs_per_token: u32,
    rate: u32,
    rate_per_token: u32,
    execs: Mutex<Execs>,
    rates: Mutex<Rates>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One exec counted against the limits until it is dropped.
pub struct ExecSlot {
    limiter: Arc<Limiter>,
    who: Option<[u8; 32]>,
}

impl Drop for ExecSlot {
    fn drop(&mut self) {
        let mut e = lock(&self.limiter.execs);
        e.total = e.total.saturating_sub(1);
        if let Some(who) = self.who
            && let Some(n) = e.by_token.get_mut(&who)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                e.by_token.remove(&who);
            }
        }
    }
}

impl Limiter {
    /// The limits of `serve`.
    pub fn new(serve: &ServeConfig) -> Limiter {
        let now = Instant::now();
        Limiter {
            max_execs: serve.max_execs,
            max_execs_per_token: serve.per_token.max_execs,
            rate: serve.requests_per_second,
            rate_per_token: serve.per_token.requests_per_second,
            execs: Mutex::new(Execs::default()),
            rates: Mutex::new(Rates {
                global: Bucket::full(now, serve.requests_per_second),
                by_token: BTreeMap::new(),
            }),
        }
    }

    /// Counts one more exec, for `who` (none: the local owner of a stdio session, counted only
    /// globally).
    pub fn exec_slot(self: &Arc<Self>, who: Option<&TokenHash>) -> Result<ExecSlot, Limited> {
        let mut e = lock(&self.execs);
        let refuse = |limit, max| Limited {
            limit,
            max,
            retry_after: Duration::from_secs(1),
        };
        if e.total >= self.max_execs {
            return Err(refuse("serve.maxExecs", self.max_execs));
        }
        let who = who.map(|h| h.bytes());
        if let Some(w) = who {
            let n = e.by_token.entry(w).or_default();
            if *n >= self.max_execs_per_token {
                return Err(refuse("serve.perToken.maxExecs", self.max_execs_per_token));
            }
            *n += 1;
        }
        e.total += 1;
        Ok(ExecSlot {
            limiter: self.clone(),
            who,
        })
    }

    /// Counts one request of `who` at `now`, or says how long to wait.
    pub fn request(&self, who: &TokenHash, now: Instant) -> Result<(), Limited> {
        let mut r = lock(&self.rates);
        r.global.refill(now, self.rate);
        let global_wait = r.global.wait(self.rate);
        if !global_wait.is_zero() {
            return Err(Limited {
                limit: "serve.requestsPerSecond",
                max: self.rate,
                retry_after: global_wait,
            });
        }
        if r.by_token.len() >= MAX_BUCKETS {
            let (rate, now) = (self.rate_per_token, now);
            r.by_token.retain(|_, b| {
                let mut b = *b;
                b.refill(now, rate);
                b.tokens < f64::from(rate)
            });
        }
        let rate = self.rate_per_token;
        let bucket = r
            .by_token
            .entry(who.bytes())
            .or_insert_with(|| Bucket::full(now, rate));
        bucket.refill(now, rate);
        let wait = bucket.wait(rate);
        if !wait.is_zero() {
            return Err(Limited {
                limit: "serve.perToken.requestsPerSecond",
                max: rate,
                retry_after: wait,
            });
        }
        bucket.tokens -= 1.0;
        r.global.tokens -= 1.0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(max_execs: u32, per_token: u32, rate: u32, rate_per_token: u32) -> Arc<Limiter> {
        let mut serve = ServeConfig {
            max_execs,
            requests_per_second: rate,
            ..Default::default()
        };
        serve.per_token.max_execs = per_token;
        serve.per_token.requests_per_second = rate_per_token;
        Arc::new(Limiter::new(&serve))
    }

    #[test]
    fn exec_slots_count_per_token_and_globally_and_free_on_drop() {
        let l = limiter(3, 2, 100, 100);
        let (a, b) = (TokenHash::of("a"), TokenHash::of("b"));
        let a1 = l.exec_slot(Some(&a)).unwrap();
        let _a2 = l.exec_slot(Some(&a)).unwrap();
        let refused = l.exec_slot(Some(&a)).err().unwrap();
        assert_eq!(refused.limit, "serve.perToken.maxExecs");
        let _b1 = l.exec_slot(Some(&b)).unwrap();
        assert_eq!(l.exec_slot(None).err().unwrap().limit, "serve.maxExecs");
        drop(a1);
        let _local = l.exec_slot(None).unwrap();
        assert!(l.exec_slot(Some(&b)).is_err());
    }

    #[test]
    fn a_token_past_its_rate_waits_and_others_are_not_held_back() {
        let l = limiter(1, 1, 1000, 2);
        let t0 = Instant::now();
        let (a, b) = (TokenHash::of("a"), TokenHash::of("b"));
        l.request(&a, t0).unwrap();
        l.request(&a, t0).unwrap();
        let refused = l.request(&a, t0).unwrap_err();
        assert_eq!(refused.limit, "serve.perToken.requestsPerSecond");
        assert_eq!(refused.retry_after, Duration::from_millis(500));
        l.request(&b, t0).unwrap();
        // Half a second refills one request at 2/s.
        l.request(&a, t0 + Duration::from_millis(500)).unwrap();
        assert!(l.request(&a, t0 + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn the_global_rate_holds_back_every_token() {
        let l = limiter(1, 1, 2, 100);
        let t0 = Instant::now();
        for i in 0..2 {
            l.request(&TokenHash::of(&i.to_string()), t0).unwrap();
        }
        let refused = l.request(&TokenHash::of("z"), t0).unwrap_err();
        assert_eq!(refused.limit, "serve.requestsPerSecond");
        assert!(refused.retry_after > Duration::ZERO);
    }
}
