//! The tar dialect of the format, as Go's `archive/tar` writes it: USTAR headers (mode, owner
//! and mtime per member kind), appended through `tar::Builder`, which also pads members and
//! writes the end marker (two zero blocks, no record padding).

use std::io::{self, Read, Write};

/// Owner names written on members whose header Go builds from a file's stat.
#[derive(Clone, Copy)]
pub(crate) enum Owner {
    /// Hand-built Go header: empty uname/gname.
    Anonymous,
    /// `tar.FileInfoHeader`: uname/gname `root`.
    Root,
}

/// A regular-file USTAR header. Sizes of 8 GiB or more fall back to base-256, which
/// mender-artifact accepts.
pub(crate) fn file_header(
    name: &str,
    size: u64,
    mode: u32,
    mtime: u64,
    owner: Owner,
) -> io::Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name)?;
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_device_major(0)?;
    h.set_device_minor(0)?;
    if let Owner::Root = owner {
        h.set_username("root")?;
        h.set_groupname("root")?;
    }
    h.set_cksum();
    // Go writes the checksum as six octal digits, NUL, space; tar-rs as seven digits and
    // NUL. The value is the same (the field counts as spaces either way).
    let sum = h.cksum()?;
    h.as_old_mut()
        .cksum
        .copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    Ok(h)
}

/// Appends a whole in-memory member.
pub(crate) fn append_bytes<W: Write>(
    b: &mut tar::Builder<W>,
    name: &str,
    data: &[u8],
    mode: u32,
    mtime: u64,
    owner: Owner,
) -> io::Result<()> {
    let h = file_header(name, data.len() as u64, mode, mtime, owner)?;
    b.append(&h, data)
}

/// Appends a member of `size` bytes streamed from `data`; the caller makes sure `data`
/// yields exactly `size` bytes.
pub(crate) fn append_stream<W: Write, R: Read>(
    b: &mut tar::Builder<W>,
    name: &str,
    size: u64,
    mode: u32,
    mtime: u64,
    owner: Owner,
    data: R,
) -> io::Result<()> {
    let h = file_header(name, size, mode, mtime, owner)?;
    b.append(&h, data)
}
