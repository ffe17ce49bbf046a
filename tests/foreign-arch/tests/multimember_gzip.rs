//! The real Mender 3.4 client reads the multi-member gzip our artifact writer produces
//! (independent 1 MiB blocks, one gzip member each): a `single-file` module-image artifact
//! written by `menderartifact`, whose payload spans several members, is installed by Debian's
//! arm64 `mender-client` 3.4 in a qemu-user chroot and must land byte-identical.
//!
//! Runs on arm64 only: the gzip reader is the client's Go code, the same on every
//! architecture, and armhf would only double the suite's time (`chroot.rs` covers armhf).

use anyhow::{bail, ensure, Context, Result};
use foreign_arch::{describe, scratch_chroot, ARM64};
use std::io::Read;
use std::path::Path;

const MIB: usize = 1024 * 1024;
const DEST_DIR: &str = "/opt/gzreal";
const FILE_NAME: &str = "multimember.bin";
const ARTIFACT_NAME: &str = "gzreal-multimember";

/// About 3.8 MiB that exercise every kind of member the writer makes: text-like data
/// (deflated), random bytes (stored), an all-zero stretch (the cached zero member) and an
/// odd-sized text tail, with region edges off the 1 MiB block edges.
fn payload() -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        // xorshift64*: deterministic, no dependency.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    const WORDS: &[&str] = &[
        "mender", "artifact", "gzip", "member", "block", "payload", "server", "device", "update",
        "module", "stage", "commit", "rollback", "deflate", "stream",
    ];
    let mut text = |out: &mut Vec<u8>, len: usize| {
        let end = out.len() + len;
        while out.len() < end {
            let r = next();
            out.extend_from_slice(WORDS[(r % WORDS.len() as u64) as usize].as_bytes());
            out.extend_from_slice(if r >> 60 == 0 { b"\n" } else { b" " });
            out.extend_from_slice(format!("{} ", (r >> 20) % 10_000).as_bytes());
        }
        out.truncate(end);
    };
    let mut data = Vec::with_capacity(4 * MIB);
    text(&mut data, MIB + MIB / 4);
    let mut random = Vec::with_capacity(MIB);
    let mut rng: u64 = 0x0123_4567_89ab_cdef;
    while random.len() < MIB {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        random.extend_from_slice(&rng.to_le_bytes());
    }
    data.extend_from_slice(&random);
    data.resize(data.len() + MIB, 0);
    text(&mut data, MIB / 2 + 12_345);
    data
}

/// The gzip members of the artifact's `data/0000.tar.gz`, decoded one at a time (the
/// bufread decoder stops at the end of one member), and the whole data tar they make.
fn data_members(artifact: &Path) -> Result<(usize, Vec<u8>)> {
    let file =
        std::fs::File::open(artifact).with_context(|| format!("opening {}", artifact.display()))?;
    let mut outer = tar::Archive::new(file);
    let mut gz = None;
    for entry in outer.entries()? {
        let mut entry = entry?;
        if entry.path()?.as_os_str() == "data/0000.tar.gz" {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes)?;
            gz = Some(bytes);
        }
    }
    let Some(gz) = gz else {
        bail!("{}: no data/0000.tar.gz member", artifact.display());
    };
    let mut rest = gz.as_slice();
    let mut members = 0;
    let mut tar = Vec::new();
    while !rest.is_empty() {
        let mut member = flate2::bufread::GzDecoder::new(&mut rest);
        member
            .read_to_end(&mut tar)
            .with_context(|| format!("decoding gzip member {members} of data/0000.tar.gz"))?;
        members += 1;
    }
    Ok((members, tar))
}

fn run() -> Result<()> {
    let arch = ARM64;
    let Some(chroot) = scratch_chroot(&arch, "gzreal-arm64", "multi-member gzip")? else {
        return Ok(());
    };
    let device_type = "foreign-gz-arm64";
    ensure!(
        chroot
            .path("/usr/share/mender/modules/v3/single-file")
            .is_file(),
        "Debian's mender-client no longer ships the single-file update module"
    );

    // A standalone 3.x device.
    chroot.make_device(
        br#"{"ServerURL": "https://old.mender.example.com"}"#,
        "gzreal-initial",
        device_type,
    )?;

    // The artifact, written by our writer with its default (gzip) compression.
    let work = chroot.path("/tmp/gzreal");
    std::fs::create_dir_all(&work)?;
    let data = payload();
    let source = work.join(FILE_NAME);
    std::fs::write(&source, &data)?;
    let artifact = work.join("multimember.mender");
    let spec = menderartifact::module_image_single_file(
        ARTIFACT_NAME,
        vec![device_type.into()],
        &source,
        DEST_DIR,
    )?;
    menderartifact::write_artifact_to_path(spec, &artifact)?;
    std::fs::remove_file(&source)?;

    // It really is multi-member, and our own decoding of the members holds the payload.
    let (members, tar) = data_members(&artifact)?;
    ensure!(
        members >= 3,
        "data/0000.tar.gz has {members} gzip member(s); the test needs a multi-member payload"
    );
    let start = tar.windows(4096).position(|w| w == &data[..4096]);
    ensure!(
        start.is_some_and(|at| tar.get(at..at + data.len()) == Some(data.as_slice())),
        "the decoded data tar does not hold the payload"
    );
    eprintln!(
        "foreign-arch: {} bytes payload, data/0000.tar.gz has {members} gzip members",
        data.len()
    );

    // The real 3.4 client reads, checksums and installs it.
    let installed = chroot.path(&format!("{DEST_DIR}/{FILE_NAME}"));
    ensure!(
        !installed.exists(),
        "{} exists before install",
        installed.display()
    );
    chroot.install_and_commit("/tmp/gzreal/multimember.mender")?;
    let got = std::fs::read(&installed)
        .with_context(|| format!("reading the installed {}", installed.display()))?;
    ensure!(
        got.len() == data.len(),
        "installed {} has {} bytes, the payload {}",
        installed.display(),
        got.len(),
        data.len()
    );
    ensure!(
        got == data,
        "installed {} differs from the payload",
        installed.display()
    );
    let shown = chroot.mender(&["show-artifact"])?;
    ensure!(
        String::from_utf8_lossy(&shown.stdout).contains(ARTIFACT_NAME),
        "show-artifact after commit: {}",
        describe(&shown)
    );
    Ok(())
}

#[test]
fn arm64_client_installs_multi_member_gzip_payload() {
    if let Err(e) = run() {
        panic!("arm64 multi-member gzip: {e:#}");
    }
}
