//! The record of schedule runs: when each schedule last ran and how its runs ended.

use super::{now_ms, Store, StoreError};

/// One run of a schedule, as recorded.
#[derive(Debug, Clone)]
pub struct ScheduleRun {
    /// The action the schedule calls, so runs of two schedules of one addon are told apart.
    pub action: String,
    /// The cron expression that fired, since one action may have several schedules.
    pub cron: String,
    /// The occurrence this run was for (ms since the epoch): a late run says which it made up.
    pub scheduled_for: i64,
    /// When it actually ran (ms since the epoch).
    pub ran_at: i64,
    /// How it ended (`ok`, `failed`, ...), as the scheduler wrote it.
    pub status: String,
    /// The error or result note, when there is one.
    pub detail: Option<String>,
}

impl Store {
    /// When a schedule last ran (its scheduled time), if ever.
    pub async fn last_schedule_run(&self, addon: &str, action: &str, cron: &str) -> Result<Option<i64>, StoreError> {
        let (a, ac, cr) = (addon.to_string(), action.to_string(), cron.to_string());
        self.call(move |c| {
            Ok(c.query_row(
                "SELECT MAX(scheduled_for) FROM schedule_runs WHERE addon_instance = ?1 AND action = ?2 AND cron = ?3",
                [a, ac, cr],
                |r| r.get(0),
            )?)
        })
        .await
    }

    pub async fn record_schedule_run(
        &self,
        addon: &str,
        action: &str,
        cron: &str,
        scheduled_for: i64,
        status: &str,
        detail: Option<String>,
    ) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO schedule_runs (addon_instance, action, cron, scheduled_for, ran_at, status, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            (addon.to_string(), action.to_string(), cron.to_string(), scheduled_for, now_ms(), status.to_string(), detail),
        )
        .await?;
        Ok(())
    }

    /// The newest `limit` runs of an addon's schedules, newest first.
    pub async fn schedule_runs(&self, addon: &str, limit: u32) -> Result<Vec<ScheduleRun>, StoreError> {
        self.query(
            "SELECT action, cron, scheduled_for, ran_at, status, detail FROM schedule_runs WHERE addon_instance = ?1 ORDER BY id DESC LIMIT ?2",
            (addon.to_string(), limit),
            |r| Ok(ScheduleRun { action: r.get(0)?, cron: r.get(1)?, scheduled_for: r.get(2)?, ran_at: r.get(3)?, status: r.get(4)?, detail: r.get(5)? }),
        )
        .await
    }
}
