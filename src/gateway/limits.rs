//! Token buckets: the per-grant rate limit and the per-source limit on failed
//! authentications. A bucket holds at most `burst` tokens and refills at `rate` per second;
//! a request takes one token or is told how long until the next one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: f64) -> Self {
        TokenBucket { rate, burst, state: Mutex::new((burst, Instant::now())) }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    pub fn burst(&self) -> f64 {
        self.burst
    }

    /// Takes a token, or returns how long until one is available.
    pub fn try_take(&self) -> Result<(), Duration> {
        self.try_take_at(Instant::now())
    }

    fn try_take_at(&self, now: Instant) -> Result<(), Duration> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(s.1).as_secs_f64();
        s.0 = (s.0 + elapsed * self.rate).min(self.burst);
        s.1 = now;
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - s.0) / self.rate))
        }
    }

    fn is_full(&self, now: Instant) -> bool {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.0 + now.saturating_duration_since(s.1).as_secs_f64() * self.rate >= self.burst
    }
}

/// Failed authentications per source address.
pub struct FailureLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<IpAddr, TokenBucket>>,
}

impl FailureLimiter {
    pub fn new(per_minute: u32) -> Self {
        FailureLimiter { per_minute, buckets: Mutex::new(HashMap::new()) }
    }

    /// Counts a failed attempt from `source`; `Err(retry_after)` once it is over its budget.
    pub fn fail(&self, source: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if b.len() > 10_000 {
            // Forget sources that have been quiet long enough to be back at full budget.
            b.retain(|_, bucket| !bucket.is_full(now));
        }
        let per_minute = f64::from(self.per_minute.max(1));
        b.entry(source).or_insert_with(|| TokenBucket::new(per_minute / 60.0, per_minute)).try_take_at(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_its_rate() {
        let b = TokenBucket::new(10.0, 2.0);
        let t0 = Instant::now();
        assert!(b.try_take_at(t0).is_ok());
        assert!(b.try_take_at(t0).is_ok());
        let wait = b.try_take_at(t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 0.01, "{wait:?}");
        assert!(b.try_take_at(t0 + Duration::from_millis(100)).is_ok());
        // over 10 simulated seconds at a huge demand, about rate × 10 + burst pass
        let mut ok = 0;
        for i in 0..100_000 {
            if b.try_take_at(t0 + Duration::from_micros(200 + i * 100)).is_ok() {
                ok += 1;
            }
        }
        assert!((99..=102).contains(&ok), "{ok}");
    }

    #[test]
    fn failures_are_limited_per_source() {
        let l = FailureLimiter::new(3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(l.fail(a).is_ok() && l.fail(a).is_ok() && l.fail(a).is_ok());
        let retry = l.fail(a).unwrap_err();
        assert!(retry.as_secs_f64() > 1.0);
        assert!(l.fail(b).is_ok(), "another source has its own budget");
    }
}
