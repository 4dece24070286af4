use std::path::Path;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;

use super::{Store, StoreError, StoreResult};

/// The database behind the store, chosen by the URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn from_url(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// Opens the database named by `url` (creating a SQLite file and its folder when missing) and
/// applies the backend's migrations.
pub async fn connect(url: &str) -> StoreResult<Store> {
    sqlx::any::install_default_drivers();
    let backend = Backend::from_url(url).ok_or_else(|| {
        StoreError::Config(format!(
            "unsupported DATABASE_URL scheme in {:?}: use sqlite://FILE or postgres://...",
            redact(url)
        ))
    })?;
    let url = match backend {
        Backend::Sqlite => sqlite_url(url)?,
        Backend::Postgres => url.to_string(),
    };
    // One connection first: when the server is down or refuses us, its reason (connection
    // refused, authentication failed, no such database), which the pool would turn into a bare
    // "pool timed out" after its acquire timeout.
    first_connection(&url).await?;
    let mut options = AnyPoolOptions::new()
        .max_connections(match backend {
            Backend::Sqlite => 8,
            Backend::Postgres => 16,
        })
        .acquire_timeout(Duration::from_secs(10));
    if backend == Backend::Sqlite {
        // A server's settings: readers never wait for the writer (WAL), a writer waits its
        // turn instead of failing with "database is locked", and a commit is on disk before
        // it is acknowledged.
        options = options.after_connect(|connection, _| {
            Box::pin(async move {
                for pragma in [
                    "PRAGMA journal_mode = WAL",
                    "PRAGMA busy_timeout = 10000",
                    "PRAGMA synchronous = FULL",
                    "PRAGMA foreign_keys = ON",
                ] {
                    sqlx::query(pragma).execute(&mut *connection).await?;
                }
                Ok(())
            })
        });
    }
    options = options.after_release(move |connection, _| {
        Box::pin(async move { holds_no_transaction(connection, backend).await })
    });
    let pool = options.connect(&url).await?;
    let migrator = match backend {
        Backend::Sqlite => &SQLITE_MIGRATIONS,
        Backend::Postgres => &POSTGRES_MIGRATIONS,
    };
    migrator.run(&pool).await?;
    Ok(Store::new(pool, backend))
}

/// Whether a connection that comes back to the pool is outside any transaction, as sqlx and the
/// database both see it; one that is not is closed instead of pooled.
///
/// A statement or COMMIT that fails on a full disk or an I/O error can leave the two disagreeing:
/// SQLite may roll the transaction back itself, sqlx's ROLLBACK then fails and its depth stays at
/// one, so the connection's next "transaction" is a SAVEPOINT inside whatever the database still
/// holds open and its "commit" a RELEASE that writes nothing to disk. Such a connection would
/// acknowledge writes that a restart loses.
async fn holds_no_transaction(
    connection: &mut sqlx::AnyConnection,
    backend: Backend,
) -> Result<bool, sqlx::Error> {
    use sqlx::Connection;
    // The ROLLBACK a dropped transaction queued runs before the ping is answered.
    connection.ping().await?;
    if connection.is_in_transaction() {
        tracing::warn!("a connection came back inside a transaction; closing it");
        return Ok(false);
    }
    if backend == Backend::Sqlite {
        // SQLite's own view: BEGIN fails inside a transaction.
        if let Err(error) = sqlx::raw_sql("BEGIN").execute(&mut *connection).await {
            tracing::warn!(%error, "a SQLite connection still held a transaction; closing it");
            return Ok(false);
        }
        sqlx::raw_sql("ROLLBACK").execute(&mut *connection).await?;
    }
    Ok(true)
}

async fn first_connection(url: &str) -> StoreResult<()> {
    use sqlx::Connection;
    let attempt = tokio::time::timeout(Duration::from_secs(10), sqlx::AnyConnection::connect(url));
    let cannot =
        |reason: String| StoreError::Config(format!("cannot connect to {}: {reason}", redact(url)));
    match attempt.await {
        Err(_) => Err(cannot("no answer within 10 s".into())),
        Ok(Err(e)) => Err(cannot(e.to_string())),
        Ok(Ok(connection)) => {
            let _ = connection.close().await;
            Ok(())
        }
    }
}

/// Adds `mode=rwc` so the file is created, and creates its folder.
fn sqlite_url(url: &str) -> StoreResult<String> {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Err(StoreError::Config(
            "an in-memory SQLite database cannot be shared by the API and its workers; name a file"
                .into(),
        ));
    }
    if let Some(parent) = Path::new(path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent)
            .map_err(|e| StoreError::Config(format!("cannot create {}: {e}", parent.display())))?;
    }
    Ok(if url.contains("mode=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    })
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &credentials[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connection_says_so_once_without_the_password() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("postgres://muscle:secret@127.0.0.1:{port}/muscle");
        let message = match connect(&url).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("nothing listens on {port}"),
        };
        assert!(message.contains("Connection refused"), "{message}");
        assert!(!message.contains("secret"), "{message}");
        assert!(!message.contains("pool timed out"), "{message}");
    }

    #[test]
    fn backend_follows_the_scheme() {
        assert_eq!(Backend::from_url("sqlite://a.db"), Some(Backend::Sqlite));
        assert_eq!(Backend::from_url("sqlite:a.db"), Some(Backend::Sqlite));
        assert_eq!(
            Backend::from_url("postgres://u@h/db"),
            Some(Backend::Postgres)
        );
        assert_eq!(
            Backend::from_url("postgresql://u@h/db"),
            Some(Backend::Postgres)
        );
        assert_eq!(Backend::from_url("mysql://u@h/db"), None);
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://muscle:secret@db:5432/muscle"),
            "postgres://muscle:***@db:5432/muscle"
        );
        assert_eq!(redact("sqlite://data/muscle.db"), "sqlite://data/muscle.db");
    }

    #[test]
    fn sqlite_files_are_created() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/sub/x.db", dir.path().display());
        assert!(sqlite_url(&url).unwrap().ends_with("x.db?mode=rwc"));
        assert!(dir.path().join("sub").is_dir());
        assert!(sqlite_url("sqlite://:memory:").is_err());
    }
}
