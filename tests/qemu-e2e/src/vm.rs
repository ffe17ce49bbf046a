//! Booting the guest under `qemu-system-x86_64`: a private copy of the image per VM, user-mode
//! networking that can reach only the forwarded mock servers, an entropy device, the serial
//! console in a log file, a watchdog for boots that hang, clean shutdown over QMP (bounded, then
//! kill), power cuts, and reading files after shutdown.

use crate::ext4::{self, Edits};
use crate::host::{self, run};
use crate::image::GuestImage;
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Guest address `guest_ip:guest_port` is forwarded to `127.0.0.1:host_port` on the host.
#[derive(Debug, Clone)]
pub struct Forward {
    pub guest_ip: String,
    pub guest_port: u16,
    pub host_port: u16,
}

/// A VM's disk: a sparse private copy of the built image, kept across QEMU restarts.
pub struct Disk {
    pub path: PathBuf,
}

impl Disk {
    /// Copies `image` into `dir/disk.img` (sparse, ~0.4 s).
    pub fn copy_from(image: &GuestImage, dir: &Path) -> Result<Disk> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("disk.img");
        run(Command::new("cp")
            .arg("--sparse=always")
            .arg(&image.disk)
            .arg(&path))?;
        Ok(Disk { path })
    }

    pub fn edit(&self, edits: &Edits) -> Result<()> {
        edits.apply(&self.path)
    }

    /// Reads a guest file (only while no QEMU is using the disk).
    pub fn read(&self, guest_path: &str) -> Result<Option<Vec<u8>>> {
        ext4::read_file(&self.path, guest_path)
    }

    pub fn read_string(&self, guest_path: &str) -> Result<Option<String>> {
        Ok(self
            .read(guest_path)?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// The guest's persistent journal for one unit, rendered by the host's journalctl.
    pub fn journal(&self, unit: &str, scratch: &Path) -> Result<String> {
        let _ = std::fs::remove_dir_all(scratch);
        ext4::dump_dir(&self.path, "/var/log/journal", scratch)?;
        let out = Command::new("journalctl")
            .arg("-D")
            .arg(scratch.join("journal"))
            .args(["--no-pager", "-o", "short-monotonic", "-u", unit])
            .output()
            .context("cannot run journalctl")?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// How to start QEMU.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub name: String,
    /// SMBIOS system serial: the device identity (see the overlay's identity script).
    pub serial_number: String,
    pub forwards: Vec<Forward>,
    pub memory_mb: u32,
    pub cpus: u32,
}

impl VmConfig {
    pub fn new(name: &str, serial_number: &str, forwards: Vec<Forward>) -> Self {
        let cpus = std::env::var("QEMU_E2E_SMP")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2);
        VmConfig {
            name: name.to_string(),
            serial_number: serial_number.to_string(),
            forwards,
            memory_mb: 512,
            cpus,
        }
    }
}

/// What the console shows once a kernel has started (one per boot, reboots included).
const KERNEL_BANNER: &str = "Linux version ";
/// What the console shows once a boot got as far as the client: systemd's `Started` status line
/// for it (the unit name is shortened and wrapped in colour escapes, the description is not).
const CLIENT_STARTED: &str = "Mender OTA update service";

/// A running QEMU. Dropping it kills QEMU (tests never leave VMs behind).
pub struct Vm {
    child: Option<Child>,
    pub serial_log: PathBuf,
    qmp_socket: PathBuf,
    pub started: Instant,
    name: String,
    /// Console bytes written by earlier QEMU runs on the same disk (the log is appended).
    log_offset: usize,
    /// Kernel starts seen on this QEMU's console so far, and when the newest one was first seen.
    kernels: usize,
    kernel_seen: Instant,
    /// Console length at the last look, and when it last grew (a hung boot goes quiet).
    console_len: usize,
    console_grew: Instant,
}

/// What a kernel prints when a boot cannot go on: a CPU stall (seen without an entropy source)
/// or a panic (seen under heavy host load: `IO-APIC + timer doesn't work!`).
const HANG_SIGNS: &[&str] = &[
    "self-detected stall",
    "detected stalls on CPUs",
    "Kernel panic - not syncing",
];

/// Where the newest boot of a VM is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootState {
    /// The client's unit has started on the newest boot.
    Booted,
    /// Booting: no kernel yet, or the kernel runs but the client has not started.
    Booting {
        /// Since the newest kernel start (or QEMU start, before the first kernel line).
        for_how_long: Duration,
        /// Since the console last printed anything.
        silent_for: Duration,
        /// The newest boot's console shows a CPU stall report or a kernel panic.
        stalled: bool,
    },
}

impl Vm {
    /// Starts QEMU on `disk`; `run_dir` receives `serial.log` (appended across restarts),
    /// `qemu.log` and the QMP socket.
    pub fn start(image: &GuestImage, disk: &Disk, config: &VmConfig, run_dir: &Path) -> Result<Vm> {
        host::require_tools(&["qemu-system-x86_64", "socat"])?;
        std::fs::create_dir_all(run_dir)?;
        let serial_log = run_dir.join("serial.log");
        let qmp_socket = run_dir.join("qmp.sock");
        let _ = std::fs::remove_file(&qmp_socket);
        let mut netdev = "user,id=n0,restrict=on".to_string();
        for f in &config.forwards {
            // `cmd:` starts one socat per guest connection; the `tcp:` chardev form would
            // connect only once, at QEMU start.
            netdev.push_str(&format!(
                ",guestfwd=tcp:{}:{}-cmd:socat - TCP:127.0.0.1:{}",
                f.guest_ip, f.guest_port, f.host_port
            ));
        }
        // Appending keeps the log of earlier boots of the same disk (power-cut runs).
        let serial_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&serial_log)?;
        let log_offset = serial_file.metadata()?.len() as usize;
        drop(serial_file);
        let qemu_log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(run_dir.join("qemu.log"))?;
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(host::accel_args())
            .args([
                "-m",
                &config.memory_mb.to_string(),
                "-smp",
                &config.cpus.to_string(),
            ])
            .args([
                "-nodefaults",
                "-vga",
                "none",
                "-display",
                "none",
                "-monitor",
                "none",
            ])
            .arg("-chardev")
            .arg(format!(
                "file,id=ser0,path={},append=on",
                serial_log.display()
            ))
            .args(["-serial", "chardev:ser0"])
            .arg("-kernel")
            .arg(&image.kernel)
            .arg("-initrd")
            .arg(&image.initrd)
            .args([
                "-append",
                // no_timer_check: under heavy host load TCG can miss the kernel's IO-APIC timer
                // check, which then panics (`IO-APIC + timer doesn't work!`).
                "root=/dev/vda rw console=ttyS0 systemd.show_status=1 no_timer_check",
            ])
            .arg("-drive")
            .arg(format!("file={},if=virtio,format=raw", disk.path.display()))
            .args(["-netdev", &netdev, "-device", "virtio-net-pci,netdev=n0"])
            // Entropy for the guest's kernel (the initrd loads virtio_rng): without it a loaded
            // TCG guest can stall in early boot waiting in getrandom.
            .args(["-device", "virtio-rng-pci"])
            .arg("-smbios")
            .arg(format!("type=1,serial={}", config.serial_number))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp_socket.display()))
            .stdin(Stdio::null())
            .stdout(qemu_log.try_clone()?)
            .stderr(qemu_log);
        let child = cmd.spawn().context("cannot start qemu-system-x86_64")?;
        Ok(Vm {
            child: Some(child),
            serial_log,
            qmp_socket,
            started: Instant::now(),
            name: config.name.clone(),
            log_offset,
            kernels: 0,
            kernel_seen: Instant::now(),
            console_len: 0,
            console_grew: Instant::now(),
        })
    }

    /// Where this QEMU's newest boot is: a reboot inside the guest starts a new boot.
    pub fn boot_state(&mut self) -> BootState {
        let ours = self.console();
        if ours.len() != self.console_len {
            self.console_len = ours.len();
            self.console_grew = Instant::now();
        }
        let kernels = ours.matches(KERNEL_BANNER).count();
        if kernels != self.kernels {
            self.kernels = kernels;
            self.kernel_seen = Instant::now();
        }
        let newest = ours.rfind(KERNEL_BANNER).map(|i| &ours[i..]);
        match newest {
            Some(boot)
                if boot
                    .lines()
                    .any(|l| l.contains("Started") && l.contains(CLIENT_STARTED)) =>
            {
                BootState::Booted
            }
            Some(boot) => BootState::Booting {
                for_how_long: self.kernel_seen.elapsed(),
                silent_for: self.console_grew.elapsed(),
                stalled: HANG_SIGNS.iter().any(|s| boot.contains(s)),
            },
            None => BootState::Booting {
                for_how_long: self.started.elapsed(),
                silent_for: self.console_grew.elapsed(),
                stalled: false,
            },
        }
    }

    /// The last `lines` lines of this QEMU's console.
    pub fn serial_tail(&self, lines: usize) -> String {
        let ours = self.console();
        let all: Vec<&str> = ours.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// True while QEMU runs (it keeps running across guest reboots).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Fails if QEMU exited on its own (a crash, or an unexpected guest poweroff).
    pub fn check_alive(&mut self) -> Result<()> {
        if !self.is_running() {
            bail!(
                "QEMU of VM `{}` exited unexpectedly (see {})",
                self.name,
                self.serial_log.display()
            );
        }
        Ok(())
    }

    /// This QEMU's part of the serial console (earlier runs on the same disk left out).
    pub fn console(&self) -> String {
        let bytes = std::fs::read(&self.serial_log).unwrap_or_default();
        String::from_utf8_lossy(bytes.get(self.log_offset..).unwrap_or_default()).into_owned()
    }

    /// The serial console so far.
    pub fn serial_text(&self) -> String {
        std::fs::read(&self.serial_log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// How many times a Linux kernel has started on this disk's console log.
    pub fn boots(&self) -> usize {
        self.serial_text().matches("Linux version ").count()
    }

    /// Clean stop: ACPI power button over QMP, wait up to `timeout`, then kill.
    /// Returns whether the guest powered off by itself.
    pub fn shutdown(mut self, timeout: Duration) -> Result<bool> {
        let clean = match self.qmp(&["system_powerdown"]) {
            Ok(()) => self.wait_exit(timeout),
            Err(_) => false,
        };
        if !clean {
            self.kill();
        }
        Ok(clean)
    }

    /// Power cut: SIGKILL QEMU, so the guest gets no chance to flush or unmount.
    pub fn power_cut(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !self.is_running() {
                self.child = None;
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    }

    /// Sends QMP commands (after the capabilities handshake).
    fn qmp(&self, commands: &[&str]) -> Result<()> {
        let stream = UnixStream::connect(&self.qmp_socket)
            .with_context(|| format!("cannot connect to QMP at {}", self.qmp_socket.display()))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut writer = stream;
        let mut line = String::new();
        reader.read_line(&mut line)?; // greeting
        for command in std::iter::once(&"qmp_capabilities").chain(commands) {
            writeln!(writer, "{{\"execute\":\"{command}\"}}")?;
            loop {
                line.clear();
                if reader.read_line(&mut line)? == 0 {
                    bail!("QMP closed the connection");
                }
                // Skip asynchronous events until the command's reply.
                if line.contains("\"return\"") {
                    break;
                }
                if line.contains("\"error\"") {
                    bail!("QMP {command}: {}", line.trim());
                }
            }
        }
        Ok(())
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `lines` lines of a text file (for failure reports).
pub fn tail_file(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
