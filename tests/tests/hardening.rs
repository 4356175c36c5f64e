//! Issue 24, points 4, 6 and 7, against the real stack: secrets in config
//! errors and `config check`, job output and the journal, control
//! characters, fail-closed redaction of job output; the pending-render
//! file, the lock file's and the folders' modes, symlinked folders; and the
//! release binary's test hooks.
//!
//! The journal is observed through a fake journald: a unix datagram socket
//! the test listens on, bind-mounted at `/run/systemd/journal/socket` in a
//! private mount namespace (`unshare --mount`) that only the agent under
//! test lives in, with `JOURNAL_STREAM` naming its stderr so it logs to
//! "the journal" as it does under systemd. Other tests on the machine see
//! nothing of it.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wavemap_e2e::{mode, pg_fresh_database, stack, toml_str, Output, TestDir};

use super::faults::{base_params, env_files, put_params, snapshot};
use super::safety::{job_dir, sh, Api};

// --- secrets in config errors and `config check` --------------------------------------------

/// The three forms tokio-postgres accepts, each with `password` in it.
fn database_urls(password: &str) -> [String; 3] {
    [
        format!("postgres://app:{password}@db.internal:5432/app"),
        format!("postgres://db.internal:5432/app?user=app&password={password}&sslmode=prefer"),
        format!("host=db.internal port=5432 user=app password={password} dbname=app"),
    ]
}

#[test]
fn no_database_password_in_config_check_or_config_errors_in_any_form() {
    let mut td = TestDir::new("hard-cfg");
    let password = format!("HardPw{}", td.name.replace('_', ""));
    let shown = [
        "postgres://REDACTED:REDACTED@db.internal:5432/app",
        "postgres://db.internal:5432/app?user=app&password=REDACTED&sslmode=prefer",
        "host=db.internal port=5432 user=app password=REDACTED dbname=app",
    ];
    for (url, shown) in database_urls(&password).iter().zip(shown) {
        td.set("database", "url", toml_str(url));
        for args in [vec!["config", "check"], vec!["--json", "config", "check"]] {
            let out = td.run(&args);
            assert_eq!(out.code, 0, "{}", out.dump());
            assert!(
                !out.stdout.contains(&password) && !out.stderr.contains(&password),
                "the password of {url} is shown\n{}",
                out.dump()
            );
        }
        let out = td.run(["config", "check"]);
        assert!(out.stderr.contains(shown), "{shown}\n{}", out.dump());
    }

    // Config errors: a duplicated `url` line (the report), a value
    // of the wrong type next to it, an unterminated string. Each names the
    // line, the column and the key path, never the line's text.
    let config = td.config_path();
    for url in database_urls(&password) {
        let cases = [
            (
                format!("[database]\nurl = {0}\nurl = {0}\n", toml_str(&url)),
                "line 3, column 1, key database.url",
            ),
            (
                format!(
                    "[database]\nurl = {}\nconnect_timeout = {}\n",
                    toml_str(&url),
                    toml_str(&url)
                ),
                "line 3, column 19, key database.connect_timeout",
            ),
            (
                format!(
                    "[agent]\nenvironment = \"dev\"\n\n[database]\nurl = \"{}\n",
                    url
                ),
                "line 5",
            ),
        ];
        for (text, location) in cases {
            std::fs::write(&config, &text).unwrap();
            for args in [vec!["config", "check"], vec!["--json", "status"]] {
                let out = td.run(&args);
                assert_eq!(out.code, 2, "{text}\n{}", out.dump());
                assert!(
                    !out.stdout.contains(&password) && !out.stderr.contains(&password),
                    "a config error shows the password\n{text}\n{}",
                    out.dump()
                );
                assert!(
                    out.stderr.contains(location) || out.stdout.contains(location),
                    "the error does not say `{location}`\n{text}\n{}",
                    out.dump()
                );
            }
        }
    }
}

// --- files ----------------------------------------------------------------------------------

fn owner_mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .mode()
        & 0o7777
}

/// Run the agent under `umask`, to show modes are set, not inherited.
fn run_with_umask(td: &TestDir, umask: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("umask {umask}; exec \"$0\" \"$@\""))
        .arg(wavemap_e2e::agent_bin())
        .arg("--config")
        .arg(td.config_path())
        .args(args)
        .env_remove("WAVEMAP_AGENT_CONFIG")
        .stdin(Stdio::null());
    for (k, v) in &stack().vars {
        if k.starts_with("AWS_") {
            cmd.env(k, v);
        }
    }
    cmd.output().expect("run the agent").into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_file_and_the_folders_the_agent_creates_have_their_modes() {
    let td = TestDir::new("hard-modes");
    put_params(&td, &base_params("hard-modes-pw", "hard-modes-api")).await;
    for umask in ["000", "077"] {
        for dir in [td.state_dir(), td.run_dir(), td.path().join("runtime")] {
            let _ = std::fs::remove_dir_all(dir);
        }
        let out = run_with_umask(&td, umask, &["runtime-env", "--execute"]);
        assert_eq!(out.code, 0, "umask {umask}\n{}", out.dump());
        assert_eq!(
            owner_mode(&td.lock_path()),
            0o600,
            "lock file, umask {umask}"
        );
        assert_eq!(owner_mode(&td.run_dir()), 0o750, "run_dir, umask {umask}");
        assert_eq!(
            owner_mode(&td.state_dir()),
            0o750,
            "state_dir, umask {umask}"
        );
        assert_eq!(owner_mode(&td.env_dir()), 0o700, "env_dir, umask {umask}");
        assert_eq!(
            owner_mode(&td.path().join("runtime")),
            0o700,
            "the env folder's parent the agent made, umask {umask}"
        );
    }

    // A lock file an older agent left 0644 is narrowed.
    std::fs::set_permissions(td.lock_path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    // An env folder made looser by hand is narrowed at the next render, and
    // the log says what it was.
    std::fs::set_permissions(td.env_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = td.run(["runtime-env", "--execute"]);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(owner_mode(&td.lock_path()), 0o600);
    assert_eq!(owner_mode(&td.env_dir()), 0o700);
    assert!(
        out.stderr.contains("had mode 0755; narrowed to 0700"),
        "{}",
        out.dump()
    );
    // A dry run changes nothing, modes included.
    std::fs::set_permissions(td.env_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = td.run(["runtime-env"]);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(owner_mode(&td.env_dir()), 0o755);
    assert_eq!(mode(&td.env_dir()) & 0o777, 0o755);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlinked_folder_anywhere_above_a_file_is_refused() {
    let td = TestDir::new("hard-symdir");
    put_params(&td, &base_params("hard-symdir-pw", "hard-symdir-api")).await;
    // The env folder's parent (`runtime/`) is a symlink to a folder that
    // looks just like it: the last component (`env`) is a real folder, so
    // only a walk over every component catches it.
    let real = td.path().join("real-runtime");
    std::fs::create_dir_all(real.join("env")).unwrap();
    std::os::unix::fs::symlink(&real, td.path().join("runtime")).unwrap();
    let out = td.run(["runtime-env", "--execute"]);
    assert!(out.code != 0 && out.code != -1, "{}", out.dump());
    assert!(out.stderr.contains("symlink"), "{}", out.dump());
    assert_eq!(
        std::fs::read_dir(real.join("env")).unwrap().count(),
        0,
        "files written through a symlinked folder"
    );
    // The state folder too.
    std::fs::remove_file(td.path().join("runtime")).unwrap();
    let elsewhere = td.path().join("elsewhere");
    std::fs::create_dir_all(elsewhere.join("state")).unwrap();
    std::fs::remove_dir_all(td.state_dir()).ok();
    std::os::unix::fs::symlink(elsewhere.join("state"), td.state_dir()).unwrap();
    let out = td.run(["runtime-env", "--execute"]);
    assert!(out.code != 0 && out.code != -1, "{}", out.dump());
    assert!(out.stderr.contains("symlink"), "{}", out.dump());
    assert_eq!(
        std::fs::read_dir(elsewhere.join("state")).unwrap().count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_pending_render_file_is_refused_and_nothing_is_renamed() {
    let td = TestDir::new("hard-pending");
    put_params(&td, &base_params("hard-pending-pw", "hard-pending-api")).await;
    let out = td.run(["runtime-env", "--execute"]);
    assert_eq!(out.code, 0, "{}", out.dump());
    let files = env_files(&td);
    let before = snapshot(&files);
    let victim = td.path().join("victim.conf");
    std::fs::write(&victim, b"keep me\n").unwrap();
    let planted = td.env_dir().join(".wavemap-tmp-backend.env-4194000");
    let pending = td.state_dir().join("env-render-pending.json");
    let env = td.env_dir();
    // What an attacker who can write the state folder would plant: a temp
    // name outside env_dir, a target outside env_dir, a target that is not
    // `<group>.env`, a temp name not of the agent's naming.
    let cases: Vec<(PathBuf, PathBuf)> = vec![
        (planted.clone(), victim.clone()),
        (victim.clone(), env.join("backend.env")),
        (planted.clone(), env.join("authorized_keys")),
        (env.join("backend.env.new"), env.join("backend.env")),
        (planted.clone(), env.join("../victim.env")),
    ];
    for (temp, target) in cases {
        std::fs::write(&planted, b"EVIL='1'\n").unwrap();
        let text = serde_json::json!({
            "schemaVersion": 1,
            "pid": 4194000,
            "renames": [[temp, target]],
        })
        .to_string();
        std::fs::write(&pending, &text).unwrap();
        let out = td.run(["runtime-env", "--execute"]);
        assert_eq!(out.code, 2, "{text}\n{}", out.dump());
        assert!(
            out.stderr.contains("env-render-pending.json")
                && out.stderr.contains("nothing was renamed"),
            "{}",
            out.dump()
        );
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me\n");
        assert_eq!(snapshot(&files), before, "{text}");
        assert!(pending.exists(), "the evidence is kept");
    }
    // Once the operator removes it, the render runs (and sweeps the temp).
    std::fs::remove_file(&pending).unwrap();
    let out = td.run(["runtime-env", "--execute"]);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert!(!planted.exists());
}

// --- jobs: journal, control characters, fail-closed redaction --------------------------------

/// A fake journald: a datagram socket in a fresh folder, read by a thread
/// as datagrams come (an unread socket fills, and the agent's next log call
/// would block).
pub(crate) struct FakeJournal {
    dir: tempfile::TempDir,
    received: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl FakeJournal {
    pub(crate) fn new() -> FakeJournal {
        let dir = tempfile::tempdir().unwrap();
        let socket = UnixDatagram::bind(dir.path().join("socket")).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let received = Arc::new(Mutex::new(String::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (received, stop) = (received.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 256 * 1024];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = socket.recv(&mut buf) {
                        let mut all = received.lock().unwrap();
                        all.push_str(&String::from_utf8_lossy(&buf[..n]));
                        all.push('\n');
                    }
                }
            })
        };
        FakeJournal {
            dir,
            received,
            stop,
            reader: Some(reader),
        }
    }

    /// Every datagram received since the last call, as text.
    fn drain(&self) -> String {
        // Datagrams sent before the agent exited are queued by now; let the
        // reader take them.
        std::thread::sleep(Duration::from_millis(300));
        std::mem::take(&mut *self.received.lock().unwrap())
    }
}

impl Drop for FakeJournal {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Run the agent "under journald": in its own mount namespace where
/// `/run/systemd/journal` is the fake journal's folder, with stderr a file
/// that `JOURNAL_STREAM` names. Returns the output and what the journal got.
pub(crate) fn run_under_journal(
    td: &TestDir,
    journal: &FakeJournal,
    args: &[&str],
) -> (Output, String) {
    let stderr_path = td.path().join(format!("stderr-{}", std::process::id()));
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let meta = stderr.metadata().unwrap();
    let script = "mount -t tmpfs tmpfs /run/systemd && mkdir -p /run/systemd/journal \
                  && mount --bind \"$JOURNAL_DIR\" /run/systemd/journal && exec \"$@\"";
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        "sh",
    ])
    .arg(wavemap_e2e::agent_bin())
    .arg("--config")
    .arg(td.config_path())
    .args(args)
    .env("JOURNAL_DIR", journal.dir.path())
    .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
    .env_remove("WAVEMAP_AGENT_CONFIG")
    .stdin(Stdio::null())
    .stderr(stderr);
    for (k, v) in &stack().vars {
        if k.starts_with("AWS_") {
            cmd.env(k, v);
        }
    }
    let out = cmd.output().expect("run unshare");
    let mut text = String::new();
    std::fs::File::open(&stderr_path)
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let output = Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: text,
    };
    (output, journal.drain())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_output_reaches_the_journal_only_with_verbose_and_control_characters_never() {
    let mut td = job_dir("hard-journal");
    // The line is put together by the job, so the command line the agent
    // logs (which holds its parts) never matches it.
    let line = format!("JOBLINE-{}", td.name);
    // ESC [2J (clear screen), a CR that would hide text, and U+009B (CSI,
    // a C1 control) in UTF-8.
    td.set(
        "jobs",
        "migrate_command",
        sh(&format!(
            "printf '%s-%s a\\033[2Jb\\rc\\302\\23331md\\n' JOBLINE {}; exit 1",
            td.name
        )),
    );
    let url = pg_fresh_database("hard-journal").await;
    let _api = Api::start(&td, &url);
    let reset = ["database", "reset", "--execute", "--confirm", "dev"];

    // Not under journald: stderr (what SSM returns) shows the job's lines,
    // with the control characters replaced.
    let out = td.run(reset);
    assert_eq!(out.code, 1, "{}", out.dump());
    assert!(out.stderr.contains(&line), "{}", out.dump());
    assert!(
        out.stderr.contains("a\\x1b[2Jb\\x0dc\\u{9b}31md"),
        "control characters not replaced\n{}",
        out.dump()
    );
    for c in ['\u{1b}', '\r', '\u{9b}'] {
        assert!(!out.stderr.contains(c), "{c:?} on stderr\n{}", out.dump());
    }
    let log = PathBuf::from(out.marker("WAVEMAP_AGENT_JOB_LOG").expect("job log marker"));
    let logged = std::fs::read_to_string(log).unwrap();
    assert!(
        logged.contains(&line) && !logged.contains('\u{1b}'),
        "{logged}"
    );

    // Under journald, without -v: the agent's own lines are in the journal,
    // the job's output is not.
    let journal = FakeJournal::new();
    let (out, got) = run_under_journal(&td, &journal, &reset);
    assert_eq!(out.code, 1, "{}\njournal:\n{got}", out.dump());
    assert!(
        got.contains("in the API container"),
        "the fake journal received nothing from the agent: is JOURNAL_STREAM honoured?\n{got}"
    );
    assert!(
        !got.contains(&line),
        "job output reached the journal without -v:\n{got}"
    );
    // With -v it does, control characters replaced.
    let verbose: Vec<&str> = std::iter::once("-v").chain(reset).collect();
    let (out, got) = run_under_journal(&td, &journal, &verbose);
    assert_eq!(out.code, 1, "{}\njournal:\n{got}", out.dump());
    assert!(
        got.contains(&line),
        "-v: no job output in the journal:\n{got}"
    );
    for c in ['\u{1b}', '\u{9b}'] {
        assert!(!got.contains(c), "{c:?} in the journal:\n{got}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_secrets_cannot_be_known_does_not_start_and_exits_69() {
    let mut td = job_dir("hard-closed");
    td.set("jobs", "migrate_command", sh("echo MIGRATE-RAN; exit 0"));
    let url = pg_fresh_database("hard-closed").await;
    let api = Api::start(&td, &url);
    std::fs::create_dir_all(td.state_dir()).unwrap();
    // The SecureString names the last render recorded, unreadable as JSON
    // (truncated by a full disk, or edited).
    let names = td.state_dir().join("env-secure-variables.json");
    std::fs::write(
        &names,
        b"{\"schemaVersion\": 1, \"groups\": {\"backend\": [\"DATAB",
    )
    .unwrap();
    let out = td.run(["database", "reset", "--execute", "--confirm", "dev"]);
    assert_eq!(out.code, 69, "{}", out.dump());
    assert!(
        out.stderr.contains("env-secure-variables.json")
            && out.stderr.contains("the job was not started"),
        "{}",
        out.dump()
    );
    assert!(!out.stderr.contains("MIGRATE-RAN"), "{}", out.dump());
    assert_eq!(api.execs("MIGRATE-RAN"), 0, "a job exec was started");
    // A symlink in its place is refused the same way.
    std::fs::remove_file(&names).unwrap();
    std::os::unix::fs::symlink(td.path().join("agent.toml"), &names).unwrap();
    let out = td.run(["database", "reset", "--execute", "--confirm", "dev"]);
    assert_eq!(out.code, 69, "{}", out.dump());
    assert!(out.stderr.contains("symlink"), "{}", out.dump());
    assert_eq!(api.execs("MIGRATE-RAN"), 0, "a job exec was started");
    // With a readable record the job runs.
    std::fs::remove_file(&names).unwrap();
    let out = td.run(["database", "reset", "--execute", "--confirm", "dev"]);
    assert_ne!(out.code, 69, "{}", out.dump());
    assert!(out.stderr.contains("MIGRATE-RAN"), "{}", out.dump());
}

// --- test hooks -----------------------------------------------------------------------------

/// The release binary: `WAVEMAP_RELEASE_AGENT_BIN`, or `target/release`.
fn release_bin() -> PathBuf {
    std::env::var_os("WAVEMAP_RELEASE_AGENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| wavemap_e2e::repo_root().join("target/release/wavemap-agent"))
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
#[ignore = "needs a release build: cargo build --release -p wavemap-agent (bench/run and scripts/build-deb make one), then run with --ignored"]
fn the_release_binary_contains_no_test_hook_names() {
    let release = release_bin();
    let bytes = std::fs::read(&release).unwrap_or_else(|e| {
        panic!(
            "no release binary at {} ({e}): build it with `cargo build --release -p wavemap-agent` or set WAVEMAP_RELEASE_AGENT_BIN",
            release.display()
        )
    });
    // The scan finds the names where they are: in the debug binary.
    let debug = std::fs::read(wavemap_e2e::agent_bin()).expect("debug binary");
    for name in wavemap_agent::testpoint::HOOK_NAMES {
        assert!(
            contains(&debug, name),
            "{name} not in the debug binary: the scan is broken"
        );
        assert!(
            !contains(&bytes, name),
            "{name} is in the release binary {}",
            release.display()
        );
    }
    // Nothing else of the test-hook family either.
    for prefix in ["WAVEMAP_AGENT_TEST_", "WAVEMAP_TEST_"] {
        assert!(
            !contains(&bytes, prefix),
            "{prefix}* is in the release binary {}",
            release.display()
        );
    }
}
