//! The gateway's per-request admission work: parse the presented key, find its grant, hash
//! the secret and compare in constant time, then take a rate-limit token. Goal: under 5 µs.
//! Run: `cargo bench --bench keycheck`.

use std::hint::black_box;

use addond::gateway::keys::Keyring;
use addond::gateway::limits::TokenBucket;
use addond::secret::generate;
use addond::store::GrantRow;
use criterion::{criterion_group, criterion_main, Criterion};

fn grants(n: usize) -> (Vec<GrantRow>, String) {
    let mut rows = Vec::new();
    let mut probe = String::new();
    for i in 0..n {
        let k = generate(None).expect("randomness");
        if i == n / 2 {
            probe = k.full.clone();
        }
        rows.push(GrantRow {
            id: format!("grant_{i}"),
            application_id: "app".into(),
            addon_instance: format!("addon-{i}"),
            // a rate no benchmark run can exhaust: the limiter's bookkeeping is measured,
            // not its refusals
            rate_per_second: Some(1e12),
            burst: Some(u32::MAX),
            allowed_origins: vec![],
            key_id: k.key_id,
            key_hash: k.hash,
            old_key_hash: None,
            old_valid_until: None,
            revoked_at: None,
            created_at: 0,
            rotated_at: None,
        });
    }
    (rows, probe)
}

fn bench(c: &mut Criterion) {
    let (rows, key) = grants(1000);
    let ring = Keyring::default();
    ring.load(&[], &rows);
    c.bench_function("key check + rate limit (1000 grants)", |b| {
        b.iter(|| {
            let g = ring.check(Some(black_box(&key))).expect("valid key");
            if let Some(l) = &g.limiter {
                black_box(l.try_take()).expect("token");
            }
        })
    });
    let bad = format!("{}0", &key[..key.len() - 1]);
    c.bench_function("key check, wrong secret", |b| b.iter(|| black_box(ring.check(Some(black_box(&bad)))).is_err()));
    let bucket = TokenBucket::new(1e12, 1e12);
    c.bench_function("token bucket alone", |b| b.iter(|| black_box(bucket.try_take())));
}

criterion_group!(benches, bench);
criterion_main!(benches);
