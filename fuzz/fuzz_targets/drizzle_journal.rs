#![no_main]
//! `cargo fuzz run drizzle_journal`: see `wavemap_agent_fuzz::targets::drizzle_journal`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wavemap_agent_fuzz::targets::drizzle_journal(data));
