//! Benchmark: write a rootfs-image artifact (gzip) from an ext4 image of real files with our
//! writer and with `mender-artifact write rootfs-image`; compares wall/CPU time and peak RSS,
//! and checks that our peak RSS does not grow with the image size (128 MiB vs 512 MiB).
//!
//! A third case, a 512 MiB image that is half random data (incompressible, like packed
//! files), checks the stored-block fallback.
//!
//! Run: `cargo bench -p menderartifact` (needs `mender-artifact` and `mkfs.ext4`).
//! Env: `BENCH_DIR` (scratch dir, default the system temp dir), `BENCH_SIZES_MIB`
//! (default "128,512"), `BENCH_RANDOM_MIB` (default 512; 0 skips the random case).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const CHILD_ENV: &str = "MENDERARTIFACT_BENCH_CHILD";

/// Child mode: write (`IMG\nOUT`) or read+verify (`ART`) one artifact, nothing else, so its
/// rusage is ours.
fn child(arg: &str) {
    let Some((img, out)) = arg.split_once('\n') else {
        match menderartifact::read_info(std::io::BufReader::new(
            std::fs::File::open(arg).expect("artifact to read"),
        )) {
            Ok(_) => return,
            Err(e) => {
                eprintln!("our reader failed: {e}");
                std::process::exit(1);
            }
        }
    };
    let spec = menderartifact::ArtifactSpec::new(
        "bench-1",
        vec!["bench-device".into()],
        menderartifact::Payload::RootfsImage {
            file: menderartifact::PayloadFile::from_path(img).expect("image path"),
        },
    );
    if let Err(e) = menderartifact::write_artifact_to_path(spec, Path::new(out)) {
        eprintln!("our writer failed: {e}");
        std::process::exit(1);
    }
}

struct Measured {
    wall: Duration,
    user: Duration,
    sys: Duration,
    max_rss_kib: i64,
    out_bytes: u64,
}

/// Runs `cmd` (see [`test_support::usage::run_measured`]) and sizes its output `out`.
fn measure(mut cmd: Command, out: &Path) -> Measured {
    let usage = test_support::usage::run_measured(&mut cmd);
    Measured {
        wall: usage.wall,
        user: usage.user,
        sys: usage.sys,
        max_rss_kib: usage.max_rss_kib,
        out_bytes: std::fs::metadata(out).map(|m| m.len()).unwrap_or(0),
    }
}

fn find_tool(name: &str, package: &str) -> Option<PathBuf> {
    test_support::require_tool("benchmark", name, &format!("apt-get install -y {package}"))
}

/// Copies regular files from real system directories into `dir` until `budget` bytes.
fn stage_real_files(dir: &Path, budget: u64) -> u64 {
    let mut total = 0u64;
    let mut n = 0u64;
    let mut stack: Vec<PathBuf> = [
        "/usr/bin",
        "/usr/lib",
        "/usr/share",
        "/usr/libexec",
        "/usr/sbin",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    stack.reverse();
    while let Some(p) = stack.pop() {
        if total >= budget {
            break;
        }
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                let mut kids: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
                kids.sort();
                kids.reverse();
                stack.extend(kids);
            }
        } else if meta.is_file() && meta.len() > 0 && total + meta.len() <= budget + (1 << 20) {
            let dst = dir.join(format!("f{n:06}"));
            if std::fs::copy(&p, &dst).is_ok() {
                total += meta.len();
                n += 1;
            }
        }
    }
    total
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn print_row(who: &str, m: &Measured, img: u64) {
    println!(
        "  {who:<16} wall {:>6.2} s  user {:>6.2} s  sys {:>5.2} s  cpu {:>6.2} s  peak RSS {:>6.1} MiB  out {:>11} B ({:.3})",
        secs(m.wall),
        secs(m.user),
        secs(m.sys),
        secs(m.user + m.sys),
        m.max_rss_kib as f64 / 1024.0,
        m.out_bytes,
        m.out_bytes as f64 / img as f64
    );
}

fn main() {
    if let Ok(arg) = std::env::var(CHILD_ENV) {
        child(&arg);
        return;
    }
    let (Some(mender), Some(mkfs)) = (
        find_tool("mender-artifact", "mender-artifact"),
        find_tool("mkfs.ext4", "e2fsprogs"),
    ) else {
        return;
    };
    let sizes: Vec<u64> = std::env::var("BENCH_SIZES_MIB")
        .unwrap_or_else(|_| "128,512".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("BENCH_SIZES_MIB: comma-separated MiB")
        })
        .collect();
    let base = std::env::var_os("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let work = tempfile::tempdir_in(&base).expect("scratch dir");
    let me = std::env::current_exe().expect("current exe");
    let random_mib: u64 = std::env::var("BENCH_RANDOM_MIB")
        .map(|v| v.parse().expect("BENCH_RANDOM_MIB: MiB"))
        .unwrap_or(512);
    let mut cases: Vec<(u64, bool)> = sizes.iter().map(|&s| (s, false)).collect();
    if random_mib > 0 {
        cases.push((random_mib, true));
    }
    let mut our_rss = Vec::new();
    for (mib, random) in cases {
        let img_bytes = mib << 20;
        let staging = work.path().join(format!("stage{mib}-{random}"));
        std::fs::create_dir(&staging).unwrap();
        // ~65% real files, the rest is free (zero) space, like a typical rootfs image; or
        // one file of random bytes filling half the image.
        let staged = if random {
            let mut f = std::fs::File::create(staging.join("random.bin")).unwrap();
            let mut rnd = std::fs::File::open("/dev/urandom").unwrap();
            std::io::copy(&mut std::io::Read::take(&mut rnd, img_bytes / 2), &mut f).unwrap()
        } else {
            stage_real_files(&staging, img_bytes * 65 / 100)
        };
        let img = work.path().join(format!("rootfs{mib}.ext4"));
        let o = Command::new(&mkfs)
            .args(["-q", "-F", "-t", "ext4", "-d"])
            .arg(&staging)
            .arg(&img)
            .arg(format!("{mib}M"))
            .output()
            .expect("run mkfs.ext4");
        assert!(
            o.status.success(),
            "mkfs.ext4 failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::fs::remove_dir_all(&staging).unwrap();
        // Warm the page cache so both writers read from memory. Stream it: a big buffer in
        // this process would show up in the children's ru_maxrss (counted before exec).
        let _ = std::io::copy(
            &mut std::fs::File::open(&img).unwrap(),
            &mut std::io::sink(),
        );

        let ours_out = work.path().join(format!("ours{mib}.mender"));
        let mut cmd = Command::new(&me);
        cmd.env(
            CHILD_ENV,
            format!("{}\n{}", img.display(), ours_out.display()),
        );
        let ours = measure(cmd, &ours_out);

        let theirs_out = work.path().join(format!("theirs{mib}.mender"));
        let mut cmd = test_support::official_rootfs_write(
            &mender,
            "bench-1",
            "bench-device",
            &img,
            &theirs_out,
        );
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let theirs = measure(cmd, &theirs_out);

        // Reading + verifying: our reader on the official output, `validate` on ours (each
        // run also proves that the other writer's output is valid; both fail loudly).
        let mut cmd = Command::new(&me);
        cmd.env(CHILD_ENV, theirs_out.as_os_str());
        let our_read = measure(cmd, &theirs_out);
        let mut cmd = Command::new(&mender);
        cmd.arg("validate")
            .arg(&ours_out)
            .stdout(std::process::Stdio::null());
        let their_read = measure(cmd, &ours_out);

        let what = if random { "random data" } else { "real files" };
        println!(
            "rootfs-image gzip, {mib} MiB ext4 ({} MiB of {what}, rest free space):",
            staged >> 20
        );
        print_row("menderartifact", &ours, img_bytes);
        print_row("mender-artifact", &theirs, img_bytes);
        println!(
            "  ratio ours/theirs: wall {:.2}x (speed-up {:.2}x)  cpu {:.2}x  peak RSS {:.2}x  size {:.3}x",
            secs(ours.wall) / secs(theirs.wall),
            secs(theirs.wall) / secs(ours.wall),
            secs(ours.user + ours.sys) / secs(theirs.user + theirs.sys),
            ours.max_rss_kib as f64 / theirs.max_rss_kib as f64,
            ours.out_bytes as f64 / theirs.out_bytes as f64
        );
        println!(
            "  read+verify: menderartifact wall {:.2} s cpu {:.2} s RSS {:.1} MiB | mender-artifact validate wall {:.2} s cpu {:.2} s RSS {:.1} MiB",
            secs(our_read.wall),
            secs(our_read.user + our_read.sys),
            our_read.max_rss_kib as f64 / 1024.0,
            secs(their_read.wall),
            secs(their_read.user + their_read.sys),
            their_read.max_rss_kib as f64 / 1024.0
        );
        if !random {
            our_rss.push((mib, ours.max_rss_kib));
        }
        for f in [&img, &ours_out, &theirs_out] {
            let _ = std::fs::remove_file(f);
        }
    }
    if our_rss.len() >= 2 {
        let (s0, r0) = our_rss[0];
        let (s1, r1) = *our_rss.last().unwrap();
        println!(
            "streaming check: our peak RSS {:.1} MiB at {s0} MiB vs {:.1} MiB at {s1} MiB ({:+.1}%)",
            r0 as f64 / 1024.0,
            r1 as f64 / 1024.0,
            (r1 - r0) as f64 * 100.0 / r0 as f64
        );
        // Bounded memory: a 4x larger image may not cost more than a few MiB extra.
        assert!(
            r1 - r0 < 8 * 1024,
            "peak RSS grows with image size: not streaming"
        );
    }
}
