#![no_main]
//! See `junction_fuzz::srt_handshake`.

libfuzzer_sys::fuzz_target!(
    init: junction_fuzz::init_containing(),
    |data: &[u8]| junction_fuzz::run(|| junction_fuzz::srt_handshake::run(data))
);
