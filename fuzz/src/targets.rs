//! The fuzz target bodies, one function per hostile input the agent reads.
//!
//! This one file is compiled twice: by the cargo-fuzz crate (`fuzz/`, the
//! `fuzz_target!` wrappers in `fuzz_targets/`, coverage-guided, nightly or
//! `RUSTC_BOOTSTRAP`) and by the stable end-to-end test binary
//! (`tests/tests/fuzz.rs`, a seeded random mutator that runs in CI for a
//! bounded time). Each function must never panic, whatever the bytes; the
//! few properties worth more than "no panic" are asserted here so both
//! runners check them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use wavemap_agent::compose::interpolate;
use wavemap_agent::database::journal::{self, Files};
use wavemap_agent::envfile;
use wavemap_agent::image::ImageRef;
use wavemap_agent::release;

/// One target: takes any bytes, panics only on a bug.
pub type Target = fn(&[u8]);

/// Every target by name, for runners that iterate.
pub const TARGETS: &[(&str, Target)] = &[
    ("compose_load", compose_load),
    ("compose_interpolate", compose_interpolate),
    ("envfile_roundtrip", envfile_roundtrip),
    ("receipt_state", receipt_state),
    ("drizzle_journal", drizzle_journal),
    ("image_ref", image_ref),
];

/// A private scratch dir for targets that read files (one per process).
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // Memory-backed when possible: these targets write a file per run.
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("wavemap-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("compose")).expect("scratch dir");
        std::fs::create_dir_all(dir.join("state")).expect("scratch dir");
        dir
    })
}

/// The compose loader on arbitrary YAML (interpolation, merge keys, every
/// service key): an error is fine, a panic is not.
pub fn compose_load(data: &[u8]) {
    let path = scratch().join("compose/compose.yaml");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let mut vars = BTreeMap::new();
    vars.insert("WAVEMAP_BACKEND_IMAGE".to_owned(), "b:1".to_owned());
    vars.insert("WAVEMAP_ENV_DIR".to_owned(), "/env".to_owned());
    let _ = wavemap_agent::compose::load::load(&path, "fuzz", &vars);
}

/// `${...}` interpolation and the dotenv parser on arbitrary text. Text
/// without `$` interpolates to itself.
pub fn compose_interpolate(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lookup = |name: &str| match name {
        "SET" => Some("value".to_owned()),
        "EMPTY" => Some(String::new()),
        "DOLLAR" => Some("$x ${y}".to_owned()),
        _ => None,
    };
    let result = interpolate::substitute(text, &lookup);
    if !text.contains('$') {
        assert_eq!(result.as_deref(), Ok(text), "text without $ changed");
    }
    let _ = interpolate::parse_dotenv(text, &lookup);
}

/// The env file writer and reader: `parse(render(map)) == map` for any map
/// of valid names to values without NUL; and the reader never panics on
/// arbitrary bytes.
pub fn envfile_roundtrip(data: &[u8]) {
    let _ = envfile::parse_bytes(data);

    // Build a map from the bytes: records split on 0xFF, each `name\0value`.
    let mut map = envfile::EnvMap::new();
    for record in data.split(|&b| b == 0xFF) {
        let (name, value) = match record.iter().position(|&b| b == 0) {
            Some(i) => (&record[..i], &record[i + 1..]),
            None => (record, &[][..]),
        };
        let name: String = name
            .iter()
            .enumerate()
            .map(|(i, &b)| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'_' => b as char,
                b'0'..=b'9' if i > 0 => b as char,
                _ => '_',
            })
            .collect();
        if name.is_empty() {
            continue;
        }
        let value = String::from_utf8_lossy(value).replace('\0', "");
        map.insert(name, value);
    }
    let text = envfile::render(&["fuzz header", "line\nbreak"], &map)
        .expect("render accepts valid names and NUL-free values");
    let back = envfile::parse(&text).expect("the reader reads what the writer wrote");
    assert_eq!(back, map, "env file round trip changed a value");
}

fn config() -> &'static wavemap_agent::config::Config {
    static CONFIG: OnceLock<wavemap_agent::config::Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let dir = scratch();
        let text = format!(
            "[agent]\nstate_dir = {:?}\n[receipt]\npath = {:?}\n[aws]\naccount_id = \"123456789012\"\ntest_ecr_registry_alias = \"127.0.0.1:5000\"\n",
            dir.join("state").display().to_string(),
            dir.join("state/receipt.json").display().to_string(),
        );
        wavemap_agent::config::Config::parse(&text, "fuzz").expect("fuzz config")
    })
}

/// The receipt and current-release readers (parse and validate) on
/// arbitrary bytes.
pub fn receipt_state(data: &[u8]) {
    let _ = release::parse_receipt(data, Path::new("/fuzz/receipt.json"));
    let config = config();
    let state = config.current_release_path();
    let receipt = config.receipt.path.as_path().to_path_buf();
    if std::fs::write(&state, data).is_ok() {
        let _ = release::read_current(config);
    }
    if std::fs::write(&receipt, data).is_ok() {
        let _ = release::read_receipt(config);
    }
}

/// The Drizzle journal reader: the bytes as `meta/_journal.json` next to a
/// few migrations, and as a tar archive of a migrations folder.
pub fn drizzle_journal(data: &[u8]) {
    let mut files = Files::default();
    files.insert("meta/_journal.json", data.to_vec());
    files.insert("0000_init.sql", b"CREATE TABLE a (id int);".to_vec());
    files.insert(
        "0001_next.sql",
        b"ALTER TABLE a ADD b int;\n--> statement-breakpoint\nSELECT 1;".to_vec(),
    );
    let _ = journal::parse(&files, "fuzz");
    if let Ok(files) = Files::from_tar(data, "fuzz.tar") {
        let _ = journal::parse(&files, "fuzz.tar");
    }
}

/// Image URI validation: arbitrary text; what is accepted prints back as
/// the same reference.
pub fn image_ref(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(image) = ImageRef::parse("--backend-image", text) {
        assert_eq!(image.to_string(), text, "accepted URI does not print back");
        let again = ImageRef::parse("--backend-image", &image.to_string())
            .expect("a printed reference parses again");
        assert_eq!(again, image);
    }
}
