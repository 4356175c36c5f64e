//! The fuzz targets on stable Rust, for a bounded time, in every test run
//! (issue 10). The targets themselves are `fuzz/src/targets.rs`, the same
//! file cargo-fuzz builds; here a seeded random mutator (bit flips, byte
//! edits, splices and format tokens over the seed corpus in
//! `fuzz/seeds/<target>/`) feeds them for `WAVEMAP_FUZZ_SECS` seconds each
//! (default 3). Not coverage-guided: `scripts/fuzz` runs libFuzzer for the
//! long runs. A panic fails the test, names the seed that reproduces the
//! run (`WAVEMAP_FUZZ_SEED`), and saves the input under
//! `target/fuzz-failures/`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[path = "../../fuzz/src/targets.rs"]
#[allow(dead_code)]
mod targets;

/// Tokens of the formats the targets read, spliced in by the mutator.
const DICTIONARY: &[&str] = &[
    "${",
    "}",
    ":-",
    "-",
    ":?",
    "?",
    ":+",
    "+",
    "$$",
    "$",
    "\"",
    "'",
    "\\",
    "\n",
    "\r\n",
    "=",
    "#",
    " #",
    "export ",
    "services:",
    "\n  api:\n    image: ",
    "<<: *a",
    "&a ",
    "*a",
    "healthcheck:",
    "test: [",
    "env_file:",
    "environment:",
    "ports:",
    "depends_on:",
    "volumes:",
    "networks:",
    "command:",
    "sha-",
    "@sha256:",
    "/",
    ":",
    "127.0.0.1:5000/",
    "{",
    "}",
    "[",
    "]",
    ",",
    "null",
    "true",
    "1e999",
    "-1",
    "\"schemaVersion\":",
    "1",
    "\"entries\":",
    "\"tag\":",
    "\"when\":",
    "\"version\":",
    "0000_init",
    "\u{feff}",
    "\0",
    "\u{1F600}",
    "99999999999999999999",
];

/// xorshift64*: small, seedable, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = out.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                out[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(len + 1);
                out.insert(i, rng.next() as u8);
            }
            3 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(16)).min(len);
                out.drain(a..b);
            }
            4 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(32)).min(len);
                let copy = out[a..b].to_vec();
                let at = rng.below(len + 1);
                out.splice(at..at, copy);
            }
            5 | 6 => {
                let token = DICTIONARY[rng.below(DICTIONARY.len())].as_bytes();
                let at = rng.below(len + 1);
                out.splice(at..at, token.iter().copied());
            }
            _ => {
                let other = &seeds[rng.below(seeds.len())];
                if !other.is_empty() {
                    let a = rng.below(other.len());
                    let b = (a + 1 + rng.below(64)).min(other.len());
                    let at = rng.below(len + 1);
                    out.splice(at..at, other[a..b].iter().copied());
                }
            }
        }
    }
    out.truncate(64 * 1024);
    out
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = wavemap_e2e::repo_root().join("fuzz/seeds").join(target);
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| std::fs::read(e.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    seeds.push(Vec::new());
    seeds
}

fn budget() -> Duration {
    std::env::var("WAVEMAP_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_secs(3))
}

fn run(name: &str) {
    let target = targets::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
        .expect("target exists");
    let seed = std::env::var("WAVEMAP_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    let mut rng = Rng(seed);
    let seeds = corpus(name);
    let deadline = Instant::now() + budget();
    let mut runs = 0u64;
    let mut last = seeds[0].clone();
    let check = |input: &[u8], runs: u64| {
        if catch_unwind(AssertUnwindSafe(|| target(input))).is_err() {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-failures");
            let _ = std::fs::create_dir_all(&dir);
            let path = dir.join(format!("{name}-{seed}.bin"));
            let _ = std::fs::write(&path, input);
            panic!(
                "fuzz target {name} panicked after {runs} runs (WAVEMAP_FUZZ_SEED={seed}); input saved to {}: {:?}",
                path.display(),
                String::from_utf8_lossy(&input[..input.len().min(300)])
            );
        }
    };
    for s in &seeds {
        check(s, runs);
        runs += 1;
    }
    while Instant::now() < deadline {
        // Mostly mutate a seed; sometimes keep mutating the last input.
        let base = if rng.below(4) == 0 {
            last.clone()
        } else {
            seeds[rng.below(seeds.len())].clone()
        };
        let input = mutate(&mut rng, &seeds, &base);
        check(&input, runs);
        last = input;
        runs += 1;
    }
    eprintln!("fuzz {name}: {runs} runs, no panic (WAVEMAP_FUZZ_SEED={seed})");
}

#[test]
fn fuzz_compose_load() {
    run("compose_load");
}

#[test]
fn fuzz_compose_interpolate() {
    run("compose_interpolate");
}

#[test]
fn fuzz_envfile_roundtrip() {
    run("envfile_roundtrip");
}

#[test]
fn fuzz_receipt_state() {
    run("receipt_state");
}

#[test]
fn fuzz_drizzle_journal() {
    run("drizzle_journal");
}

#[test]
fn fuzz_image_ref() {
    run("image_ref");
}
