//! `addonctl apps …`, `grants …` and `audit`: the gateway's clients, which addon each may
//! call with which API key and limits, and the audit log of changes (docs/api.md,
//! "Applications, grants and the gateway"). A new API key is printed once, set apart.

use addond::client::{self, ClientError, Method};
use addond::sanitize::sanitize as cell;
use clap::{ArgGroup, Args, Subcommand};
use serde_json::{json, Map, Value};

use crate::input::parse_seconds;
use crate::render::{display, emit, ids, joined, list_of, local_time, note, render_kv, render_table, text};
use crate::{query, Ctl, UsageError};

pub(crate) const APPLICATIONS: &str = "/api/applications";
pub(crate) const GRANTS: &str = "/api/application-grants";

#[derive(Subcommand, Debug)]
pub(crate) enum AppCmd {
    /// Applications (the gateway's clients) and how many grants each has
    #[command(visible_alias = "ls")]
    List,
    /// Create an application
    Create {
        /// Application name: any text of 1–100 characters (a display name), unique
        name: String,
        /// What the application is
        #[arg(long, value_name = "D")]
        description: Option<String>,
        /// Who runs it
        #[arg(long, value_name = "O")]
        organization: Option<String>,
    },
    /// One application and its grants
    Show(AppArg),
    /// Delete an application and its grants (their keys stop working at once)
    #[command(visible_alias = "rm")]
    Delete(AppArg),
}

#[derive(Args, Debug, Clone)]
pub(crate) struct AppArg {
    /// Application id (app_…) or name
    pub(crate) app: String,
}

#[derive(Subcommand, Debug)]
pub(crate) enum GrantCmd {
    /// Grants: which application may call which addon through the gateway
    #[command(visible_alias = "ls")]
    List {
        /// Only the grants of this application (id or name)
        #[arg(long, value_name = "A")]
        app: Option<String>,
    },
    /// Let an application call an addon through the gateway; prints its API key once
    Create(GrantCreateArgs),
    /// One grant
    Show(GrantArg),
    /// Give a grant a new API key (printed once); the old key works for --grace seconds
    Rotate {
        /// Grant id
        id: String,
        /// Seconds the old key keeps working (default: the daemon's gateway.rotation_grace_seconds)
        #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
        grace: Option<f64>,
    },
    /// Refuse a grant's key from now on (the grant stays, revoked)
    Revoke(GrantArg),
    /// Change a grant's rate limit or allowed origins
    Update(GrantUpdateArgs),
    /// Delete a grant (its key stops working at once)
    #[command(visible_alias = "rm")]
    Delete(GrantArg),
}

#[derive(Args, Debug, Clone)]
pub(crate) struct GrantArg {
    /// Grant id (grant_…)
    pub(crate) id: String,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct GrantCreateArgs {
    /// Application (id or name)
    #[arg(long, value_name = "A")]
    pub(crate) app: String,
    /// Installed addon instance the key may call
    #[arg(long, value_name = "INSTANCE")]
    pub(crate) addon: String,
    /// The environment of the addon the key reaches (default: prod)
    #[arg(long, value_name = "ENV")]
    pub(crate) environment: Option<String>,
    /// Rate limit in requests per second
    #[arg(long, value_name = "N", value_parser = parse_rate)]
    pub(crate) rate: Option<f64>,
    /// Requests allowed at once (default: one second's worth); needs --rate
    #[arg(long, value_name = "B", requires = "rate", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) burst: Option<u32>,
    /// Browser origin allowed to use the key (https://shop.example; repeatable)
    #[arg(long = "origin", value_name = "URL")]
    pub(crate) origins: Vec<String>,
}

#[derive(Args, Debug, Clone)]
#[command(group(ArgGroup::new("change").required(true).multiple(true).args(["rate", "no_rate", "burst", "origins", "clear_origins"])))]
pub(crate) struct GrantUpdateArgs {
    /// Grant id
    pub(crate) id: String,
    /// New rate limit in requests per second (the burst stays unless --burst)
    #[arg(long, value_name = "N", value_parser = parse_rate, conflicts_with = "no_rate")]
    pub(crate) rate: Option<f64>,
    /// Remove the rate limit
    #[arg(long)]
    pub(crate) no_rate: bool,
    /// New burst (with --rate, or on the grant's current rate limit)
    #[arg(long, value_name = "B", conflicts_with = "no_rate", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) burst: Option<u32>,
    /// Add an allowed browser origin (repeatable)
    #[arg(long = "origin", value_name = "URL")]
    pub(crate) origins: Vec<String>,
    /// Start from no allowed origins (with --origin: replace the list)
    #[arg(long)]
    pub(crate) clear_origins: bool,
}

pub(crate) fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("expected requests per second, more than 0 (10, 0.5), got `{s}`")),
    }
}

/// The body of `POST /api/application-grants`.
pub(crate) fn grant_create_body(a: &GrantCreateArgs) -> Value {
    let mut body = json!({"application": a.app, "addon": a.addon});
    if let Some(env) = &a.environment {
        body["environment"] = json!(env);
    }
    if let Some(rate) = a.rate {
        let mut limit = json!({"requests_per_second": rate});
        if let Some(b) = a.burst {
            limit["burst"] = json!(b);
        }
        body["rate_limit"] = limit;
    }
    if !a.origins.is_empty() {
        body["allowed_origins"] = json!(a.origins);
    }
    body
}

/// The body of `PATCH /api/application-grants/{id}` from the flags and the grant as it is:
/// `--rate` keeps the current burst unless `--burst`; `--burst` alone keeps the current
/// rate; `--origin` adds to the current origins, or to none after `--clear-origins`.
pub(crate) fn grant_update_body(a: &GrantUpdateArgs, current: &Value) -> Result<Value, UsageError> {
    let mut body = Map::new();
    let limit = current.get("rate_limit").filter(|l| l.is_object());
    if a.no_rate {
        body.insert("rate_limit".into(), Value::Null);
    } else if a.rate.is_some() || a.burst.is_some() {
        let rate = match (a.rate, limit.and_then(|l| l.get("requests_per_second")).and_then(Value::as_f64)) {
            (Some(r), _) | (None, Some(r)) => r,
            (None, None) => return Err(UsageError("the grant has no rate limit: give --rate N with --burst".into())),
        };
        let mut new = json!({"requests_per_second": rate});
        match (a.burst.map(u64::from), limit.and_then(|l| l.get("burst")).and_then(Value::as_u64)) {
            (Some(b), _) | (None, Some(b)) => new["burst"] = json!(b),
            (None, None) => {}
        }
        body.insert("rate_limit".into(), new);
    }
    if a.clear_origins || !a.origins.is_empty() {
        let mut origins: Vec<Value> = if a.clear_origins { Vec::new() } else { list_of(current, "allowed_origins").to_vec() };
        for o in &a.origins {
            if !origins.iter().any(|x| x.as_str() == Some(o.as_str())) {
                origins.push(Value::from(o.clone()));
            }
        }
        body.insert("allowed_origins".into(), Value::Array(origins));
    }
    Ok(Value::Object(body))
}

impl Ctl {
    pub(crate) async fn apps(&self, cmd: AppCmd) -> anyhow::Result<()> {
        match cmd {
            AppCmd::List => {
                let data = self.call(Method::GET, APPLICATIONS, None).await?;
                if self.quiet && !self.json {
                    return emit(&ids(&data));
                }
                self.show(&data, render_app_list)
            }
            AppCmd::Create { name, description, organization } => {
                let mut body = json!({"name": name});
                if let Some(d) = description {
                    body["description"] = json!(d);
                }
                if let Some(o) = organization {
                    body["organization"] = json!(o);
                }
                let data = self.call(Method::POST, APPLICATIONS, Some(&body)).await?;
                if self.quiet && !self.json {
                    return emit(&format!("{}\n", cell(&text(&data, "id"))));
                }
                self.show(&data, |d| format!("created application {} ({})\n", cell(&text(d, "name")), cell(&text(d, "id"))))
            }
            AppCmd::Show(a) => {
                let data = self.call(Method::GET, &app_path(&a.app), None).await?;
                self.show(&data, render_app)
            }
            AppCmd::Delete(a) => {
                let data = self.call(Method::DELETE, &app_path(&a.app), None).await?;
                self.show(&data, |d| {
                    format!(
                        "deleted application {} ({}) and its grants; their keys stop working now\n",
                        cell(&text(d, "name")),
                        cell(&text(d, "id"))
                    )
                })
            }
        }
    }

    pub(crate) async fn grants(&self, cmd: GrantCmd) -> anyhow::Result<()> {
        match cmd {
            GrantCmd::List { app } => {
                let data = self.call(Method::GET, &format!("{GRANTS}{}", query(&[("application", app)])), None).await?;
                if self.quiet && !self.json {
                    return emit(&ids(&data));
                }
                if self.json {
                    return self.show(&data, |_| String::new());
                }
                // Application names for the APP column (ids if that list cannot be had).
                let apps = self.call(Method::GET, APPLICATIONS, None).await.unwrap_or(Value::Null);
                self.show(&data, |d| render_grant_list(d, &apps))
            }
            GrantCmd::Create(a) => {
                let data = self.call(Method::POST, GRANTS, Some(&grant_create_body(&a))).await?;
                let head = format!(
                    "created grant {} for application {} on addon {}",
                    cell(&text(&data, "id")),
                    cell(&a.app),
                    cell(&text(&data, "addon"))
                );
                self.show_key(&data, &head)
            }
            GrantCmd::Show(a) => {
                let data = self.call(Method::GET, &grant_path(&a.id, ""), None).await?;
                self.show(&data, render_grant)
            }
            GrantCmd::Rotate { id, grace } => {
                let body = match grace {
                    Some(g) => json!({"grace_seconds": g}),
                    None => json!({}),
                };
                let data = self.call(Method::POST, &grant_path(&id, "rotate"), Some(&body)).await?;
                let old = match data.get("old_key_valid_until").and_then(Value::as_str) {
                    Some(_) => format!("the old key works until {}", local_time(data.get("old_key_valid_until"))),
                    None => "the old key is refused from now on".to_string(),
                };
                let head = format!("rotated the key of grant {}; {old}", cell(&text(&data, "id")));
                self.show_key(&data, &head)
            }
            GrantCmd::Revoke(a) => {
                let data = self.call(Method::POST, &grant_path(&a.id, "revoke"), None).await?;
                self.show(&data, |d| format!("revoked grant {}: its key is refused from now on\n", cell(&text(d, "id"))))
            }
            GrantCmd::Update(a) => {
                let current = self.call(Method::GET, &grant_path(&a.id, ""), None).await?;
                let body = grant_update_body(&a, &current)?;
                // The id the daemon resolved, so the PATCH hits the grant we read.
                let id = current.get("id").and_then(Value::as_str).unwrap_or(&a.id).to_string();
                let data = self.call(Method::PATCH, &grant_path(&id, ""), Some(&body)).await?;
                self.show(&data, |d| format!("updated grant {}\n{}", cell(&text(d, "id")), render_grant(d)))
            }
            GrantCmd::Delete(a) => {
                let data = self.call(Method::DELETE, &grant_path(&a.id, ""), None).await?;
                self.show(&data, |d| format!("deleted grant {}: its key stops working now\n", cell(&text(d, "id"))))
            }
        }
    }

    /// A reply carrying a new `api_key` (grant created or rotated): the key once, set apart
    /// on stdout, and a warning on stderr. `--quiet`: the key alone, no warning; `--json`:
    /// the whole grant, key included (and the warning).
    pub(crate) fn show_key(&self, data: &Value, head: &str) -> anyhow::Result<()> {
        let key = cell(data.get("api_key").and_then(Value::as_str).unwrap_or(""));
        if key.is_empty() {
            return Err(ClientError::Protocol("the daemon's reply has no api_key".into()).into());
        }
        if self.quiet && !self.json {
            return emit(&format!("{key}\n"));
        }
        if !self.quiet {
            note(&format!(
                "warning: this API key is shown only now and cannot be read back: store it now; \
                 if it is lost, `addonctl grants rotate {}` makes a new one\n",
                cell(&text(data, "id"))
            ));
        }
        if self.json {
            return emit(&format!("{}\n", serde_json::to_string_pretty(data)?));
        }
        emit(&render_new_key(head, &key))
    }

    pub(crate) async fn audit(&self, limit: Option<u32>) -> anyhow::Result<()> {
        let data = self.call(Method::GET, &format!("/api/audit{}", query(&[("limit", limit.map(|l| l.to_string()))])), None).await?;
        self.show(&data, render_audit)
    }
}

pub(crate) fn app_path(id: &str) -> String {
    format!("{APPLICATIONS}/{}", client::encode_path_segment(id))
}

pub(crate) fn grant_path(id: &str, action: &str) -> String {
    let mut p = format!("{GRANTS}/{}", client::encode_path_segment(id));
    if !action.is_empty() {
        p.push('/');
        p.push_str(action);
    }
    p
}

// ---------------------------------------------------------------------------------------
// Rendering.

pub(crate) fn render_app_list(d: &Value) -> String {
    let list = d.as_array().map(Vec::as_slice).unwrap_or(&[]);
    if list.is_empty() {
        return "no applications\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|a| vec![text(a, "id"), text(a, "name"), text(a, "organization"), list_of(a, "grants").len().to_string()])
        .collect();
    render_table(&["ID", "NAME", "ORGANIZATION", "GRANTS"], &rows)
}

pub(crate) fn render_app(a: &Value) -> String {
    let mut out = render_kv(&[
        ("ID", text(a, "id")),
        ("Name", text(a, "name")),
        ("Description", text(a, "description")),
        ("Organization", text(a, "organization")),
        ("Created", local_time(a.get("created_at"))),
    ]);
    out.push('\n');
    let name = a.get("name").and_then(Value::as_str).unwrap_or("-");
    out.push_str(&grant_table(list_of(a, "grants"), &|_| name.to_string()));
    out
}

/// `10/s`, `10/s, burst 20`, or `-` (no limit).
pub(crate) fn rate(g: &Value) -> String {
    let Some(l) = g.get("rate_limit").filter(|l| l.is_object()) else { return "-".into() };
    let mut s = format!("{}/s", display(l.get("requests_per_second")));
    if let Some(b) = l.get("burst").filter(|b| !b.is_null()) {
        s.push_str(&format!(", burst {}", display(Some(b))));
    }
    s
}

pub(crate) fn grant_table(grants: &[Value], app_name: &dyn Fn(&Value) -> String) -> String {
    if grants.is_empty() {
        return "no grants\n".into();
    }
    let rows: Vec<Vec<String>> = grants
        .iter()
        .map(|g| {
            vec![
                text(g, "id"),
                app_name(g),
                text(g, "addon"),
                text(g, "key_prefix"),
                rate(g),
                joined(g, "allowed_origins"),
                text(g, "status"),
            ]
        })
        .collect();
    render_table(&["ID", "APP", "ADDON", "KEY", "RATE", "ORIGINS", "STATUS"], &rows)
}

/// The grants table; `apps` (the application list) turns application ids into names.
pub(crate) fn render_grant_list(d: &Value, apps: &Value) -> String {
    let name_of = |g: &Value| {
        let id = g.get("application_id").and_then(Value::as_str).unwrap_or("");
        apps.as_array()
            .and_then(|l| l.iter().find(|a| a.get("id").and_then(Value::as_str) == Some(id)))
            .map(|a| text(a, "name"))
            .unwrap_or_else(|| text(g, "application_id"))
    };
    grant_table(d.as_array().map(Vec::as_slice).unwrap_or(&[]), &name_of)
}

pub(crate) fn render_grant(g: &Value) -> String {
    let mut pairs = vec![
        ("ID", text(g, "id")),
        ("Application", text(g, "application_id")),
        ("Addon", text(g, "addon")),
        ("Environment", text(g, "environment")),
        ("Key", text(g, "key_prefix")),
        ("Rate limit", rate(g)),
        ("Origins", joined(g, "allowed_origins")),
        ("Status", text(g, "status")),
        ("Created", local_time(g.get("created_at"))),
        ("Rotated", local_time(g.get("rotated_at"))),
    ];
    if g.get("old_key_valid_until").is_some_and(|v| !v.is_null()) {
        pairs.push(("Old key until", local_time(g.get("old_key_valid_until"))));
    }
    if g.get("revoked_at").is_some_and(|v| !v.is_null()) {
        pairs.push(("Revoked", local_time(g.get("revoked_at"))));
    }
    render_kv(&pairs)
}

/// A new key, set apart so it cannot be missed (it is never shown again).
pub(crate) fn render_new_key(head: &str, key: &str) -> String {
    format!("{head}\n\nAPI key (shown only this once):\n\n    {key}\n\n")
}

/// Who made an audited request: `uid:pid` on the admin socket, the client address for
/// the gateway.
pub(crate) fn audit_who(e: &Value) -> String {
    match (e.get("uid").and_then(Value::as_u64), e.get("pid").and_then(Value::as_i64)) {
        (Some(u), Some(p)) => format!("{u}:{p}"),
        (Some(u), None) => u.to_string(),
        (None, _) => text(e, "source"),
    }
}

pub(crate) fn render_audit(d: &Value) -> String {
    let list = d.as_array().map(Vec::as_slice).unwrap_or(&[]);
    if list.is_empty() {
        return "no audit records\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|e| vec![local_time(e.get("at")), audit_who(e), text(e, "method"), text(e, "path"), text(e, "status"), text(e, "detail")])
        .collect();
    render_table(&["AT", "WHO", "METHOD", "PATH", "STATUS", "DETAIL"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::rows;
    use crate::tests::parse;
    use crate::{Cli, Command};
    use clap::Parser;

    fn sample_grant() -> Value {
        json!({"id": "grant_1", "application_id": "app_1", "addon": "pay", "key_prefix": "ak_0123456789ab_…",
               "rate_limit": {"requests_per_second": 10.0, "burst": 20}, "allowed_origins": ["https://a.example", "https://b.example"],
               "status": "active", "revoked_at": null, "rotated_at": null, "old_key_valid_until": null,
               "created_at": "2026-11-22T00:00:00Z"})
    }

    #[test]
    fn app_and_grant_tables() {
        let g = sample_grant();
        let apps = json!([{"id": "app_1", "name": "shop", "description": "", "organization": "Acme \u{1b}[1mCorp",
                           "created_at": "2026-11-22T00:00:00Z", "grants": [g.clone()]},
                          {"id": "app_2", "name": "blog", "description": "x", "organization": "", "grants": []}]);
        assert_eq!(
            rows(&render_app_list(&apps)),
            vec![vec!["ID", "NAME", "ORGANIZATION", "GRANTS"], vec!["app_1", "shop", "Acme Corp", "1"], vec!["app_2", "blog", "-", "0"]]
        );
        assert_eq!(render_app_list(&json!([])), "no applications\n");

        let mut revoked = g.clone();
        revoked["id"] = json!("grant_2");
        revoked["application_id"] = json!("app_gone");
        revoked["rate_limit"] = Value::Null;
        revoked["allowed_origins"] = json!([]);
        revoked["status"] = json!("revoked");
        let mut no_burst = g.clone();
        no_burst["id"] = json!("grant_3");
        no_burst["rate_limit"] = json!({"requests_per_second": 0.5, "burst": null});
        let t = render_grant_list(&json!([g, revoked, no_burst]), &apps);
        assert_eq!(
            rows(&t),
            vec![
                vec!["ID", "APP", "ADDON", "KEY", "RATE", "ORIGINS", "STATUS"],
                vec!["grant_1", "shop", "pay", "ak_0123456789ab_…", "10/s, burst 20", "https://a.example,https://b.example", "active"],
                vec!["grant_2", "app_gone", "pay", "ak_0123456789ab_…", "-", "-", "revoked"],
                vec!["grant_3", "shop", "pay", "ak_0123456789ab_…", "0.5/s", "https://a.example,https://b.example", "active"],
            ]
        );
        assert!(t.lines().all(|l| !l.ends_with(' ')), "{t}");
        assert_eq!(render_grant_list(&json!([]), &Value::Null), "no grants\n");

        // show: the application block with its grants; a grant block.
        let a = render_app(&apps[0]);
        assert!(a.starts_with("ID:            app_1\nName:          shop\nDescription:   -\nOrganization:  Acme Corp\n"), "{a}");
        assert!(a.contains("\nID        APP    ADDON"), "{a}");
        let b = render_grant(&sample_grant());
        assert!(b.contains("\nRate limit:   10/s, burst 20\n") && b.contains("\nStatus:       active\n"), "{b}");
        assert!(!b.contains("Revoked") && !b.contains("Old key"), "{b}");
        let mut r = sample_grant();
        r["revoked_at"] = json!("2026-11-22T00:00:05Z");
        assert!(render_grant(&r).contains("Revoked:"));
        // The new key stands on a line of its own, between blank lines.
        assert_eq!(render_new_key("created grant g", "ak_1_2"), "created grant g\n\nAPI key (shown only this once):\n\n    ak_1_2\n\n");
    }

    #[test]
    fn audit_table() {
        let audit = json!([
            {"at": 1_795_305_662_000i64, "uid": 0, "pid": 4242, "source": null, "method": "POST", "path": "/api/application-grants", "status": 201, "detail": null},
            {"at": 1_795_305_663_000i64, "uid": null, "pid": null, "source": "127.0.0.1", "method": "GET", "path": "/gw/pay/health", "status": 401, "detail": "invalid_api_key"},
            {"at": 1_795_305_664_000i64, "uid": 1000, "pid": null, "source": null, "method": "DELETE", "path": "/api/applications/shop", "status": 200, "detail": null}
        ]);
        let t = rows(&render_audit(&audit));
        assert_eq!(t[0], ["AT", "WHO", "METHOD", "PATH", "STATUS", "DETAIL"]);
        assert_eq!(t[1][1..], ["0:4242", "POST", "/api/application-grants", "201", "-"]);
        assert_eq!(t[2][1..], ["127.0.0.1", "GET", "/gw/pay/health", "401", "invalid_api_key"]);
        assert_eq!(t[3][1..], ["1000", "DELETE", "/api/applications/shop", "200", "-"]);
        assert_eq!(t[1][0], local_time(Some(&json!(1_795_305_662i64))));
        assert_eq!(render_audit(&json!([])), "no audit records\n");
    }

    #[test]
    fn gateway_command_lines() {
        let c = parse(&[
            "grants",
            "create",
            "--app",
            "shop",
            "--addon",
            "pay",
            "--rate",
            "10",
            "--burst",
            "20",
            "--origin",
            "https://a.example",
            "--origin",
            "https://b.example",
        ]);
        let Command::Grants(GrantCmd::Create(a)) = c.command else { panic!() };
        assert_eq!(
            grant_create_body(&a),
            json!({"application": "shop", "addon": "pay", "rate_limit": {"requests_per_second": 10.0, "burst": 20},
                   "allowed_origins": ["https://a.example", "https://b.example"]})
        );
        let c = parse(&["grants", "create", "--app", "shop", "--addon", "pay"]);
        let Command::Grants(GrantCmd::Create(a)) = c.command else { panic!() };
        assert_eq!(grant_create_body(&a), json!({"application": "shop", "addon": "pay"}));

        let update = |args: &[&str]| {
            let mut all = vec!["grants", "update", "grant_1"];
            all.extend_from_slice(args);
            let Command::Grants(GrantCmd::Update(a)) = parse(&all).command else { panic!() };
            a
        };
        let g = sample_grant();
        // --rate keeps the burst; --burst alone keeps the rate; --no-rate removes the limit.
        assert_eq!(
            grant_update_body(&update(&["--rate", "5"]), &g).unwrap(),
            json!({"rate_limit": {"requests_per_second": 5.0, "burst": 20}})
        );
        assert_eq!(
            grant_update_body(&update(&["--burst", "3"]), &g).unwrap(),
            json!({"rate_limit": {"requests_per_second": 10.0, "burst": 3}})
        );
        assert_eq!(grant_update_body(&update(&["--no-rate"]), &g).unwrap(), json!({"rate_limit": null}));
        let mut unlimited = g.clone();
        unlimited["rate_limit"] = Value::Null;
        assert!(grant_update_body(&update(&["--burst", "3"]), &unlimited).unwrap_err().0.contains("--rate"));
        assert_eq!(grant_update_body(&update(&["--rate", "1"]), &unlimited).unwrap(), json!({"rate_limit": {"requests_per_second": 1.0}}));
        // --origin adds (once); --clear-origins starts from none.
        assert_eq!(
            grant_update_body(&update(&["--origin", "https://c.example", "--origin", "https://a.example"]), &g).unwrap(),
            json!({"allowed_origins": ["https://a.example", "https://b.example", "https://c.example"]})
        );
        assert_eq!(grant_update_body(&update(&["--clear-origins"]), &g).unwrap(), json!({"allowed_origins": []}));
        assert_eq!(
            grant_update_body(&update(&["--clear-origins", "--origin", "https://c.example"]), &g).unwrap(),
            json!({"allowed_origins": ["https://c.example"]})
        );

        assert!(
            matches!(parse(&["grants", "rotate", "g", "--grace", "30"]).command, Command::Grants(GrantCmd::Rotate { grace: Some(g), .. }) if g == 30.0)
        );
        assert!(matches!(parse(&["apps", "ls"]).command, Command::Apps(AppCmd::List)));
        assert!(matches!(parse(&["apps", "create", "shop", "--organization", "Acme"]).command,
            Command::Apps(AppCmd::Create { ref name, organization: Some(ref o), description: None }) if name == "shop" && o == "Acme"));
        assert!(matches!(parse(&["audit", "--limit", "5"]).command, Command::Audit { limit: Some(5) }));
        for bad in [
            vec!["grants", "update", "g"],
            vec!["grants", "update", "g", "--rate", "5", "--no-rate"],
            vec!["grants", "update", "g", "--burst", "5", "--no-rate"],
            vec!["grants", "create", "--app", "a", "--addon", "b", "--burst", "5"],
            vec!["grants", "create", "--app", "a", "--addon", "b", "--rate", "0"],
            vec!["grants", "create", "--app", "a", "--addon", "b", "--rate", "5", "--burst", "0"],
            vec!["grants", "create", "--addon", "b"],
            vec!["grants", "rotate", "g", "--grace", "soon"],
            vec!["audit", "--limit", "0"],
        ] {
            let e = Cli::try_parse_from(std::iter::once("addonctl").chain(bad.iter().copied())).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
        assert_eq!(grant_path("grant_1", "rotate"), "/api/application-grants/grant_1/rotate");
        assert_eq!(app_path("a b"), "/api/applications/a%20b");
    }
}
