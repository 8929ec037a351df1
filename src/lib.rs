//! addond: a self-hosted addon appliance. The library holds every part of the daemon and
//! the client the command-line tools share; the binaries in `src/bin/` only wire them.
//!
//! # Layout
//!
//! Leaves first; each module imports only from the ones above it or beside it, never in a
//! circle (`scripts/check-cycles.py`, run by CI, checks it).
//!
//! - **Leaves** — [`time`] (clocks and RFC 3339), [`secret`] (key minting, hashing,
//!   constant-time compare), [`data_dir`] (the data-dir lock), [`failpoint`] (debug-build
//!   crash hooks for the tests), [`users`] (the socket group's lookup), [`wire`] (the
//!   envelope's success shape), [`sanitize`],
//!   [`image_ref`] (Docker's reference grammar),
//!   [`body_error`], [`config`] (`platform.rs`: the sections of builds, deployments,
//!   environments, WASM, GraphQL, metrics and notifications), [`model`] (services, instances,
//!   phases, ids; `names.rs` display names and slugs, `templates.rs` the service templates),
//!   [`addons::cron`] (schedule parsing).
//! - **State** — [`store`]: the SQLite file, the only place with SQL; `migrations.rs` and one
//!   file per area returning typed rows.
//! - **Docker and the host** — [`runtime`] (bollard, the engine's state, containers;
//!   `networks.rs` per-owner networks and volumes), [`isolation`] (which network and volume
//!   a service gets), [`firewall`] (the nftables table that keeps those networks apart
//!   while Docker rewrites its own rules), [`voldirs`] (directory volumes checked before
//!   every start), [`ports`], [`systemd`].
//! - **Domain** — [`lifecycle`] (requests write desired state; `reconcile.rs` drives Docker
//!   to it; `health.rs` the monitor), [`addons`] (catalogue, manifests, installs, dispatch of
//!   actions and widgets; `widgets.rs` the widget catalogue and renders; `wasm.rs` publishes
//!   and calls WebAssembly addons), [`events`],
//!   [`schedules`], [`access`] (applications and grants), [`build`] (addon code to images:
//!   `context.rs` checks and writes build contexts).
//! - **WebAssembly** — [`wasm`] (wasmtime: the engine and pool, per-call limits, the host
//!   functions a guest imports, modules and their compiled form on disk); below [`addons`],
//!   which hands it the host side through a trait.
//! - **HTTP** — [`http`] (the JSON envelope, the one `ErrorCode` enum, body parsing, the
//!   connection loop with budgets and timeouts, shared answers), [`upstream`] (the strict
//!   HTTP/1.1 client to addon containers), and the three servers on top of it: [`api`] (the
//!   admin API on the Unix socket: `mod.rs` lists every route, handlers by area,
//!   `socket.rs` the peer check), [`gateway`] (API keys, limits, proxy, and `/mcp`),
//!   [`addon_api`] (what containers call), and [`mcp`] (the MCP tools made from addon actions
//!   and registered tools, and the MCP server the gateway and `addonctl mcp` serve), and
//!   [`graphql`] (the GraphQL schema over addons, widgets and events, its limits and its
//!   WebSocket session; `api` and `gateway` mount it at `/graphql`). Nothing imports from `api`.
//! - **Operations** — [`backup`], [`doctor`], [`metrics`] (counters and the build and
//!   process series), [`scrape`] (the exposition assembled from every area, and the TCP
//!   metrics listener), [`notify`] (webhook notifications), [`cli_docs`], and [`daemon`],
//!   which builds all of the above, spawns every task and joins them at shutdown.
//! - **Client** — [`client`] (the admin-socket client with one SSE parser and one line
//!   splitter, shared by `addonctl` and `addond-tui`).

pub mod access;
pub mod addon_api;
pub mod addons;
pub mod api;
pub mod backup;
pub mod body_error;
pub mod build;
pub mod cli_docs;
pub mod client;
pub mod config;
pub mod daemon;
pub mod data_dir;
pub mod doctor;
pub mod events;
pub mod failpoint;
pub mod firewall;
pub mod gateway;
pub mod graphql;
pub mod http;
pub mod image_ref;
pub mod isolation;
pub mod lifecycle;
pub mod mcp;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod ports;
pub mod runtime;
pub mod sanitize;
pub mod schedules;
pub mod scrape;
pub mod secret;
pub mod store;
pub mod systemd;
pub mod time;
pub mod upstream;
pub mod users;
pub mod voldirs;
pub mod wasm;
pub mod wire;
