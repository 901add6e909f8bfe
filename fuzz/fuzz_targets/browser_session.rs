#![no_main]
//! See `junction_fuzz::browser_session`.

libfuzzer_sys::fuzz_target!(
    init: junction_fuzz::init(),
    |data: &[u8]| junction_fuzz::run(|| junction_fuzz::browser_session::run(data))
);
