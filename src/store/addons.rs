//! The addon catalogue (registered manifest versions) and installed addon instances.

use rusqlite::{OptionalExtension, Row};

use super::{now_ms, Store, StoreError};

/// A registered manifest version, as stored.
#[derive(Debug, Clone)]
pub struct ManifestRow {
    /// The addon it describes.
    pub name: String,
    /// Its semver version; one row per version, so upgrades and rollbacks can pick one.
    pub version: String,
    /// The parsed manifest, stored as JSON text.
    pub manifest: String,
    /// When it was registered (ms since the epoch): the catalogue lists in that order.
    pub registered_at: i64,
}

/// An installed addon instance.
#[derive(Debug, Clone)]
pub struct InstallRow {
    /// The instance name (unique): an addon can be installed more than once.
    pub instance: String,
    /// Which addon of the catalogue it is.
    pub addon: String,
    /// Which registered version is installed.
    pub version: String,
    /// Its configuration as JSON text, handed to its containers.
    pub config: String,
    /// When it was installed (ms since the epoch): schedules count from it.
    pub created_at: i64,
    /// When its config or version last changed.
    pub updated_at: i64,
    /// The addon installation it is an environment of (the instance name of its `prod`).
    pub base: String,
    /// Its environment (`prod` unless installed into another).
    pub environment: String,
    /// Human text the installer gave it (`"모바일 앱"`), if any; lookups accept it too.
    pub display_name: Option<String>,
}

impl Store {
    /// Adds a manifest version to the catalogue; `false` if that exact version exists.
    pub async fn insert_manifest(&self, name: &str, version: &str, manifest: String) -> Result<bool, StoreError> {
        let n = self
            .exec(
                "INSERT OR IGNORE INTO addon_manifests (name, version, manifest, registered_at) VALUES (?1, ?2, ?3, ?4)",
                (name.to_string(), version.to_string(), manifest, now_ms()),
            )
            .await?;
        Ok(n == 1)
    }

    /// Every registered manifest version (all addons, or one addon's).
    pub async fn list_manifests(&self, name: Option<&str>) -> Result<Vec<ManifestRow>, StoreError> {
        let name = name.map(str::to_string);
        self.call(move |c| {
            let mut st = c.prepare_cached(
                "SELECT name, version, manifest, registered_at FROM addon_manifests WHERE ?1 IS NULL OR name = ?1 ORDER BY name, registered_at",
            )?;
            let rows = st.query_map([name], |r| Ok(ManifestRow { name: r.get(0)?, version: r.get(1)?, manifest: r.get(2)?, registered_at: r.get(3)? }))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    /// Removes every registered version of an addon (none may be installed).
    pub async fn delete_manifests(&self, name: &str) -> Result<usize, StoreError> {
        self.exec("DELETE FROM addon_manifests WHERE name = ?1", [name.to_string()]).await
    }

    pub async fn list_installs(&self) -> Result<Vec<InstallRow>, StoreError> {
        self.query(
            "SELECT instance, addon, version, config, created_at, updated_at, base, environment, display_name FROM addon_installs ORDER BY instance",
            [],
            install_from_row,
        )
        .await
    }

    pub async fn get_install(&self, instance: &str) -> Result<Option<InstallRow>, StoreError> {
        let instance = instance.to_string();
        self.call(move |c| {
            Ok(c.prepare_cached("SELECT instance, addon, version, config, created_at, updated_at, base, environment, display_name FROM addon_installs WHERE instance = ?1")?
                .query_row([instance], install_from_row)
                .optional()?)
        })
        .await
    }

    /// Stores a new config and records its deployment in the same commit.
    pub async fn set_install_config(&self, instance: &str, config: String, deployment: super::NewDeployment) -> Result<(), StoreError> {
        let instance = instance.to_string();
        self.call(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute("UPDATE addon_installs SET config = ?2, updated_at = ?3 WHERE instance = ?1", (&instance, &config, now_ms()))?;
            super::deployments::insert(&tx, &deployment)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }
}

fn install_from_row(r: &Row<'_>) -> rusqlite::Result<InstallRow> {
    Ok(InstallRow {
        instance: r.get(0)?,
        addon: r.get(1)?,
        version: r.get(2)?,
        config: r.get(3)?,
        created_at: r.get(4)?,
        updated_at: r.get(5)?,
        base: r.get(6)?,
        environment: r.get(7)?,
        display_name: r.get(8)?,
    })
}
