//! Addon manifests: the request shapes (full and short form, in addond's field names and
//! in the addon-server's: `id`, `apis`, `displayName`, `configSchema`, …), and their
//! validation into a [`Manifest`] where every error names its field. Pure: no I/O,
//! unit-tested here and through the fixture table in `tests/fixtures/manifests/`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::schema;
use crate::config::Config;
use crate::model::{check_display_name, check_image, valid_name, CreateRequest, FieldError};

pub const CATEGORIES: &[&str] = &["ecommerce", "analytics", "marketing", "communication", "utilities"];
pub const WIDGET_CATEGORIES: &[&str] = &["content", "form", "display", "interactive", "layout"];
pub const PERMISSIONS: &[&str] = &["events.emit", "events.subscribe", "storage", "addons.execute", "network.internet"];

/// Longest addon (and addon instance) name: its services are named `<instance>-<service>`,
/// which must fit the 63-character service name.
pub const MAX_ADDON_NAME: usize = 40;
pub const MAX_SERVICE_NAME: usize = 22;
/// A manifest as sent (JSON, or TOML read into the same value). Every camelCase spelling
/// the addon-server uses is an alias of the snake_case field.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestRequest {
    /// The addon-server's name for the addon's slug; with it, `name` is a display name.
    pub id: Option<String>,
    /// The addon's slug (its catalogue name), or its display name when `id` is sent.
    pub name: Option<String>,
    /// Human text shown for the addon (any language, 1–100 characters).
    #[serde(alias = "displayName")]
    pub display_name: Option<String>,
    pub version: Option<String>,
    pub description: Option<String>,
    pub author: Option<String>,
    pub category: Option<String>,
    pub image: Option<String>,
    pub services: Option<Vec<Value>>,
    pub actions: Option<Vec<ActionRequest>>,
    /// Short-form alias of `actions`.
    pub endpoints: Option<Vec<ActionRequest>>,
    /// The addon-server's name for `actions`.
    pub apis: Option<Vec<ActionRequest>>,
    pub widgets: Option<Vec<WidgetRequest>>,
    pub events: Option<EventsRequest>,
    pub permissions: Option<Vec<String>>,
    pub dependencies: Option<DependenciesRequest>,
    #[serde(alias = "configSchema")]
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
    #[serde(alias = "resourceLimits")]
    pub resource_limits: Option<AddonLimitsRequest>,
}

/// Dependencies as declared: a map of addon names to version requirements
/// (`{"inventory": "^1.0"}`), or the addon-server's list of addon names (`["inventory"]`,
/// any version).
#[derive(Debug, Clone)]
pub enum DependenciesRequest {
    Map(BTreeMap<String, String>),
    List(Vec<String>),
}

impl<'de> Deserialize<'de> for DependenciesRequest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Shape;
        impl<'de> serde::de::Visitor<'de> for Shape {
            type Value = DependenciesRequest;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("dependencies: a list of addon names like [\"inventory\"], or a map of version requirements like {\"inventory\": \"^1.0\"}")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<DependenciesRequest, A::Error> {
                BTreeMap::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(DependenciesRequest::Map)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<DependenciesRequest, A::Error> {
                Vec::deserialize(serde::de::value::SeqAccessDeserializer::new(seq)).map(DependenciesRequest::List)
            }
        }
        d.deserialize_any(Shape)
    }
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
            "an action: its name like \"add\", or an object like {\"name\": \"add\", \"input_schema\": {…}, \"timeout_seconds\": 30} (or {\"id\": \"add\", \"name\": \"Add\", \"inputSchema\": {…}})",
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

/// An action's long form. `id` is the addon-server's name for the action's slug; with
/// it, `name` is a display name.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionLong {
    pub id: Option<String>,
    pub name: Option<String>,
    #[serde(alias = "displayName")]
    pub display_name: Option<String>,
    pub description: Option<String>,
    #[serde(alias = "inputSchema")]
    pub input_schema: Option<Value>,
    /// The schema of the action's answer (an object schema), shown to MCP clients.
    #[serde(default, alias = "outputSchema")]
    pub output_schema: Option<Value>,
    #[serde(alias = "timeoutSeconds")]
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
            "a widget: its name like \"checkout\", or an object like {\"name\": \"checkout\", \"category\": \"form\"} (or {\"id\": \"checkout\", \"displayName\": \"Checkout\", \"configSchema\": {…}})",
        ))
        .map(|v| match v {
            Either::Name(n) => WidgetRequest::Short(n),
            Either::Long(l) => WidgetRequest::Long(l),
        })
    }
}

/// A widget's long form, in addond's field names or the addon-server's (camelCase and
/// snake_case both). `id` is the widget's slug; with it, `name` is a display name.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WidgetLong {
    pub id: Option<String>,
    pub name: Option<String>,
    #[serde(alias = "displayName")]
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub category: Option<String>,
    #[serde(alias = "configSchema")]
    pub config_schema: Option<Value>,
    /// The path on the addon's entry service that renders it (default
    /// `/widgets/{id}/render`).
    #[serde(alias = "renderEndpoint")]
    pub render_endpoint: Option<String>,
    /// A picture of the widget for a catalogue (a URL), kept and shown as sent.
    #[serde(alias = "previewImage")]
    pub preview_image: Option<String>,
    /// Whether the widget adapts to its container's width, kept and shown as sent.
    pub responsive: Option<bool>,
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
    /// Human text shown for the addon (the addon-server's `name` beside its `id`); left
    /// out when none was sent, so manifests registered before it existed compare equal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
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
    /// Human text for the action, when one was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
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
    /// Human text for the widget (`displayName`), when one was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub description: String,
    pub category: String,
    pub config_schema: Value,
    /// The path on the addon's entry service that renders it; none: `/widgets/{name}/render`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub render_endpoint: Option<String>,
    /// A picture of the widget (a URL), as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_image: Option<String>,
    /// Whether it adapts to its container's width, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub responsive: Option<bool>,
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

/// A value sent for a field, with the field's name (for errors).
type Sent = Option<(String, &'static str)>;

/// The slug and the display name of something declared by `id` and/or `name` (and maybe
/// `display_name`): `id` is the slug when sent, and then a `name` that differs from it is
/// the display name (the addon-server's convention); otherwise `name` is the slug. Answers
/// the field the slug came from, for errors.
fn slug_and_display(id: Option<String>, name: Option<String>, display: Option<String>) -> (Sent, Sent) {
    match (id, name) {
        (Some(id), name) => {
            let display = match (display, name) {
                (Some(d), _) => Some((d, "display_name")),
                (None, Some(n)) if n != id => Some((n, "name")),
                _ => None,
            };
            (Some((id, "id")), display)
        }
        (None, name) => (name.map(|n| (n, "name")), display.map(|d| (d, "display_name"))),
    }
}

/// A path on the addon's own service: `/` and then URL-safe characters, no `..`.
fn check_render_endpoint(p: &str) -> Result<(), String> {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-._~/%!$&'()*+,;=:@".contains(c);
    if !p.starts_with('/') || p.starts_with("//") || p.len() > 256 || !p.chars().all(safe) || p.split('/').any(|s| s == "..") {
        return Err(format!(
            "`{p}` is not a path on the addon's service: send one like /widgets/checkout/render (a leading `/`, at most 256 URL-safe characters, no `..`, no query)"
        ));
    }
    Ok(())
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
    /// Reads a manifest from a JSON value (an `addon.json`, or an `addon.toml` turned into
    /// one): a wrong shape names the field at fault and, for an unknown one, the fields
    /// known there.
    pub fn from_value(v: &Value) -> Result<ManifestRequest, FieldError> {
        serde_path_to_error::deserialize(v).map_err(|e| {
            let path = e.path().to_string();
            FieldError::from_serde_in("", &path, &e.into_inner().to_string())
        })
    }

    pub fn validate(self, cfg: &Config) -> Result<Manifest, FieldError> {
        let (slug, display_name) = slug_and_display(self.id, self.name, self.display_name);
        let (name, name_field) = slug.ok_or_else(|| err("name", "a manifest needs a name (or an id), like \"payment-gateway\""))?;
        if !valid_name(&name) || name.len() > MAX_ADDON_NAME {
            return Err(err(
                name_field,
                format!("`{name}` is not a valid addon name: 1–{MAX_ADDON_NAME} lowercase letters, digits and `-`; put human text in `display_name`"),
            ));
        }
        if let Some((d, f)) = &display_name {
            check_display_name(d).map_err(|m| err(*f, m))?;
        }
        let display_name = display_name.map(|(d, _)| d);
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
        // `actions`, `endpoints` and `apis` are one list, in that order; errors name the
        // list an action was sent in.
        let lists = [("actions", self.actions), ("endpoints", self.endpoints), ("apis", self.apis)];
        let raw_actions = lists.into_iter().flat_map(|(key, l)| l.into_iter().flatten().enumerate().map(move |(i, a)| (key, i, a)));
        for (key, i, a) in raw_actions {
            let field = format!("{key}[{i}]");
            let a = match a {
                ActionRequest::Short(n) => ActionLong { name: Some(n), ..ActionLong::default() },
                ActionRequest::Long(l) => l,
            };
            let (slug, display) = slug_and_display(a.id, a.name, a.display_name);
            let (a_name, slug_field) =
                slug.ok_or_else(|| err(format!("{field}.name"), "each action needs a name (or an id), like \"process-payment\""))?;
            if !valid_item_name(&a_name) {
                return Err(err(
                    format!("{field}.{slug_field}"),
                    format!("`{a_name}`: lowercase letters, digits, `-` and `_`; put human text in `display_name`"),
                ));
            }
            if actions.iter().any(|x: &Action| x.name == a_name) {
                return Err(err(format!("{field}.{slug_field}"), format!("action `{a_name}` is declared twice")));
            }
            if let Some((d, f)) = &display {
                check_display_name(d).map_err(|m| err(format!("{field}.{f}"), m))?;
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
                name: a_name,
                display_name: display.map(|(d, _)| d),
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
                WidgetRequest::Short(n) => WidgetLong { name: Some(n), ..WidgetLong::default() },
                WidgetRequest::Long(l) => l,
            };
            let (slug, display) = slug_and_display(w.id, w.name, w.display_name);
            let (w_name, slug_field) =
                slug.ok_or_else(|| err(format!("{field}.name"), "each widget needs a name (or an id), like \"checkout\""))?;
            if !valid_item_name(&w_name) {
                return Err(err(
                    format!("{field}.{slug_field}"),
                    format!("`{w_name}`: lowercase letters, digits, `-` and `_`; put human text in `displayName`"),
                ));
            }
            if widgets.iter().any(|x: &Widget| x.name == w_name) {
                return Err(err(format!("{field}.{slug_field}"), format!("widget `{w_name}` is declared twice")));
            }
            if let Some((d, f)) = &display {
                check_display_name(d).map_err(|m| err(format!("{field}.{f}"), m))?;
            }
            if let Some(p) = &w.render_endpoint {
                check_render_endpoint(p).map_err(|m| err(format!("{field}.render_endpoint"), m))?;
            }
            if let Some(p) = &w.preview_image {
                if p.is_empty() || p.len() > 4096 || p.chars().any(char::is_control) {
                    return Err(err(
                        format!("{field}.preview_image"),
                        "a URL of at most 4096 characters, like https://example.com/checkout.png",
                    ));
                }
            }
            let category = w.category.unwrap_or_else(|| "content".into());
            if !WIDGET_CATEGORIES.contains(&category.as_str()) {
                return Err(err(format!("{field}.category"), format!("`{category}` is not one of {}", WIDGET_CATEGORIES.join(", "))));
            }
            let schema = w.config_schema.unwrap_or_else(|| json!({}));
            schema::check_schema(&schema, &format!("{field}.config_schema")).map_err(|m| err(format!("{field}.config_schema"), m))?;
            widgets.push(Widget {
                name: w_name,
                display_name: display.map(|(d, _)| d),
                description: w.description.unwrap_or_default(),
                category,
                config_schema: schema,
                render_endpoint: w.render_endpoint,
                preview_image: w.preview_image,
                responsive: w.responsive,
            });
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
        let dependencies = match self.dependencies {
            None => BTreeMap::new(),
            Some(DependenciesRequest::Map(m)) => m,
            // A list names addons, any version of each.
            Some(DependenciesRequest::List(l)) => {
                let mut m = BTreeMap::new();
                for (i, dep) in l.into_iter().enumerate() {
                    if !valid_name(&dep) {
                        return Err(err(format!("dependencies[{i}]"), format!("`{dep}` is not an addon name like inventory")));
                    }
                    if m.insert(dep.clone(), "*".to_string()).is_some() {
                        return Err(err(format!("dependencies[{i}]"), format!("`{dep}` is listed twice")));
                    }
                }
                m
            }
        };
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
            display_name,
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

impl Widget {
    /// The path on the addon's entry service that renders it.
    pub fn render_path(&self) -> String {
        self.render_endpoint.clone().unwrap_or_else(|| format!("/widgets/{}/render", self.name))
    }

    /// The widget as the API shows it: addond's fields (`name`, `config_schema`) and the
    /// addon-server's (`id`, `displayName`, `configSchema`, `renderEndpoint`,
    /// `previewImage`, `responsive`), the latter as they were sent (null when not).
    pub fn view(&self) -> Value {
        json!({
            "id": self.name,
            "name": self.name,
            "displayName": self.display_name.as_deref().unwrap_or(&self.name),
            "description": self.description,
            "category": self.category,
            "config_schema": self.config_schema,
            "configSchema": self.config_schema,
            "renderEndpoint": self.render_endpoint,
            "previewImage": self.preview_image,
            "responsive": self.responsive,
        })
    }
}

impl Manifest {
    /// The manifest as the API shows it: as stored, plus `id` (its name) and each widget
    /// in the shape of [`Widget::view`].
    pub fn view(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        v["id"] = json!(self.name);
        v["displayName"] = json!(self.display_name.as_deref().unwrap_or(&self.name));
        v["widgets"] = Value::Array(self.widgets.iter().map(Widget::view).collect());
        v
    }

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
mod tests;
