#![no_main]
//! `cargo fuzz run compose_load`: see `wavemap_agent_fuzz::targets::compose_load`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wavemap_agent_fuzz::targets::compose_load(data));
