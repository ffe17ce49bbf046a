//! Runs the Python that meta-migration executes inside BitBake (server validation and the
//! do_prepare_mender_conf postfunc) against meta-mender-shaped inputs, with python3.

use std::path::Path;
use std::process::Command;

#[test]
fn layer_python_functions_enforce_the_stage_semantics() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let inc =
        here.join("../../meta-migration/recipes-mender/mender-client/mender-migration-common.inc");
    let script = here.join("tests/support/layer_functions.py");
    let output = match Command::new("python3").arg(&script).arg(&inc).output() {
        Ok(output) => output,
        Err(e) => {
            test_support::skip(
                "layer_python_functions_enforce_the_stage_semantics",
                &format!("python3 cannot run ({e}; apt-get install python3)"),
            );
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.starts_with("ok:"), "{stdout}");
}
