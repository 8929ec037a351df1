//! addond: a self-hosted addon appliance. The library holds every part of the daemon and
//! the client the command-line tools share; the binaries in `src/bin/` only wire them.

pub mod config;
