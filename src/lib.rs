//! addond: a self-hosted addon appliance. The library holds every part of the daemon and
//! the client the command-line tools share; the binaries in `src/bin/` only wire them.

pub mod config;
pub mod model;
pub mod store;
pub mod ports;
pub mod runtime;
pub mod isolation;
pub mod voldirs;
pub mod lifecycle;
pub mod client;
pub mod sanitize;
pub mod access;
pub mod api;
pub mod http;
pub mod body_error;
pub mod daemon;
pub mod data_dir;
pub mod failpoint;
pub mod secret;
pub mod addons;
pub mod image_ref;
pub mod metrics;
pub mod systemd;
pub mod backup;
pub mod doctor;
pub mod cli_docs;
pub mod gateway;
pub mod upstream;
pub mod events;
pub mod addon_api;
pub mod schedules;
pub mod time;
