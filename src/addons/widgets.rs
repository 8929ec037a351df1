//! The widget catalogue of the installed addons, and renders: checked against the widget's
//! config schema, served from the cache (keyed by the input as sent, the version and the
//! config generation), or rendered by the addon (its container or its module) and cached.

use super::*;

/// Longest raw query filed as a cache key of its own (a longer one is hashed like a `POST`).
const MAX_QUERY_KEY: usize = 2048;

/// The cache key of a raw query. Its first character (`\u{1}`) cannot start an instance
/// name, so it never meets a key of [`Addons::render`]'s own.
fn query_key(instance: &str, version: &str, generation: u64, widget: &str, query: &str) -> String {
    format!("\u{1}{instance}\u{0}{version}\u{0}{generation}\u{0}{widget}\u{0}{query}")
}

impl Addons {
    /// Widgets of every installed addon instance.
    pub async fn widgets(&self, category: Option<&str>) -> Result<Vec<Value>, AddonError> {
        let mut out = Vec::new();
        for row in self.lifecycle.store().list_installs().await? {
            let Ok(m) = self.manifest(&row.addon, Some(&row.version)).await else { continue };
            for w in m.widgets.iter().filter(|w| category.is_none_or(|c| c == w.category)) {
                let mut v = w.view();
                v["addon"] = json!(row.instance);
                v["addon_name"] = json!(m.name);
                v["addon_display_name"] = json!(row.display_name.as_deref().or(m.display_name.as_deref()).unwrap_or(&row.instance));
                v["version"] = json!(m.version);
                v["widget"] = json!(w.name);
                v["render_url"] = json!(format!("/api/widgets/{}/{}", row.instance, w.name));
                out.push(v);
            }
        }
        Ok(out)
    }

    /// Renders a widget, from the cache when the same addon instance, version, widget,
    /// config and context were rendered within the TTL.
    pub async fn render(&self, instance: &str, widget: &str, config: Value, context: Value) -> Result<Rendered, AddonError> {
        self.render_for_query(instance, widget, config, context, None).await
    }

    /// A render cached under the raw query text of a `GET` (`config=…&context=…` exactly as
    /// sent), looked up before the query is decoded or parsed: a warm widget then costs one
    /// map lookup and no JSON. `None` on a miss (the caller parses the query and calls
    /// [`Addons::render_for_query`], which files the render under the query too).
    pub async fn render_cached_query(&self, instance: &str, widget: &str, query: &str) -> Result<Option<Rendered>, AddonError> {
        if query.len() > MAX_QUERY_KEY {
            return Ok(None);
        }
        let inst = self.installed(instance).await?;
        let key = query_key(instance, &inst.row.version, self.generation(instance), widget, query);
        Ok(self.cache.get(&key).map(|hit| {
            self.metrics.widget_cache_hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Rendered { widget: hit, cached: true }
        }))
    }

    /// [`Addons::render`], also filing the render under `query`, the raw query text it was
    /// parsed from (see [`Addons::render_cached_query`]).
    pub async fn render_for_query(
        &self,
        instance: &str,
        widget: &str,
        config: Value,
        context: Value,
        query: Option<&str>,
    ) -> Result<Rendered, AddonError> {
        let r = self.render_parsed(instance, widget, config, context).await?;
        if let Some(q) = query.filter(|q| q.len() <= MAX_QUERY_KEY) {
            // The version and generation read now: a render that raced an upgrade is filed
            // under the old version's key at worst, which no request after it asks for.
            if let Ok(inst) = self.installed(instance).await {
                self.cache.insert(query_key(instance, &inst.row.version, self.generation(instance), widget, q), r.widget.clone());
            }
        }
        Ok(r)
    }

    async fn render_parsed(&self, instance: &str, widget: &str, config: Value, context: Value) -> Result<Rendered, AddonError> {
        let inst = self.installed(instance).await?;
        let (row, m) = (&inst.row, &inst.manifest);
        let Some(w) = m.widget(widget) else {
            let known: Vec<&str> = m.widgets.iter().map(|w| w.name.as_str()).collect();
            return Err(AddonError::NotFound(format!(
                "addon `{instance}` has no widget `{widget}`; known widgets: {}",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            )));
        };
        // Keyed by the config as the caller sent it: the version (and with it the schema
        // whose defaults and checks apply) and the config generation are in the key, so the
        // same input always normalises the same way, and a hit skips the schema entirely.
        let key = format!(
            "{instance}\u{0}{}\u{0}{}\u{0}{widget}\u{0}{}",
            row.version,
            self.generation(instance),
            canonical_hash(&[&config, &context])
        );
        if let Some(hit) = self.cache.get(&key) {
            self.metrics.widget_cache_hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(Rendered { widget: hit, cached: true });
        }
        let config = schema::normalize(&w.config_schema, config, "config").map_err(|msg| {
            let field = msg.split(':').next().unwrap_or("config").to_string();
            invalid(&field, msg)
        })?;
        self.metrics.widget_cache_misses.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let body = json!({"config": config, "context": context});
        let t0 = Instant::now();
        let timeout = Duration::from_secs_f64(self.cfg.addons.execute_timeout_seconds);
        let (reply_status, reply_body) = if m.is_wasm() {
            let input = body.to_string();
            let out = self.call_wasm(&inst, crate::wasm::Entry::Render { widget, input: input.as_bytes() }, timeout).await?;
            (200, Bytes::from(out))
        } else {
            let svc = inst.entry()?;
            let r = self.dispatcher.post(svc, instance, &w.render_path(), Bytes::from(body.to_string()), timeout).await?;
            (r.status, r.body)
        };
        self.metrics.render(&crate::metrics::addon_key(&row.addon, &row.environment), widget, t0.elapsed().as_secs_f64());
        if !(200..300).contains(&reply_status) {
            return Err(AddonError::Addon {
                status: reply_status,
                message: format!(
                    "addon `{instance}` could not render `{widget}` (HTTP {}): {}",
                    reply_status,
                    String::from_utf8_lossy(&reply_body).chars().take(500).collect::<String>()
                ),
            });
        }
        let v: Value = serde_json::from_slice(&reply_body)
            .map_err(|_| AddonError::Addon { status: 502, message: format!("addon `{instance}` rendered `{widget}` as invalid JSON") })?;
        let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let widget_v = json!({"html": text("html"), "css": text("css"), "javascript": text("javascript")});
        let etag = format!("\"{}\"", &canonical_hash(&[&widget_v])[..32]);
        let envelope = Bytes::from(crate::wire::success_bytes(widget_v.clone(), &format!("widget `{widget}` of {instance} rendered")));
        let rendered = Arc::new(RenderedWidget { widget: widget_v, etag, envelope });
        self.cache.insert(key, rendered.clone());
        Ok(Rendered { widget: rendered, cached: false })
    }
}
