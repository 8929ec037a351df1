//! GraphQL over a WebSocket on the admin socket: the `graphql-transport-ws` protocol (and the
//! older `graphql-ws` of subscriptions-transport-ws for clients that only speak it), with
//! async-graphql's protocol state machine between the socket's text frames. Subscriptions
//! (`events`) run here; queries and mutations may too. Frames are bounded by
//! `api.max_body_bytes`; a client silent for 10 s after the upgrade is closed with 4408, as
//! the protocol says, and every session ends with a close frame when the daemon stops.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_graphql::http::{WebSocket as GraphqlSession, WebSocketProtocols, WsMessage};
use async_graphql::Data;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use tokio_util::sync::CancellationToken;

use super::{Actor, AdminSchema, Mutations, Scope};
use crate::http::{ApiError, ErrorCode};

/// How long a client may stay silent after the upgrade before the session is closed (4408).
const INIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The subprotocols served, the preferred first.
pub const PROTOCOLS: [&str; 2] = ["graphql-transport-ws", "graphql-ws"];

/// Answers the upgrade request with `101` and runs the session on the upgraded connection;
/// a client that offers none of [`PROTOCOLS`] is refused (400) saying what to send.
/// `audit` hears the root fields of each mutation run on the session.
pub fn upgrade<A>(
    ws: WebSocketUpgrade,
    schema: AdminSchema,
    actor: Actor,
    max_frame: usize,
    shutdown: CancellationToken,
    audit: A,
) -> Response
where
    A: Fn(Vec<String>) + Send + 'static,
{
    let ws = ws.protocols(PROTOCOLS).max_message_size(max_frame).max_frame_size(max_frame);
    let Some(protocol) = ws.selected_protocol().and_then(|p| p.to_str().ok()).and_then(|p| p.parse::<WebSocketProtocols>().ok()) else {
        return ApiError::new(
            ErrorCode::InvalidRequest,
            "GET /graphql is GraphQL over a WebSocket: send `Sec-WebSocket-Protocol: graphql-transport-ws` (or graphql-ws)",
        )
        .field_name("Sec-WebSocket-Protocol")
        .into_response();
    };
    ws.on_upgrade(move |socket| session(socket, schema, protocol, actor, shutdown, audit)).into_response()
}

async fn session<A>(
    socket: WebSocket,
    schema: AdminSchema,
    protocol: WebSocketProtocols,
    actor: Actor,
    shutdown: CancellationToken,
    audit: A,
) where
    A: Fn(Vec<String>) + Send + 'static,
{
    let (mut tx, rx) = socket.split();
    let heard = Arc::new(AtomicBool::new(false));
    let heard_in = heard.clone();
    // Text frames go to the protocol; the rest (pings are answered by the socket) end the
    // input at a close or an error.
    let input =
        rx.take_while(|m| futures_util::future::ready(matches!(m, Ok(m) if !matches!(m, Message::Close(_))))).filter_map(move |m| {
            heard_in.store(true, Ordering::Relaxed);
            futures_util::future::ready(match m {
                Ok(Message::Text(t)) => Some(t.as_str().as_bytes().to_vec()),
                Ok(Message::Binary(b)) => Some(b.to_vec()),
                _ => None,
            })
        });
    let init_deadline = tokio::time::sleep(INIT_TIMEOUT);
    tokio::pin!(init_deadline);
    let mutations = Mutations::default();
    let mut data = Data::default();
    data.insert(Scope::All);
    data.insert(actor);
    data.insert(mutations.clone());
    let mut out = GraphqlSession::new(schema, input, protocol).connection_data(data);
    loop {
        let msg = tokio::select! {
            m = out.next() => m,
            _ = shutdown.cancelled() => {
                let frame = CloseFrame { code: 1001, reason: "the daemon is stopping".into() };
                let _ = tx.send(Message::Close(Some(frame))).await;
                return;
            }
            // graphql-transport-ws: a client that says nothing (not even connection_init)
            // does not hold the connection.
            _ = &mut init_deadline, if !heard.load(Ordering::Relaxed) => {
                let frame = CloseFrame { code: 4408, reason: "Connection initialisation timeout".into() };
                let _ = tx.send(Message::Close(Some(frame))).await;
                return;
            }
        };
        let fields = std::mem::take(&mut *mutations.0.lock().unwrap_or_else(|e| e.into_inner()));
        if !fields.is_empty() {
            audit(fields);
        }
        match msg {
            Some(WsMessage::Text(text)) => {
                if tx.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
            Some(WsMessage::Close(code, reason)) => {
                let _ = tx.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
                return;
            }
            None => return,
        }
    }
}
