//! What the store tests share: fresh databases on every backend (tests/support/db.rs, which the
//! api tests include too).

#[path = "../support/db.rs"]
mod db;
#[path = "../support/skip.rs"]
mod skip;
pub use db::*;
