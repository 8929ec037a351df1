//! Token buckets: the per-grant rate limit and the limits on failed authentications, per
//! source address (IPv6 per /64) and per trusted proxy. A bucket holds at most `burst`
//! tokens and refills at `rate` per second; a request takes one token or is told how long
//! until the next one.

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

/// Most buckets the failure limiter keeps. Sources beyond it share one overflow bucket
/// until the periodic sweep frees room, so a spray of addresses costs memory and time
/// bounded by this, and is itself limited.
pub const MAX_FAILURE_BUCKETS: usize = 50_000;

/// What a failure bucket counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKey {
    /// A client address: IPv4 as it is, IPv6 by its /64 (one host usually holds a whole
    /// /64, and rotating within it must not buy a new budget).
    Source(IpAddr),
    /// A trusted proxy, for all the clients it forwards together.
    Proxy(IpAddr),
    /// Every new source while the map is full.
    Overflow,
}

impl FailureKey {
    pub fn source(ip: IpAddr) -> FailureKey {
        FailureKey::Source(prefix_of(ip))
    }
}

/// IPv4 (and IPv4-mapped IPv6) addresses as they are; other IPv6 addresses cut to /64.
pub fn prefix_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

/// Failed authentications per source, and per trusted proxy.
pub struct FailureLimiter {
    /// Budget of a client address (or IPv6 /64), and of the overflow bucket.
    per_minute: u32,
    /// Budget of a trusted proxy, for everything it forwards.
    per_proxy_per_minute: u32,
    /// Buckets kept at most (see [`MAX_FAILURE_BUCKETS`]).
    max_buckets: usize,
    /// The buckets; swept by [`FailureLimiter::sweep`] on a timer.
    buckets: Mutex<HashMap<FailureKey, TokenBucket>>,
}

impl FailureLimiter {
    pub fn new(per_minute: u32, per_proxy_per_minute: u32) -> Self {
        FailureLimiter::with_capacity(per_minute, per_proxy_per_minute, MAX_FAILURE_BUCKETS)
    }

    pub fn with_capacity(per_minute: u32, per_proxy_per_minute: u32, max_buckets: usize) -> Self {
        FailureLimiter { per_minute, per_proxy_per_minute, max_buckets, buckets: Mutex::new(HashMap::new()) }
    }

    /// Counts a failed attempt from `source` (arrived through the trusted proxy `proxy`,
    /// if any); `Err(retry_after)` once the source, or the proxy, is over its budget. The
    /// proxy's bucket is charged first, so a client rotating `X-Forwarded-For` runs the
    /// proxy's bucket dry even though each address it invents is new.
    pub fn fail(&self, source: IpAddr, proxy: Option<IpAddr>) -> Result<(), Duration> {
        self.fail_at(source, proxy, Instant::now())
    }

    fn fail_at(&self, source: IpAddr, proxy: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = proxy {
            self.take(&mut b, FailureKey::Proxy(p), now)?;
        }
        self.take(&mut b, FailureKey::source(source), now)
    }

    fn take(&self, b: &mut HashMap<FailureKey, TokenBucket>, key: FailureKey, now: Instant) -> Result<(), Duration> {
        let key = if b.contains_key(&key) || b.len() < self.max_buckets { key } else { FailureKey::Overflow };
        let per_minute = f64::from(
            match key {
                FailureKey::Proxy(_) => self.per_proxy_per_minute,
                _ => self.per_minute,
            }
            .max(1),
        );
        b.entry(key).or_insert_with(|| TokenBucket::new(per_minute / 60.0, per_minute)).try_take_at(now)
    }

    /// Forgets buckets that are back at their full budget (they hold nothing a new bucket
    /// would not). Called on a timer, not per request, so a spray of new sources never
    /// makes a request walk the map.
    pub fn sweep(&self) {
        self.sweep_at(Instant::now());
    }

    fn sweep_at(&self, now: Instant) {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, bucket| !bucket.is_full(now));
    }

    /// Buckets held now.
    pub fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        let l = FailureLimiter::new(3, 100);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(l.fail(a, None).is_ok() && l.fail(a, None).is_ok() && l.fail(a, None).is_ok());
        let retry = l.fail(a, None).unwrap_err();
        assert!(retry.as_secs_f64() > 1.0);
        assert!(l.fail(b, None).is_ok(), "another source has its own budget");
    }

    #[test]
    fn ipv6_sources_count_per_64() {
        let l = FailureLimiter::new(2, 100);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(l.fail(ip("2001:db8:1:2::1"), None).is_ok());
        assert!(l.fail(ip("2001:db8:1:2:ffff::9"), None).is_ok());
        assert!(l.fail(ip("2001:db8:1:2:abcd::1"), None).is_err(), "the same /64, whatever the host part");
        assert!(l.fail(ip("2001:db8:1:3::1"), None).is_ok(), "the next /64 is another source");
        assert_eq!(prefix_of(ip("::ffff:10.1.2.3")), ip("10.1.2.3"), "IPv4-mapped addresses are IPv4");
    }

    #[test]
    fn a_trusted_proxy_has_a_budget_of_its_own() {
        let l = FailureLimiter::new(2, 5);
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let mut refused = 0;
        for i in 0..20u8 {
            // Every attempt claims another client address.
            if l.fail(IpAddr::from([10, 0, 0, i]), Some(proxy)).is_err() {
                refused += 1;
            }
        }
        assert_eq!(refused, 15, "5 pass through the proxy, whatever addresses it forwards");
    }

    #[test]
    fn the_map_is_bounded_and_swept_on_a_timer() {
        let l = FailureLimiter::with_capacity(1, 100, 100);
        let t0 = Instant::now();
        for i in 0..1000u32 {
            let _ = l.fail_at(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)), None, t0);
        }
        assert_eq!(l.len(), 101, "at most the capacity plus the shared overflow bucket");
        let new = IpAddr::from([192, 168, 0, 1]);
        assert!(l.fail_at(new, None, t0).is_err(), "new sources share the (spent) overflow bucket while the map is full");
        // Nothing is forgotten per request; the sweep frees buckets back at full budget.
        l.sweep_at(t0 + Duration::from_secs(30));
        assert_eq!(l.len(), 101, "half refilled: kept");
        l.sweep_at(t0 + Duration::from_secs(61));
        assert_eq!(l.len(), 0);
        assert!(l.fail_at(new, None, t0 + Duration::from_secs(61)).is_ok(), "room again");
    }
}
