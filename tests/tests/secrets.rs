//! The suite-wide secret scan (issue 10): one project goes through every
//! command of the suite's scenarios, success and failure paths, with
//! known secret values (SecureString parameters, a database password in a
//! `--database-url`, the registry token ECR hands out), and every place an
//! operator or CI could read is scanned for every one of them: stdout and
//! stderr of each run (markers, `--json`, `-v` debug logs), the operation
//! journal, the receipt and its history, the current-release state, the
//! daemon heartbeat and boot-recovery record, every other file under
//! the state and run folders, and what a (fake) journald receives from jobs
//! run with and without `-v`; `config check` with the database URL in each
//! form tokio-postgres accepts, and a config error on the password's line.
//!
//! The env files are the one place secrets belong; they are not scanned.
//! The agent logs to stderr outside systemd, so stderr is the log file.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine as _;
use wavemap_e2e::faultproxy::{Fault, FaultProxy};
use wavemap_e2e::{pg_fresh_database, stack, toml_str, Output, TestDir};

use super::faults::{drizzle_fixture, p, put_params, write_small_project, Down};
use super::hardening::{run_under_journal, FakeJournal};
use wavemap_e2e::{private_copy, release_args, with_execute};

/// Every run of the scenario, with what it printed.
struct Runs {
    td: TestDir,
    log: Vec<(String, Output)>,
}

impl Runs {
    /// Run, check the exit code, keep the output for the scan.
    fn run(&mut self, args: &[String], code: i32) -> Output {
        let out = self.td.run(args);
        assert_eq!(out.code, code, "`{}`\n{}", args.join(" "), out.dump());
        self.log.push((args.join(" "), out.clone()));
        out
    }

    fn run_str(&mut self, args: &[&str], code: i32) -> Output {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        self.run(&args, code)
    }
}

/// The text around a leak, with the secret itself masked, for the report.
fn context(text: &str, at: usize, len: usize) -> String {
    let mut start = at.saturating_sub(80);
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = (at + len + 40).min(text.len());
    while !text.is_char_boundary(end) {
        end += 1;
    }
    format!("{}<SECRET>{}", &text[start..at], &text[at + len..end]).replace('\n', "\\n")
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => files_under(&path, out),
            Ok(t) if t.is_file() => out.push(path),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_value_reaches_any_output_log_journal_receipt_or_state() {
    let s = stack();
    let mut td = TestDir::new("secrets");
    let _down = Down(td.name.clone());
    let project = td.name.clone();
    write_small_project(&mut td);

    // The secrets. Distinct, and never a substring of anything else.
    let tag = td.name.replace('_', "");
    let db_password = format!("ScrtDb{tag}Q7");
    let api_secret = format!("ScrtApi{tag}Z3");
    let awkward = format!("it's \"ScrtAwk{tag}\" $HOME \\n # x");
    let pem = format!("-----BEGIN KEY-----\nScrtPem{tag}Lw\n-----END KEY-----\n");
    let url_password = format!("ScrtUrl{tag}K9");
    let mut params = vec![
        p("postgres/POSTGRES_PASSWORD", &db_password, true),
        p("postgres/POSTGRES_USER", "wavemap", false),
        p(
            "backend/DATABASE_URL",
            &format!("postgres://wavemap:{db_password}@postgres:5432/wavemap"),
            true,
        ),
        p("backend/API_SECRET", &api_secret, true),
        p("backend/AWKWARD", &awkward, true),
        p("backend/TLS_KEY", &pem, true),
        p(
            "frontend/PUBLIC_API_ORIGIN",
            "https://dev.wavemap.app/api",
            false,
        ),
        // The fake backend's jobs print these variables (a test knob): the
        // agent must redact job output too, AWKWARD included, a SecureString
        // whose name says nothing (the render's record in the state folder
        // names it for the job runner).
        p(
            "backend/FAKE_PRINT_ENV",
            "API_SECRET,TLS_KEY,DATABASE_URL,AWKWARD",
            false,
        ),
    ];
    put_params(&td, &params).await;
    let registry_token = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", s.registry_user, s.registry_password));
    let pg_password = s
        .pg_url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(creds, _)| creds.split_once(':'))
        .map(|(_, pw)| pw.to_owned())
        .expect("the stack's PostgreSQL URL has a password");
    let secrets: Vec<(&str, String)> = vec![
        ("POSTGRES_PASSWORD", db_password.clone()),
        ("API_SECRET", api_secret.clone()),
        ("AWKWARD", awkward.clone()),
        ("AWKWARD (inner)", format!("ScrtAwk{tag}")),
        ("TLS_KEY (body)", format!("ScrtPem{tag}Lw")),
        ("--database-url password", url_password.clone()),
        ("stack PostgreSQL password", pg_password.clone()),
        ("registry password (ECR token)", s.registry_password.clone()),
        ("ECR authorization token", registry_token),
    ];

    let repo = td.name.replace('_', "-");
    let backend_a = private_copy(s.require("WAVEMAP_TEST_BACKEND_IMAGE_A"), &repo);
    let frontend_a = private_copy(s.require("WAVEMAP_TEST_FRONTEND_IMAGE_A"), &repo);
    let (backend_b, frontend_b) = (
        s.require("WAVEMAP_TEST_BACKEND_IMAGE_B").to_owned(),
        s.require("WAVEMAP_TEST_FRONTEND_IMAGE_B").to_owned(),
    );
    let mut runs = Runs {
        td,
        log: Vec::new(),
    };
    runs.td.set("runtime", "health_timeout", "60");
    for (key, sub) in [
        ("migrate_command", "migrate"),
        ("base_seed_command", "seed-base"),
        ("dev_seed_command", "seed-dev"),
        ("media_report_command", "media-report"),
    ] {
        runs.td.set(
            "jobs",
            key,
            format!("[\"/app/fake-backend\", {}]", toml_str(sub)),
        );
    }
    let started = Instant::now();

    // Runtime config and env.
    runs.run_str(&["runtime-config", "plan"], 0);
    runs.run_str(&["runtime-config", "live"], 0);
    runs.run_str(&["--json", "runtime-config", "live"], 0);
    runs.run_str(&["runtime-env"], 0);
    runs.run_str(&["-v", "runtime-env", "--execute"], 0);
    params.push(p("backend/API_SECRET", &format!("{api_secret}v2"), true));
    put_params(&runs.td, &params[params.len() - 1..]).await;
    runs.run_str(&["-v", "runtime-env"], 0);
    runs.run_str(&["--json", "runtime-env", "--execute"], 0);

    // Deploy A (ECR login and pull), record it, deploy B, roll back.
    let deploy_a = release_args("deploy", &backend_a, &frontend_a, &s.sha_a, "faults");
    runs.run(&deploy_a, 0);
    let mut verbose = vec!["-v".to_string()];
    verbose.extend(with_execute(deploy_a.clone()));
    runs.run(&verbose, 0);
    let record_a = release_args(
        "record-release",
        &backend_a,
        &frontend_a,
        &s.sha_a,
        "faults",
    );
    runs.run(&record_a, 0);
    runs.run(&with_execute(record_a.clone()), 0);
    let deploy_b = release_args("deploy", &backend_b, &frontend_b, &s.sha_b, "faults");
    runs.run(&with_execute(deploy_b.clone()), 0);
    // Refused: B runs but A is asked for; B runs and is not recorded.
    runs.run(&with_execute(record_a.clone()), 3);
    runs.run_str(&["runtime", "rollback"], 0);
    runs.run_str(&["-v", "runtime", "rollback", "--execute"], 0);
    runs.run_str(&["status"], 0);
    runs.run_str(&["--json", "status"], 0);
    runs.run_str(&["-v", "status"], 0);

    // Jobs in the API container print secret env values; the database
    // named in the rendered env (`postgres`) is not reachable from the host.
    runs.run_str(&["media", "discrepancy-report"], 0);
    runs.run_str(&["-v", "media", "discrepancy-report", "--execute"], 0);
    runs.run_str(&["--json", "media", "discrepancy-report", "--execute"], 0);
    // Under journald (a fake one, see hardening.rs), with and without -v:
    // the journal gets job output only with -v, and redacted either way.
    let journal = FakeJournal::new();
    for args in [
        vec!["media", "discrepancy-report", "--execute"],
        vec!["-v", "media", "discrepancy-report", "--execute"],
    ] {
        let (out, got) = run_under_journal(&runs.td, &journal, &args);
        assert_eq!(out.code, 0, "{}\njournal:\n{got}", out.dump());
        assert!(
            got.contains("MESSAGE"),
            "the fake journal received nothing: the scan of it would prove nothing"
        );
        let what = format!("{} (under journald)", args.join(" "));
        runs.log.push((what.clone(), out));
        runs.log.push((
            format!("{what}: the journal"),
            Output {
                code: 0,
                stdout: String::new(),
                stderr: got,
            },
        ));
    }
    runs.run_str(&["-v", "database", "status"], 69);
    runs.run_str(&["-v", "database", "migrate", "--execute"], 69);

    // Database status with passwords in the URL: refused, down, and a real
    // (empty) database whose gate blocks.
    let migrations = drizzle_fixture().display().to_string();
    let host = s
        .pg_url
        .rsplit_once('@')
        .map(|(_, h)| h)
        .expect("host part");
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let fresh = pg_fresh_database("secrets").await;
    for (url, code) in [
        (format!("postgres://wavemap:{url_password}@{host}"), 69),
        (
            format!("postgres://wavemap:{url_password}@127.0.0.1:{closed}/x"),
            69,
        ),
        (fresh, 3),
    ] {
        for json in [false, true] {
            let mut args: Vec<String> = Vec::new();
            if json {
                args.push("--json".into());
            }
            args.extend(
                [
                    "-v",
                    "database",
                    "status",
                    "--database-url",
                    &url,
                    "--migrations-dir",
                    &migrations,
                ]
                .map(String::from),
            );
            runs.run(&args, code);
        }
    }

    // Failure paths: SSM and ECR down, Docker down, bad input.
    let ssm = FaultProxy::start(&s.ssm_endpoint, Fault::Unavailable503);
    let ecr = FaultProxy::start(&s.ecr_endpoint, Fault::Throttle);
    runs.td.set("aws", "max_attempts", "2");
    runs.td.set("aws", "attempt_timeout", "2");
    runs.td.set("aws", "ssm_endpoint", toml_str(&ssm.url));
    runs.run_str(&["-v", "runtime-env", "--execute"], 69);
    runs.run_str(&["--json", "runtime-config", "live"], 69);
    runs.run(&with_execute(deploy_b.clone()), 69);
    runs.td
        .set("aws", "ssm_endpoint", toml_str(&s.ssm_endpoint));
    runs.td.set("aws", "ecr_endpoint", toml_str(&ecr.url));
    let sha = "89abcdef0123456789abcdef0123456789abcdef";
    let unknown = release_args(
        "deploy",
        &format!("{}/{repo}/backend:sha-{sha}", s.registry),
        &format!("{}/{repo}/frontend:sha-{sha}", s.registry),
        sha,
        "faults",
    );
    let mut v = vec!["-v".to_string()];
    v.extend(with_execute(unknown));
    runs.run(&v, 69);
    runs.td
        .set("aws", "ecr_endpoint", toml_str(&s.ecr_endpoint));
    let mut bad = release_args(
        "deploy",
        "127.0.0.1:5000/x/backend:latest",
        &frontend_b,
        sha,
        "faults",
    );
    bad.push("--execute".into());
    runs.run(&bad, 2);
    // A missing required parameter blocks the render (exit 3).
    let contract = "[{ name = \"backend/API_SECRET\", type = \"SecureString\" }, { name = \"backend/NOT_THERE\", type = \"SecureString\" }]";
    runs.td.set("runtime", "parameters", contract);
    runs.run_str(&["-v", "runtime-env", "--execute"], 3);
    runs.td.set("runtime", "parameters", "[]");
    let docker_host = format!("unix://{}", runs.td.path().join("none.sock").display());
    runs.td.set("docker", "host", toml_str(&docker_host));
    runs.td.set("docker", "connect_wait", "1");
    runs.run(&with_execute(deploy_b.clone()), 69);
    runs.run_str(&["--json", "status"], 0);
    runs.td
        .set("docker", "host", toml_str("unix:///var/run/docker.sock"));

    // `config check` (user data runs it at install: the cloud-init log
    // keeps it) with a password in database.url.
    runs.td.set(
        "database",
        "url",
        toml_str(&format!(
            "postgres://wavemap:{url_password}@127.0.0.1:9/wavemap"
        )),
    );
    runs.run_str(&["config", "check"], 0);
    runs.run_str(&["--json", "config", "check"], 0);
    // The two other forms tokio-postgres accepts (issue 24).
    for url in [
        format!("postgres://127.0.0.1:9/wavemap?user=wavemap&password={url_password}"),
        format!("host=127.0.0.1 port=9 user=wavemap password={url_password} dbname=wavemap"),
    ] {
        runs.td.set("database", "url", toml_str(&url));
        runs.run_str(&["config", "check"], 0);
        runs.run_str(&["--json", "config", "check"], 0);
    }
    // A config error on a line that holds the password: the error names
    // line, column and key, never the line's text.
    let good_config = std::fs::read_to_string(runs.td.config_path()).expect("config");
    let dup = format!(
        "[database]\nurl = {0}\nurl = {0}\n",
        toml_str(&format!(
            "postgres://wavemap:{url_password}@127.0.0.1:9/wavemap"
        ))
    );
    std::fs::write(runs.td.config_path(), dup).expect("write config");
    runs.run_str(&["config", "check"], 2);
    runs.run_str(&["--json", "-v", "status"], 2);
    std::fs::write(runs.td.config_path(), good_config).expect("restore config");
    runs.td.set(
        "database",
        "url",
        toml_str(&format!(
            "postgres://wavemap:{url_password}@127.0.0.1:9/wavemap"
        )),
    );

    // The daemon: boot recovery of the current release, until READY.
    let notify_path = runs.td.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).expect("notify socket");
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let child = runs
        .td
        .command()
        .args(["-v", "daemon"])
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn daemon");
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut buf = vec![0u8; 8192];
    let mut notes = String::new();
    while Instant::now() < deadline && !notes.contains("READY=1") {
        if let Ok(n) = notify.recv(&mut buf) {
            notes.push_str(&String::from_utf8_lossy(&buf[..n]));
            notes.push('\n');
        }
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut daemon: Output = child.wait_with_output().expect("daemon output").into();
    daemon.stdout.push_str(&notes);
    assert!(
        notes.contains("READY=1"),
        "daemon never READY\n{}",
        daemon.dump()
    );
    runs.log
        .push(("daemon (and its notify messages)".into(), daemon));
    eprintln!(
        "secret scan: {} runs in {:?}",
        runs.log.len(),
        started.elapsed()
    );

    // The scan.
    let mut files = Vec::new();
    files_under(&runs.td.state_dir(), &mut files);
    files_under(&runs.td.run_dir(), &mut files);
    files.push(runs.td.receipt_path());
    files.push(runs.td.compose_file().with_file_name(".env"));
    let mut leaks = Vec::new();
    for (what, out) in &runs.log {
        for (name, value) in &secrets {
            for (stream, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
                if let Some(at) = text.find(value.as_str()) {
                    leaks.push(format!(
                        "{name} in the {stream} of `{what}`: ...{}...",
                        context(text, at, value.len())
                    ));
                }
            }
        }
    }
    let mut scanned = Vec::new();
    for file in &files {
        let Ok(bytes) = std::fs::read(file) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        scanned.push(file.display().to_string());
        for (name, value) in &secrets {
            if let Some(at) = text.find(value.as_str()) {
                leaks.push(format!(
                    "{name} in {}: ...{}...",
                    file.display(),
                    context(&text, at, value.len())
                ));
            }
        }
    }
    for must in [
        "operations.jsonl",
        "current-release.json",
        "last-successful",
        "/jobs/",
    ] {
        assert!(
            scanned.iter().any(|f| f.contains(must)),
            "{must} was not scanned: {scanned:#?}"
        );
    }
    assert!(
        leaks.is_empty(),
        "secret values leaked:\n{}",
        leaks.join("\n")
    );
    assert_eq!(
        super::faults::running_image(&project, "api").await,
        wavemap_e2e::pinned(&backend_a).await,
        "the scenario did not end on the rolled-back release"
    );
}
