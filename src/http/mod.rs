//! Everything the daemon's three HTTP listeners (the admin socket, the gateway and the
//! addon API) share: the JSON envelope and its error codes ([`envelope`]), the connection
//! loop with its budgets and timeouts ([`conn`]), and the answers more than one listener
//! gives ([`answers`]). Whatever speaks HTTP imports from here; nothing imports from
//! `api`.

pub mod answers;
pub mod code;
pub mod conn;
pub mod envelope;
pub mod openapi;

pub use answers::{frame_reply, render_reply, rendered_reply, ExecuteBody, RenderBody, RenderQuery};
pub use code::ErrorCode;
pub use envelope::{
    body_read_error, error_body, json_error_text, ok, ok_json, parse_json, read_body, ApiError, ApiResult, BodyLimit, JsonBody,
};
