//! Image references, checked by the grammar of Docker's `distribution/reference` before
//! the engine sees them, so a reference it would refuse is a 400 naming the `image` field
//! rather than a 502 from Docker: `[HOST[:PORT]/]PATH[:TAG][@DIGEST]`, where every path
//! component is lowercase letters and digits joined by `.`, `_`, `__` or dashes, the tag is
//! `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`, and the digest is `ALGORITHM:HEX` with the length
//! its algorithm needs (the engine refuses algorithms it does not know).

/// The longest name (host and path) Docker accepts.
const MAX_NAME: usize = 255;

/// Digest algorithms the engine verifies, with their length in hex digits.
const DIGESTS: [(&str, usize); 3] = [("sha256", 64), ("sha384", 96), ("sha512", 128)];

/// Checks a reference; the error says what is wrong with it.
pub fn check(image: &str) -> Result<(), String> {
    if image.is_empty() {
        return Err("it is empty".into());
    }
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (image, None),
    };
    if let Some(d) = digest {
        check_digest(d)?;
    }
    // A `:` after the last `/` starts the tag; one before it belongs to a registry port.
    let (name, tag) = match rest.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, Some(t)),
        _ => (rest, None),
    };
    if let Some(t) = tag {
        check_tag(t)?;
    }
    if name.is_empty() {
        return Err("it has no repository name".into());
    }
    if name.len() > MAX_NAME {
        return Err(format!("the repository name is longer than {MAX_NAME} characters"));
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err("the repository path has an empty component (`//`, or a `/` at an end)".into());
    }
    // The first of several components may name a registry (`host[:port]`).
    if parts.len() > 1 && !is_path_component(parts[0]) {
        if !is_domain_and_port(parts[0]) {
            return Err(format!(
                "`{}` is neither a registry (a host name with an optional numeric port) nor a lowercase repository path component",
                parts[0]
            ));
        }
        parts.remove(0);
    }
    for p in parts {
        if !is_path_component(p) {
            return Err(format!(
                "the repository path component `{p}` must be lowercase letters and digits, joined by `.`, `_`, `__` or dashes"
            ));
        }
    }
    Ok(())
}

/// The API message for a refused reference: what is wrong, and what to send instead.
pub fn message(image: &str, why: &str) -> String {
    format!("`{image}` is not a valid image reference: {why}; send NAME[:TAG][@DIGEST], e.g. `nginx:1.27`, `registry.example.com:5000/team/app:v2` or `alpine@sha256:` followed by 64 hex digits")
}

fn lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// `[a-z0-9]+` joined by `.`, `_`, `__` or one or more `-`.
fn is_path_component(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || !lower_alnum(b[0] as char) || !lower_alnum(b[b.len() - 1] as char) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let c = b[i] as char;
        if lower_alnum(c) {
            i += 1;
            continue;
        }
        // a separator run: `.`, `_`, `__`, or dashes only
        let start = i;
        while i < b.len() && !lower_alnum(b[i] as char) {
            i += 1;
        }
        let sep = &s[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// A host name (labels of letters, digits and inner dashes), or `[IPv6]`, with an
/// optional numeric port.
fn is_domain_and_port(s: &str) -> bool {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip, after)) if !ip.is_empty() && ip.chars().all(|c| c.is_ascii_hexdigit() || c == ':') => match after {
                "" => return true,
                p => return p.strip_prefix(':').is_some_and(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit())),
            },
            _ => return false,
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit()) {
            return false;
        }
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
}

fn check_tag(t: &str) -> Result<(), String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let ok = t.len() <= 128 && t.chars().next().is_some_and(word) && t.chars().all(|c| word(c) || c == '.' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!("the tag `{t}` must start with a letter, digit or `_` and hold at most 128 letters, digits, `_`, `.` and `-`"))
    }
}

fn check_digest(d: &str) -> Result<(), String> {
    let known = DIGESTS.iter().map(|(a, n)| format!("{a} ({n})")).collect::<Vec<_>>().join(", ");
    let Some((alg, hex)) = d.split_once(':') else {
        return Err(format!("the digest `{d}` must be ALGORITHM:HEX, e.g. sha256: followed by 64 hex digits"));
    };
    let Some((_, len)) = DIGESTS.iter().find(|(a, _)| *a == alg) else {
        return Err(format!("the digest algorithm `{alg}` is not one the engine verifies: use one of {known} (hex digits)"));
    };
    if hex.len() != *len || !hex.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
        return Err(format!("the {alg} digest must be exactly {len} lowercase hex digits, not `{hex}`"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_docker_accepts() {
        let hex64 = "0123456789abcdef".repeat(4);
        for ok in [
            "nginx".to_string(),
            "nginx:1.27".into(),
            "addond-sample:latest".into(),
            "library/alpine:3.20".into(),
            "a.b_c__d-e---f:1".into(),
            "registry.example.com:5000/team/app:v2".into(),
            "Registry.Example.com/team/app".into(),
            "localhost/app".into(),
            "localhost:5000".into(),
            "[::1]:5000/app:_x".into(),
            "192.168.1.10:5000/a/b/c".into(),
            format!("alpine@sha256:{hex64}"),
            format!("alpine:3@sha256:{hex64}"),
            format!("app:{}", "x".repeat(128)),
            format!("alpine@sha512:{}", "ab".repeat(64)),
        ] {
            assert_eq!(check(&ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_what_docker_refuses_and_says_why() {
        let hex64 = "0123456789abcdef".repeat(4);
        for (bad, why) in [
            ("".to_string(), "empty"),
            ("UPPER:latest".into(), "lowercase"),
            ("team/App".into(), "lowercase"),
            ("alpine@sha256:bad".into(), "64 lowercase hex"),
            (format!("alpine@sha256:{}", hex64.to_uppercase()), "lowercase hex"),
            (format!("alpine@md5:{hex64}"), "not one the engine verifies"),
            ("alpine@sha256".into(), "ALGORITHM:HEX"),
            ("alpine:-dash".into(), "tag"),
            ("alpine:".into(), "tag"),
            (format!("app:{}", "x".repeat(129)), "tag"),
            ("library//alpine".into(), "empty component"),
            ("/alpine".into(), "empty component"),
            ("alpine/".into(), "empty component"),
            ("alpine___x".into(), "lowercase"),
            ("alpine.-x".into(), "lowercase"),
            ("-alpine".into(), "lowercase"),
            ("registry.example.com:port/app".into(), "registry"),
            ("bad_host!/app".into(), "registry"),
            ("reg.example.com:5000/Team/app".into(), "lowercase"),
            (format!("{}:1", "a".repeat(256)), "255"),
            ("@sha256:abc".into(), "digest"),
        ] {
            let e = check(&bad).expect_err(&bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
        let m = message("UPPER:latest", "x");
        assert!(m.contains("`UPPER:latest`") && m.contains("e.g."), "{m}");
    }
}
