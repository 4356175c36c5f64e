//! Test-only pause points, so the crash test can kill the agent at an exact
//! step instead of guessing from log lines and sleeps.
//!
//! A call `testpoint::pause("converge")` is a no-op unless the binary is a
//! debug build (`cfg(debug_assertions)`) *and* the environment variable
//! `WAVEMAP_TEST_PAUSE_AT` names that point. Then the agent writes the
//! point's name to the file named by `WAVEMAP_TEST_PAUSE_FILE` (written
//! beside and renamed into place, so the test that waits on it never reads
//! half a name), says so on stderr, and blocks the calling thread until it is killed. Release builds
//! (the Debian package, the benchmarks) compile the body away: no variable
//! can make a deployed agent stop.
//!
//! [`delay_before_renames`] is the older hook of the same kind: the env
//! render sleeps `WAVEMAP_AGENT_TEST_PAUSE_BEFORE_RENAME_MS` milliseconds
//! between its temp writes and its renames (`tests/tests/safety.rs` kills it
//! there). It is compiled away in release builds too.
//!
//! Every hook's name lives only in this file, inside `cfg(debug_assertions)`
//! code, so a release binary carries none of them
//! (`tests/tests/hardening.rs` checks the bytes of the release binary).
//!
//! The module depends on nothing else in the crate, so any module (down to
//! `fsutil`) may call it.

/// The variable naming the point to pause at.
#[cfg(debug_assertions)]
pub const PAUSE_AT: &str = "WAVEMAP_TEST_PAUSE_AT";
/// The variable naming the file the point's name is written to on arrival.
#[cfg(debug_assertions)]
pub const PAUSE_FILE: &str = "WAVEMAP_TEST_PAUSE_FILE";

/// Pause here, forever, if this is a debug build and `WAVEMAP_TEST_PAUSE_AT`
/// is `name`.
#[cfg(debug_assertions)]
pub fn pause(name: &str) {
    if std::env::var_os(PAUSE_AT).is_none_or(|at| at != name) {
        return;
    }
    announce(name);
    loop {
        // park() may return spuriously; only SIGKILL ends this.
        std::thread::park();
    }
}

/// Release builds: nothing, whatever the environment says.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn pause(_name: &str) {}

/// The variable holding the env render's sleep before its renames, in ms.
#[cfg(debug_assertions)]
pub const PAUSE_BEFORE_RENAME_MS: &str = "WAVEMAP_AGENT_TEST_PAUSE_BEFORE_RENAME_MS";

/// Sleep between the env render's temp writes and its renames, if this is a
/// debug build and `WAVEMAP_AGENT_TEST_PAUSE_BEFORE_RENAME_MS` says how long.
#[cfg(debug_assertions)]
pub fn delay_before_renames() {
    let Some(ms) = std::env::var(PAUSE_BEFORE_RENAME_MS)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return;
    };
    eprintln!("wavemap-agent: {PAUSE_BEFORE_RENAME_MS}: pausing {ms} ms before the renames");
    std::thread::sleep(std::time::Duration::from_millis(ms));
}

/// Release builds: nothing, whatever the environment says.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn delay_before_renames() {}

/// Every test hook's variable name, for the test that proves a release
/// binary holds none of them.
#[cfg(debug_assertions)]
pub const HOOK_NAMES: [&str; 3] = [PAUSE_AT, PAUSE_FILE, PAUSE_BEFORE_RENAME_MS];

#[cfg(debug_assertions)]
fn announce(name: &str) {
    use std::io::Write;
    eprintln!("wavemap-agent: paused at test point {name} ({PAUSE_AT})");
    let Some(file) = std::env::var_os(PAUSE_FILE) else {
        return;
    };
    // Written to a temp name and renamed, so a reader never sees half a name.
    let file = std::path::PathBuf::from(file);
    let temp = file.with_extension(format!("tmp-{}", std::process::id()));
    let written = std::fs::File::create(&temp)
        .and_then(|mut f| f.write_all(name.as_bytes()))
        .and_then(|()| std::fs::rename(&temp, &file));
    if let Err(e) = written {
        eprintln!(
            "wavemap-agent: cannot announce test point {name} in {}: {e}",
            file.display()
        );
    }
}
