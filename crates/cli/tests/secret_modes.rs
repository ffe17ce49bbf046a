//! Stage artifacts that hold a tenant token are written owner-only (0600).

mod common;

use common::{text, write_artifacts};
use std::os::unix::fs::PermissionsExt;

#[test]
fn stage_artifacts_with_a_token_are_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("new.token");
    std::fs::write(&token, "newtenanttoken0123456789\n").unwrap();
    // (extra flags, whether the stage artifacts carry a token): the example config has one.
    let cases: [(&[&str], bool); 3] = [
        (&[], false),
        (&["--mode", "replace"], true),
        (&["--new-tenant-token-file", token.to_str().unwrap()], true),
    ];
    for (i, (extra, secret)) in cases.iter().enumerate() {
        let out = dir.path().join(format!("out{i}"));
        let run = write_artifacts(dir.path(), &out, extra);
        assert!(run.status.success(), "{extra:?}: {}", text(&run.stderr));
        for stage in ["stage1-dual", "stage2-new-only"] {
            let path = out.join(format!("fleet-{stage}.mender"));
            let m = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            // Without a secret the file gets the usual mode (umask decides).
            if *secret {
                assert_eq!(m, 0o600, "{extra:?} {stage}");
            }
        }
    }
}
