//! addond: a self-hosted addon appliance. The library holds every part of the daemon and
//! the client the command-line tools share; the binaries in `src/bin/` only wire them.

pub mod access;
pub mod addon_api;
pub mod addons;
pub mod api;
pub mod backup;
pub mod body_error;
pub mod cli_docs;
pub mod client;
pub mod config;
pub mod daemon;
pub mod data_dir;
pub mod doctor;
pub mod events;
pub mod failpoint;
pub mod gateway;
pub mod http;
pub mod image_ref;
pub mod isolation;
pub mod lifecycle;
pub mod metrics;
pub mod model;
pub mod ports;
pub mod runtime;
pub mod sanitize;
pub mod schedules;
pub mod secret;
pub mod store;
pub mod systemd;
pub mod time;
pub mod upstream;
pub mod voldirs;
