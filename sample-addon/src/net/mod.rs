//! Networking, with no knowledge of the routes: the HTTP/1.1 parser ([`http`]), the JSON
//! response ([`response`]), the accept loop and connections ([`server`]), the streaming routes
//! served on the connection itself ([`stream`]), the WebSocket echo ([`ws`]) and the small
//! client used to call the addon API ([`client`]).

pub mod client;
pub mod http;
pub mod response;
pub mod server;
pub mod stream;
pub mod ws;
