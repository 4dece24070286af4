//! A Postgres 15 cluster a test owns whole (its own data folder and port), for scenarios that
//! stop the database or fill its disk.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A Postgres cluster of the test's own in `dir`, run as the `postgres` user.
pub struct Cluster {
    data: PathBuf,
    port: u16,
}

impl Cluster {
    fn bin(name: &str) -> PathBuf {
        Path::new("/usr/lib/postgresql/15/bin").join(name)
    }

    fn as_postgres(args: &[&str]) -> Result<(), String> {
        let output = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .args(args)
            .output()
            .map_err(|e| format!("runuser: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
        }
    }

    /// `pg_ctl -D <data> ARGS`, as the postgres user.
    fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        let pg_ctl = Self::bin("pg_ctl");
        let mut all = vec![pg_ctl.to_str().unwrap(), "-D", self.data.to_str().unwrap()];
        all.extend_from_slice(args);
        Self::as_postgres(&all)
    }

    pub fn create(dir: &Path) -> Result<Self, String> {
        if !Self::bin("initdb").exists() {
            return Err("no PostgreSQL 15 server binaries".into());
        }
        Command::new("chown")
            .args(["postgres:postgres"])
            .arg(dir)
            .status()
            .map_err(|e| format!("chown: {e}"))?;
        let data = dir.join("data");
        Self::as_postgres(&[
            Self::bin("initdb").to_str().unwrap(),
            "-D",
            data.to_str().unwrap(),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--wal-segsize=1",
            "--no-sync",
        ])?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let cluster = Self { data, port };
        cluster.start()?;
        Ok(cluster)
    }

    fn start(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c min_wal_size=2MB -c max_wal_size=4MB",
            self.port,
            self.data.display()
        );
        let log = self.data.parent().unwrap().join("postgres.log");
        self.pg_ctl(&["-l", log.to_str().unwrap(), "-w", "-o", &options, "start"])
    }

    /// Starts the cluster again if the full disk made it stop (a PANIC on a WAL write does).
    pub fn ensure_running(&self) {
        if self.pg_ctl(&["status"]).is_err() {
            self.start().expect("restart the cluster");
        }
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Cluster {
    /// Stops the cluster at once, as a crash or an operator would.
    pub fn stop(&self) {
        self.pg_ctl(&["-m", "immediate", "stop"])
            .expect("stop the cluster");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "stop"]);
    }
}
