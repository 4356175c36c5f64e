//! Packaging: the systemd unit, tmpfiles.d, the default config and the .deb.
//!
//! The unit is checked by `systemd-analyze verify` (which insists that the
//! ExecStart binary exists, so a copy of the unit points at the freshly
//! built `target/debug/wavemap-agent`; the installed unit is verified again
//! at its real path by the .deb test) and by the settings the daemon relies
//! on. The tmpfiles.d file runs through `systemd-tmpfiles --root`. The
//! default config is compared with `wavemap-agent config check`, so it
//! cannot drift from `agent/src/config/`.
//!
//! The .deb test installs into the real /usr/bin, /etc and /lib/systemd of
//! this machine, so it is `#[ignore]`d in a plain `cargo test`: `scripts/test`
//! (root, which CI is) builds the .deb and runs it explicitly with
//! `--ignored`. It purges the package and its test files afterwards.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use wavemap_e2e::mode;

fn packaging_dir() -> PathBuf {
    wavemap_e2e::repo_root().join("packaging")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(program: &str, args: &[&str]) -> Run {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (is it installed?): {e}"));
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn run_ok(program: &str, args: &[&str]) -> Run {
    let r = run(program, args);
    assert_eq!(
        r.code, 0,
        "{program} {args:?} failed:\n{}\n{}",
        r.stdout, r.stderr
    );
    r
}

/// `section -> key -> values` (a key may repeat in a unit file).
fn parse_unit(text: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("unit line without '=': {line:?}"));
        out.entry(section.clone())
            .or_default()
            .entry(key.trim().to_owned())
            .or_default()
            .push(value.trim().to_owned());
    }
    out
}

fn unit_path() -> PathBuf {
    packaging_dir().join("wavemap-agent.service")
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    // verify needs ExecStart's binary to exist: point a copy of the unit at
    // the built agent. Same file name, so verify reads it as this unit.
    let dir = tempfile::tempdir().expect("temp dir");
    let agent = wavemap_e2e::agent_bin();
    let text = read(&unit_path());
    assert!(text.contains("ExecStart=/usr/bin/wavemap-agent daemon"));
    let copy = dir.path().join("wavemap-agent.service");
    // With its drop-in (the sandbox), as installed.
    let dropins = dir.path().join("wavemap-agent.service.d");
    std::fs::create_dir_all(&dropins).expect("mkdir drop-in dir");
    std::fs::copy(sandbox_conf_path(), dropins.join("sandbox.conf")).expect("copy drop-in");
    std::fs::write(
        &copy,
        text.replace(
            "ExecStart=/usr/bin/wavemap-agent ",
            &format!("ExecStart={} ", agent.display()),
        ),
    )
    .expect("write unit copy");
    let r = run("systemd-analyze", &["verify", &copy.display().to_string()]);
    assert_eq!(
        r.code, 0,
        "systemd-analyze verify refused the unit:\n{}",
        r.stderr
    );
    // Unknown keys and bad values are only warnings (exit 0): none allowed.
    assert!(
        r.stderr.trim().is_empty() && r.stdout.trim().is_empty(),
        "systemd-analyze verify warned:\n{}{}",
        r.stdout,
        r.stderr
    );
}

/// The sandbox drop-in: the hardening of the daemon's unit and of every
/// command an SSM document runs (packaging/wavemap-agent-sandbox).
fn sandbox_conf_path() -> PathBuf {
    packaging_dir().join("wavemap-agent-sandbox.conf")
}

/// Where the .deb installs the drop-in, which the sandbox wrapper reads.
const SANDBOX_CONF_INSTALLED: &str = "/lib/systemd/system/wavemap-agent.service.d/sandbox.conf";
/// Where the .deb installs the wrapper the documents call.
const SANDBOX_INSTALLED: &str = "/usr/lib/wavemap-agent/sandbox";

/// The unit as systemd reads it: the unit file, then its drop-in.
fn unit_with_dropin() -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut unit = parse_unit(&read(&unit_path()));
    for (section, keys) in parse_unit(&read(&sandbox_conf_path())) {
        let into = unit.entry(section).or_default();
        for (key, values) in keys {
            into.entry(key).or_default().extend(values);
        }
    }
    unit
}

/// One sandbox for the daemon and the documents' commands: the drop-in is
/// the only place the hardening is written (the unit file repeats none of
/// it), the .deb installs it as the unit's drop-in at the very path the
/// wrapper reads, and every document runs the agent through that wrapper,
/// at the path the .deb installs it. The wrapper turns the drop-in's lines
/// into systemd-run properties (systemd.rs checks the transient unit).
#[test]
fn the_unit_and_the_documents_share_one_sandbox_file() {
    let conf = parse_unit(&read(&sandbox_conf_path()));
    assert_eq!(
        conf.keys().collect::<Vec<_>>(),
        ["Service"],
        "the drop-in has [Service] only (systemd-run takes service properties)"
    );
    let hardening = &conf["Service"];
    for key in [
        "ProtectSystem",
        "NoNewPrivileges",
        "SystemCallFilter",
        "CapabilityBoundingSet",
    ] {
        assert!(hardening.contains_key(key), "the drop-in sets {key}");
    }
    let unit = parse_unit(&read(&unit_path()));
    let repeated: Vec<&String> = unit
        .get("Service")
        .map(|s| s.keys().filter(|k| hardening.contains_key(*k)).collect())
        .unwrap_or_default();
    assert!(
        repeated.is_empty(),
        "the unit file sets {repeated:?} itself: write them in the drop-in only"
    );
    let wrapper = read(&packaging_dir().join("wavemap-agent-sandbox"));
    assert!(
        wrapper.contains(&format!("conf={SANDBOX_CONF_INSTALLED}\n")),
        "the wrapper reads the installed drop-in"
    );
    let cargo = read(&wavemap_e2e::repo_root().join("agent/Cargo.toml"));
    for (source, target) in [
        (
            "../packaging/wavemap-agent-sandbox.conf",
            SANDBOX_CONF_INSTALLED,
        ),
        ("../packaging/wavemap-agent-sandbox", SANDBOX_INSTALLED),
    ] {
        let asset = format!("[\"{source}\", \"{}\"", target.trim_start_matches('/'));
        assert!(cargo.contains(&asset), "agent/Cargo.toml ships {asset}");
    }
    for entry in std::fs::read_dir(wavemap_e2e::repo_root().join("ssm-documents")).expect("ls") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = read(&path);
            assert!(
                text.contains(&format!("${{WAVEMAP_AGENT_SANDBOX:-{SANDBOX_INSTALLED}}}")),
                "{} runs the agent through {SANDBOX_INSTALLED}",
                path.display()
            );
        }
    }
}

/// Without systemd the wrapper refuses (exit 69, naming why) and never runs
/// the command outside the sandbox. systemd is hidden from it with a private
/// mount namespace and an empty /run (root, which scripts/test is).
#[test]
fn the_sandbox_refuses_without_systemd_and_never_runs_the_command_unsandboxed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let canary = dir.path().join("ran");
    let wrapper = packaging_dir().join("wavemap-agent-sandbox");
    let script = format!(
        "mount -t tmpfs none /run && exec sh '{}' /bin/touch '{}'",
        wrapper.display(),
        canary.display()
    );
    let r = run("unshare", &["--mount", "sh", "-c", &script]);
    assert_eq!(r.code, 69, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("systemd is not running"), "{}", r.stderr);
    assert!(
        r.stdout.contains("WAVEMAP_AGENT_EXIT_CODE=69"),
        "markers for CI: {}",
        r.stdout
    );
    assert!(!canary.exists(), "the command ran outside the sandbox");
}

#[test]
fn unit_has_the_settings_the_daemon_relies_on() {
    let unit = unit_with_dropin();
    let get = |section: &str, key: &str| -> Vec<String> {
        unit.get(section)
            .and_then(|s| s.get(key))
            .cloned()
            .unwrap_or_default()
    };
    let one = |section: &str, key: &str| -> String {
        let v = get(section, key);
        assert_eq!(
            v.len(),
            1,
            "[{section}] {key}: expected one value, got {v:?}"
        );
        v[0].clone()
    };
    let words = |section: &str, key: &str| -> Vec<String> {
        get(section, key)
            .iter()
            .flat_map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .collect()
    };

    for dep in ["docker.service", "network-online.target"] {
        assert!(
            words("Unit", "Wants").contains(&dep.to_owned()),
            "Wants={dep}"
        );
        assert!(
            words("Unit", "After").contains(&dep.to_owned()),
            "After={dep}"
        );
    }
    assert_eq!(one("Service", "Type"), "notify");
    assert_eq!(one("Service", "NotifyAccess"), "main");
    assert_eq!(one("Service", "ExecStart"), "/usr/bin/wavemap-agent daemon");
    assert_eq!(one("Service", "WatchdogSec"), "60");
    assert_eq!(one("Service", "Restart"), "on-failure");
    assert_eq!(one("Service", "TimeoutStopSec"), "30");
    assert_eq!(one("Service", "KillMode"), "mixed");
    // Boot recovery: Docker wait (300) + health (300) + pull and SSM.
    let start: u64 = one("Service", "TimeoutStartSec").parse().expect("seconds");
    assert!(
        start >= 600,
        "TimeoutStartSec={start} is shorter than boot recovery"
    );
    // Runs as root: the Docker socket is root:docker 0660.
    assert!(
        get("Service", "User").is_empty(),
        "User= would lose the Docker socket"
    );

    assert_eq!(one("Service", "ProtectSystem"), "strict");
    for (key, value) in [
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        // The lock lives here and SSM commands use it while the service is
        // stopped: systemd must not delete the folder at stop.
        ("RuntimeDirectoryPreserve", "yes"),
    ] {
        assert_eq!(one("Service", key), value, "{key}");
    }
    // Everything the agent writes by default is writable under
    // ProtectSystem=strict; the Docker socket is not bind-mounted (a stale
    // bind would outlive a dockerd restart).
    let rw: Vec<String> = words("Service", "ReadWritePaths")
        .into_iter()
        .map(|p| p.trim_start_matches('-').to_owned())
        .collect();
    for path in [
        "/run/wavemap-agent",
        "/var/lib/wavemap-agent",
        "/opt/wavemap/runtime/env/backend.env",
        "/opt/wavemap/deployment/last-successful-runtime-release.json",
    ] {
        assert!(
            rw.iter().any(|w| Path::new(path).starts_with(w)),
            "{path} is not under ReadWritePaths {rw:?}"
        );
    }
    assert!(
        !rw.iter().any(|w| w.contains("docker.sock")),
        "do not bind the Docker socket"
    );
    let families = words("Service", "RestrictAddressFamilies");
    assert!(
        families.contains(&"AF_UNIX".to_owned()),
        "Docker socket and journald"
    );
    assert!(families.contains(&"AF_INET".to_owned()), "SSM and ECR");
    assert_eq!(one("Install", "WantedBy"), "multi-user.target");
}

#[test]
fn tmpfiles_create_the_agent_folders_and_never_clean_them() {
    let root = tempfile::tempdir().expect("temp dir");
    let file = packaging_dir().join("wavemap-agent.tmpfile");
    let root_arg = format!("--root={}", root.path().display());
    let file_arg = file.display().to_string();
    run_ok("systemd-tmpfiles", &["--create", &root_arg, &file_arg]);
    for (path, want) in [
        ("run/wavemap-agent", 0o750),
        ("var/lib/wavemap-agent", 0o750),
        ("opt/wavemap", 0o755),
    ] {
        let p = root.path().join(path);
        assert!(p.is_dir(), "{path} not created");
        assert_eq!(mode(&p), want, "{path} mode");
    }
    // State written by the agent survives --clean and --remove.
    let state = root
        .path()
        .join("var/lib/wavemap-agent/current-release.json");
    let lock = root.path().join("run/wavemap-agent/agent.lock");
    std::fs::write(&state, "{}").expect("write state");
    std::fs::write(&lock, "").expect("write lock");
    run_ok(
        "systemd-tmpfiles",
        &["--create", "--clean", "--remove", &root_arg, &file_arg],
    );
    assert_eq!(read(&state), "{}");
    assert!(lock.exists());
}

/// `wavemap-agent config check` prints the effective config on stderr.
fn effective_config(config: &Path) -> String {
    let agent = wavemap_e2e::agent_bin();
    let out = Command::new(&agent)
        .arg("--config")
        .arg(config)
        .args(["config", "check"])
        .env_remove("WAVEMAP_AGENT_CONFIG")
        .output()
        .expect("run agent");
    assert!(
        out.status.success(),
        "config check {} failed: {}",
        config.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `[section]` and `key` pairs of TOML text, with `section` "" at the top.
fn keys(toml_text: &str) -> Vec<(String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in toml_text.lines() {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
        } else if let Some((key, _)) = line.split_once(" = ") {
            if key.chars().all(|c| c.is_ascii_lowercase() || c == '_') && !key.is_empty() {
                out.push((section.clone(), key.to_owned()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn default_config_lists_every_key_with_its_default() {
    let dir = tempfile::tempdir().expect("temp dir");
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "").expect("write");
    let defaults = effective_config(&empty);

    let shipped_path = packaging_dir().join("agent.toml");
    let shipped = read(&shipped_path);
    // As shipped everything is commented out: the effective config is the
    // built-in defaults, so an upgrade that changes a default applies it.
    assert_eq!(effective_config(&shipped_path), defaults);

    // Uncommented ('#' directly followed by a letter or '['), the file must
    // name every key the agent has and give each exactly its default.
    let uncommented: String = shipped
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase() || c == '[') => rest,
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let uncommented_path = dir.path().join("uncommented.toml");
    std::fs::write(&uncommented_path, &uncommented).expect("write");
    assert_eq!(
        keys(&uncommented),
        keys(&defaults),
        "packaging/agent.toml and `wavemap-agent config check` disagree on the keys; \
         the effective defaults are:\n{defaults}"
    );
    assert_eq!(
        effective_config(&uncommented_path),
        defaults,
        "a value in packaging/agent.toml is not the agent's default"
    );
}

#[test]
fn user_data_snippet_is_valid_bash_and_installs_checked_package() {
    let path = packaging_dir().join("user-data.sh");
    let text = read(&path);
    run_ok("bash", &["-n", &path.display().to_string()]);
    assert!(
        text.starts_with("#!/bin/bash\n"),
        "cloud-init runs it by shebang"
    );
    assert!(
        text.contains("set -euo pipefail"),
        "stops at the first failed step"
    );
    // The package is checked before it is installed, then enabled and started
    // without holding cloud-init for the whole boot recovery.
    let pos = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("user-data.sh lacks {needle:?}"))
    };
    assert!(pos("sha256sum --check") < pos("apt-get install -y -q \"$deb\""));
    assert!(pos("apt-get install -y -q \"$deb\"") < pos("systemctl enable wavemap-agent.service"));
    assert!(
        pos("systemctl enable wavemap-agent.service")
            < pos("systemctl start --no-block wavemap-agent.service")
    );
    assert!(
        text.contains("3.3.2746.0"),
        "names the SSM Agent the documents need"
    );
    // Compose v2 for the operator's `docker compose`: Ubuntu's package,
    // Debian 13's docker-compose (v2), Debian 12's checked release binary;
    // after Docker itself, before the agent.
    for needle in [
        "apt-get install -y -q docker-compose-v2",
        "grep -q '^Version: 2\\.'",
        "echo \"$WAVEMAP_COMPOSE_PLUGIN_SHA256  $plugin\" | sha256sum --check --strict -",
        "/usr/local/lib/docker/cli-plugins/docker-compose",
    ] {
        pos(needle);
    }
    assert!(pos("apt-get install -y -q docker.io") < pos("docker-compose-v2"));
    assert!(pos("docker-compose-v2") < pos("apt-get install -y -q \"$deb\""));
}

// ---------------------------------------------------------------------------
// The .deb on this machine.

const PACKAGE: &str = "wavemap-agent";
const RECEIPT: &str = "/opt/wavemap/deployment/last-successful-runtime-release.json";

/// What the machine looked like before the test, so it can be put back.
struct Restore {
    created_files: Vec<PathBuf>,
    created_dirs: Vec<PathBuf>,
}

impl Restore {
    /// Create `path` with `bytes` unless it exists; remember what was new.
    fn sentinel(&mut self, path: &Path, bytes: &str) -> String {
        let mut missing = Vec::new();
        let mut parent = path.parent();
        while let Some(p) = parent {
            if p.exists() {
                break;
            }
            missing.push(p.to_path_buf());
            parent = p.parent();
        }
        self.created_dirs.extend(missing);
        if let Ok(existing) = std::fs::read_to_string(path) {
            return existing;
        }
        std::fs::create_dir_all(path.parent().expect("parent")).expect("create dirs");
        std::fs::write(path, bytes).expect("write sentinel");
        self.created_files.push(path.to_path_buf());
        bytes.to_owned()
    }

    fn note_dir(&mut self, path: &str) {
        if !Path::new(path).exists() {
            self.created_dirs.push(PathBuf::from(path));
        }
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        if run("dpkg", &["-s", PACKAGE]).code == 0 {
            let _ = run("dpkg", &["--purge", PACKAGE]);
        }
        for file in &self.created_files {
            let _ = std::fs::remove_file(file);
        }
        // Deepest first; only folders that are empty again.
        self.created_dirs
            .sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for dir in &self.created_dirs {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn deb_path() -> PathBuf {
    if let Some(deb) = std::env::var_os("WAVEMAP_TEST_DEB") {
        return PathBuf::from(deb);
    }
    let script = wavemap_e2e::repo_root().join("scripts/build-deb");
    let r = run_ok(&script.display().to_string(), &[]);
    let path = r
        .stdout
        .lines()
        .last()
        .expect("build-deb prints the .deb path");
    PathBuf::from(path.trim())
}

/// Where the man page and the completions go (Debian's paths).
const MAN_PAGE: &str = "/usr/share/man/man1/wavemap-agent.1.gz";
const BASH_COMPLETION: &str = "/usr/share/bash-completion/completions/wavemap-agent";
const ZSH_COMPLETION: &str = "/usr/share/zsh/vendor-completions/_wavemap-agent";

/// The .deb carries the man page and the completions generated from the
/// binary it ships (`dpkg-deb -c`), and `man -l` renders the page with the
/// commands and flags of that binary. Needs no root: it only unpacks.
#[test]
#[ignore = "needs the .deb (cargo-deb); scripts/test runs it with --ignored once the .deb is built"]
fn deb_ships_man_page_and_completions() {
    let deb = deb_path();
    let deb_arg = deb.display().to_string();
    let listing = run_ok("dpkg-deb", &["-c", &deb_arg]).stdout;
    for path in [MAN_PAGE, BASH_COMPLETION, ZSH_COMPLETION] {
        assert!(
            listing
                .lines()
                .any(|l| l.ends_with(&format!(".{path}")) && l.starts_with("-rw-r--r--")),
            "{path} (mode 0644) is not in the .deb:\n{listing}"
        );
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().display().to_string();
    run_ok("dpkg-deb", &["-x", &deb_arg, &root]);
    let page = format!("{root}{MAN_PAGE}");
    let man = Command::new("man")
        .args(["-l", &page])
        .env("MANWIDTH", "100")
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .output()
        .unwrap_or_else(|e| panic!("cannot run man (apt-get install man-db): {e}"));
    let text = String::from_utf8_lossy(&man.stdout);
    assert!(
        man.status.success(),
        "man -l {page} failed: {}",
        String::from_utf8_lossy(&man.stderr)
    );
    // What an operator looks for: the name, the exit codes, every command.
    for needle in [
        "wavemap-agent",
        "Exit codes",
        "wavemap-agent runtime deploy",
        "wavemap-agent runtime receipt",
        "wavemap-agent database reset",
        "--backend-image",
        "--confirm",
        "--execute",
    ] {
        assert!(
            text.contains(needle),
            "the man page lacks {needle:?}:\n{text}"
        );
    }
    assert!(
        !text.contains("generate"),
        "the hidden packaging command stays out of the page:\n{text}"
    );
    // The bash completion is valid bash and completes the subcommands.
    let bash = format!("{root}{BASH_COMPLETION}");
    run_ok("bash", &["-n", &bash]);
    let script = format!(
        "source {bash:?}; COMP_WORDS=(wavemap-agent runtime re); COMP_CWORD=2; \
         COMP_LINE='wavemap-agent runtime re'; COMP_POINT=${{#COMP_LINE}}; \
         _wavemap__agent wavemap-agent re runtime; printf '%s\\n' \"${{COMPREPLY[@]}}\""
    );
    let words = run_ok("bash", &["-c", &script]).stdout;
    for word in ["receipt", "record-release"] {
        assert!(
            words.lines().any(|l| l == word),
            "bash completion of `runtime re` lacks {word}: {words:?}"
        );
    }
}

#[test]
#[ignore = "installs the .deb into this machine's /usr, /etc and /lib/systemd (root); scripts/test runs it with --ignored"]
fn deb_installs_upgrades_and_purges_keeping_state() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root: dpkg -i writes /usr/bin and /etc (run it through scripts/test as root)"
    );
    assert_ne!(
        run("dpkg", &["-s", PACKAGE]).code,
        0,
        "{PACKAGE} is already installed here; this test installs and purges it, so remove it first"
    );

    let deb = deb_path();
    let deb_arg = deb.display().to_string();
    let version = run_ok("dpkg-deb", &["--field", &deb_arg, "Version"]).stdout;
    // 0.1.0-1: the crate version, then the Debian revision.
    let version = version.trim();
    let version = version
        .rsplit_once('-')
        .map_or(version, |(upstream, _)| upstream);

    let mut restore = Restore {
        created_files: Vec::new(),
        created_dirs: Vec::new(),
    };
    for dir in [
        "/etc/wavemap-agent",
        "/var/lib/wavemap-agent",
        "/run/wavemap-agent",
        "/opt/wavemap",
    ] {
        restore.note_dir(dir);
    }
    let receipt_bytes = restore.sentinel(
        Path::new(RECEIPT),
        "{\"schema_version\":1,\"note\":\"wavemap packaging test\"}\n",
    );
    let state_file = PathBuf::from(format!(
        "/var/lib/wavemap-agent/packaging-test-{}.json",
        std::process::id()
    ));
    let state_bytes = restore.sentinel(&state_file, "{\"packaging\":\"test\"}\n");

    // Install.
    run_ok("dpkg", &["-i", &deb_arg]);
    let bin = Path::new("/usr/bin/wavemap-agent");
    assert_eq!(mode(bin), 0o755);
    let v = run_ok("/usr/bin/wavemap-agent", &["--version"]);
    assert_eq!(v.stdout.trim(), format!("wavemap-agent {version}"));

    let unit = Path::new("/lib/systemd/system/wavemap-agent.service");
    assert_eq!(read(unit), read(&unit_path()), "installed unit");
    assert_eq!(
        read(Path::new(SANDBOX_CONF_INSTALLED)),
        read(&sandbox_conf_path()),
        "installed sandbox drop-in"
    );
    assert_eq!(
        mode(Path::new(SANDBOX_INSTALLED)),
        0o755,
        "the sandbox wrapper"
    );
    assert_eq!(
        read(Path::new("/usr/lib/tmpfiles.d/wavemap-agent.conf")),
        read(&packaging_dir().join("wavemap-agent.tmpfile")),
        "installed tmpfiles.d"
    );
    let conf = Path::new("/etc/wavemap-agent/agent.toml");
    assert_eq!(
        read(conf),
        read(&packaging_dir().join("agent.toml")),
        "installed config"
    );
    assert_eq!(mode(conf), 0o640);
    let conffiles = run_ok("dpkg-query", &["-W", "-f=${Conffiles}", PACKAGE]).stdout;
    assert!(
        conffiles.contains("/etc/wavemap-agent/agent.toml"),
        "agent.toml is a conffile: {conffiles}"
    );
    // Enabled (no running systemd needed), not started by the package.
    let wants = Path::new("/etc/systemd/system/multi-user.target.wants/wavemap-agent.service");
    assert!(wants.symlink_metadata().is_ok(), "the unit is enabled");
    // The postinst made the folders even without a running systemd.
    for dir in ["/var/lib/wavemap-agent", "/run/wavemap-agent"] {
        assert!(Path::new(dir).is_dir(), "{dir}");
    }
    // The installed unit verifies at its real path, the shipped config is
    // what the installed binary accepts, and the documents are shipped.
    let verify = run("systemd-analyze", &["verify", &unit.display().to_string()]);
    assert_eq!(verify.code, 0, "{}", verify.stderr);
    assert!(verify.stderr.trim().is_empty(), "{}", verify.stderr);
    let check = run_ok("/usr/bin/wavemap-agent", &["config", "check"]);
    assert!(
        check.stdout.contains("WAVEMAP_CONFIG_VALID=true"),
        "{}",
        check.stdout
    );
    assert!(
        Path::new("/usr/share/wavemap-agent/ssm-documents/wavemap-runtime-deploy.json").exists()
    );
    // `man wavemap-agent` finds the installed page.
    assert_eq!(mode(Path::new(MAN_PAGE)), 0o644);
    let man = run("man", &["-w", "wavemap-agent"]);
    assert_eq!(man.stdout.trim(), MAN_PAGE, "man -w: {}", man.stderr);

    // Upgrade (the same version again runs the upgrade path of postinst):
    // an operator's edit to the conffile stays.
    let mut edited = read(conf);
    edited.push_str("\n# operator edit kept across upgrades\n");
    std::fs::write(conf, &edited).expect("edit conffile");
    run_ok("dpkg", &["-i", &deb_arg]);
    assert_eq!(
        read(conf),
        edited,
        "the operator's config survives an upgrade"
    );
    run_ok("/usr/bin/wavemap-agent", &["--version"]);

    // Purge: the package's files go, the release state and receipt stay.
    run_ok("dpkg", &["--purge", PACKAGE]);
    for gone in [
        "/usr/bin/wavemap-agent",
        "/lib/systemd/system/wavemap-agent.service",
        "/usr/lib/systemd/system/wavemap-agent.service",
        "/usr/lib/tmpfiles.d/wavemap-agent.conf",
        "/etc/wavemap-agent/agent.toml",
        "/etc/wavemap-agent",
        "/usr/share/wavemap-agent",
        MAN_PAGE,
        BASH_COMPLETION,
        ZSH_COMPLETION,
    ] {
        assert!(
            Path::new(gone).symlink_metadata().is_err(),
            "{gone} survived purge"
        );
    }
    assert!(
        wants.symlink_metadata().is_err(),
        "enable link survived purge"
    );
    assert_eq!(
        read(Path::new(RECEIPT)),
        receipt_bytes,
        "the receipt survives purge"
    );
    assert_eq!(read(&state_file), state_bytes, "agent state survives purge");
    assert_ne!(run("dpkg", &["-s", PACKAGE]).code, 0, "purged");
    drop(restore);
}
