//! The operator's routes: the daemon's `/health` and `/metrics`, the backup archive and
//! the doctor's report. Thin: the work is in `backup`, `metrics` and `doctor`.

use super::*;

#[utoipa::path(get, path = "/health", tags = ["admin", "operations"], responses((status = 200, description = "The daemon's health: Docker, the store, uptime.", body = super::openapi::HealthAnswer)))]
pub(super) async fn daemon_health(State(st): State<AppState>) -> ApiResult {
    let lc = &st.lifecycle;
    // Cheap on purpose (dashboards poll it): one query that proves the database answers.
    // The full integrity check runs at every start, and in `addonctl doctor`.
    let (db, services) = match lc.store().count_services().await {
        Ok(n) => ("ok".to_string(), n),
        Err(e) => (e.to_string(), 0),
    };
    ok(
        StatusCode::OK,
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": st.started.elapsed().as_secs(),
            "database": db,
            "docker": lc.runtime().state().as_str(),
            "services": services,
            "pid": std::process::id(),
            "gateway": st.gateway_addr.map(|a| a.to_string()),
            "ports": {"range_start": lc.port_range().0, "range_end": lc.port_range().1},
        }),
        "addond is running",
    )
}

#[utoipa::path(get, path = "/metrics", tags = ["admin", "operations"], responses((status = 200, description = "The Prometheus text exposition.", content_type = "text/plain", body = String)))]
pub(super) async fn metrics(State(st): State<AppState>) -> Result<Response, ApiError> {
    let sources = crate::scrape::Sources {
        lifecycle: st.lifecycle.clone(),
        addons: st.addons.clone(),
        gateway: st.gateway.clone(),
        events: st.events.clone(),
        started: st.started,
    };
    let out = crate::scrape::render(&sources).await?;
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static(crate::scrape::CONTENT_TYPE))], out).into_response())
}

/// `POST /api/backup`: a tar stream (see [`crate::backup`]) of a consistent database copy
/// taken now with `VACUUM INTO`, plus every directory volume. The database copy is made
/// before the first byte is sent, so a failure there is a proper error envelope; a failure
/// while streaming volumes ends the body abnormally and the client discards the file.
#[utoipa::path(post, path = "/api/backup", tags = ["admin", "operations"], responses((status = 200, description = "A tar archive of the data directory.", content_type = "application/x-tar", body = Vec<u8>)))]
pub(super) async fn backup_archive(State(st): State<AppState>) -> ApiResult {
    use crate::backup;
    let lc = st.lifecycle.clone();
    let data_dir = lc.config().daemon.data_dir.clone();
    let snapshot = data_dir.join(format!(".backup-{}.db", uuid::Uuid::new_v4().simple()));
    let internal = |what: &str, e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "backup: {what}");
        ApiError::new(ErrorCode::BackupFailed, format!("{what}: {e}"))
    };
    let schema = match lc.store().snapshot_to(&snapshot).await {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&snapshot);
            return Err(internal("cannot copy the database (is the disk full?)", &e));
        }
    };
    let services = lc.store().list_services().await.map(|s| s.len()).unwrap_or(0);
    let daemon_id = lc.store().daemon_id().await?;
    let snap = snapshot.clone();
    let sum = tokio::task::spawn_blocking(move || backup::sha256_file(&snap)).await.map_err(|e| internal("checksum task failed", &e))?;
    let (sha, bytes) = match sum {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&snapshot);
            return Err(internal("cannot read the database copy", &e));
        }
    };
    let (uid, gid) = backup::owner_of(&data_dir);
    let created_at = now_ms();
    let manifest = backup::BackupManifest {
        format: backup::FORMAT,
        addond_version: env!("CARGO_PKG_VERSION").to_string(),
        schema_version: schema,
        created_at,
        daemon_id,
        data_dir_uid: uid,
        data_dir_gid: gid,
        database_bytes: bytes,
        database_sha256: sha,
        services,
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(8);
    tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut w = backup::ChannelWriter::new(tx);
        let res = backup::write_archive(&mut w, &manifest, &snapshot, &data_dir).and_then(|w| w.flush());
        let _ = std::fs::remove_file(&snapshot);
        match res {
            Ok(()) => tracing::info!(services = manifest.services, schema = manifest.schema_version, "backup streamed"),
            Err(e) => {
                tracing::error!(error = %e, "backup failed while streaming");
                w.fail(e);
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let name = format!("attachment; filename=\"addond-backup-{}.tar\"", crate::backup::timestamp_for_path(created_at));
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/x-tar")),
            (header::CONTENT_DISPOSITION, HeaderValue::from_str(&name).unwrap_or_else(|_| HeaderValue::from_static("attachment"))),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// `GET /api/doctor`: the daemon's own view for `addonctl doctor`: the database's full
/// integrity check, Docker as reached by the daemon's user, the booked ports and the
/// config values the host checks need.
#[utoipa::path(get, path = "/api/doctor", tags = ["admin", "operations"], responses((status = 200, description = "The checks `addond doctor` runs, with their verdicts.", body = Success)))]
pub(super) async fn doctor_report(State(st): State<AppState>) -> ApiResult {
    let lc = &st.lifecycle;
    let cfg = lc.config();
    let store = lc.store();
    let integrity = store.integrity_report().await.unwrap_or_else(|e| vec![e.to_string()]);
    let schema = store.schema_version().await.unwrap_or(-1);
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let booked: Vec<u16> = {
        let mut v: Vec<u16> = store.booked_ports().await?.into_iter().collect();
        v.sort_unstable();
        v
    };
    let docker_state = lc.runtime().probe().await;
    let reachable = docker_state == crate::runtime::DockerState::Reachable;
    let docker_error = match docker_state {
        crate::runtime::DockerState::Reachable => Value::Null,
        crate::runtime::DockerState::Unresponsive => {
            json!(format!("connected, but no answer to ping within {}s", cfg.docker.ping_timeout_seconds))
        }
        crate::runtime::DockerState::Unreachable => json!("no answer to ping"),
    };
    let firewall = firewall_report(&cfg.docker.subnet_pool, &cfg.daemon.data_dir).await;
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = (nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw());
    ok(
        StatusCode::OK,
        json!({
            "daemon": {"version": env!("CARGO_PKG_VERSION"), "pid": std::process::id(), "uid": uid, "gid": gid, "uptime_seconds": st.started.elapsed().as_secs()},
            "config": {
                "data_dir": cfg.daemon.data_dir,
                "socket_path": cfg.daemon.socket_path,
                "socket_group": cfg.daemon.socket_group,
                "port_range": [cfg.ports.range_start, cfg.ports.range_end],
                "publish_address": cfg.ports.publish_address.to_string(),
            },
            "docker": {"host": cfg.docker.host, "reachable": reachable, "state": docker_state.as_str(), "error": docker_error},
            "database": {
                "path": store.path,
                "integrity": integrity,
                "schema_version": schema,
                "known_schema_version": crate::store::Store::known_schema_version(),
                "size_bytes": size(&store.path),
                "wal_bytes": size(&store.path.with_extension("db-wal")),
            },
            "booked_ports": booked,
            "firewall": firewall,
        }),
        "the daemon's view of itself: Docker, the database, booked ports and the firewall",
    )
}

/// The firewall table as the daemon's user sees it (`firewall::status`, run off the async
/// threads: it runs `nft`).
async fn firewall_report(pool: &str, data_dir: &std::path::Path) -> Value {
    let Ok(table) = crate::firewall::Table::for_pool(pool) else {
        return json!({"state": "unknown", "message": format!("docker.subnet_pool `{pool}` is not an IPv4 range")});
    };
    let (t, dir) = (table.clone(), data_dir.to_path_buf());
    let status = tokio::task::spawn_blocking(move || crate::firewall::status(&t, &dir))
        .await
        .unwrap_or_else(|e| crate::firewall::Status::Unknown { reason: e.to_string() });
    let error = match &status {
        crate::firewall::Status::Unknown { reason } => json!(reason),
        _ => Value::Null,
    };
    json!({
        "table": table.name,
        "pool": table.pool.to_string(),
        "state": status.as_str(),
        "holds": status.holds(),
        "message": status.describe(&table),
        "error": error,
    })
}
