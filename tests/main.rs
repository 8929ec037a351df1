//! The one integration test binary: a real addond process, a real Docker engine, a real
//! SQLite file and real HTTP over the Unix socket and loopback TCP. `scripts/test.sh`
//! (the README's test command) makes sure Docker runs and the sample image exists.

mod common;

mod addons;
mod addons_cli;
mod builds;
mod cli_gateway_events;
mod crash;
mod daemon;
mod deployments;
mod environments;
mod events;
mod gateway;
mod graphql;
mod images;
mod isolation;
mod lifecycle;
mod manifest_shapes;
mod mcp;
mod observability;
mod openapi;
mod ports;
mod security;
mod shapes;
mod slow_clients;
mod strict_http;
mod system;
mod validation;
mod wasm;
