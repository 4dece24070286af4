//! Store and queue tests, on SQLite always and on Postgres when MUSCLE_TEST_DATABASE_URL is set.

mod helpers;

mod store_queue;
