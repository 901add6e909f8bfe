#![no_main]
//! See `junction_fuzz::srt_ts`.

libfuzzer_sys::fuzz_target!(
    init: junction_fuzz::init(),
    |data: &[u8]| junction_fuzz::run(|| junction_fuzz::srt_ts::run(data))
);
