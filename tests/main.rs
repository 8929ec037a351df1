//! The one integration test binary: a real addond process, a real Docker engine, a real
//! SQLite file and real HTTP over the Unix socket and loopback TCP. `scripts/test.sh`
//! (the README's test command) makes sure Docker runs and the sample image exists.

mod common;

mod lifecycle;
mod validation;
mod security;
mod isolation;
mod crash;
mod ports;
mod daemon;
mod images;
mod addons;
mod gateway;
mod addons_cli;
mod system;
mod events;
mod cli_gateway_events;
mod slow_clients;
mod strict_http;
