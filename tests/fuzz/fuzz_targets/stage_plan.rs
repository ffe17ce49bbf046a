//! The stage payload's `plan.json` as the on-device module reads it: parse, and a parsed plan
//! must survive its own serialisation unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use menderconf::StagePlan;

fuzz_target!(|data: &[u8]| {
    if let Ok(plan) = StagePlan::from_json(data) {
        let bytes = plan.to_json();
        let again = StagePlan::from_json(&bytes).expect("a serialised plan parses");
        assert_eq!(
            again.to_json(),
            bytes,
            "plan.json round trip changed the plan"
        );
    }
});
