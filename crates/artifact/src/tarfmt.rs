//! USTAR header construction and block padding shared by the writer (mirrors Go `archive/tar`).

use std::io::{self, Write};

pub(crate) const BLOCK: u64 = 512;

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
    Ok(h)
}

/// Zero bytes needed after `size` bytes of content to reach a block boundary.
pub(crate) fn padding(size: u64) -> usize {
    ((BLOCK - size % BLOCK) % BLOCK) as usize
}

pub(crate) fn write_padding<W: Write + ?Sized>(w: &mut W, size: u64) -> io::Result<()> {
    w.write_all(&[0u8; BLOCK as usize][..padding(size)])
}

/// Writes a whole in-memory member.
pub(crate) fn write_member<W: Write + ?Sized>(
    w: &mut W,
    name: &str,
    data: &[u8],
    mode: u32,
    mtime: u64,
    owner: Owner,
) -> io::Result<()> {
    let h = file_header(name, data.len() as u64, mode, mtime, owner)?;
    w.write_all(h.as_bytes())?;
    w.write_all(data)?;
    write_padding(w, data.len() as u64)
}

/// The end-of-archive marker: two zero blocks, no record padding (as Go writes it).
pub(crate) fn write_end<W: Write + ?Sized>(w: &mut W) -> io::Result<()> {
    w.write_all(&[0u8; 2 * BLOCK as usize])
}
