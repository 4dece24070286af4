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
        let port = Self::free_port_outside_ephemeral_range()?;
        let cluster = Self { data, port };
        cluster.start()?;
        Ok(cluster)
    }

    /// A free port below Linux's ephemeral range (32768-60999): a port the kernel handed out
    /// could be taken by any outgoing connection while the cluster is stopped, and a restart on
    /// it would then fail.
    fn free_port_outside_ephemeral_range() -> Result<u16, String> {
        let seed = std::process::id() as u64
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(|e| e.to_string())?
                .subsec_nanos() as u64;
        (0..200u64)
            .map(|i| 20_000 + ((seed + i * 7_919) % 12_000) as u16)
            .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
            .ok_or_else(|| "no free port in 20000-31999".to_string())
    }

    fn log(&self) -> PathBuf {
        self.data.parent().unwrap().join("postgres.log")
    }

    fn start(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c min_wal_size=2MB -c max_wal_size=4MB",
            self.port,
            self.data.display()
        );
        let log = self.log();
        self.pg_ctl(&["-l", log.to_str().unwrap(), "-w", "-o", &options, "start"])
    }

    /// Starts the cluster again if it is down (stopped by the test, or by a PANIC on a WAL
    /// write when the disk is full). A few tries: the stopped postmaster's children may still
    /// hold its shared memory for a moment. Panics with the server's log when it will not start.
    pub fn ensure_running(&self) {
        if self.pg_ctl(&["status"]).is_ok() {
            return;
        }
        let mut failure = String::new();
        for _ in 0..5 {
            match self.start() {
                Ok(()) => return,
                Err(why) => failure = why,
            }
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
        let log = std::fs::read_to_string(self.log()).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "restart the cluster: {failure}\npostgres.log ends:\n{}",
            tail.join("\n")
        );
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
