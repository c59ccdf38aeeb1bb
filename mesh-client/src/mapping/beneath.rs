//! File operations resolved beneath a mapped directory's opened handle, never through a
//! symbolic link.
//!
//! Checking a path and then opening it are two steps; a process that swaps a directory on the
//! way for a symbolic link between them redirects the open. So a mapping opens its root once
//! ([`Beneath::open`]) and resolves every path from that handle one component at a time, each
//! opened without following a symbolic link (Linux: `openat2` with `RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS`; other Unix systems: `openat` with `O_NOFOLLOW`), and does the final
//! operation (open, create, rename, unlink, mkdir) relative to the handle of the directory
//! holding the name. Whatever is swapped in, nothing outside the root is read or written.
//! Elsewhere (not Unix) paths are checked component by component before use: best effort.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use mesh_core::model::FilePath;

use crate::mapping::scan::LocalFile;

/// How a rename treats an existing target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenameMode {
    /// Fail with `AlreadyExists` if the target exists.
    NoReplace,
    /// Swap the two (both must exist; Linux only).
    Exchange,
}

/// What a name in a directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// A directory.
    Dir { mode: u32 },
    /// A regular file.
    File {
        size: u64,
        mtime_ns: i64,
        mode: u32,
        ino: u64,
    },
    /// A symbolic link (never followed).
    Symlink,
    /// Anything else (a device, a socket, a FIFO…).
    Other,
}

impl Found {
    /// The mapping's view of it at `path` (`None` for what a mapping does not hold).
    pub fn local(self, path: &FilePath) -> Option<LocalFile> {
        use mesh_core::model::FileKind;
        match self {
            Found::Dir { mode } => Some(LocalFile {
                path: path.clone(),
                kind: FileKind::Dir,
                size: 0,
                mtime_ns: 0,
                mode,
                ino: 0,
            }),
            Found::File {
                size,
                mtime_ns,
                mode,
                ino,
            } => Some(LocalFile {
                path: path.clone(),
                kind: FileKind::File,
                size,
                mtime_ns,
                mode,
                ino,
            }),
            Found::Symlink | Found::Other => None,
        }
    }
}

/// A directory beneath a mapped root, opened.
pub struct DirHandle {
    #[cfg(unix)]
    fd: rustix::fd::OwnedFd,
    /// Where it is (for messages, and the operations of systems without handles).
    path: PathBuf,
}

/// A mapped directory, opened.
pub struct Beneath {
    root: DirHandle,
}

fn not_dir(path: &Path) -> io::Error {
    io::Error::other(format!(
        "{} is not a directory (or is a symbolic link)",
        path.display()
    ))
}

impl Beneath {
    /// Opens `root` (which must be a directory, not a symbolic link).
    pub fn open(root: &Path) -> io::Result<Self> {
        #[cfg(unix)]
        {
            use rustix::fs::{openat, Mode, OFlags, CWD};
            let fd = openat(
                CWD,
                root,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            Ok(Beneath {
                root: DirHandle {
                    fd,
                    path: root.to_path_buf(),
                },
            })
        }
        #[cfg(not(unix))]
        {
            let m = std::fs::symlink_metadata(root)?;
            if !m.is_dir() {
                return Err(not_dir(root));
            }
            Ok(Beneath {
                root: DirHandle {
                    path: root.to_path_buf(),
                },
            })
        }
    }

    /// The root's path.
    pub fn path(&self) -> &Path {
        &self.root.path
    }

    /// The root's handle.
    pub fn root(&self) -> &DirHandle {
        &self.root
    }

    /// Opens the directory holding `path` and returns it with `path`'s last name; missing
    /// directories on the way are created when `create` is set.
    pub fn parent(&self, path: &FilePath, create: bool) -> io::Result<(DirHandle, String)> {
        let names: Vec<&str> = path.components().collect();
        let (last, dirs) = names
            .split_last()
            .ok_or_else(|| io::Error::other("empty path"))?;
        Ok((self.dir(dirs, create)?, (*last).to_owned()))
    }

    /// Opens the directory `path` (beneath the root).
    pub fn open_dir(&self, path: &str) -> io::Result<DirHandle> {
        if path.is_empty() {
            return self.root.try_clone();
        }
        let names: Vec<&str> = path.split('/').collect();
        self.dir(&names, false)
    }

    fn dir(&self, names: &[&str], create: bool) -> io::Result<DirHandle> {
        let mut at = self.root.try_clone()?;
        for name in names {
            at = match at.child_dir(name) {
                Ok(d) => d,
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    match at.mkdir(name) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(e),
                    }
                    at.child_dir(name)?
                }
                Err(e) => return Err(e),
            };
        }
        Ok(at)
    }

    /// Opens the regular file `path` for reading.
    pub fn open_read(&self, path: &FilePath) -> io::Result<File> {
        let (dir, name) = self.parent(path, false)?;
        dir.open_read(&name)
    }
}

impl DirHandle {
    /// Where the directory is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory's device and inode (`None` where they cannot be read, or off Unix).
    pub fn identity(&self) -> Option<(u64, u64)> {
        #[cfg(unix)]
        {
            // (The fields' types differ between systems.)
            #[allow(clippy::unnecessary_cast)]
            rustix::fs::fstat(&self.fd)
                .ok()
                .map(|st| (st.st_dev as u64, st.st_ino as u64))
        }
        #[cfg(not(unix))]
        {
            None
        }
    }

    fn try_clone(&self) -> io::Result<DirHandle> {
        Ok(DirHandle {
            #[cfg(unix)]
            fd: self.fd.try_clone()?,
            path: self.path.clone(),
        })
    }

    /// Opens the directory `name` in this one, never through a symbolic link.
    pub fn child_dir(&self, name: &str) -> io::Result<DirHandle> {
        let path = self.path.join(name);
        #[cfg(target_os = "linux")]
        {
            use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
            let fd = openat2(
                &self.fd,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
            )
            .map_err(|e| match e {
                rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP => not_dir(&path),
                e => e.into(),
            })?;
            Ok(DirHandle { fd, path })
        }
        #[cfg(all(unix, not(target_os = "linux")))]
        {
            use rustix::fs::{openat, Mode, OFlags};
            let fd = openat(
                &self.fd,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| match e {
                rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP => not_dir(&path),
                e => e.into(),
            })?;
            Ok(DirHandle { fd, path })
        }
        #[cfg(not(unix))]
        {
            let m = std::fs::symlink_metadata(&path)?;
            if !m.is_dir() {
                return Err(not_dir(&path));
            }
            Ok(DirHandle { path })
        }
    }

    /// Opens the regular file `name` in this directory for reading (not a symbolic link).
    pub fn open_read(&self, name: &str) -> io::Result<File> {
        self.open_existing(name, false)
    }

    /// Opens the existing regular file `name` in this directory for reading and writing (not
    /// a symbolic link).
    pub fn open_rw(&self, name: &str) -> io::Result<File> {
        self.open_existing(name, true)
    }

    /// Opens the existing regular file `name`, never through a symbolic link.
    fn open_existing(&self, name: &str, write: bool) -> io::Result<File> {
        #[cfg(unix)]
        {
            use rustix::fs::{openat, Mode, OFlags};
            let access = if write { OFlags::RDWR } else { OFlags::RDONLY };
            let fd = openat(
                &self.fd,
                name,
                access | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            let file = File::from(fd);
            if !file.metadata()?.is_file() {
                return Err(io::Error::other("not a regular file"));
            }
            Ok(file)
        }
        #[cfg(not(unix))]
        {
            let path = self.path.join(name);
            if !std::fs::symlink_metadata(&path)?.is_file() {
                return Err(io::Error::other("not a regular file"));
            }
            std::fs::OpenOptions::new()
                .read(true)
                .write(write)
                .open(path)
        }
    }

    /// Creates the new file `name` in this directory, for writing (fails if it exists).
    pub fn create_new(&self, name: &str) -> io::Result<File> {
        #[cfg(unix)]
        {
            use rustix::fs::{openat, Mode, OFlags};
            let fd = openat(
                &self.fd,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )?;
            Ok(File::from(fd))
        }
        #[cfg(not(unix))]
        {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(self.path.join(name))
        }
    }

    /// What `name` in this directory is, without following a symbolic link.
    pub fn entry(&self, name: &str) -> io::Result<Found> {
        #[cfg(unix)]
        {
            use rustix::fs::{statat, AtFlags, FileType};
            let st = statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)?;
            #[allow(clippy::unnecessary_cast)]
            let mode = st.st_mode as u32;
            Ok(match FileType::from_raw_mode(mode as _) {
                FileType::Directory => Found::Dir { mode: mode & 0o777 },
                FileType::RegularFile => {
                    #[allow(clippy::unnecessary_cast)]
                    let mtime_ns = (st.st_mtime as i64)
                        .saturating_mul(1_000_000_000)
                        .saturating_add(st.st_mtime_nsec as i64);
                    #[allow(clippy::unnecessary_cast)]
                    Found::File {
                        size: st.st_size as u64,
                        mtime_ns,
                        mode: mode & 0o777,
                        ino: st.st_ino as u64,
                    }
                }
                FileType::Symlink => Found::Symlink,
                _ => Found::Other,
            })
        }
        #[cfg(not(unix))]
        {
            let m = std::fs::symlink_metadata(self.path.join(name))?;
            let ft = m.file_type();
            Ok(if ft.is_symlink() {
                Found::Symlink
            } else if ft.is_dir() {
                Found::Dir {
                    mode: crate::mapping::fsops::mode_of(&m),
                }
            } else if ft.is_file() {
                Found::File {
                    size: m.len(),
                    mtime_ns: crate::mapping::fsops::mtime_ns(&m),
                    mode: crate::mapping::fsops::mode_of(&m),
                    ino: 0,
                }
            } else {
                Found::Other
            })
        }
    }

    /// What is at `name` in this directory (`None`: nothing, a symbolic link, or something
    /// else a mapping does not hold). `path` is the name's mapped path.
    pub fn stat(&self, name: &str, path: &FilePath) -> Option<LocalFile> {
        self.entry(name).ok()?.local(path)
    }

    /// Makes the directory `name` in this one.
    pub fn mkdir(&self, name: &str) -> io::Result<()> {
        #[cfg(unix)]
        {
            Ok(rustix::fs::mkdirat(
                &self.fd,
                name,
                rustix::fs::Mode::from_raw_mode(0o755),
            )?)
        }
        #[cfg(not(unix))]
        {
            std::fs::create_dir(self.path.join(name))
        }
    }

    /// Removes the file (or, with `dir`, the empty directory) `name` in this directory; a
    /// symbolic link is removed itself, never followed.
    pub fn remove(&self, name: &str, dir: bool) -> io::Result<()> {
        #[cfg(unix)]
        {
            use rustix::fs::{unlinkat, AtFlags};
            let flags = if dir {
                AtFlags::REMOVEDIR
            } else {
                AtFlags::empty()
            };
            Ok(unlinkat(&self.fd, name, flags)?)
        }
        #[cfg(not(unix))]
        {
            let p = self.path.join(name);
            if dir {
                std::fs::remove_dir(p)
            } else {
                std::fs::remove_file(p)
            }
        }
    }

    /// Renames `from` to `to`, both in this directory.
    pub fn rename(&self, from: &str, to: &str, mode: RenameMode) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            use rustix::fs::{renameat_with, RenameFlags};
            let flags = match mode {
                RenameMode::NoReplace => RenameFlags::NOREPLACE,
                RenameMode::Exchange => RenameFlags::EXCHANGE,
            };
            Ok(renameat_with(&self.fd, from, &self.fd, to, flags)?)
        }
        #[cfg(all(unix, not(target_os = "linux")))]
        {
            use rustix::fs::{renameat, statat, AtFlags};
            match mode {
                RenameMode::NoReplace => {
                    if statat(&self.fd, to, AtFlags::SYMLINK_NOFOLLOW).is_ok() {
                        return Err(io::ErrorKind::AlreadyExists.into());
                    }
                    Ok(renameat(&self.fd, from, &self.fd, to)?)
                }
                RenameMode::Exchange => Err(io::ErrorKind::Unsupported.into()),
            }
        }
        #[cfg(not(unix))]
        {
            match mode {
                RenameMode::NoReplace => {
                    if std::fs::symlink_metadata(self.path.join(to)).is_ok() {
                        return Err(io::ErrorKind::AlreadyExists.into());
                    }
                    std::fs::rename(self.path.join(from), self.path.join(to))
                }
                RenameMode::Exchange => Err(io::ErrorKind::Unsupported.into()),
            }
        }
    }

    /// Whether the names `a` and `b` in this directory are the same file (as two spellings of
    /// one name are on a case-insensitive file system).
    pub fn same_file(&self, a: &str, b: &str) -> bool {
        #[cfg(unix)]
        {
            use rustix::fs::{statat, AtFlags};
            match (
                statat(&self.fd, a, AtFlags::SYMLINK_NOFOLLOW),
                statat(&self.fd, b, AtFlags::SYMLINK_NOFOLLOW),
            ) {
                (Ok(x), Ok(y)) => x.st_dev == y.st_dev && x.st_ino == y.st_ino,
                _ => false,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = (a, b);
            false
        }
    }

    /// Renames `from` over `to` (replacing it), both in this directory.
    pub fn rename_over(&self, from: &str, to: &str) -> io::Result<()> {
        #[cfg(unix)]
        {
            Ok(rustix::fs::renameat(&self.fd, from, &self.fd, to)?)
        }
        #[cfg(not(unix))]
        {
            std::fs::rename(self.path.join(from), self.path.join(to))
        }
    }

    /// Lists this directory's names. Fails if any entry cannot be read.
    pub fn list(&self) -> io::Result<Vec<std::ffi::OsString>> {
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStringExt;
            let mut out = Vec::new();
            let dir = rustix::fs::Dir::read_from(&self.fd)?;
            for e in dir {
                let e = e?;
                let name = e.file_name().to_bytes();
                if name == b"." || name == b".." {
                    continue;
                }
                out.push(std::ffi::OsString::from_vec(name.to_vec()));
            }
            Ok(out)
        }
        #[cfg(not(unix))]
        {
            std::fs::read_dir(&self.path)?
                .map(|e| e.map(|e| e.file_name()))
                .collect()
        }
    }

    /// Flushes the whole file system holding this directory (Linux: `syncfs`).
    #[cfg(target_os = "linux")]
    pub fn sync_fs(&self) -> io::Result<()> {
        Ok(rustix::fs::syncfs(&self.fd)?)
    }
}
