//! Names: environment instance names, the safe names of services and plugins, display
//! names and the slugs derived from them, and the documented network names.

use super::*;

/// The environment every addon instance is in unless it is named otherwise: it keeps the
/// plain instance name, so installs made before environments existed are its.
pub const DEFAULT_ENVIRONMENT: &str = "prod";

/// Between an addon's base name and an environment in an environment's instance name
/// (`pay--dev`); user instance names may not contain it.
pub const ENVIRONMENT_SEPARATOR: &str = "--";

/// The addon instance that is environment `env` of the base instance `base`: `base` itself
/// for the default environment, `base--env` for any other.
pub fn environment_instance(base: &str, env: &str) -> String {
    if env == DEFAULT_ENVIRONMENT {
        base.to_string()
    } else {
        format!("{base}{ENVIRONMENT_SEPARATOR}{env}")
    }
}

/// The base instance and environment an instance name stands for (`pay--dev` → `pay`,
/// `dev`; `pay` → `pay`, `prod`).
pub fn split_environment(instance: &str) -> (&str, &str) {
    match instance.rsplit_once(ENVIRONMENT_SEPARATOR) {
        Some((base, env)) if !base.is_empty() && !env.is_empty() => (base, env),
        _ => (instance, DEFAULT_ENVIRONMENT),
    }
}

pub use crate::config::check_environment;

/// Names of services, plugins and named volumes: lowercase, DNS-label-like.
pub fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && !s.ends_with('-')
}

/// Plugin ids: like [`valid_name`], and `_` as well (`test_plugin`), not at either end.
pub fn valid_plugin_id(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_')
        && !s.ends_with(['-', '_'])
}

/// Longest display name, in characters.
pub const MAX_DISPLAY_NAME: usize = 100;

/// A display name (of a service, an application, an addon instance, an action or a
/// widget): any text of 1–100 characters without
/// control characters and without spaces at either end. The error is the API message.
pub fn check_display_name(s: &str) -> Result<(), String> {
    let n = s.chars().count();
    if s.trim().is_empty() {
        return Err("a name needs at least one character other than spaces".into());
    }
    if n > MAX_DISPLAY_NAME {
        return Err(format!("a name is at most {MAX_DISPLAY_NAME} characters; this one has {n}"));
    }
    if s.chars().any(char::is_control) {
        return Err("a name may not contain control characters (newlines, tabs, NUL, …); send plain text".into());
    }
    if s.trim() != s {
        return Err(format!("`{s}` starts or ends with spaces; send it without them"));
    }
    Ok(())
}

/// The slug a display name gets: its ASCII letters and digits lowercased, every other run
/// turned into one `-`, at most 40 of them, then `-` and `suffix` so that two services with
/// the same display name get different slugs (`"My API"` → `my-api-3f9c2a7b`); a name
/// without any (`"테스트 서비스"`) gets `svc-<suffix>`.
pub fn derive_slug(display: &str, suffix: &str) -> String {
    let mut base = String::new();
    for c in display.chars() {
        if c.is_ascii_alphanumeric() {
            base.push(c.to_ascii_lowercase());
        } else if !base.is_empty() && !base.ends_with('-') {
            base.push('-');
        }
        if base.len() >= 40 {
            break;
        }
    }
    let base = base.trim_end_matches('-');
    if base.is_empty() {
        format!("svc-{suffix}")
    } else {
        format!("{base}-{suffix}")
    }
}

/// A service's slug and display name from the `name` it was given: a valid slug is its
/// own (today's names keep working), anything else is a display name with a derived slug.
pub fn service_names(given: &str) -> Result<(String, Option<String>), FieldError> {
    if valid_name(given) {
        return Ok((given.to_string(), None));
    }
    check_display_name(given).map_err(|m| field_err("name", m))?;
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    Ok((derive_slug(given, &suffix[..8]), Some(given.to_string())))
}

/// The documented name of the network kind with a route out; `docker.network` names it too.
pub const PLUGIN_NETWORK: &str = "plugin_network";

/// The documented name of the internal network kind; `docker.isolated_network` names it too.
pub const PLUGIN_ISOLATED: &str = "plugin_isolated";

/// Which kind a name in a service's `networks` asks for: `Some(true)` internal,
/// `Some(false)` with a route out, `None` unknown. Each owner gets its own network of that
/// kind (see `crate::isolation`); the names only choose the kind.
pub fn network_kind(cfg: &crate::config::DockerConfig, name: &str) -> Option<bool> {
    if name == cfg.isolated_network || name == PLUGIN_ISOLATED {
        Some(true)
    } else if name == cfg.network || name == PLUGIN_NETWORK {
        Some(false)
    } else {
        None
    }
}

/// Whether a service runs on the internal kind of network.
pub fn wants_isolated(cfg: &crate::config::DockerConfig, spec: &ServiceSpec) -> bool {
    spec.networks.first().is_some_and(|n| network_kind(cfg, n) == Some(true))
}
