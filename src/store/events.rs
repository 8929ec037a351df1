//! The event log, each subscriber's delivery cursor and the dead letters it gave up on.

use rusqlite::{params, OptionalExtension};

use super::{now_ms, Store, StoreError};

/// A stored event.
#[derive(Debug, Clone)]
pub struct EventRow {
    /// Its place in the log: cursors and `after=` count in ids.
    pub id: i64,
    /// The dotted name subscriptions match against.
    pub name: String,
    /// The payload as JSON text, stored as the emitter sent it.
    pub data: String,
    /// Who emitted it (an addon instance or the daemon), for subscribers to tell apart.
    pub source: String,
    /// When it was emitted (ms since the epoch); old events are pruned by it.
    pub ts: i64,
}

/// A subscriber's delivery progress.
#[derive(Debug, Clone, Default)]
pub struct Cursor {
    /// The last event id this subscriber has been handed (or given up on).
    pub delivered_up_to: i64,
    /// Failed attempts at the next event, for the backoff and the dead-letter limit.
    pub attempts: u32,
    /// When to try the next event again (ms since the epoch), while backing off.
    pub next_attempt_at: Option<i64>,
    /// Why the last attempt failed, for the operator.
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetter {
    /// The row id, to delete it once redriven.
    pub id: i64,
    /// The subscribing addon instance that could not take it.
    pub subscriber: String,
    /// The event it gave up on (still in the log until pruned).
    pub event_id: i64,
    /// How many attempts were made before giving up.
    pub attempts: u32,
    /// Why the last one failed.
    pub last_error: Option<String>,
    /// When it was given up on (ms since the epoch).
    pub at: i64,
    /// Set by an operator: the deliverer sends it again.
    pub redrive: bool,
}

/// `name = ?`, `name LIKE 'x.%'` or everything, for subscription patterns.
fn pattern_sql(patterns: &[String], params: &mut Vec<String>) -> String {
    if patterns.iter().any(|p| p == "*") {
        return "1".to_string();
    }
    let mut parts = Vec::new();
    for p in patterns {
        match p.strip_suffix(".*") {
            Some(prefix) => {
                params.push(format!("{}.%", prefix.replace('\\', "\\\\").replace('_', "\\_").replace('%', "\\%")));
                parts.push(format!("name LIKE ?{} ESCAPE '\\'", params.len()));
            }
            None => {
                params.push(p.clone());
                parts.push(format!("name = ?{}", params.len()));
            }
        }
    }
    if parts.is_empty() {
        "0".to_string()
    } else {
        format!("({})", parts.join(" OR "))
    }
}

/// An event to append: what the log stores of it before it has an id.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The event's name (`payment.completed`).
    pub name: String,
    /// Its data, JSON text as the emitter sent it.
    pub data: String,
    /// Who emitted it (an addon instance, `admin`, `addond`).
    pub source: String,
    /// When it was emitted (ms since the epoch).
    pub ts: i64,
}

impl Store {
    /// Appends events in one transaction (group commit); returns their ids in order.
    pub async fn insert_events(&self, events: Vec<NewEvent>) -> Result<Vec<i64>, StoreError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            let mut ids = Vec::with_capacity(events.len());
            {
                let mut st = tx.prepare_cached("INSERT INTO events (name, data, source, ts) VALUES (?1, ?2, ?3, ?4)")?;
                for e in events {
                    st.execute(params![e.name, e.data, e.source, e.ts])?;
                    ids.push(tx.last_insert_rowid());
                }
            }
            tx.commit()?;
            Ok(ids)
        })
        .await
    }

    /// Events after `after` whose names match `patterns` (all names when `None`).
    pub async fn events_after(&self, after: i64, patterns: Option<Vec<String>>, limit: u32) -> Result<Vec<EventRow>, StoreError> {
        self.call(move |c| {
            let mut params: Vec<String> = Vec::new();
            let filter = match &patterns {
                Some(p) => pattern_sql(p, &mut params),
                None => "1".to_string(),
            };
            let n = params.len();
            let sql =
                format!("SELECT id, name, data, source, ts FROM events WHERE id > ?{} AND {filter} ORDER BY id LIMIT ?{}", n + 1, n + 2);
            let mut st = c.prepare_cached(&sql)?;
            let mut values: Vec<rusqlite::types::Value> = params.into_iter().map(rusqlite::types::Value::from).collect();
            values.push(rusqlite::types::Value::from(after));
            values.push(rusqlite::types::Value::from(limit as i64));
            let rows = st.query_map(rusqlite::params_from_iter(values), |r| {
                Ok(EventRow { id: r.get(0)?, name: r.get(1)?, data: r.get(2)?, source: r.get(3)?, ts: r.get(4)? })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    /// How many events after `after` match any of `patterns` (a subscriber's lag).
    pub async fn count_events_after(&self, after: i64, patterns: Vec<String>) -> Result<u64, StoreError> {
        self.call(move |c| {
            let mut params: Vec<String> = Vec::new();
            let filter = pattern_sql(&patterns, &mut params);
            let sql = format!("SELECT COUNT(*) FROM events WHERE id > ?{} AND {filter}", params.len() + 1);
            let mut st = c.prepare_cached(&sql)?;
            let mut values: Vec<rusqlite::types::Value> = params.into_iter().map(rusqlite::types::Value::from).collect();
            values.push(rusqlite::types::Value::from(after));
            let n: i64 = st.query_row(rusqlite::params_from_iter(values), |r| r.get(0))?;
            Ok(n.max(0) as u64)
        })
        .await
    }

    pub async fn event(&self, id: i64) -> Result<Option<EventRow>, StoreError> {
        self.call(move |c| {
            Ok(c.prepare_cached("SELECT id, name, data, source, ts FROM events WHERE id = ?1")?
                .query_row([id], |r| Ok(EventRow { id: r.get(0)?, name: r.get(1)?, data: r.get(2)?, source: r.get(3)?, ts: r.get(4)? }))
                .optional()?)
        })
        .await
    }

    pub async fn max_event_id(&self) -> Result<i64, StoreError> {
        self.call(|c| Ok(c.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?)).await
    }

    /// Removes events older than `before_ms`, and beyond the newest `keep`.
    pub async fn prune_events(&self, before_ms: i64, keep: u64) -> Result<usize, StoreError> {
        self.call(move |c| {
            let max: i64 = c.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?;
            Ok(c.execute("DELETE FROM events WHERE ts < ?1 OR id <= ?2", params![before_ms, max - keep as i64])?)
        })
        .await
    }

    /// A subscriber's progress, created at the current end of the log when it is new (a new
    /// subscriber receives events from its subscription on, not the whole history).
    pub async fn cursor(&self, subscriber: &str) -> Result<Cursor, StoreError> {
        let sub = subscriber.to_string();
        self.call(move |c| {
            c.execute(
                "INSERT OR IGNORE INTO event_cursors (subscriber, delivered_up_to) SELECT ?1, COALESCE(MAX(id), 0) FROM events",
                [&sub],
            )?;
            Ok(c.query_row(
                "SELECT delivered_up_to, attempts, next_attempt_at, last_error FROM event_cursors WHERE subscriber = ?1",
                [&sub],
                |r| Ok(Cursor { delivered_up_to: r.get(0)?, attempts: r.get(1)?, next_attempt_at: r.get(2)?, last_error: r.get(3)? }),
            )?)
        })
        .await
    }

    pub async fn cursors(&self) -> Result<Vec<(String, Cursor)>, StoreError> {
        self.query(
            "SELECT subscriber, delivered_up_to, attempts, next_attempt_at, last_error FROM event_cursors ORDER BY subscriber",
            [],
            |r| {
                Ok((
                    r.get(0)?,
                    Cursor { delivered_up_to: r.get(1)?, attempts: r.get(2)?, next_attempt_at: r.get(3)?, last_error: r.get(4)? },
                ))
            },
        )
        .await
    }

    pub async fn set_cursor(&self, subscriber: &str, cur: Cursor) -> Result<(), StoreError> {
        self.exec(
            "UPDATE event_cursors SET delivered_up_to = ?2, attempts = ?3, next_attempt_at = ?4, last_error = ?5 WHERE subscriber = ?1",
            (subscriber.to_string(), cur.delivered_up_to, cur.attempts, cur.next_attempt_at, cur.last_error),
        )
        .await?;
        Ok(())
    }

    /// Gives up on one event for one subscriber: dead-letters it and moves the cursor past.
    pub async fn dead_letter(&self, subscriber: &str, event_id: i64, attempts: u32, error: String) -> Result<(), StoreError> {
        let sub = subscriber.to_string();
        self.call(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO dead_letters (subscriber, event_id, attempts, last_error, at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (subscriber, event_id) DO UPDATE SET attempts = excluded.attempts, last_error = excluded.last_error, at = excluded.at, redrive = 0",
                params![sub, event_id, attempts, error, now_ms()],
            )?;
            tx.execute(
                "UPDATE event_cursors SET delivered_up_to = MAX(delivered_up_to, ?2), attempts = 0, next_attempt_at = NULL, last_error = ?3 WHERE subscriber = ?1",
                params![sub, event_id, error],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub async fn dead_letters(&self, subscriber: Option<String>) -> Result<Vec<DeadLetter>, StoreError> {
        self.query(
            "SELECT id, subscriber, event_id, attempts, last_error, at, redrive FROM dead_letters WHERE ?1 IS NULL OR subscriber = ?1 ORDER BY subscriber, event_id",
            [subscriber],
            |r| Ok(DeadLetter { id: r.get(0)?, subscriber: r.get(1)?, event_id: r.get(2)?, attempts: r.get(3)?, last_error: r.get(4)?, at: r.get(5)?, redrive: r.get(6)? }),
        )
        .await
    }

    /// Marks dead letters to be sent again; returns how many.
    pub async fn mark_redrive(&self, subscriber: Option<String>) -> Result<usize, StoreError> {
        self.exec("UPDATE dead_letters SET redrive = 1 WHERE ?1 IS NULL OR subscriber = ?1", [subscriber]).await
    }

    pub async fn delete_dead_letter(&self, id: i64) -> Result<(), StoreError> {
        self.exec("DELETE FROM dead_letters WHERE id = ?1", [id]).await?;
        Ok(())
    }

    /// Forgets a subscriber (uninstalled): its progress and dead letters.
    pub async fn drop_subscriber(&self, subscriber: &str) -> Result<(), StoreError> {
        let sub = subscriber.to_string();
        self.call(move |c| {
            c.execute("DELETE FROM event_cursors WHERE subscriber = ?1", [&sub])?;
            c.execute("DELETE FROM dead_letters WHERE subscriber = ?1", [&sub])?;
            Ok(())
        })
        .await
    }
}
