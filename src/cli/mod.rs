//! Subcommands that run one job without a server.

mod common;
pub mod eval;
pub mod train;
