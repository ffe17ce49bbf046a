//! Benchmark: make a stage-1 rootfs artifact from an existing release, with our
//! `stage_rootfs` (what `mender-migrate rootfs --from` runs) and with the official tool's way,
//! `mender-artifact cp stage1.conf ART:/etc/mender/mender.conf` then `mender-artifact modify -n`,
//! on the same gzip artifact (written by `mender-artifact write rootfs-image`) in the same run.
//! Reports wall and CPU time of each and the ratio; the target is ours ≥ 3x faster (wall).
//!
//! Run: `cargo bench -p mender-release` (needs `mender-artifact`, `mkfs.ext4`, `debugfs`).
//! Env: `BENCH_DIR` (scratch dir, default the system temp dir), `BENCH_IMAGE_MIB` (default
//! 384), `BENCH_FILES_MIB` (real files copied from /usr into the image, default 200),
//! `BENCH_ROUNDS` (default 2; the best round of each tool counts).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const CHILD_ENV: &str = "MENDER_RELEASE_BENCH_CHILD";
const OLD: &str = "https://old.bench.example.com";
const NEW: &str = "https://new.bench.example.com";

/// Child mode: one `stage_rootfs` run (`FROM\nOUT_DIR`), so its rusage is ours alone.
fn child(arg: &str) {
    let (from, out) = arg.split_once('\n').expect("FROM\\nOUT");
    let opts = mender_release::RootfsOptions {
        from: from.into(),
        stage: menderconf::Stage::Dual,
        old_server: menderconf::ServerUrl::parse(OLD).unwrap(),
        new_server: menderconf::ServerUrl::parse(NEW).unwrap(),
        out_dir: out.into(),
        config: None,
        signing_key: None,
        name: Some("bench-stage1".into()),
        force: true,
    };
    if let Err(e) = mender_release::stage_rootfs(&opts) {
        eprintln!("stage_rootfs failed: {e}");
        std::process::exit(1);
    }
}

#[derive(Clone, Copy, Default)]
struct Measured {
    wall: Duration,
    cpu: Duration,
}

impl std::ops::Add for Measured {
    type Output = Measured;
    fn add(self, o: Measured) -> Measured {
        Measured {
            wall: self.wall + o.wall,
            cpu: self.cpu + o.cpu,
        }
    }
}

/// Runs `cmd` to completion and returns its wall time and its own user+sys CPU.
fn measure(mut cmd: Command) -> Measured {
    let usage = test_support::usage::run_measured(&mut cmd);
    Measured {
        wall: usage.wall,
        cpu: usage.user + usage.sys,
    }
}

/// Measures `cmd` with its grandchildren's CPU (debugfs, fsck.ext4 run by the Go tool).
fn measure_tree(cmd: Command) -> Measured {
    let before = test_support::usage::children_cpu();
    let m = measure(cmd);
    Measured {
        wall: m.wall,
        cpu: test_support::usage::children_cpu() - before,
    }
}

fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is not installed (e2fsprogs / mender-artifact)");
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Copies regular files from `src` into `dst` until `budget` bytes are used.
fn copy_files(src: &Path, dst: &Path, budget: &mut u64) {
    let Ok(entries) = std::fs::read_dir(src) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        if *budget == 0 {
            return;
        }
        let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        let target = dst.join(e.file_name());
        if meta.is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_files(&e.path(), &target, budget);
        } else if meta.is_file()
            && meta.len() <= *budget
            && std::fs::copy(e.path(), &target).is_ok()
        {
            *budget -= meta.len();
        }
    }
}

fn main() {
    if let Ok(arg) = std::env::var(CHILD_ENV) {
        child(&arg);
        return;
    }
    // `cargo bench` passes --bench; anything else (e.g. a test harness filter) is ignored.
    let scratch = tempfile::Builder::new()
        .prefix("rootfs-from-bench-")
        .tempdir_in(std::env::var_os("BENCH_DIR").unwrap_or_else(|| std::env::temp_dir().into()))
        .unwrap();
    let d = scratch.path();
    let image_mib = env_u64("BENCH_IMAGE_MIB", 384);
    let files_mib = env_u64("BENCH_FILES_MIB", 200);
    let rounds = env_u64("BENCH_ROUNDS", 2).max(1);

    let root = d.join("root");
    std::fs::create_dir_all(root.join("etc/mender")).unwrap();
    std::fs::write(
        root.join("etc/mender/mender.conf"),
        format!("{{\n  \"ServerURL\": \"{OLD}\",\n  \"RootfsPartA\": \"/dev/mmcblk0p2\",\n  \"RootfsPartB\": \"/dev/mmcblk0p3\"\n}}\n"),
    )
    .unwrap();
    let mut budget = files_mib << 20;
    for src in [
        "/usr/lib/python3.11",
        "/usr/lib/python3",
        "/usr/bin",
        "/usr/lib/x86_64-linux-gnu",
    ] {
        let dst = root.join(src.trim_start_matches('/'));
        std::fs::create_dir_all(&dst).unwrap();
        copy_files(Path::new(src), &dst, &mut budget);
    }
    let used = (files_mib << 20) - budget;
    let img = d.join("rootfs.ext4");
    run(Command::new(tool("mkfs.ext4"))
        .args(["-q", "-F", "-d"])
        .arg(&root)
        .arg(&img)
        .arg(format!("{image_mib}M")));
    std::fs::remove_dir_all(&root).unwrap();
    let input = d.join("current.mender");
    run(&mut test_support::official_rootfs_write(
        "mender-artifact",
        "rel-1",
        "bench-device",
        &img,
        &input,
    ));
    std::fs::remove_file(&img).unwrap();
    let input_size = std::fs::metadata(&input).unwrap().len();
    let conf = d.join("stage1.conf");
    std::fs::write(
        &conf,
        format!("{{\n  \"Servers\": [{{\"ServerURL\": \"{OLD}\"}}, {{\"ServerURL\": \"{NEW}\"}}],\n  \"RootfsPartA\": \"/dev/mmcblk0p2\",\n  \"RootfsPartB\": \"/dev/mmcblk0p3\"\n}}\n"),
    )
    .unwrap();
    println!(
        "input: {image_mib} MiB ext4 with {} MiB of files from /usr, gzip artifact {:.1} MiB (mender-artifact write)",
        used >> 20,
        input_size as f64 / (1 << 20) as f64
    );

    let exe = std::env::current_exe().unwrap();
    let out_dir = d.join("ours");
    let mut best_ours: Option<Measured> = None;
    let mut best_go: Option<Measured> = None;
    for round in 1..=rounds {
        let mut cmd = Command::new(&exe);
        cmd.env(
            CHILD_ENV,
            format!("{}\n{}", input.display(), out_dir.display()),
        );
        let ours = measure_tree(cmd);
        let ours_size = std::fs::metadata(out_dir.join("bench-stage1.mender"))
            .unwrap()
            .len();

        let work = d.join("work.mender");
        std::fs::copy(&input, &work).unwrap();
        let mut cp = Command::new("mender-artifact");
        cp.arg("cp")
            .arg(&conf)
            .arg(format!("{}:/etc/mender/mender.conf", work.display()));
        let go_cp = measure_tree(cp);
        let mut modify = Command::new("mender-artifact");
        modify.args(["modify", "-n", "bench-stage1"]).arg(&work);
        let go_modify = measure_tree(modify);
        let go = go_cp + go_modify;
        let go_size = std::fs::metadata(&work).unwrap().len();
        println!(
            "round {round}: ours {:.2} s wall / {:.2} s CPU ({:.1} MiB); mender-artifact cp {:.2} s + modify {:.2} s = {:.2} s wall / {:.2} s CPU ({:.1} MiB)",
            ours.wall.as_secs_f64(),
            ours.cpu.as_secs_f64(),
            ours_size as f64 / (1 << 20) as f64,
            go_cp.wall.as_secs_f64(),
            go_modify.wall.as_secs_f64(),
            go.wall.as_secs_f64(),
            go.cpu.as_secs_f64(),
            go_size as f64 / (1 << 20) as f64,
        );
        best_ours = Some(match best_ours {
            Some(b) if b.wall <= ours.wall => b,
            _ => ours,
        });
        best_go = Some(match best_go {
            Some(b) if b.wall <= go.wall => b,
            _ => go,
        });
    }
    let (o, g) = (best_ours.unwrap(), best_go.unwrap());
    let ratio = g.wall.as_secs_f64() / o.wall.as_secs_f64();
    println!(
        "best: ours {:.2} s wall / {:.2} s CPU; cp+modify {:.2} s wall / {:.2} s CPU; ours is {:.2}x faster (wall), {:.2}x less CPU; target >= 3x: {}",
        o.wall.as_secs_f64(),
        o.cpu.as_secs_f64(),
        g.wall.as_secs_f64(),
        g.cpu.as_secs_f64(),
        ratio,
        g.cpu.as_secs_f64() / o.cpu.as_secs_f64(),
        if ratio >= 3.0 { "met" } else { "NOT met" }
    );
}
