//! API, CLI and end-to-end tests: the app on port 0 against a fresh database (SQLite always,
//! Postgres when MUSCLE_TEST_DATABASE_URL is set), with the real engine on the committed fixture
//! models; the `muscle` commands; trainings through the queue; the shipped model update.

mod fake_endpoint;
mod helpers;

mod auth_and_cors;
mod bounds;
mod callbacks;
mod cli;
mod connections;
mod dashboard;
mod database_down;
mod datasets;
mod deploy;
mod endpoint_client;
mod endpoint_servers;
mod evaluations;
mod exports;
mod full_disk;
mod full_disk_running_job;
mod lmeval;
mod load;
mod model_update_example;
mod multi_worker;
mod operations;
mod own_postgres;
mod reports_once;
mod sampled;
mod slow_bodies;
mod train_api;
mod train_cli;
mod trainings;
