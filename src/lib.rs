//! `muscle`: tells an ML team whether a model update is safe for its users.

pub mod config;
pub mod dataset;
pub mod engine;
pub mod metrics;
pub mod models;
pub mod spec;
pub mod store;
pub mod time;
pub mod validation;
