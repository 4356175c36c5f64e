#![no_main]
//! `cargo fuzz run envfile_roundtrip`: see `wavemap_agent_fuzz::targets::envfile_roundtrip`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wavemap_agent_fuzz::targets::envfile_roundtrip(data));
