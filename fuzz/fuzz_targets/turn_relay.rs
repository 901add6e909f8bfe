#![no_main]
//! See `junction_fuzz::turn_relay`.

libfuzzer_sys::fuzz_target!(
    init: junction_fuzz::init(),
    |data: &[u8]| junction_fuzz::run(|| junction_fuzz::turn_relay::run(data))
);
