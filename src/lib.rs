//! `muscle`: tells an ML team whether a model update is safe for its users.

pub mod config;
pub mod store;
pub mod time;
