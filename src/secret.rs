//! Secrets the daemon mints and checks: API keys (`ak_<key id>_<secret>`) and addon
//! tokens. A secret is 256 random bits shown once and kept only as its SHA-256, compared in
//! constant time. A leaf: the gateway, the addon API and the lifecycle all mint or check
//! secrets, and none of them should depend on another to do it.

use sha2::{Digest, Sha256};

/// A freshly made key: the full text (shown once), its public id and the hash to store.
pub struct NewKey {
    pub full: String,
    pub key_id: String,
    pub hash: String,
}

/// Lower-case hex. Runs on every gateway request (the presented secret's hash), so no
/// formatting machinery and one allocation.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// HMAC-SHA256 (RFC 2104) of `msg` under `key`, in lower-case hex: the signature a
/// webhook receiver checks notifications with (`notify.secret`).
pub fn hmac_sha256_hex(key: &[u8], msg: &[u8]) -> String {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    hex(&outer.finalize())
}

pub fn hash_secret(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Makes a key with a new id, or a new secret for an existing id (rotation).
pub fn generate(key_id: Option<&str>) -> Result<NewKey, getrandom::Error> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)?;
    let key_id = match key_id {
        Some(k) => k.to_string(),
        None => {
            let mut id = [0u8; 6];
            getrandom::fill(&mut id)?;
            hex(&id)
        }
    };
    let secret = hex(&secret);
    Ok(NewKey { full: format!("ak_{key_id}_{secret}"), hash: hash_secret(&secret), key_id })
}

/// Equal-length comparison that does not stop at the first difference.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test cases 2 and 6 of RFC 4231 (a short key, and a key longer than the block).
        assert_eq!(
            hmac_sha256_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hmac_sha256_hex(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First"),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn hashes_are_lower_case_hex_sha256() {
        assert_eq!(hash_secret("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
    }

    #[test]
    fn constant_time_eq() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
