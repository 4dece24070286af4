//! Fresh databases for tests: a SQLite file always, and a Postgres schema of its own whenever
//! MUSCLE_TEST_DATABASE_URL names a Postgres database (CI sets it). Shared by the api and store
//! test binaries (each includes this file through its helpers module).
#![allow(dead_code)]

use std::sync::Arc;

use muscle::store::{self, Store};
use sqlx::Connection;

pub struct TestDb {
    pub backend: &'static str,
    pub url: String,
    admin: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn store(&self) -> Arc<Store> {
        Arc::new(
            store::connect(&self.url)
                .await
                .expect("connect test database"),
        )
    }

    /// Drops the Postgres schema; a test that panics leaves it behind for inspection. A backend
    /// of a process the test has just killed can still hold its locks for a moment, which
    /// Postgres reports as a deadlock against the drop: that is tried again.
    pub async fn cleanup(self) {
        let Some((admin_url, schema)) = &self.admin else {
            return;
        };
        let mut conn = sqlx::PgConnection::connect(admin_url)
            .await
            .expect("admin connect");
        for attempt in 1.. {
            let dropped = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE"
            )))
            .execute(&mut conn)
            .await;
            match dropped {
                Ok(_) => return,
                Err(sqlx::Error::Database(e))
                    if e.code().as_deref() == Some("40P01") && attempt < 5 =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
                }
                Err(e) => panic!("drop schema {schema}: {e}"),
            }
        }
    }
}

pub fn postgres_url() -> Option<String> {
    std::env::var("MUSCLE_TEST_DATABASE_URL")
        .ok()
        .filter(|url| url.starts_with("postgres"))
}

pub async fn sqlite_db() -> TestDb {
    let dir = tempfile::tempdir().expect("tempdir");
    TestDb {
        backend: "sqlite",
        url: format!("sqlite://{}", dir.path().join("muscle.db").display()),
        admin: None,
        _dir: Some(dir),
    }
}

pub async fn postgres_db(admin_url: &str) -> TestDb {
    let schema = format!("t_{}", uuid::Uuid::now_v7().simple());
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .expect("connect to MUSCLE_TEST_DATABASE_URL");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await
        .expect("create schema");
    let separator = if admin_url.contains('?') { '&' } else { '?' };
    TestDb {
        backend: "postgres",
        url: format!("{admin_url}{separator}options=-c%20search_path%3D{schema}"),
        admin: Some((admin_url.to_string(), schema)),
        _dir: None,
    }
}

/// Every backend this run can test.
pub async fn test_databases() -> Vec<TestDb> {
    let mut dbs = vec![sqlite_db().await];
    match postgres_url() {
        Some(url) => dbs.push(postgres_db(&url).await),
        None => super::skip::skip_required(
            "the Postgres half",
            "MUSCLE_TEST_DATABASE_URL is not set (README, Running on Postgres)",
        ),
    }
    dbs
}

/// A SQLite file at `path` (the caller owns its folder).
pub fn sqlite_at(path: &std::path::Path) -> TestDb {
    TestDb {
        backend: "sqlite",
        url: format!("sqlite://{}", path.display()),
        admin: None,
        _dir: None,
    }
}

/// A database at `url` that the test owns whole (nothing to drop afterwards).
pub fn owned_at(backend: &'static str, url: String) -> TestDb {
    TestDb {
        backend,
        url,
        admin: None,
        _dir: None,
    }
}
