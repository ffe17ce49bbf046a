//! Checks a `--module-binary` before it is packed: an ELF executable for the devices' machine and
//! word size, and whether it needs a dynamic loader (a static module runs on any libc).

use crate::target::Arch;
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::Path;

const PT_INTERP: u32 = 3;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;

/// What the header says about a module binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleBinary {
    pub machine: u16,
    pub bits: u8,
    /// The program interpreter (`PT_INTERP`) of a dynamically linked binary; `None` = static.
    pub interpreter: Option<String>,
}

impl ModuleBinary {
    pub fn is_static(&self) -> bool {
        self.interpreter.is_none()
    }

    /// `statically linked` or `dynamically linked (loader X)`, for the summary.
    pub fn linkage(&self) -> String {
        match &self.interpreter {
            None => "statically linked".into(),
            Some(i) => format!("dynamically linked (loader {i})"),
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Parses the ELF header and program headers (little-endian only: every supported device is).
pub fn parse(bytes: &[u8]) -> std::result::Result<ModuleBinary, String> {
    if bytes.len() < 52 || &bytes[..4] != b"\x7fELF" {
        return Err(if bytes.starts_with(b"#!") {
            "is a script, not a compiled program".into()
        } else {
            "is not an ELF program".into()
        });
    }
    let bits = match bytes[4] {
        1 => 32,
        2 => 64,
        other => return Err(format!("has an unknown ELF class {other}")),
    };
    if bytes[5] != 1 {
        return Err("is a big-endian ELF file; Mender devices here are little-endian".into());
    }
    let short = || "is a truncated ELF file".to_string();
    let e_type = u16_at(bytes, 16).ok_or_else(short)?;
    let machine = u16_at(bytes, 18).ok_or_else(short)?;
    let (phoff, phentsize, phnum, entry) = if bits == 64 {
        (
            u64_at(bytes, 32).ok_or_else(short)?,
            u16_at(bytes, 54).ok_or_else(short)?,
            u16_at(bytes, 56).ok_or_else(short)?,
            u64_at(bytes, 24).ok_or_else(short)?,
        )
    } else {
        (
            u64::from(u32_at(bytes, 28).ok_or_else(short)?),
            u16_at(bytes, 42).ok_or_else(short)?,
            u16_at(bytes, 44).ok_or_else(short)?,
            u64::from(u32_at(bytes, 24).ok_or_else(short)?),
        )
    };
    if e_type != ET_EXEC && e_type != ET_DYN {
        return Err("is an ELF file but not an executable (object file or core dump)".into());
    }
    let mut interpreter = None;
    for i in 0..u64::from(phnum) {
        let at = usize::try_from(phoff + i * u64::from(phentsize)).map_err(|_| short())?;
        if u32_at(bytes, at).ok_or_else(short)? != PT_INTERP {
            continue;
        }
        let (offset, size) = if bits == 64 {
            (
                u64_at(bytes, at + 8).ok_or_else(short)?,
                u64_at(bytes, at + 32).ok_or_else(short)?,
            )
        } else {
            (
                u64::from(u32_at(bytes, at + 4).ok_or_else(short)?),
                u64::from(u32_at(bytes, at + 16).ok_or_else(short)?),
            )
        };
        let start = usize::try_from(offset).map_err(|_| short())?;
        let end = start
            .checked_add(usize::try_from(size).map_err(|_| short())?)
            .ok_or_else(short)?;
        let raw = bytes.get(start..end).ok_or_else(short)?;
        interpreter = Some(
            String::from_utf8_lossy(raw)
                .trim_end_matches('\0')
                .to_string(),
        );
    }
    if e_type == ET_DYN && interpreter.is_none() && entry == 0 {
        return Err("is a shared library, not an executable".into());
    }
    Ok(ModuleBinary {
        machine,
        bits,
        interpreter,
    })
}

/// Reads `path` and checks it is an executable for `arch`; the error names the file and says
/// what it is instead.
pub fn check_module_binary(path: &Path, arch: &Arch) -> Result<ModuleBinary> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(64 << 20).read_to_end(&mut bytes))
        .with_context(|| format!("{}: cannot read the module binary", path.display()))?;
    let info = match parse(&bytes) {
        Ok(info) => info,
        Err(why) => bail!(
            "{}: --module-binary {why}; give the server-migration program built for {arch} \
             (`cargo xtask artifacts --target TRIPLE` builds it)",
            path.display()
        ),
    };
    if info.machine != arch.elf_machine || info.bits != arch.bits {
        bail!(
            "{}: --module-binary is built for {}, but the devices are {} ({}); \
             build it for the devices' architecture",
            path.display(),
            Arch::describe_machine(info.machine, info.bits),
            arch,
            Arch::describe_machine(arch.elf_machine, arch.bits),
        );
    }
    Ok(info)
}

/// Test support (not an API): a minimal ELF executable header for `machine` (EM_*) and word
/// size, plus a PT_INTERP when `interp` is given (a dynamically linked binary); enough for
/// [`parse`] and the module-binary check, never run. The unit tests here and the CLI's
/// integration tests build their stand-in module binaries with it.
#[doc(hidden)]
pub fn fake_elf(machine: u16, bits: u8, interp: Option<&str>) -> Vec<u8> {
    let mut b = vec![0u8; 256];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = if bits == 64 { 2 } else { 1 };
    b[5] = 1;
    b[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
    b[18..20].copy_from_slice(&machine.to_le_bytes());
    let (ph, phentsize) = (64usize, if bits == 64 { 56u16 } else { 32 });
    if bits == 64 {
        b[24..32].copy_from_slice(&0x400000u64.to_le_bytes());
        b[32..40].copy_from_slice(&(ph as u64).to_le_bytes());
        b[54..56].copy_from_slice(&phentsize.to_le_bytes());
        b[56..58].copy_from_slice(&1u16.to_le_bytes());
    } else {
        b[24..28].copy_from_slice(&0x10000u32.to_le_bytes());
        b[28..32].copy_from_slice(&(ph as u32).to_le_bytes());
        b[42..44].copy_from_slice(&phentsize.to_le_bytes());
        b[44..46].copy_from_slice(&1u16.to_le_bytes());
    }
    let ptype: u32 = if interp.is_some() { PT_INTERP } else { 1 };
    b[ph..ph + 4].copy_from_slice(&ptype.to_le_bytes());
    if let Some(i) = interp {
        let off = 160usize;
        b[off..off + i.len()].copy_from_slice(i.as_bytes());
        if bits == 64 {
            b[ph + 8..ph + 16].copy_from_slice(&(off as u64).to_le_bytes());
            b[ph + 32..ph + 40].copy_from_slice(&(i.len() as u64 + 1).to_le_bytes());
        } else {
            b[ph + 4..ph + 8].copy_from_slice(&(off as u32).to_le_bytes());
            b[ph + 16..ph + 20].copy_from_slice(&(i.len() as u32 + 1).to_le_bytes());
        }
    }
    b
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn reads_machine_bits_and_linkage() {
        let s = parse(&fake_elf(183, 64, None)).unwrap();
        assert_eq!((s.machine, s.bits, s.is_static()), (183, 64, true));
        let d = parse(&fake_elf(40, 32, Some("/lib/ld-linux-armhf.so.3"))).unwrap();
        assert_eq!(d.interpreter.as_deref(), Some("/lib/ld-linux-armhf.so.3"));
        assert!(d.linkage().contains("dynamically"));
    }

    #[test]
    fn refuses_non_elf_and_wrong_machine() {
        assert!(parse(b"#!/bin/sh\nexit 0\n")
            .unwrap_err()
            .contains("script"));
        assert!(parse(b"hello").unwrap_err().contains("not an ELF"));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m");
        std::fs::write(&p, fake_elf(62, 64, None)).unwrap();
        let err = check_module_binary(&p, &Arch::parse("aarch64").unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("x86-64") && err.contains("aarch64"), "{err}");
        check_module_binary(&p, &Arch::parse("x86_64").unwrap()).unwrap();
        // right machine, wrong word size
        std::fs::write(&p, fake_elf(183, 32, None)).unwrap();
        assert!(check_module_binary(&p, &Arch::parse("aarch64").unwrap()).is_err());
    }

    #[test]
    fn reads_a_real_binary() {
        let exe = std::env::current_exe().unwrap();
        let info = parse(&std::fs::read(exe).unwrap()).unwrap();
        assert_eq!(info.bits as usize, std::mem::size_of::<usize>() * 8);
    }
}
