//! The manual and the CLI agree: every command and every flag that
//! `wavemap-agent --help` shows is documented in `docs/`, and every
//! `--flag` that `README.md` or `docs/*.md` names exists, unless it is
//! another tool's (listed below with the tool). The command tree comes from
//! the agent crate itself (`wavemap_agent::cli::Cli`), so a new flag fails
//! here until it is documented. No table in those files states a row twice.
//!
//! Needs no stack: it reads files and the clap definitions.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use clap::CommandFactory;

/// Flags the docs name that belong to other tools, with the tool.
const FOREIGN: &[(&str, &str)] = &[
    // aws CLI (SSM send-command and document management)
    ("--cloud-watch-output-config", "aws ssm send-command"),
    ("--command-id", "aws ssm"),
    ("--comment", "aws ssm send-command"),
    ("--content", "aws ssm create-document"),
    ("--document-format", "aws ssm create-document"),
    ("--document-name", "aws ssm send-command"),
    ("--document-type", "aws ssm create-document"),
    ("--document-version", "aws ssm update-document"),
    ("--instance-id", "aws ssm get-command-invocation"),
    ("--instance-ids", "aws ssm send-command"),
    ("--max-concurrency", "aws ssm send-command"),
    ("--max-errors", "aws ssm send-command"),
    ("--name", "aws ssm describe-document"),
    ("--only-show-errors", "aws s3 cp"),
    ("--output", "aws"),
    ("--parameters", "aws ssm send-command"),
    ("--query", "aws"),
    ("--region", "aws"),
    ("--targets", "aws ssm send-command"),
    ("--timeout-seconds", "aws ssm send-command"),
    // cargo
    ("--all-targets", "cargo"),
    ("--ignored", "cargo test"),
    ("--release", "cargo build"),
    ("--test", "cargo test"),
    ("--workspace", "cargo"),
    // docker compose
    ("--env-file", "docker compose"),
    ("--force-recreate", "docker compose up"),
    ("--format", "docker compose config"),
    ("--hash", "docker compose config"),
    ("--filter", "docker image prune"),
    ("--pull", "docker compose create"),
    ("--wait", "docker compose up"),
    // coreutils and systemd
    ("--check", "sha256sum, cargo fmt"),
    ("--collect", "systemd-run"),
    ("--pipe", "systemd-run"),
    ("--root", "systemd-tmpfiles"),
    ("--strict", "sha256sum"),
    // this repository's scripts
    ("--allow-dirty", "bench/run"),
    ("--dev", "scripts/build-deb"),
    ("--no-build", "scripts/build-deb"),
    ("--no-root", "scripts/test"),
    ("--purge", "scripts/stack/down"),
    // prose about flags in general ("every `--flag` the docs name")
    (
        "--flag",
        "docs/development.md, the sentence about this test",
    ),
];

fn root() -> PathBuf {
    wavemap_e2e::repo_root()
}

/// `docs/*.md` by file name.
fn docs() -> BTreeMap<String, String> {
    let dir = root().join("docs");
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            out.insert(
                format!("docs/{}", path.file_name().expect("name").to_string_lossy()),
                text,
            );
        }
    }
    assert!(!out.is_empty(), "no docs/*.md in {}", dir.display());
    out
}

fn readme() -> String {
    let path = root().join("README.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Every visible command path (`runtime deploy`) and every visible long
/// flag (`--backend-image`) with the commands that take it.
fn cli_surface() -> (Vec<String>, BTreeMap<String, BTreeSet<String>>) {
    fn walk(
        cmd: &clap::Command,
        path: &[String],
        commands: &mut Vec<String>,
        flags: &mut BTreeMap<String, BTreeSet<String>>,
    ) {
        let at = if path.is_empty() {
            "wavemap-agent".to_owned()
        } else {
            path.join(" ")
        };
        for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
            if let Some(long) = arg.get_long() {
                flags
                    .entry(format!("--{long}"))
                    .or_default()
                    .insert(at.clone());
            }
        }
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            if sub.get_name() == "help" {
                continue;
            }
            let mut words = path.to_vec();
            words.push(sub.get_name().to_owned());
            commands.push(words.join(" "));
            walk(sub, &words, commands, flags);
        }
    }
    let mut cmd = wavemap_agent::cli::Cli::command();
    cmd.build();
    let mut commands = Vec::new();
    let mut flags = BTreeMap::new();
    walk(&cmd, &[], &mut commands, &mut flags);
    (commands, flags)
}

/// `--word` tokens in `text` (not `---` table rules, not a prefix such as
/// `--migrations-*`).
fn named_flags(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i + 2 < bytes.len() {
        let starts = bytes[i] == b'-'
            && bytes[i + 1] == b'-'
            && bytes[i + 2].is_ascii_lowercase()
            && (i == 0 || !(bytes[i - 1] == b'-' || bytes[i - 1].is_ascii_alphanumeric()));
        if !starts {
            i += 1;
            continue;
        }
        let mut end = i + 2;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end].is_ascii_digit()
                || bytes[end] == b'-')
        {
            end += 1;
        }
        let flag = &text[i..end];
        if !flag.ends_with('-') {
            out.insert(flag.to_owned());
        }
        i = end;
    }
    out
}

#[test]
fn every_command_and_flag_of_the_cli_is_in_docs() {
    let docs = docs();
    let all: String = docs.values().cloned().collect::<Vec<_>>().join("\n");
    let (commands, flags) = cli_surface();
    assert!(
        commands.iter().any(|c| c == "runtime deploy") && flags.contains_key("--backend-image"),
        "the command tree walk found {commands:?}"
    );
    let missing_commands: Vec<&String> = commands
        .iter()
        .filter(|c| !all.contains(&format!("`{c}")) && !all.contains(&format!(" {c}")))
        .collect();
    let named = named_flags(&all);
    let missing_flags: Vec<String> = flags
        .iter()
        .filter(|(flag, _)| !named.contains(*flag))
        .map(|(flag, at)| {
            format!(
                "{flag} (of {})",
                at.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect();
    assert!(
        missing_commands.is_empty() && missing_flags.is_empty(),
        "in `wavemap-agent --help` but in no docs/*.md page (document them, e.g. in \
         docs/commands-and-markers.md):\n  commands: {missing_commands:?}\n  flags: {missing_flags:?}"
    );
}

#[test]
fn every_flag_the_docs_name_exists() {
    let (_, flags) = cli_surface();
    let foreign: BTreeMap<&str, &str> = FOREIGN.iter().copied().collect();
    let mut files = docs();
    files.insert("README.md".into(), readme());
    let mut unknown: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (file, text) in &files {
        for flag in named_flags(text) {
            if !flags.contains_key(&flag) && !foreign.contains_key(flag.as_str()) {
                unknown.entry(flag).or_default().push(file.clone());
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "flags the docs name that `wavemap-agent` does not have (fix the docs, add the flag, \
         or, if it is another tool's, add it to FOREIGN in tests/tests/docs.rs with the tool):\n{}",
        unknown
            .iter()
            .map(|(flag, files)| format!("  {flag} in {}", files.join(", ")))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // A FOREIGN entry that shadows a real flag would hide a doc mistake.
    let shadowing: Vec<&str> = FOREIGN
        .iter()
        .map(|(f, _)| *f)
        .filter(|f| flags.contains_key(*f))
        .collect();
    assert!(
        shadowing.is_empty(),
        "FOREIGN lists the agent's own flags: {shadowing:?}"
    );
}

/// No table states a row twice (the first cell identifies a row), in the
/// README or any docs page.
#[test]
fn no_table_repeats_a_row() {
    let mut files = docs();
    files.insert("README.md".into(), readme());
    let mut repeats = Vec::new();
    for (file, text) in &files {
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut in_code = false;
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("```") {
                in_code = !in_code;
                continue;
            }
            let line = line.trim();
            if in_code || !line.starts_with('|') {
                // A table ends at the first line that is not a row.
                seen.clear();
                continue;
            }
            let first = line
                .trim_matches('|')
                .split('|')
                .next()
                .unwrap_or("")
                .trim();
            if first.chars().all(|c| c == '-' || c == ':') {
                continue;
            }
            if !seen.insert(first.to_owned()) {
                repeats.push(format!("{file}:{}: {first}", n + 1));
            }
        }
    }
    assert!(
        repeats.is_empty(),
        "table rows stated twice:\n{}",
        repeats.join("\n")
    );
}

#[test]
fn readme_stays_a_front_door() {
    let lines = readme().lines().count();
    assert!(
        lines <= 400,
        "README.md has {lines} lines; the bar is 400 (aim for 300): move detail into docs/"
    );
}

#[test]
fn named_flags_are_found_and_rules_are_not() {
    let found =
        named_flags("|---|---| `--backend-image URI`, --execute. `--migrations-*` a--b x--y");
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        vec!["--backend-image".to_owned(), "--execute".to_owned()]
    );
}
