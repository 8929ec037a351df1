//! Image builds: one row per build, from `building` to `succeeded` or `failed`. A build's
//! success and the registration of its manifest are one transaction, so the catalogue
//! never names an image whose build is not recorded, and a build killed half-way leaves
//! a `building` row that the next start marks failed.

use rusqlite::{OptionalExtension, Row};

use super::{is_unique_violation, now_ms, Store, StoreError};

/// A build as stored.
#[derive(Debug, Clone)]
pub struct BuildRow {
    /// Its number, in the order builds started.
    pub id: i64,
    /// `addon` (an addon's code, registered in the catalogue) or `plugin` (a plugin
    /// directory under the data dir, for plain services).
    pub kind: String,
    /// The addon's name or the plugin id.
    pub target: String,
    /// The version built (`latest` for plugins).
    pub version: String,
    /// The tag the image gets: `addond/<addon>:<version>` or `addond/plugin-<id>:latest`.
    pub image: String,
    /// `building`, `succeeded` or `failed`.
    pub status: String,
    /// The built image's id (`sha256:…`), once it succeeded.
    pub image_id: Option<String>,
    /// Whether `image` was put on `image_id` after the success was recorded.
    pub tagged: bool,
    /// The step reached (1-based; 0 before the first) and how many the Dockerfile has.
    pub step: i64,
    pub steps: i64,
    /// Why it failed.
    pub error: Option<String>,
    /// The failing step's last output lines, as a JSON array of strings.
    pub log: Option<String>,
    /// Who asked (the admin socket peer's uid; `None` for the daemon itself).
    pub uid: Option<u32>,
    /// When it started and ended (ms since the epoch).
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

/// A manifest a successful build registers in the catalogue.
pub struct BuiltManifest {
    /// The addon and version (the catalogue's key).
    pub name: String,
    pub version: String,
    /// The validated manifest as JSON text, `image` naming the built tag.
    pub text: String,
    /// Replace a registered version whose manifest differs, instead of refusing.
    pub replace: bool,
}

/// How recording a success went.
#[derive(Debug, PartialEq, Eq)]
pub enum Recorded {
    /// The build is `succeeded` and its manifest (if any) is in the catalogue.
    Done,
    /// The version is registered with a different manifest and replacing was not asked:
    /// nothing was written.
    VersionTaken,
}

const COLUMNS: &str = "id, kind, target, version, image, status, image_id, tagged, step, steps, error, log, uid, started_at, finished_at";

fn build_from_row(r: &Row<'_>) -> rusqlite::Result<BuildRow> {
    Ok(BuildRow {
        id: r.get(0)?,
        kind: r.get(1)?,
        target: r.get(2)?,
        version: r.get(3)?,
        image: r.get(4)?,
        status: r.get(5)?,
        image_id: r.get(6)?,
        tagged: r.get::<_, i64>(7)? != 0,
        step: r.get(8)?,
        steps: r.get(9)?,
        error: r.get(10)?,
        log: r.get(11)?,
        uid: r.get(12)?,
        started_at: r.get(13)?,
        finished_at: r.get(14)?,
    })
}

impl Store {
    /// Records a build as started; `None` when that target already has one running.
    pub async fn start_build(
        &self,
        kind: &str,
        target: &str,
        version: &str,
        image: &str,
        replace: bool,
        uid: Option<u32>,
    ) -> Result<Option<i64>, StoreError> {
        let (kind, target, version, image) = (kind.to_string(), target.to_string(), version.to_string(), image.to_string());
        self.call(move |c| {
            let r = c.execute(
                "INSERT INTO builds (kind, target, version, image, status, replace, uid, started_at) VALUES (?1, ?2, ?3, ?4, 'building', ?5, ?6, ?7)",
                rusqlite::params![kind, target, version, image, replace as i64, uid, now_ms()],
            );
            match r {
                Ok(_) => Ok(Some(c.last_insert_rowid())),
                Err(e) if is_unique_violation(&e) => Ok(None),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    /// Marks a running build failed, with the step it reached and that step's last lines.
    pub async fn fail_build(&self, id: i64, step: i64, steps: i64, error: String, log: String) -> Result<(), StoreError> {
        self.exec(
            "UPDATE builds SET status = 'failed', step = ?2, steps = ?3, error = ?4, log = ?5, finished_at = ?6 WHERE id = ?1 AND status = 'building'",
            (id, step, steps, error, log, now_ms()),
        )
        .await?;
        Ok(())
    }

    /// Marks a build succeeded with its image id and, in the same transaction, registers
    /// its manifest: the catalogue names the image exactly when the build is recorded.
    pub async fn succeed_build(
        &self,
        id: i64,
        steps: i64,
        image_id: &str,
        manifest: Option<BuiltManifest>,
    ) -> Result<Recorded, StoreError> {
        let image_id = image_id.to_string();
        self.call(move |c| {
            let tx = c.transaction()?;
            if let Some(m) = &manifest {
                let existing: Option<String> = tx
                    .query_row("SELECT manifest FROM addon_manifests WHERE name = ?1 AND version = ?2", [&m.name, &m.version], |r| r.get(0))
                    .optional()?;
                match existing {
                    None => {
                        tx.execute(
                            "INSERT INTO addon_manifests (name, version, manifest, registered_at) VALUES (?1, ?2, ?3, ?4)",
                            rusqlite::params![m.name, m.version, m.text, now_ms()],
                        )?;
                    }
                    Some(text) if text == m.text => {}
                    Some(_) if m.replace => {
                        tx.execute(
                            "UPDATE addon_manifests SET manifest = ?3 WHERE name = ?1 AND version = ?2",
                            rusqlite::params![m.name, m.version, m.text],
                        )?;
                    }
                    Some(_) => return Ok(Recorded::VersionTaken),
                }
            }
            tx.execute(
                "UPDATE builds SET status = 'succeeded', image_id = ?2, step = ?3, steps = ?3, finished_at = ?4 WHERE id = ?1",
                rusqlite::params![id, image_id, steps, now_ms()],
            )?;
            tx.commit()?;
            Ok(Recorded::Done)
        })
        .await
    }

    /// Notes that a succeeded build's tag was put on its image.
    pub async fn mark_build_tagged(&self, id: i64) -> Result<(), StoreError> {
        self.exec("UPDATE builds SET tagged = 1 WHERE id = ?1", [id]).await?;
        Ok(())
    }

    /// At start: every build still `building` was cut short by the daemon stopping. They
    /// are marked failed (so they block no new build) and returned, so their leftovers in
    /// Docker can be removed.
    pub async fn fail_interrupted_builds(&self) -> Result<Vec<BuildRow>, StoreError> {
        self.call(|c| {
            let tx = c.transaction()?;
            let rows: Vec<BuildRow> = {
                let mut st = tx.prepare(&format!("SELECT {COLUMNS} FROM builds WHERE status = 'building'"))?;
                let rows = st.query_map([], build_from_row)?;
                rows.collect::<Result<_, _>>()?
            };
            tx.execute(
                "UPDATE builds SET status = 'failed', error = 'interrupted: the daemon stopped during the build', finished_at = ?1 WHERE status = 'building'",
                [now_ms()],
            )?;
            tx.commit()?;
            Ok(rows)
        })
        .await
    }

    /// Succeeded builds whose tag was not yet put on their image (the daemon stopped in
    /// between): the next start tags them.
    pub async fn untagged_builds(&self) -> Result<Vec<BuildRow>, StoreError> {
        self.query(
            "SELECT id, kind, target, version, image, status, image_id, tagged, step, steps, error, log, uid, started_at, finished_at FROM builds WHERE status = 'succeeded' AND tagged = 0 ORDER BY id",
            [],
            build_from_row,
        )
        .await
    }

    /// The newest builds of one target, newest first.
    pub async fn list_builds(&self, kind: &str, target: &str, limit: u32) -> Result<Vec<BuildRow>, StoreError> {
        self.query(
            "SELECT id, kind, target, version, image, status, image_id, tagged, step, steps, error, log, uid, started_at, finished_at FROM builds WHERE kind = ?1 AND target = ?2 ORDER BY id DESC LIMIT ?3",
            (kind.to_string(), target.to_string(), limit),
            build_from_row,
        )
        .await
    }

    /// One build by its number.
    pub async fn get_build(&self, id: i64) -> Result<Option<BuildRow>, StoreError> {
        self.call(move |c| {
            Ok(c.prepare_cached(&format!("SELECT {COLUMNS} FROM builds WHERE id = ?1"))?.query_row([id], build_from_row).optional()?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_running_build_per_target_and_interrupted_ones_fail() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.db")).await.unwrap();
        let a = store.start_build("addon", "shop", "1.0.0", "addond/shop:1.0.0", false, Some(1000)).await.unwrap().unwrap();
        assert_eq!(store.start_build("addon", "shop", "1.0.1", "addond/shop:1.0.1", false, None).await.unwrap(), None);
        // Another target, or the same name as a plugin, is independent.
        let p = store.start_build("plugin", "shop", "latest", "addond/plugin-shop:latest", false, None).await.unwrap().unwrap();
        store.fail_build(p, 1, 2, "COPY failed".into(), "[]".into()).await.unwrap();
        let gone = store.fail_interrupted_builds().await.unwrap();
        assert_eq!(gone.iter().map(|b| b.id).collect::<Vec<_>>(), vec![a]);
        let row = store.get_build(a).await.unwrap().unwrap();
        assert_eq!(row.status, "failed");
        assert!(row.error.unwrap().contains("interrupted"));
        // The failed row no longer blocks.
        assert!(store.start_build("addon", "shop", "1.0.1", "addond/shop:1.0.1", false, None).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn success_registers_the_manifest_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.db")).await.unwrap();
        let m = |text: &str, replace| BuiltManifest { name: "shop".into(), version: "1.0.0".into(), text: text.into(), replace };
        let a = store.start_build("addon", "shop", "1.0.0", "addond/shop:1.0.0", false, None).await.unwrap().unwrap();
        assert_eq!(store.succeed_build(a, 3, "sha256:a", Some(m("{\"a\":1}", false))).await.unwrap(), Recorded::Done);
        assert_eq!(store.untagged_builds().await.unwrap().len(), 1);
        store.mark_build_tagged(a).await.unwrap();
        assert!(store.untagged_builds().await.unwrap().is_empty());
        // A different manifest for the same version: refused, nothing written.
        let b = store.start_build("addon", "shop", "1.0.0", "addond/shop:1.0.0", false, None).await.unwrap().unwrap();
        assert_eq!(store.succeed_build(b, 3, "sha256:b", Some(m("{\"a\":2}", false))).await.unwrap(), Recorded::VersionTaken);
        assert_eq!(store.get_build(b).await.unwrap().unwrap().status, "building");
        assert_eq!(store.list_manifests(Some("shop")).await.unwrap()[0].manifest, "{\"a\":1}");
        // Unless replacing was asked.
        assert_eq!(store.succeed_build(b, 3, "sha256:b", Some(m("{\"a\":2}", true))).await.unwrap(), Recorded::Done);
        assert_eq!(store.list_manifests(Some("shop")).await.unwrap()[0].manifest, "{\"a\":2}");
        let list = store.list_builds("addon", "shop", 10).await.unwrap();
        assert_eq!(list.iter().map(|b| (b.id, b.status.as_str())).collect::<Vec<_>>(), vec![(b, "succeeded"), (a, "succeeded")]);
    }
}
