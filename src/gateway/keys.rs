//! API keys and the in-memory keyring the gateway checks them against. A key is
//! `ak_<key id>_<secret>`: the key id is public (it finds the grant), the secret is 256
//! random bits shown once and stored only as its SHA-256, compared in constant time. The
//! keyring is rebuilt from the store after every change to applications or grants, before
//! the change is acknowledged, so a revoked key is refused from the very next request.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::limits::TokenBucket;
use crate::secret::{ct_eq, hash_secret};
use crate::store::{now_ms, ApplicationRow, GrantRow};

/// Splits `ak_<id>_<secret>`; `None` for anything else.
pub fn parse(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix("ak_")?;
    let (id, secret) = rest.split_once('_')?;
    let ok = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (ok(id, 12) && ok(secret, 64)).then_some((id, secret))
}

/// What the gateway needs to know about a grant, per request.
pub struct GrantAuth {
    pub grant_id: String,
    pub application_id: String,
    pub application: String,
    pub addon_instance: String,
    key_hash: String,
    old_key_hash: Option<(String, i64)>,
    pub revoked: bool,
    pub limiter: Option<Arc<TokenBucket>>,
    pub allowed_origins: Vec<String>,
}

/// Why a key was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    Missing,
    Malformed,
    Unknown,
    Revoked,
}

#[derive(Default)]
pub struct Keyring {
    by_key_id: RwLock<HashMap<String, Arc<GrantAuth>>>,
    /// Limiters live across reloads (by grant), so editing one grant does not refill another.
    limiters: RwLock<HashMap<String, Arc<TokenBucket>>>,
}

impl Keyring {
    /// Rebuilds the keyring from the store's rows.
    pub fn load(&self, apps: &[ApplicationRow], grants: &[GrantRow]) {
        let names: HashMap<&str, &str> = apps.iter().map(|a| (a.id.as_str(), a.name.as_str())).collect();
        let mut limiters = self.limiters.write().unwrap_or_else(|e| e.into_inner());
        let mut map = HashMap::new();
        let mut keep = std::collections::HashSet::new();
        for g in grants {
            let limiter = g.rate_per_second.map(|rate| {
                let burst = g.burst.map(f64::from).unwrap_or(rate.max(1.0));
                let existing = limiters.get(&g.id).filter(|l| l.rate() == rate && l.burst() == burst).cloned();
                keep.insert(g.id.clone());
                existing.unwrap_or_else(|| {
                    let l = Arc::new(TokenBucket::new(rate, burst));
                    limiters.insert(g.id.clone(), l.clone());
                    l
                })
            });
            let old = match (&g.old_key_hash, g.old_valid_until) {
                (Some(h), Some(until)) => Some((h.clone(), until)),
                _ => None,
            };
            map.insert(
                g.key_id.clone(),
                Arc::new(GrantAuth {
                    grant_id: g.id.clone(),
                    application_id: g.application_id.clone(),
                    application: names.get(g.application_id.as_str()).map(|s| s.to_string()).unwrap_or_default(),
                    addon_instance: g.addon_instance.clone(),
                    key_hash: g.key_hash.clone(),
                    old_key_hash: old,
                    revoked: g.revoked_at.is_some(),
                    limiter,
                    allowed_origins: g.allowed_origins.clone(),
                }),
            );
        }
        limiters.retain(|id, _| keep.contains(id));
        *self.by_key_id.write().unwrap_or_else(|e| e.into_inner()) = map;
    }

    /// Finds the grant a presented key belongs to.
    pub fn check(&self, presented: Option<&str>) -> Result<Arc<GrantAuth>, KeyError> {
        let key = presented.ok_or(KeyError::Missing)?;
        let (id, secret) = parse(key).ok_or(KeyError::Malformed)?;
        let grant = self.by_key_id.read().unwrap_or_else(|e| e.into_inner()).get(id).cloned().ok_or(KeyError::Unknown)?;
        let h = hash_secret(secret);
        let current = ct_eq(h.as_bytes(), grant.key_hash.as_bytes());
        let old = grant.old_key_hash.as_ref().is_some_and(|(old, until)| now_ms() < *until && ct_eq(h.as_bytes(), old.as_bytes()));
        if !(current || old) {
            return Err(KeyError::Unknown);
        }
        if grant.revoked {
            return Err(KeyError::Revoked);
        }
        Ok(grant)
    }

    /// Every origin any grant allows (preflight requests carry no key).
    pub fn any_origin_allowed(&self, origin: &str, addon: Option<&str>) -> bool {
        self.by_key_id.read().unwrap_or_else(|e| e.into_inner()).values().any(|g| {
            !g.revoked
                && addon.is_none_or(|a| a == g.addon_instance || crate::model::split_environment(&g.addon_instance).0 == a)
                && g.allowed_origins.iter().any(|o| o == origin || o == "*")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::{generate, NewKey};

    fn grant(id: &str, key: &NewKey, revoked: bool) -> GrantRow {
        GrantRow {
            id: id.into(),
            application_id: "app_1".into(),
            addon_instance: "pay".into(),
            rate_per_second: Some(10.0),
            burst: None,
            allowed_origins: vec!["https://shop.example".into()],
            key_id: key.key_id.clone(),
            key_hash: key.hash.clone(),
            old_key_hash: None,
            old_valid_until: None,
            revoked_at: revoked.then_some(1),
            created_at: 0,
            rotated_at: None,
        }
    }

    #[test]
    fn keys_round_trip_and_are_checked() {
        let k = generate(None).unwrap();
        assert!(k.full.starts_with("ak_"));
        assert_eq!(k.full.len(), 3 + 12 + 1 + 64);
        assert!(!k.full.contains(&k.hash), "the stored hash is not the secret");
        let ring = Keyring::default();
        ring.load(&[], &[grant("g1", &k, false)]);
        assert_eq!(ring.check(Some(&k.full)).unwrap().grant_id, "g1");
        assert_eq!(ring.check(None).err(), Some(KeyError::Missing));
        assert_eq!(ring.check(Some("nope")).err(), Some(KeyError::Malformed));
        let mut wrong = k.full.clone();
        let last = wrong.pop().unwrap();
        wrong.push(if last == '0' { '1' } else { '0' });
        assert_eq!(ring.check(Some(&wrong)).err(), Some(KeyError::Unknown));
        ring.load(&[], &[grant("g1", &k, true)]);
        assert_eq!(ring.check(Some(&k.full)).err(), Some(KeyError::Revoked));
        assert!(!ring.any_origin_allowed("https://shop.example", Some("pay")), "revoked grants allow nothing");
    }

    #[test]
    fn rotation_keeps_the_old_key_during_grace() {
        let old = generate(None).unwrap();
        let new = generate(Some(&old.key_id)).unwrap();
        assert_eq!(old.key_id, new.key_id);
        let mut g = grant("g1", &new, false);
        g.old_key_hash = Some(old.hash.clone());
        g.old_valid_until = Some(now_ms() + 60_000);
        let ring = Keyring::default();
        ring.load(&[], &[g.clone()]);
        assert!(ring.check(Some(&old.full)).is_ok());
        assert!(ring.check(Some(&new.full)).is_ok());
        g.old_valid_until = Some(now_ms() - 1);
        ring.load(&[], &[g]);
        assert_eq!(ring.check(Some(&old.full)).err(), Some(KeyError::Unknown));
    }
}
