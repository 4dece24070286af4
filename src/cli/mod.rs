//! Subcommands that run one job without a server, and `wait`, which follows one on a server.

/// `eprintln!` that never panics: a closed stderr must not change what the command does or its
/// exit code.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod common;
pub mod compare;
pub mod eval;
pub mod train;
pub mod wait;
