//! `mender.conf` parser and validator over both files, and the stage rendering on top.
//!
//! Input: main file bytes, a 0xFF separator, fallback file bytes (no separator: main only).
//! Beyond "no panic", it checks the invariant the device relies on: when a device's files are
//! valid and a stage applies, the result validates and lists exactly the stage's servers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use menderconf::{ConfigFile, ConfigSet, Mode, ServerUrl, Stage, StagePlan};

fuzz_target!(|data: &[u8]| {
    let (main, fallback) = match data.iter().position(|&b| b == 0xFF) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let Ok(main) = ConfigFile::parse("/etc/mender/mender.conf", main) else {
        return;
    };
    let fallback = match fallback.map(|b| ConfigFile::parse("/var/lib/mender/mender.conf", b)) {
        Some(Ok(f)) => Some(f),
        Some(Err(_)) => return,
        None => None,
    };
    let _ = main.to_bytes();
    let set = ConfigSet {
        main: Some(main),
        fallback,
    };
    let _ = set.servers();
    if set.validate().is_err() {
        return;
    }
    let old = ServerUrl::parse("https://old.example.com").unwrap();
    let new = ServerUrl::parse("https://new.example.com").unwrap();
    for stage in [Stage::Dual, Stage::NewOnly] {
        for mode in [Mode::Patch, Mode::Replace] {
            let plan = StagePlan::new(stage, mode, old.clone(), new.clone());
            if let Ok(result) = plan.apply(&set) {
                if let Err(e) = result.validate() {
                    panic!("stage {stage:?} produced an invalid config set: {e}");
                }
                assert_eq!(
                    result.servers(),
                    plan.target_servers(),
                    "stage {stage:?} result lists other servers than the plan"
                );
                // Written bytes parse back to the same files.
                for file in result.main.iter().chain(result.fallback.iter()) {
                    let again = ConfigFile::parse(file.origin.clone(), &file.to_bytes())
                        .expect("a rendered file parses");
                    assert_eq!(again.to_bytes(), file.to_bytes());
                }
            }
        }
    }
});
