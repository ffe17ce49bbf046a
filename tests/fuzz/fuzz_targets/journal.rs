//! The module's journal decoder (`journal.cbor` after a crash may hold anything): an error or
//! a journal, never a panic; a decoded journal's display works.
#![no_main]

use libfuzzer_sys::fuzz_target;
use server_migration::journal::Journal;

fuzz_target!(|data: &[u8]| {
    if let Ok(journal) = Journal::decode(data) {
        let _ = journal.to_string();
    }
});
