//! The schema's types and resolvers: `Query {addon, widgets, executeAddonFunction}`,
//! `Mutation {installAddon, updateAddonConfig}` and `Subscription {events}`, over `Addon`,
//! `Widget` (with `render`), `WidgetOutput`, `Api` and `Event`. Each resolver checks the
//! caller's [`Scope`] and then calls the `Addons`/`Events` function the REST route calls.

use std::sync::Arc;

use async_graphql::{Context, Object, SimpleObject};
use futures_util::{Stream, StreamExt};
use serde_json::{json, Value};

use super::{error, Actor, Mutations, Scope};
use crate::addons::manifest::{Manifest, WIDGET_CATEGORIES};
use crate::addons::{ActionInput, Addons, InstallRequest};
use crate::events::Events;
use crate::http::{ApiError, ErrorCode};

type Result<T> = async_graphql::Result<T>;

fn addons<'c>(ctx: &Context<'c>) -> Result<&'c Arc<Addons>> {
    ctx.data::<Arc<Addons>>()
}

fn scope<'c>(ctx: &Context<'c>) -> Result<&'c Scope> {
    // A request a listener did not scope reaches nothing.
    ctx.data_opt::<Scope>().ok_or_else(|| error(ApiError::new(ErrorCode::Forbidden, "this request has no scope; it reaches no addon")))
}

/// An addon: an installed instance (`id` is the instance name, `pay` or `pay--dev`), or a
/// registered addon that is not installed (`id` is its name).
pub struct Addon {
    /// The instance name, or the addon's name when it is not installed.
    id: String,
    /// The installed (or newest registered) version's manifest.
    manifest: Manifest,
    /// Whether `id` is an installed instance.
    installed: bool,
    /// Its phase (`Started`, `Stopped`, …) when installed.
    phase: Option<String>,
    /// Its configuration when installed.
    config: Value,
}

impl Addon {
    /// What `GET /api/addons/{id}` shows, with the manifest behind it.
    async fn load(addons: &Addons, id: &str) -> Result<Addon> {
        let v = addons.show(id).await.map_err(error)?;
        match v.get("instance").and_then(Value::as_str) {
            Some(instance) => Ok(Addon {
                id: instance.to_string(),
                manifest: addons.installed_manifest(instance).await.map_err(error)?,
                installed: true,
                phase: v.get("phase").and_then(Value::as_str).map(str::to_string),
                config: v.get("config").cloned().unwrap_or(Value::Null),
            }),
            None => {
                let manifest = serde_json::from_value(v.get("manifest").cloned().unwrap_or(Value::Null))
                    .map_err(|e| error(ApiError::new(ErrorCode::Internal, format!("the manifest of `{id}` cannot be read: {e}"))))?;
                Ok(Addon { id: id.to_string(), manifest, installed: false, phase: None, config: Value::Null })
            }
        }
    }
}

#[Object]
impl Addon {
    /// The installed instance's name (`pay`, `pay--dev`), or the addon's name when it is
    /// only registered.
    async fn id(&self) -> &str {
        &self.id
    }

    /// The addon's name in the catalogue.
    async fn name(&self) -> &str {
        &self.manifest.name
    }

    /// The installed version (or the newest registered one).
    async fn version(&self) -> &str {
        &self.manifest.version
    }

    async fn description(&self) -> &str {
        &self.manifest.description
    }

    async fn author(&self) -> &str {
        &self.manifest.author
    }

    async fn category(&self) -> &str {
        &self.manifest.category
    }

    /// Whether `id` is an installed instance (only those render widgets and run functions).
    async fn installed(&self) -> bool {
        self.installed
    }

    /// `Started`, `Stopped`, `Failed`, … when installed.
    async fn phase(&self) -> Option<&str> {
        self.phase.as_deref()
    }

    /// The instance's configuration when installed.
    async fn config(&self) -> Option<&Value> {
        self.installed.then_some(&self.config)
    }

    /// Its widgets.
    async fn widgets(&self) -> Vec<Widget> {
        self.manifest
            .widgets
            .iter()
            .map(|w| Widget {
                id: w.name.clone(),
                name: w.display_name.clone().unwrap_or_else(|| w.name.clone()),
                addon_id: self.id.clone(),
                category: w.category.clone(),
                description: w.description.clone(),
                config_schema: w.config_schema.clone(),
            })
            .collect()
    }

    /// Its functions (the manifest's actions), which `executeAddonFunction` runs.
    async fn apis(&self) -> Vec<Api> {
        self.manifest
            .actions
            .iter()
            .map(|a| Api {
                name: a.name.clone(),
                description: a.description.clone(),
                input_schema: a.input_schema.clone(),
                output_schema: Some(a.output_schema.clone()).filter(|v| !v.is_null()),
            })
            .collect()
    }
}

/// A function of an addon (an action of its manifest).
#[derive(SimpleObject)]
pub struct Api {
    /// What `executeAddonFunction(function:)` names.
    name: String,
    description: String,
    /// The JSON Schema its `data` is checked against (defaults applied) before the call.
    input_schema: Value,
    /// The declared schema of its answer (null: none).
    output_schema: Option<Value>,
}

/// A widget of an addon instance.
pub struct Widget {
    /// The widget's name in its manifest.
    id: String,
    /// Its display name (`displayName`), else its id.
    name: String,
    /// The addon instance that renders it.
    addon_id: String,
    /// Its dashboard category.
    category: String,
    /// What it shows.
    description: String,
    /// The JSON Schema its render `config` is checked against.
    config_schema: Value,
}

#[Object]
impl Widget {
    /// The widget's name in its manifest (what `/api/widgets/{addon}/{widget}` names).
    async fn id(&self) -> &str {
        &self.id
    }

    /// Its display name (the manifest's `displayName`), else its id.
    async fn name(&self) -> &str {
        &self.name
    }

    /// The addon instance that renders it.
    async fn addon_id(&self) -> &str {
        &self.addon_id
    }

    async fn category(&self) -> &str {
        &self.category
    }

    async fn description(&self) -> &str {
        &self.description
    }

    async fn config_schema(&self) -> &Value {
        &self.config_schema
    }

    /// Renders it with this configuration and context (both default to `{}`), from the
    /// widget cache when the same render is fresh there, as `/api/widgets/{addon}/{widget}`.
    async fn render(&self, ctx: &Context<'_>, config: Option<Value>, context: Option<Value>) -> Result<WidgetOutput> {
        let instance = scope(ctx)?.instance(&self.addon_id, "addonId").map_err(error)?;
        let or_empty = |v: Option<Value>| v.filter(|v| !v.is_null()).unwrap_or_else(|| json!({}));
        let r = addons(ctx)?.render(&instance, &self.id, or_empty(config), or_empty(context)).await.map_err(error)?;
        let text = |k: &str| r.widget.widget.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        Ok(WidgetOutput {
            html: text("html"),
            css: text("css"),
            javascript: text("javascript"),
            etag: r.widget.etag.clone(),
            cached: r.cached,
        })
    }
}

/// A rendered widget.
#[derive(SimpleObject)]
pub struct WidgetOutput {
    html: String,
    css: String,
    javascript: String,
    /// The render's ETag, as the REST route's `ETag` header.
    etag: String,
    /// Whether it came from the widget cache.
    cached: bool,
}

/// An event of the durable log.
#[derive(SimpleObject)]
pub struct Event {
    /// Its place in the log; `events(afterId:)` resumes after it.
    id: i64,
    name: String,
    /// Its payload (null when it has none).
    data: Option<Value>,
    /// Who emitted it (`addon:pay`, `admin:1000`, …).
    source: String,
    /// When it was emitted (RFC 3339, milliseconds).
    timestamp: String,
}

impl From<crate::events::Event> for Event {
    fn from(e: crate::events::Event) -> Self {
        Event {
            id: e.id,
            name: e.name,
            data: Some(e.data).filter(|v| !v.is_null()),
            source: e.source,
            timestamp: crate::time::rfc3339_ms(e.ts),
        }
    }
}

pub struct Query;

#[Object]
impl Query {
    /// An installed addon instance by its name, else a registered addon by its name.
    async fn addon(&self, ctx: &Context<'_>, id: String) -> Result<Addon> {
        let instance = scope(ctx)?.instance(&id, "id").map_err(error)?;
        Addon::load(addons(ctx)?, &instance).await
    }

    /// The widgets of the installed addon instances (on the gateway: of the key's addon),
    /// of one category when given.
    async fn widgets(&self, ctx: &Context<'_>, category: Option<String>) -> Result<Vec<Widget>> {
        if let Some(c) = &category {
            if !WIDGET_CATEGORIES.contains(&c.as_str()) {
                return Err(error(
                    ApiError::new(ErrorCode::ValidationFailed, format!("category `{c}` is not one of {}", WIDGET_CATEGORIES.join(", ")))
                        .field("category"),
                ));
            }
        }
        let scope = scope(ctx)?;
        let list = addons(ctx)?.widgets(category.as_deref()).await.map_err(error)?;
        let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        Ok(list
            .iter()
            .filter(|w| scope.sees(&text(w, "addon")))
            .map(|w| Widget {
                id: text(w, "widget"),
                name: w.get("displayName").and_then(Value::as_str).map_or_else(|| text(w, "widget"), str::to_string),
                addon_id: text(w, "addon"),
                category: text(w, "category"),
                description: text(w, "description"),
                config_schema: w.get("config_schema").cloned().unwrap_or(Value::Null),
            })
            .collect())
    }

    /// Runs one of an installed addon's functions (its actions) with `data` (checked
    /// against the function's input schema) and returns the addon's answer, as
    /// `POST /api/addons/{addonId}/execute` does.
    async fn execute_addon_function(
        &self,
        ctx: &Context<'_>,
        addon_id: String,
        function: String,
        data: Option<Value>,
    ) -> Result<Option<Value>> {
        let instance = scope(ctx)?.instance(&addon_id, "addonId").map_err(error)?;
        let input = ActionInput::Value(data.unwrap_or(Value::Null));
        let out = addons(ctx)?.execute_json(&instance, &function, input).await.map_err(error)?;
        let v: Value = serde_json::from_slice(&out)
            .map_err(|e| error(ApiError::new(ErrorCode::AddonError, format!("addon `{instance}` answered with invalid JSON: {e}"))))?;
        Ok(Some(v).filter(|v| !v.is_null()))
    }
}

/// Who asked, for the deployment records; the root field, for the audit log.
fn record(ctx: &Context<'_>, field: &str) -> String {
    if let Some(m) = ctx.data_opt::<Mutations>() {
        if let Ok(mut v) = m.0.lock() {
            v.push(field.to_string());
        }
    }
    ctx.data_opt::<Actor>().map_or_else(|| "admin".to_string(), |a| a.0.clone())
}

pub struct Mutation;

#[Object]
impl Mutation {
    /// Installs the newest registered version of the addon `id` as the instance `id`, with
    /// this configuration (checked against its schema), as `POST /api/addons/{id}/install`.
    /// Its services start in the background: `phase` says where they are.
    async fn install_addon(&self, ctx: &Context<'_>, id: String, config: Option<Value>) -> Result<Addon> {
        let who = record(ctx, "installAddon");
        let addons = addons(ctx)?;
        let req = InstallRequest { config, ..InstallRequest::default() };
        let v = addons.install(&id, req, who).await.map_err(error)?;
        let instance = v.get("instance").and_then(Value::as_str).unwrap_or(&id).to_string();
        Addon::load(addons, &instance).await
    }

    /// Replaces an installed instance's configuration (checked against its schema) and
    /// pushes it to its running services, as `PUT /api/addons/{id}/config`.
    async fn update_addon_config(&self, ctx: &Context<'_>, id: String, config: Value) -> Result<Addon> {
        let who = record(ctx, "updateAddonConfig");
        let addons = addons(ctx)?;
        addons.set_config(&id, config, who).await.map_err(error)?;
        Addon::load(addons, &id).await
    }
}

pub struct Subscription;

#[async_graphql::Subscription]
impl Subscription {
    /// The events whose names match any of `names` (`payment.completed`, `payment.*`, `*`;
    /// none: all): those of the log after `afterId` first (leave it out to start from now;
    /// `0` replays the whole log kept), then each new one as it is committed, in order,
    /// without gaps or repeats.
    async fn events(
        &self,
        ctx: &Context<'_>,
        names: Option<Vec<String>>,
        after_id: Option<i64>,
    ) -> Result<impl Stream<Item = Event> + use<>> {
        let names = names.unwrap_or_default();
        if let Some((i, bad)) = names.iter().enumerate().find(|(_, n)| !crate::events::valid_pattern(n)) {
            return Err(error(
                ApiError::new(ErrorCode::ValidationFailed, format!("`{bad}` is not an event name, `prefix.*` or `*`"))
                    .field(format!("names[{i}]")),
            ));
        }
        if let Some(a) = after_id.filter(|a| *a < 0) {
            return Err(error(ApiError::new(ErrorCode::ValidationFailed, format!("afterId {a}: an event id, 0 or more")).field("afterId")));
        }
        let events = ctx.data::<Arc<Events>>()?;
        Ok(events.follow(after_id, names).await.map_err(error)?.map(Event::from))
    }
}
