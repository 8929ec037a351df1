//! addond-tui: the live terminal dashboard for addond.
//!
//! The parts are kept apart in the style of bottom and oxker: [`app`] holds the state and
//! applies events (keys, mouse, ticks, daemon updates) without doing I/O; [`ui`] draws that
//! state and changes nothing; [`net`] is the tokio side that talks to the daemon over the
//! shared Unix-socket client (`addond::client`) and feeds updates into the same channel as
//! the keyboard; the SSE and log byte streams are framed by the client's shared parsers
//! (`addond::client::{SseParser, LineSplitter}`). [`model`] reads the API's JSON, and
//! [`sanitize`] keeps addon-controlled text from reaching the terminal raw.

pub mod app;
pub mod model;
pub mod net;
/// Shared with `addonctl`: the one place addon-controlled text is made safe for a terminal.
pub use addond::sanitize;
pub mod ui;
