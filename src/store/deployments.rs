//! Deployments: one row per install, upgrade, config change and rollback of an addon
//! instance, written when it starts (`running`) and finished in the same commit as what it
//! changed, so the history never claims an outcome the services do not show.

use rusqlite::{params, OptionalExtension, Row};

use super::{now_ms, Store, StoreError};

/// A deployment as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentRow {
    /// Increasing: the history is listed in this order and `--to` names one.
    pub id: i64,
    /// The addon instance deployed.
    pub instance: String,
    /// Which addon of the catalogue.
    pub addon: String,
    /// `install`, `upgrade`, `config`, `rollback` or `promotion`.
    pub kind: String,
    /// The version before (none for an install).
    pub from_version: Option<String>,
    /// The version deployed.
    pub to_version: String,
    /// JSON: `[{"service", "image", "image_id"}]`, what each service ran; a rollback to this
    /// deployment runs exactly these images again, and image clean-up keeps them.
    pub images: String,
    /// The config deployed (JSON text).
    pub config: String,
    /// SHA-256 of `config`, to compare deployments at a glance.
    pub config_hash: String,
    /// Who asked: `uid:<n>` of the admin-socket peer, or `admin`/`daemon`.
    pub who: String,
    /// When it started (ms since the epoch).
    pub started_at: i64,
    /// When it finished; `None` while running.
    pub finished_at: Option<i64>,
    /// `running`, `succeeded`, `rolled_back` or `failed`.
    pub outcome: String,
    /// Why it was rolled back or failed.
    pub reason: Option<String>,
    /// The deployment a rollback redeployed (or a promotion came from).
    pub source: Option<i64>,
    /// JSON: what the restart's recovery needs to undo it if the daemon dies meanwhile.
    pub plan: Option<String>,
}

/// A deployment to record (see [`Store::insert_deployment`]).
#[derive(Debug, Clone)]
pub struct NewDeployment {
    pub instance: String,
    pub addon: String,
    pub kind: &'static str,
    pub from_version: Option<String>,
    pub to_version: String,
    pub images: String,
    pub config: String,
    pub config_hash: String,
    pub who: String,
    /// `running` for a rollout, `succeeded` for an install recorded with its commit.
    pub outcome: &'static str,
    pub source: Option<i64>,
    pub plan: Option<String>,
}

const COLUMNS: &str = "id, instance, addon, kind, from_version, to_version, images, config, config_hash, who, started_at, finished_at, outcome, reason, source, plan";

fn row(r: &Row<'_>) -> rusqlite::Result<DeploymentRow> {
    Ok(DeploymentRow {
        id: r.get(0)?,
        instance: r.get(1)?,
        addon: r.get(2)?,
        kind: r.get(3)?,
        from_version: r.get(4)?,
        to_version: r.get(5)?,
        images: r.get(6)?,
        config: r.get(7)?,
        config_hash: r.get(8)?,
        who: r.get(9)?,
        started_at: r.get(10)?,
        finished_at: r.get(11)?,
        outcome: r.get(12)?,
        reason: r.get(13)?,
        source: r.get(14)?,
        plan: r.get(15)?,
    })
}

pub(super) fn insert(c: &rusqlite::Connection, d: &NewDeployment) -> Result<i64, StoreError> {
    let now = now_ms();
    let finished = (d.outcome != "running").then_some(now);
    c.execute(
        "INSERT INTO deployments (instance, addon, kind, from_version, to_version, images, config, config_hash, who,
                                  started_at, finished_at, outcome, source, plan)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        params![
            d.instance,
            d.addon,
            d.kind,
            d.from_version,
            d.to_version,
            d.images,
            d.config,
            d.config_hash,
            d.who,
            now,
            finished,
            d.outcome,
            d.source,
            d.plan
        ],
    )?;
    Ok(c.last_insert_rowid())
}

impl Store {
    /// Records a deployment; its id.
    pub async fn insert_deployment(&self, d: NewDeployment) -> Result<i64, StoreError> {
        self.call(move |c| insert(c, &d)).await
    }

    /// Finishes a deployment that is still running with `outcome` (a no-op otherwise).
    pub async fn finish_deployment(&self, id: i64, outcome: &'static str, reason: Option<String>) -> Result<(), StoreError> {
        self.exec(
            "UPDATE deployments SET outcome = ?2, reason = ?3, finished_at = ?4 WHERE id = ?1 AND outcome = 'running'",
            (id, outcome, reason, now_ms()),
        )
        .await?;
        Ok(())
    }

    /// The history of an addon instance, oldest first.
    pub async fn deployments_of(&self, instance: &str) -> Result<Vec<DeploymentRow>, StoreError> {
        let instance = instance.to_string();
        self.call(move |c| {
            let mut st = c.prepare_cached(&format!("SELECT {COLUMNS} FROM deployments WHERE instance = ?1 ORDER BY id"))?;
            let rows = st.query_map([instance], row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    pub async fn get_deployment(&self, id: i64) -> Result<Option<DeploymentRow>, StoreError> {
        self.call(move |c| Ok(c.query_row(&format!("SELECT {COLUMNS} FROM deployments WHERE id = ?1"), [id], row).optional()?)).await
    }

    /// Deployments still marked running: after a crash, the ones the recovery undoes.
    pub async fn running_deployments(&self) -> Result<Vec<DeploymentRow>, StoreError> {
        self.call(|c| {
            let mut st = c.prepare_cached(&format!("SELECT {COLUMNS} FROM deployments WHERE outcome = 'running' ORDER BY id"))?;
            let rows = st.query_map([], row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    /// Every deployment's images (JSON text), newest first, for the image clean-up.
    pub async fn deployment_images(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        self.query("SELECT instance, outcome, images FROM deployments ORDER BY id DESC", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .await
    }
}
