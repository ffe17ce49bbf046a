//! The device architectures the update module is built for: Rust target triples, the ELF
//! machine each one runs, how to link it without the device's toolchain, and the `uname -m`
//! names that lead a user to the right triple. Never guessed from a Mender device type.

use std::fmt;

/// An ELF machine and word size, named like the artifact names carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arch {
    /// The name in artifact names and output (`aarch64`, `armv7`, `x86_64`, ...).
    pub name: &'static str,
    /// `e_machine` of the ELF header.
    pub elf_machine: u16,
    /// 32 or 64 (`EI_CLASS`).
    pub bits: u8,
    /// `uname -m` outputs (and Debian architecture names) that mean this architecture.
    pub aliases: &'static [&'static str],
}

const EM_386: u16 = 3;
const EM_ARM: u16 = 40;
const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;
const EM_RISCV: u16 = 243;

/// Architectures `--arch` accepts (for a module built elsewhere, `--module-binary`).
pub const ARCHES: &[Arch] = &[
    Arch {
        name: "aarch64",
        elf_machine: EM_AARCH64,
        bits: 64,
        aliases: &["arm64", "armv8", "aarch64_be"],
    },
    Arch {
        name: "armv7",
        elf_machine: EM_ARM,
        bits: 32,
        aliases: &["armv7l", "armv7hl", "armv8l", "armhf"],
    },
    Arch {
        name: "armv6",
        elf_machine: EM_ARM,
        bits: 32,
        aliases: &["armv6l", "armel", "armv5tel", "arm"],
    },
    Arch {
        name: "x86_64",
        elf_machine: EM_X86_64,
        bits: 64,
        aliases: &["amd64"],
    },
    Arch {
        name: "i686",
        elf_machine: EM_386,
        bits: 32,
        aliases: &["i386", "i586", "x86"],
    },
    Arch {
        name: "riscv64",
        elf_machine: EM_RISCV,
        bits: 64,
        aliases: &["riscv64gc"],
    },
];

impl Arch {
    /// Looks up `--arch` (canonical name, `uname -m` output or Debian architecture).
    pub fn parse(input: &str) -> Option<Arch> {
        let input = input.trim().to_ascii_lowercase();
        ARCHES
            .iter()
            .find(|a| a.name == input || a.aliases.contains(&input.as_str()))
            .copied()
    }

    /// The ELF machine in words, for error messages.
    pub fn describe_machine(machine: u16, bits: u8) -> String {
        let name = match machine {
            EM_AARCH64 => "AArch64",
            EM_ARM => "ARM",
            EM_X86_64 => "x86-64",
            EM_386 => "x86 (i386)",
            EM_RISCV => "RISC-V",
            _ => return format!("ELF machine {machine} ({bits}-bit)"),
        };
        format!("{name}, {bits}-bit")
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// How a target's module is linked on a Debian host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linker {
    /// Rust's own `rust-lld` (musl targets bring their C runtime): no cross gcc needed.
    RustLld,
    /// A GNU cross compiler driver from a Debian package; glibc is linked statically
    /// (`-C target-feature=+crt-static`) so the module does not depend on the device's glibc.
    Gcc {
        command: &'static str,
        debian_package: &'static str,
    },
    /// The host's own `cc` (host architecture), glibc linked statically.
    HostCc,
}

/// A target triple the project builds the update module for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceTarget {
    pub triple: &'static str,
    pub arch: &'static str,
    pub linker: Linker,
}

/// Every triple `--target` accepts, first the recommended one per architecture.
pub const TARGETS: &[DeviceTarget] = &[
    DeviceTarget {
        triple: "aarch64-unknown-linux-musl",
        arch: "aarch64",
        linker: Linker::RustLld,
    },
    DeviceTarget {
        triple: "armv7-unknown-linux-gnueabihf",
        arch: "armv7",
        linker: Linker::Gcc {
            command: "arm-linux-gnueabihf-gcc",
            debian_package: "gcc-arm-linux-gnueabihf",
        },
    },
    DeviceTarget {
        triple: "x86_64-unknown-linux-musl",
        arch: "x86_64",
        linker: Linker::RustLld,
    },
    DeviceTarget {
        triple: "aarch64-unknown-linux-gnu",
        arch: "aarch64",
        linker: Linker::Gcc {
            command: "aarch64-linux-gnu-gcc",
            debian_package: "gcc-aarch64-linux-gnu",
        },
    },
    DeviceTarget {
        triple: "x86_64-unknown-linux-gnu",
        arch: "x86_64",
        linker: Linker::HostCc,
    },
];

impl DeviceTarget {
    /// Looks up `--target`; the error lists the supported triples and how to pick one.
    pub fn parse(triple: &str) -> Result<DeviceTarget, String> {
        TARGETS
            .iter()
            .find(|t| t.triple == triple)
            .copied()
            .ok_or_else(|| {
                format!(
                    "--target {triple:?} is not a target this project builds the module for\n{}",
                    how_to_pick()
                )
            })
    }

    pub fn arch(&self) -> Arch {
        Arch::parse(self.arch).expect("every target's arch is in ARCHES")
    }

    /// Whether glibc is linked statically through `-C target-feature=+crt-static`.
    pub fn needs_crt_static(&self) -> bool {
        self.triple.contains("-gnu")
    }
}

/// How to choose `--target` for a fleet: by the devices' `uname -m`, never by device type.
pub fn how_to_pick() -> String {
    let mut s = String::from(
        "Pick the target from the devices' CPU: run `uname -m` on one device (a Mender device type \
         says nothing reliable about it), then:\n",
    );
    for (uname, triple) in [
        ("aarch64", "aarch64-unknown-linux-musl"),
        ("armv7l (or armv8l)", "armv7-unknown-linux-gnueabihf"),
        ("x86_64", "x86_64-unknown-linux-musl"),
    ] {
        s.push_str(&format!("  uname -m = {uname:<19} --target {triple}\n"));
    }
    s.push_str(
        "  anything else (armv6l, riscv64, ...): build the module yourself and pass\n  \
         --module-binary PATH --arch ARCH (it is checked against ARCH)\n\
         Other supported triples: aarch64-unknown-linux-gnu, x86_64-unknown-linux-gnu (glibc linked statically).",
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_has_an_arch_and_aliases_resolve() {
        for t in TARGETS {
            assert_eq!(t.arch().name, t.arch);
            assert!(t.triple.starts_with(t.arch));
        }
        assert_eq!(Arch::parse("armv7l").unwrap().name, "armv7");
        assert_eq!(Arch::parse("ARM64").unwrap().name, "aarch64");
        assert_eq!(Arch::parse("amd64").unwrap().name, "x86_64");
        assert!(Arch::parse("sparc").is_none());
        assert!(DeviceTarget::parse("armv7-unknown-linux-musleabihf")
            .unwrap_err()
            .contains("uname -m"));
    }
}
