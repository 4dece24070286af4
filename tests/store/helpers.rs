//! What the store tests share: fresh databases on every backend (tests/support/db.rs, which the
//! api tests include too).

#[path = "../support/db.rs"]
mod db;
pub use db::*;
