//! The artifact reader over arbitrary bytes: every input is an error or a report, never a
//! panic, a hang or unbounded memory (libFuzzer's -rss_limit_mb catches the last).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = menderartifact::read_report(std::io::Cursor::new(data), None);
});
