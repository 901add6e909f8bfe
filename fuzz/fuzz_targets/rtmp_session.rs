#![no_main]
//! See `junction_fuzz::rtmp_session`.

libfuzzer_sys::fuzz_target!(
    init: junction_fuzz::init_containing(),
    |data: &[u8]| junction_fuzz::run(|| junction_fuzz::rtmp_session::run(data))
);
