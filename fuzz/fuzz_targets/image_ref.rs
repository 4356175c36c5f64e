#![no_main]
//! `cargo fuzz run image_ref`: see `wavemap_agent_fuzz::targets::image_ref`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wavemap_agent_fuzz::targets::image_ref(data));
