//! Subcommands that run one job without a server, and `wait`, which follows one on a server.

mod common;
pub mod compare;
pub mod eval;
pub mod train;
pub mod wait;
