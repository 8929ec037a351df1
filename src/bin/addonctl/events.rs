//! `addonctl events …`: emit and list events, follow them live over server-sent events
//! (reconnecting without losing or repeating one), and the subscribers' delivery state
//! and dead letters (docs/api.md, "Events").

use std::time::Duration;

use addond::client::{ClientError, Method, SseEvent, SseParser};
use addond::sanitize::sanitize as cell;
use clap::Subcommand;
use serde_json::{json, Value};

use crate::input::{apply_sets, parse_json_arg, parse_set};
use crate::render::{emit, list_of, local_time, note, render_table, text, truncate};
use crate::{query, Ctl};

pub(crate) const EVENTS: &str = "/api/events";

#[derive(Subcommand, Debug)]
pub(crate) enum EventCmd {
    /// Store an event (delivered to its subscribers) and print its id
    Emit {
        /// Event name (payment.completed)
        name: String,
        /// The event's data as JSON (default {})
        #[arg(long, value_name = "JSON")]
        data: Option<String>,
        /// Set a top-level data key (repeatable); VALUE is JSON if it parses, else a string
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set)]
        set: Vec<(String, Value)>,
    },
    /// Stored events in id order (the oldest first; --after to page)
    #[command(visible_alias = "ls")]
    List {
        /// Event name, `prefix.*` or `*`
        #[arg(long, value_name = "PATTERN")]
        name: Option<String>,
        /// Only events after this id
        #[arg(long, value_name = "ID")]
        after: Option<u64>,
        /// At most N events (daemon default 100)
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10000))]
        limit: Option<u32>,
    },
    /// Print events as they are stored, until interrupted; reconnects without losing any
    Follow {
        /// Event name, `prefix.*` or `*`
        #[arg(long, value_name = "PATTERN")]
        name: Option<String>,
        /// Replay the events after this id first (default: only new events)
        #[arg(long, value_name = "ID")]
        after: Option<u64>,
    },
    /// Delivery state of each subscriber, and the dead letters
    Subscribers,
    /// Deliver the dead letters again
    Redrive {
        /// Only this subscriber's dead letters
        #[arg(long, value_name = "S")]
        subscriber: Option<String>,
    },
}

/// How long to wait before the next attempt to reconnect `events follow`.
pub(crate) fn follow_backoff(attempt: u32) -> Duration {
    Duration::from_millis((250u64 << attempt.min(5)).min(5000))
}

/// Whether `events follow` should try again after this error (the daemon went away or is
/// restarting) rather than give up (a refusal, a bad pattern).
pub(crate) fn reconnectable(e: &ClientError) -> bool {
    match e {
        ClientError::NotRunning { .. } | ClientError::Io { .. } | ClientError::Protocol(_) => true,
        ClientError::Api(a) => a.status >= 500,
        ClientError::PermissionDenied { .. } => false,
    }
}

impl Ctl {
    pub(crate) async fn events(&self, cmd: EventCmd) -> anyhow::Result<()> {
        match cmd {
            EventCmd::Emit { name, data, set } => {
                let base = data.as_deref().map(|t| parse_json_arg("--data", t)).transpose()?;
                let data = apply_sets(base.unwrap_or_else(|| json!({})), &set, "the data")?;
                let ev = self.call(Method::POST, EVENTS, Some(&json!({"name": name, "data": data}))).await?;
                if self.quiet && !self.json {
                    return emit(&format!("{}\n", cell(&text(&ev, "id"))));
                }
                self.show(&ev, |e| format!("stored event {} ({})\n", cell(&text(e, "id")), cell(&text(e, "name"))))
            }
            EventCmd::List { name, after, limit } => {
                let q = query(&[("name", name), ("after", after.map(|a| a.to_string())), ("limit", limit.map(|l| l.to_string()))]);
                let data = self.call(Method::GET, &format!("{EVENTS}{q}"), None).await?;
                if self.quiet && !self.json {
                    return emit(&event_ids(&data));
                }
                self.show(&data, render_event_list)
            }
            EventCmd::Follow { name, after } => self.events_follow(name, after).await,
            EventCmd::Subscribers => {
                let data = self.call(Method::GET, &format!("{EVENTS}/subscribers"), None).await?;
                self.show(&data, render_subscribers)
            }
            EventCmd::Redrive { subscriber } => {
                let body = match &subscriber {
                    Some(s) => json!({"subscriber": s}),
                    None => json!({}),
                };
                let data = self.call(Method::POST, &format!("{EVENTS}/redrive"), Some(&body)).await?;
                self.show(&data, |d| {
                    let whose = subscriber.as_deref().map(|s| format!(" of {}", cell(s))).unwrap_or_default();
                    format!("{} dead letter(s){whose} will be delivered again\n", cell(&text(d, "redriven")))
                })
            }
        }
    }

    /// `events follow`: `GET /api/events/stream` from `after` (default: the newest stored
    /// event, so only new ones print), one line per event. When the connection drops it
    /// reconnects, asking for the events after the last one printed, so none is lost or
    /// printed twice. Ends with Ctrl-C (or a refusal from the daemon).
    pub(crate) async fn events_follow(&self, name: Option<String>, after: Option<u64>) -> anyhow::Result<()> {
        let mut last = match after {
            Some(a) => a,
            None => {
                let d = self.call(Method::GET, &format!("{EVENTS}/subscribers"), None).await?;
                d.get("last_event_id").and_then(Value::as_u64).unwrap_or(0)
            }
        };
        let mut attempt = 0u32;
        let mut connected_once = false;
        loop {
            // `?after=` is the query form of `Last-Event-ID` (docs/api.md).
            let path = format!("{EVENTS}/stream{}", query(&[("name", name.clone()), ("after", Some(last.to_string()))]));
            let mut stream = match self.client.stream(Method::GET, &path).await {
                Ok(s) => s,
                Err(e) if connected_once && reconnectable(&e) => {
                    tokio::time::sleep(follow_backoff(attempt)).await;
                    attempt = attempt.saturating_add(1);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if connected_once && !self.quiet {
                note(&format!("reconnected; following after event {last}\n"));
            }
            connected_once = true;
            attempt = 0;
            // Every event the daemon stored is printed, however long its line.
            let mut parser = SseParser::with_max_line(usize::MAX);
            while let Some(chunk) = stream.next_chunk().await {
                let Ok(chunk) = chunk else { break };
                let mut out = String::new();
                for ev in parser.push(&chunk) {
                    let Some((id, event)) = followed_event(&ev) else { continue };
                    if id <= last {
                        continue; // already printed before a reconnect
                    }
                    last = id;
                    out.push_str(&if self.json {
                        format!("{}\n", serde_json::to_string(&event)?)
                    } else if self.quiet {
                        format!("{id}\n")
                    } else {
                        follow_line(&event)
                    });
                }
                if !out.is_empty() {
                    emit(&out)?;
                }
            }
            if !self.quiet {
                note(&format!("lost the connection to addond; reconnecting (after event {last})\n"));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Following.

/// The id and JSON of an event from the stream (the JSON's `id`, else the SSE `id`);
/// `None` for anything that is not one of our events.
pub(crate) fn followed_event(ev: &SseEvent) -> Option<(u64, Value)> {
    let event: Value = serde_json::from_str(&ev.data).ok()?;
    let id = event.get("id").and_then(Value::as_u64).or_else(|| ev.id.as_deref()?.trim().parse().ok())?;
    Some((id, event))
}

/// `ID TIME NAME SOURCE DATA`, one line, every field sanitised.
pub(crate) fn follow_line(e: &Value) -> String {
    format!(
        "{} {} {} {} {}\n",
        cell(&text(e, "id")),
        local_time(e.get("timestamp")),
        cell(&text(e, "name")),
        cell(&text(e, "source")),
        cell(&event_data(e))
    )
}

/// An event's data as compact JSON (`-` when there is none).
pub(crate) fn event_data(e: &Value) -> String {
    match e.get("data") {
        None | Some(Value::Null) => "-".into(),
        Some(d) => d.to_string(),
    }
}

pub(crate) const EVENT_DATA_WIDTH: usize = 60;

pub(crate) fn render_event_list(d: &Value) -> String {
    let list = d.as_array().map(Vec::as_slice).unwrap_or(&[]);
    if list.is_empty() {
        return "no events\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|e| {
            vec![
                text(e, "id"),
                local_time(e.get("timestamp")),
                text(e, "name"),
                text(e, "source"),
                truncate(&cell(&event_data(e)), EVENT_DATA_WIDTH),
            ]
        })
        .collect();
    render_table(&["ID", "TIME", "NAME", "SOURCE", "DATA"], &rows)
}

/// Event ids, one per line (`events list --quiet`).
pub(crate) fn event_ids(d: &Value) -> String {
    d.as_array().map(Vec::as_slice).unwrap_or(&[]).iter().map(|e| format!("{}\n", cell(&text(e, "id")))).collect()
}

pub(crate) fn render_subscribers(d: &Value) -> String {
    let mut out = format!("last event id: {}\n\n", cell(&text(d, "last_event_id")));
    let subs = list_of(d, "subscribers");
    if subs.is_empty() {
        out.push_str("no subscribers\n");
    } else {
        let rows: Vec<Vec<String>> = subs
            .iter()
            .map(|s| {
                vec![text(s, "subscriber"), text(s, "delivered_up_to"), text(s, "attempts"), text(s, "last_error"), text(s, "dead_letters")]
            })
            .collect();
        out.push_str(&render_table(&["SUBSCRIBER", "DELIVERED_UP_TO", "ATTEMPTS", "LAST_ERROR", "DEAD_LETTERS"], &rows));
    }
    out.push('\n');
    let dead = list_of(d, "dead_letters");
    if dead.is_empty() {
        out.push_str("no dead letters\n");
    } else {
        let rows: Vec<Vec<String>> = dead
            .iter()
            .map(|l| {
                let redrive = if l.get("redrive").and_then(Value::as_bool) == Some(true) { "pending" } else { "-" };
                vec![
                    text(l, "subscriber"),
                    text(l, "event_id"),
                    text(l, "attempts"),
                    local_time(l.get("at")),
                    redrive.to_string(),
                    text(l, "last_error"),
                ]
            })
            .collect();
        out.push_str(&format!("dead letters: {}\n", dead.len()));
        out.push_str(&render_table(&["SUBSCRIBER", "EVENT", "ATTEMPTS", "AT", "REDRIVE", "LAST_ERROR"], &rows));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::rows;
    use crate::tests::parse;
    use crate::{Cli, Command};
    use addond::client::ApiError;
    use clap::Parser;

    fn ev(id: Option<&str>, event: Option<&str>, data: &str) -> SseEvent {
        SseEvent { id: id.map(str::to_string), event: event.map(str::to_string), data: data.to_string() }
    }

    #[test]
    fn followed_events_and_their_lines() {
        let e = ev(
            Some("12"),
            Some("payment.completed"),
            r#"{"id":12,"name":"payment.completed","source":"admin:0","timestamp":"2026-11-22T00:01:02.345Z","data":{"amount":5,"note":"a\u001b[31mb\nc"}}"#,
        );
        let (id, v) = followed_event(&e).unwrap();
        assert_eq!(id, 12);
        assert_eq!(
            follow_line(&v),
            format!(
                "12 {} payment.completed admin:0 {{\"amount\":5,\"note\":\"a\\u001b[31mb\\nc\"}}\n",
                local_time(Some(&json!("2026-11-22T00:01:02.345Z")))
            )
        );
        // The SSE id when the JSON has none; not JSON: skipped.
        assert_eq!(followed_event(&ev(Some("5"), None, r#"{"name":"x"}"#)).unwrap().0, 5);
        assert!(followed_event(&ev(Some("5"), None, "not json")).is_none());
        assert!(followed_event(&ev(None, None, "{}")).is_none());
        // Reconnect policy: the daemon going away is retried; a refusal is not.
        assert!(reconnectable(&ClientError::NotRunning { socket: "/s".into() }));
        assert!(reconnectable(&ClientError::Protocol("stream broken".into())));
        assert!(!reconnectable(&ClientError::PermissionDenied { socket: "/s".into() }));
        let api = |status| ClientError::Api(ApiError { status, code: "x".into(), message: "m".into(), field: None });
        assert!(!reconnectable(&api(400)));
        assert!(reconnectable(&api(503)));
        assert_eq!(follow_backoff(0), Duration::from_millis(250));
        assert_eq!(follow_backoff(40), Duration::from_secs(5));
    }

    #[test]
    fn subscribers_and_dead_letters() {
        let d = json!({"last_event_id": 42, "subscribers": [
            {"subscriber": "mail", "delivered_up_to": 40, "attempts": 3, "next_attempt_at": null, "last_error": "HTTP 500", "dead_letters": 1},
            {"subscriber": "stock", "delivered_up_to": 42, "attempts": 0, "next_attempt_at": null, "last_error": null, "dead_letters": 0}],
            "dead_letters": [{"id": 1, "subscriber": "mail", "event_id": 39, "attempts": 5, "last_error": "HTTP 500", "at": 1_795_305_662_000i64, "redrive": false}]});
        let out = render_subscribers(&d);
        let t = rows(&out);
        assert_eq!(t[0], ["last event id: 42"]);
        assert_eq!(t[2], ["SUBSCRIBER", "DELIVERED_UP_TO", "ATTEMPTS", "LAST_ERROR", "DEAD_LETTERS"]);
        assert_eq!(t[3], ["mail", "40", "3", "HTTP 500", "1"]);
        assert_eq!(t[4], ["stock", "42", "0", "-", "0"]);
        assert_eq!(t[6], ["dead letters: 1"]);
        assert_eq!(t[7], ["SUBSCRIBER", "EVENT", "ATTEMPTS", "AT", "REDRIVE", "LAST_ERROR"]);
        assert_eq!(t[8], ["mail", "39", "5", &local_time(Some(&json!(1_795_305_662i64))), "-", "HTTP 500"]);
        let none = render_subscribers(&json!({"last_event_id": null, "subscribers": [], "dead_letters": []}));
        assert_eq!(none, "last event id: -\n\nno subscribers\n\nno dead letters\n");
    }

    #[test]
    fn event_tables() {
        let long = "x".repeat(100);
        let events = json!([
            {"id": 1, "name": "payment.completed", "source": "admin:0", "timestamp": "2026-11-22T00:01:02.345Z", "data": {"amount": 5}},
            {"id": 2, "name": "service.started", "source": "addond", "timestamp": "2026-11-22T00:01:03Z", "data": {"note": long}},
            {"id": 3, "name": "x.y", "source": "pay", "timestamp": "2026-11-22T00:01:04Z", "data": null}
        ]);
        let out = render_event_list(&events);
        let t = rows(&out);
        assert_eq!(t[0], ["ID", "TIME", "NAME", "SOURCE", "DATA"]);
        assert_eq!(t[1], ["1", &local_time(Some(&json!("2026-11-22T00:01:02Z"))), "payment.completed", "admin:0", "{\"amount\":5}"]);
        assert_eq!(t[2][4].chars().count(), EVENT_DATA_WIDTH);
        assert!(t[2][4].starts_with("{\"note\":\"xxx") && t[2][4].ends_with('…'), "{out}");
        assert_eq!(t[3][4], "-");
        assert_eq!(event_ids(&events), "1\n2\n3\n");
        assert_eq!(render_event_list(&json!([])), "no events\n");
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "ab…");
    }

    #[test]
    fn event_command_lines() {
        assert!(
            matches!(parse(&["events", "emit", "a.b", "--set", "n=1"]).command, Command::Events(EventCmd::Emit { ref set, .. }) if set[0] == ("n".to_string(), json!(1)))
        );
        assert!(matches!(
            parse(&["events", "follow", "--name", "a.*", "--after", "7"]).command,
            Command::Events(EventCmd::Follow { name: Some(_), after: Some(7) })
        ));
        assert!(matches!(
            parse(&["events", "redrive", "--subscriber", "mail"]).command,
            Command::Events(EventCmd::Redrive { subscriber: Some(_) })
        ));
        for bad in [vec!["events", "emit", "a.b", "--set", "noequals"], vec!["events", "list", "--after", "-1"]] {
            let e = Cli::try_parse_from(std::iter::once("addonctl").chain(bad.iter().copied())).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
    }
}
