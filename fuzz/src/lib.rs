//! cargo-fuzz targets for wavemap-agent's parsers of hostile input (issue
//! 10). The bodies live in `targets.rs`, shared with the stable runner in
//! `tests/tests/fuzz.rs`; `fuzz_targets/*.rs` only wrap them.
//!
//! Not a workspace member (root `Cargo.toml` excludes it): it builds with
//! sanitizer flags through `cargo fuzz` (see `scripts/fuzz`).

pub mod targets;
