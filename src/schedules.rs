//! Schedules from addon manifests (`schedules = [{cron = "*/5 * * * *", action = "sync"}]`,
//! five fields, or six with seconds first). Each occurrence runs the action once; a run
//! missed while the daemon was down (or several) runs once at start. Every run is
//! recorded with its outcome. Times are UTC.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::addons::cron::{due, parse};
use crate::addons::Addons;
use crate::lifecycle::Lifecycle;
use crate::time::{now_ms, rfc3339_ms};

pub struct Scheduler {
    /// Its store records runs and knows the installs.
    lifecycle: Arc<Lifecycle>,
    /// Runs the scheduled actions.
    addons: Arc<Addons>,
    /// Runs under way, so a slow action is not started twice for one occurrence.
    running: Mutex<HashSet<(String, String, String)>>,
}

impl Scheduler {
    pub fn new(lifecycle: Arc<Lifecycle>, addons: Arc<Addons>) -> Arc<Self> {
        Arc::new(Scheduler { lifecycle, addons, running: Mutex::new(HashSet::new()) })
    }

    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.pass().await {
                tracing::warn!(error = %e, "schedule pass failed");
            }
        }
    }

    async fn pass(self: &Arc<Self>) -> Result<(), crate::store::StoreError> {
        let store = self.lifecycle.store();
        for install in store.list_installs().await? {
            let Ok(m) = self.addons.installed_manifest(&install.instance).await else { continue };
            for s in &m.schedules {
                let key = (install.instance.clone(), s.action.clone(), s.cron.clone());
                if self.running.lock().unwrap_or_else(|e| e.into_inner()).contains(&key) {
                    continue;
                }
                let Ok(cron) = parse(&s.cron) else { continue };
                let last = store.last_schedule_run(&install.instance, &s.action, &s.cron).await?.unwrap_or(install.created_at);
                let Some(when) = due(&cron, last, now_ms()) else { continue };
                // While the addon is not up (installing, restarting, stopped), the run waits:
                // the occurrence stays due and runs once the addon is Started.
                if !self.addons.is_started(&install.instance).await {
                    continue;
                }
                self.running.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone());
                let me = self.clone();
                tokio::spawn(async move {
                    let (instance, action, cron) = &key;
                    let data = json!({"schedule": cron, "scheduled_for": rfc3339_ms(when)});
                    let (status, detail) = match me.addons.execute(instance, action, data).await {
                        Ok(_) => ("ok", None),
                        Err(e) => ("error", Some(e.to_string())),
                    };
                    tracing::info!(%instance, %action, status, "scheduled run");
                    if let Err(e) = me.lifecycle.store().record_schedule_run(instance, action, cron, when, status, detail).await {
                        tracing::warn!(error = %e, "cannot record a scheduled run");
                    }
                    me.running.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
                });
            }
        }
        Ok(())
    }
}
