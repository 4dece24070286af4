//! Subcommands that run one job without a server.

pub mod eval;
pub mod train;
