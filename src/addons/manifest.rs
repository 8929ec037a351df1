//! Addon manifests: the request shapes (full and short form), and their validation into
//! a [`Manifest`] where every error names its field. Pure: no I/O, unit-tested here and
//! through the fixture table in `tests/fixtures/manifests/`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::schema;
use crate::config::Config;
use crate::model::{check_image, valid_name, CreateRequest, FieldError};

pub const CATEGORIES: &[&str] = &["ecommerce", "analytics", "marketing", "communication", "utilities"];
pub const WIDGET_CATEGORIES: &[&str] = &["content", "form", "display", "interactive", "layout"];
pub const PERMISSIONS: &[&str] = &["events.emit", "events.subscribe", "storage", "addons.execute", "network.internet"];

/// Longest addon (and addon instance) name: its services are named `<instance>-<service>`,
/// which must fit the 63-character service name.
pub const MAX_ADDON_NAME: usize = 40;
pub const MAX_SERVICE_NAME: usize = 22;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestRequest {
    pub name: Option<String>,
    pub version: Option<String>,
    pub description: Option<String>,
    pub author: Option<String>,
    pub category: Option<String>,
    pub image: Option<String>,
    pub services: Option<Vec<Value>>,
    pub actions: Option<Vec<ActionRequest>>,
    /// Short-form alias of `actions`.
    pub endpoints: Option<Vec<ActionRequest>>,
    pub widgets: Option<Vec<WidgetRequest>>,
    pub events: Option<EventsRequest>,
    pub permissions: Option<Vec<String>>,
    pub dependencies: Option<BTreeMap<String, String>>,
    pub config_schema: Option<Value>,
    pub schedules: Option<Vec<ScheduleRequest>>,
    /// An action an upgrade calls on each new instance before it takes traffic.
    pub smoke: Option<String>,
    /// The Dockerfile's path in a build context (`addonctl addons build`); registering
    /// takes and ignores it, so one `addon.toml` serves both.
    pub dockerfile: Option<String>,
    /// `container` (the default) or `wasm`: actions and widgets served by a published
    /// WebAssembly module, with no services.
    pub runtime: Option<String>,
    /// A WASM addon's limits: `{"memory": "64m"}` caps each call's linear memory.
    pub resource_limits: Option<AddonLimitsRequest>,
}

/// The limits of a WASM addon as declared.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddonLimitsRequest {
    /// A size like `64m`: the most linear memory one call may have.
    pub memory: Option<crate::model::StringOrNumber>,
}

/// The runtimes an addon can declare.
pub const RUNTIMES: &[&str] = &["container", "wasm"];

/// An action as declared: its name, or an object with its name and details.
#[derive(Debug, Clone)]
pub enum ActionRequest {
    Short(String),
    Long(ActionLong),
}

impl<'de> Deserialize<'de> for ActionRequest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NameOr::<ActionLong>::new(
            "an action: its name like \"add\", or an object like {\"name\": \"add\", \"input_schema\": {…}, \"timeout_seconds\": 30}",
        ))
        .map(|v| match v {
            Either::Name(n) => ActionRequest::Short(n),
            Either::Long(l) => ActionRequest::Long(l),
        })
    }
}

/// A name or an object: the two shapes of an action or a widget.
enum Either<L> {
    Name(String),
    Long(L),
}

/// Visits [`Either`], saying which two shapes are accepted when neither is sent (an
/// untagged enum only says that nothing matched).
struct NameOr<L> {
    expecting: &'static str,
    long: std::marker::PhantomData<L>,
}

impl<L> NameOr<L> {
    fn new(expecting: &'static str) -> Self {
        NameOr { expecting, long: std::marker::PhantomData }
    }
}

impl<'de, L: Deserialize<'de>> serde::de::Visitor<'de> for NameOr<L> {
    type Value = Either<L>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Either<L>, E> {
        Ok(Either::Name(v.to_string()))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Either<L>, A::Error> {
        L::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Either::Long)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionLong {
    pub name: String,
    pub description: Option<String>,
    pub input_schema: Option<Value>,
    /// The schema of the action's answer (an object schema), shown to MCP clients.
    #[serde(default)]
    pub output_schema: Option<Value>,
    pub timeout_seconds: Option<f64>,
}

/// A widget as declared: its name, or an object with its name and details.
#[derive(Debug, Clone)]
pub enum WidgetRequest {
    Short(String),
    Long(WidgetLong),
}

impl<'de> Deserialize<'de> for WidgetRequest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NameOr::<WidgetLong>::new(
            "a widget: its name like \"checkout\", or an object like {\"name\": \"checkout\", \"category\": \"form\"}",
        ))
        .map(|v| match v {
            Either::Name(n) => WidgetRequest::Short(n),
            Either::Long(l) => WidgetRequest::Long(l),
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WidgetLong {
    pub name: String,
    pub description: Option<String>,
    pub category: Option<String>,
    pub config_schema: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsRequest {
    pub emits: Option<Vec<String>>,
    pub subscribes: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    pub cron: String,
    pub action: String,
}

/// A validated manifest, stored as JSON in the catalogue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub description: String,
    pub author: String,
    pub category: String,
    pub image: Option<String>,
    /// Service declarations in the create-request shape; `name` is the short service name.
    pub services: Vec<Value>,
    pub actions: Vec<Action>,
    pub widgets: Vec<Widget>,
    pub events: Events,
    pub permissions: Vec<String>,
    pub dependencies: BTreeMap<String, String>,
    pub config_schema: Value,
    pub schedules: Vec<Schedule>,
    /// An action (with no input) a deployment calls on each new instance once it is
    /// healthy; anything but 2xx rolls the deployment back. Left out of the stored text
    /// when unset, so manifests registered before it existed compare equal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoke: Option<String>,
    /// `wasm` for a WebAssembly addon; left out (a container addon) otherwise, so manifests
    /// registered before it existed compare equal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// A WASM addon's linear-memory cap per call, in bytes (none: `wasm.default_memory_bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    pub name: String,
    pub description: String,
    pub input_schema: Value,
    /// The declared schema of the answer (null: none); manifests stored before it had none.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub output_schema: Value,
    pub timeout_seconds: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Widget {
    pub name: String,
    pub description: String,
    pub category: String,
    pub config_schema: Value,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Events {
    pub emits: Vec<String>,
    pub subscribes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub cron: String,
    pub action: String,
}

/// A service declaration that does not have the shape of a create request: the field
/// inside it at fault and what to send instead.
fn service_shape_error(field: &str, e: serde_path_to_error::Error<serde_json::Error>) -> FieldError {
    let path = e.path().to_string();
    FieldError::from_serde_in(field, &path, &e.into_inner().to_string())
}

fn err(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError { field: field.into(), message: message.into(), code: "validation_failed" }
}

fn valid_item_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Event names: dotted lowercase words (`payment.completed`); a subscription may end in
/// `.*` or be `*`.
fn valid_event(s: &str, wildcard: bool) -> bool {
    if s.len() > 128 {
        return false;
    }
    if wildcard && s == "*" {
        return true;
    }
    let body = if wildcard { s.strip_suffix(".*").unwrap_or(s) } else { s };
    !body.is_empty()
        && body.split('.').all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'))
}

impl ManifestRequest {
    pub fn validate(self, cfg: &Config) -> Result<Manifest, FieldError> {
        let name = self.name.ok_or_else(|| err("name", "a manifest needs a name"))?;
        if !valid_name(&name) || name.len() > MAX_ADDON_NAME {
            return Err(err("name", format!("`{name}` is not a valid addon name: 1–{MAX_ADDON_NAME} lowercase letters, digits and `-`")));
        }
        let version = self.version.ok_or_else(|| err("version", "a manifest needs a version, like 1.0.0"))?;
        if semver::Version::parse(&version).is_err() {
            return Err(err("version", format!("`{version}` is not a semantic version like 1.2.3")));
        }
        let category = self.category.unwrap_or_else(|| "utilities".to_string());
        if !CATEGORIES.contains(&category.as_str()) {
            return Err(err("category", format!("`{category}` is not one of {}", CATEGORIES.join(", "))));
        }
        if let Some(img) = &self.image {
            check_image(img).map_err(|m| err("image", m))?;
        }
        let description = self.description.unwrap_or_default();
        let author = self.author.unwrap_or_default();
        if description.len() > 4096 || author.len() > 256 {
            return Err(err(if author.len() > 256 { "author" } else { "description" }, "too long"));
        }
        let runtime = match self.runtime.as_deref() {
            None | Some("container") => None,
            Some("wasm") => Some("wasm".to_string()),
            Some(r) => return Err(err("runtime", format!("`{r}` is not one of {}", RUNTIMES.join(", ")))),
        };
        let wasm = runtime.is_some();
        let mut memory_bytes = None;
        if let Some(lim) = &self.resource_limits {
            if !wasm {
                return Err(err(
                    "resource_limits",
                    "addon-level resource_limits are for runtime = \"wasm\"; set a container addon's limits per service",
                ));
            }
            if let Some(m) = &lim.memory {
                let text = m.text();
                let bytes = crate::config::parse_size(&text)
                    .ok_or_else(|| err("resource_limits.memory", format!("`{text}` is not a size like 64m")))?;
                if bytes < 65536 || bytes > cfg.wasm.max_memory_bytes {
                    return Err(err(
                        "resource_limits.memory",
                        format!("`{text}` must be between 64k and {} KiB (wasm.max_memory_bytes)", cfg.wasm.max_memory_bytes >> 10),
                    ));
                }
                memory_bytes = Some(bytes);
            }
        }
        if wasm && self.services.as_ref().is_some_and(|s| !s.is_empty()) {
            return Err(err("services", "a WASM addon has no services: its module serves the actions and widgets; leave services out"));
        }
        if wasm && self.image.is_some() {
            return Err(err("image", "a WASM addon has no image: publish its module with `addonctl addons publish NAME FILE.wasm`"));
        }
        if wasm && permissions_ask_internet(&self.permissions) {
            return Err(err("permissions", "`network.internet` is not offered to WASM addons: a guest has no sockets"));
        }
        // Services: each must be a valid create request once named and given an image.
        let services = match self.services {
            _ if wasm => Vec::new(),
            Some(s) if !s.is_empty() => s,
            _ => vec![json!({"name": "main", "service_type": "rest_api", "port": 8080})],
        };
        let mut seen = Vec::new();
        for (i, raw) in services.iter().enumerate() {
            let field = format!("services[{i}]");
            let sname = raw.get("name").and_then(Value::as_str).ok_or_else(|| err(format!("{field}.name"), "each service needs a name"))?;
            if !valid_name(sname) || sname.len() > MAX_SERVICE_NAME {
                return Err(err(format!("{field}.name"), format!("`{sname}`: 1–{MAX_SERVICE_NAME} lowercase letters, digits and `-`")));
            }
            if seen.contains(&sname) {
                return Err(err(format!("{field}.name"), format!("two services are named `{sname}`")));
            }
            seen.push(sname);
            let mut probe = raw.clone();
            probe["name"] = json!(format!("x-{sname}"));
            // As installed: an addon's services carry its name (which lets them share volumes).
            probe["plugin_id"] = json!(name);
            if probe.get("image").is_none() {
                probe["image"] = json!(self.image.clone().unwrap_or_else(|| "placeholder:latest".into()));
            }
            let req: CreateRequest = serde_path_to_error::deserialize(&probe).map_err(|e| service_shape_error(&field, e))?;
            req.validate(cfg).map_err(|e| FieldError { field: format!("{field}.{}", e.field), ..e })?;
        }
        let mut actions = Vec::new();
        let raw_actions = self.actions.into_iter().flatten().chain(self.endpoints.into_iter().flatten());
        for (i, a) in raw_actions.enumerate() {
            let field = format!("actions[{i}]");
            let a = match a {
                ActionRequest::Short(n) => {
                    ActionLong { name: n, description: None, input_schema: None, output_schema: None, timeout_seconds: None }
                }
                ActionRequest::Long(l) => l,
            };
            if !valid_item_name(&a.name) {
                return Err(err(format!("{field}.name"), format!("`{}`: lowercase letters, digits, `-` and `_`", a.name)));
            }
            if actions.iter().any(|x: &Action| x.name == a.name) {
                return Err(err(format!("{field}.name"), format!("action `{}` is declared twice", a.name)));
            }
            let schema = a.input_schema.unwrap_or_else(|| json!({}));
            schema::check_schema(&schema, &format!("{field}.input_schema")).map_err(|m| err(format!("{field}.input_schema"), m))?;
            let output_schema = a.output_schema.unwrap_or(Value::Null);
            if !output_schema.is_null() {
                let f = format!("{field}.output_schema");
                if output_schema.get("type").and_then(Value::as_str) != Some("object") {
                    return Err(err(
                        f,
                        "an object schema, like {\"type\": \"object\", \"properties\": {…}} (MCP's structured content is an object)",
                    ));
                }
                schema::check_schema(&output_schema, &f).map_err(|m| err(f.clone(), m))?;
            }
            if let Some(t) = a.timeout_seconds {
                if !(t > 0.0 && t <= 3600.0) {
                    return Err(err(format!("{field}.timeout_seconds"), "must be more than 0 and at most 3600"));
                }
            }
            actions.push(Action {
                name: a.name,
                description: a.description.unwrap_or_default(),
                input_schema: schema,
                output_schema,
                timeout_seconds: a.timeout_seconds,
            });
        }
        let mut widgets = Vec::new();
        for (i, w) in self.widgets.into_iter().flatten().enumerate() {
            let field = format!("widgets[{i}]");
            let w = match w {
                WidgetRequest::Short(n) => WidgetLong { name: n, description: None, category: None, config_schema: None },
                WidgetRequest::Long(l) => l,
            };
            if !valid_item_name(&w.name) {
                return Err(err(format!("{field}.name"), format!("`{}`: lowercase letters, digits, `-` and `_`", w.name)));
            }
            if widgets.iter().any(|x: &Widget| x.name == w.name) {
                return Err(err(format!("{field}.name"), format!("widget `{}` is declared twice", w.name)));
            }
            let category = w.category.unwrap_or_else(|| "content".into());
            if !WIDGET_CATEGORIES.contains(&category.as_str()) {
                return Err(err(format!("{field}.category"), format!("`{category}` is not one of {}", WIDGET_CATEGORIES.join(", "))));
            }
            let schema = w.config_schema.unwrap_or_else(|| json!({}));
            schema::check_schema(&schema, &format!("{field}.config_schema")).map_err(|m| err(format!("{field}.config_schema"), m))?;
            widgets.push(Widget { name: w.name, description: w.description.unwrap_or_default(), category, config_schema: schema });
        }
        let ev = self.events.unwrap_or_default();
        let emits = ev.emits.unwrap_or_default();
        for (i, e) in emits.iter().enumerate() {
            if !valid_event(e, false) {
                return Err(err(format!("events.emits[{i}]"), format!("`{e}` is not an event name like payment.completed")));
            }
        }
        let subscribes = ev.subscribes.unwrap_or_default();
        for (i, e) in subscribes.iter().enumerate() {
            if !valid_event(e, true) {
                return Err(err(
                    format!("events.subscribes[{i}]"),
                    format!("`{e}` is not an event name or a trailing wildcard like stock.*"),
                ));
            }
        }
        let permissions = self.permissions.unwrap_or_default();
        for (i, p) in permissions.iter().enumerate() {
            if !PERMISSIONS.contains(&p.as_str()) {
                return Err(err(format!("permissions[{i}]"), format!("unknown permission `{p}`; known: {}", PERMISSIONS.join(", "))));
            }
        }
        let dependencies = self.dependencies.unwrap_or_default();
        for (dep, req) in &dependencies {
            if !valid_name(dep) {
                return Err(err(format!("dependencies.{dep}"), "not an addon name"));
            }
            if dep == &name {
                return Err(err(format!("dependencies.{dep}"), "an addon cannot depend on itself"));
            }
            if semver::VersionReq::parse(req).is_err() {
                return Err(err(format!("dependencies.{dep}"), format!("`{req}` is not a version requirement like ^1.2 or >=1.0, <2")));
            }
        }
        let config_schema = self.config_schema.unwrap_or_else(|| json!({"type": "object"}));
        schema::check_schema(&config_schema, "config_schema").map_err(|m| err("config_schema", m))?;
        let mut schedules = Vec::new();
        for (i, s) in self.schedules.into_iter().flatten().enumerate() {
            if let Err(m) = super::cron::parse(&s.cron) {
                return Err(err(format!("schedules[{i}].cron"), format!("{m}; a cron expression looks like */5 * * * *")));
            }
            if !actions.iter().any(|a| a.name == s.action) {
                return Err(err(format!("schedules[{i}].action"), format!("`{}` is not one of this addon's actions", s.action)));
            }
            schedules.push(Schedule { cron: s.cron, action: s.action });
        }
        if let Some(smoke) = &self.smoke {
            if !actions.iter().any(|a| &a.name == smoke) {
                return Err(err("smoke", format!("`{smoke}` is not one of this addon's actions; name one it declares")));
            }
        }
        Ok(Manifest {
            name,
            version,
            description,
            author,
            category,
            image: self.image,
            services,
            actions,
            widgets,
            events: Events { emits, subscribes },
            permissions,
            dependencies,
            config_schema,
            schedules,
            smoke: self.smoke,
            runtime,
            memory_bytes,
        })
    }
}

fn permissions_ask_internet(p: &Option<Vec<String>>) -> bool {
    p.as_ref().is_some_and(|p| p.iter().any(|p| p == "network.internet"))
}

impl Manifest {
    /// Whether a published WebAssembly module serves this addon (no services).
    pub fn is_wasm(&self) -> bool {
        self.runtime.as_deref() == Some("wasm")
    }

    /// `container` or `wasm`.
    pub fn runtime_name(&self) -> &str {
        self.runtime.as_deref().unwrap_or("container")
    }

    pub fn semver(&self) -> semver::Version {
        semver::Version::parse(&self.version).unwrap_or_else(|_| semver::Version::new(0, 0, 0))
    }

    pub fn action(&self, name: &str) -> Option<&Action> {
        self.actions.iter().find(|a| a.name == name)
    }

    pub fn widget(&self, name: &str) -> Option<&Widget> {
        self.widgets.iter().find(|w| w.name == name)
    }

    /// The create requests for an installed instance: services named `<instance>-<name>`,
    /// tagged with the addon, the manifest image where a service names none.
    /// Without the `network.internet` permission, services sit on an internal network.
    pub fn service_requests(&self, instance: &str, cfg: &Config) -> Result<Vec<CreateRequest>, FieldError> {
        let mut out = Vec::new();
        for (i, raw) in self.services.iter().enumerate() {
            let mut v = raw.clone();
            let short = v.get("name").and_then(Value::as_str).unwrap_or("main").to_string();
            v["name"] = json!(format!("{instance}-{short}"));
            v["plugin_id"] = json!(self.name);
            if v.get("version").is_none() {
                v["version"] = json!(self.version);
            }
            if v.get("image").is_none() {
                match &self.image {
                    Some(img) => v["image"] = json!(img),
                    None => {
                        return Err(err(
                            format!("services[{i}].image"),
                            format!(
                                "addon `{}` {} names no image: register a manifest with `image` to install it",
                                self.name, self.version
                            ),
                        ))
                    }
                }
            }
            // Without the permission, always the internal kind, whatever the service asks.
            if !self.permissions.iter().any(|p| p == "network.internet") {
                v["networks"] = json!([cfg.docker.isolated_network]);
            }
            out.push(serde_path_to_error::deserialize(v).map_err(|e| service_shape_error(&format!("services[{i}]"), e))?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(v: Value) -> Result<Manifest, FieldError> {
        serde_json::from_value::<ManifestRequest>(v).map_err(|e| err("", e.to_string()))?.validate(&Config::default())
    }

    #[test]
    fn short_form_expands() {
        let m = validate(json!({"name": "payment-gateway", "version": "1.0.0", "widgets": ["checkout"], "endpoints": ["process-payment"]}))
            .unwrap();
        assert_eq!(m.actions[0].name, "process-payment");
        assert_eq!(m.actions[0].input_schema, json!({}));
        assert_eq!(m.widgets[0].name, "checkout");
        assert_eq!(m.widgets[0].category, "content");
        assert_eq!(m.category, "utilities");
        assert_eq!(m.services.len(), 1);
        assert!(m.service_requests("pg", &Config::default()).is_err(), "no image: cannot install");
    }

    #[test]
    fn output_schemas_are_object_schemas() {
        let with = |o: Value| validate(json!({"name": "p", "version": "1.0.0", "actions": [{"name": "a", "output_schema": o}]}));
        let m = with(json!({"type": "object", "properties": {"sum": {"type": "number"}}})).unwrap();
        assert_eq!(m.actions[0].output_schema["properties"]["sum"]["type"], "number");
        assert_eq!(with(json!({"type": "array"})).unwrap_err().field, "actions[0].output_schema");
        assert_eq!(with(json!({"type": "object", "oneOf": []})).unwrap_err().field, "actions[0].output_schema");
        // Stored manifests without one read back the same, and write back the same text.
        let m = validate(json!({"name": "p", "version": "1.0.0", "actions": ["a"]})).unwrap();
        assert!(m.actions[0].output_schema.is_null());
        assert!(!serde_json::to_string(&m).unwrap().contains("output_schema"));
    }

    #[test]
    fn wasm_addons_have_no_services_image_or_internet() {
        let m = validate(
            json!({"name": "echo", "version": "1.0.0", "runtime": "wasm", "actions": ["echo"], "resource_limits": {"memory": "1m"}}),
        )
        .unwrap();
        assert!(m.is_wasm());
        assert!(m.services.is_empty());
        assert_eq!(m.memory_bytes, Some(1 << 20));
        assert!(m.service_requests("echo", &Config::default()).unwrap().is_empty());
        let e = validate(json!({"name": "e", "version": "1.0.0", "runtime": "wasm", "image": "x:1"})).unwrap_err();
        assert_eq!(e.field, "image");
        let e = validate(json!({"name": "e", "version": "1.0.0", "runtime": "wasm", "services": [{"name": "a"}]})).unwrap_err();
        assert_eq!(e.field, "services");
        let e = validate(json!({"name": "e", "version": "1.0.0", "runtime": "wasm", "permissions": ["network.internet"]})).unwrap_err();
        assert_eq!(e.field, "permissions");
        let e = validate(json!({"name": "e", "version": "1.0.0", "runtime": "lambda"})).unwrap_err();
        assert_eq!(e.field, "runtime");
        let e = validate(json!({"name": "e", "version": "1.0.0", "resource_limits": {"memory": "1m"}})).unwrap_err();
        assert_eq!(e.field, "resource_limits");
        let e = validate(json!({"name": "e", "version": "1.0.0", "runtime": "wasm", "resource_limits": {"memory": "100g"}})).unwrap_err();
        assert_eq!(e.field, "resource_limits.memory");
    }

    #[test]
    fn events_and_crons() {
        assert!(valid_event("payment.completed", false));
        assert!(!valid_event("payment.*", false));
        assert!(valid_event("payment.*", true));
        assert!(valid_event("*", true));
        assert!(!valid_event("Payment", false));
        assert!(!valid_event("a..b", false));
    }
}
