#![no_main]
//! `cargo fuzz run compose_interpolate`: see `wavemap_agent_fuzz::targets::compose_interpolate`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wavemap_agent_fuzz::targets::compose_interpolate(data));
