//! Tests, or halves of tests, that cannot run on this machine say so past the harness's output
//! capture, so a plain `cargo test` shows `SKIPPED <test>: <why>` next to "N passed" instead of
//! counting work that did not run. Where MUSCLE_TEST_NO_SKIP is set (`.ci/run` sets it), a
//! required part that cannot run fails its test instead.

// Each test binary uses a part of it.
#![allow(dead_code)]

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Set by `.ci/run`: every required part of every test must run.
pub const NO_SKIP: &str = "MUSCLE_TEST_NO_SKIP";

/// Says that `what` did not run and why; fails the test where MUSCLE_TEST_NO_SKIP is set.
pub fn skip_required(what: &str, why: &str) {
    if std::env::var_os(NO_SKIP).is_some() {
        panic!("{what} did not run ({why}), and {NO_SKIP} is set: CI runs every test");
    }
    say(what, why);
}

/// Says that `what` did not run and why (parts that need what CI may not offer, such as root).
pub fn skip(what: &str, why: &str) {
    say(what, why);
}

fn say(what: &str, why: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    // Straight to the process's stderr: the harness captures eprintln!, not this.
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {what}: {why}");
    if SKIPPED.fetch_add(1, Ordering::SeqCst) == 0 {
        // SAFETY: registers a plain `extern "C" fn` that only reads an atomic and writes stderr.
        unsafe { libc::atexit(count_at_exit) };
    }
}

static SKIPPED: AtomicUsize = AtomicUsize::new(0);

/// After the harness's own "test result" line (it ends the process with exit()), the count of
/// what was skipped: libtest has no runtime skip, so its "passed" includes these.
extern "C" fn count_at_exit() {
    let count = SKIPPED.load(Ordering::SeqCst);
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {count} test part(s) of this binary did not run (SKIPPED lines above); \
         the \"passed\" count above includes them"
    );
}
