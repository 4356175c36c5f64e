#![no_main]
//! `cargo fuzz run receipt_state`: see `wavemap_agent_fuzz::targets::receipt_state`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wavemap_agent_fuzz::targets::receipt_state(data));
