#![no_main]
//! See `junction_fuzz::aac`.

libfuzzer_sys::fuzz_target!(
    init: junction_fuzz::init_containing(),
    |data: &[u8]| junction_fuzz::run(|| junction_fuzz::aac::run(data))
);
