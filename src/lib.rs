//! `muscle`: tells an ML team whether a model update is safe for its users.

pub mod allowlist;
pub mod app;
pub mod callback;
pub mod cli;
pub mod config;
pub mod dataset;
pub mod domain;
pub mod endpoint;
pub mod engine;
pub mod evaluation;
pub mod http;
pub mod kinds;
pub mod lmeval;
pub mod metrics;
pub mod models;
pub mod process;
pub mod spec;
pub mod stats;
pub mod store;
pub mod telemetry;
pub mod time;
pub mod train;
pub mod validation;
pub mod worker;
