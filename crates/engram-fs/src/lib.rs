//! Crash-safe file writes, in one place.
//!
//! A file that must survive a crash whole is written beside its destination
//! under a temporary name, flushed to disk, renamed over the destination, and
//! then the directory is flushed so that the rename itself is durable. A
//! crash at any point leaves either the old content or the new one, never a
//! torn file, and never an acknowledged write that a reboot loses. The vector
//! index (its file and its metadata), `engram restore` (installing the
//! database) and `engram audit export` use these helpers; tantivy and SQLite
//! keep their own files crash-safe.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Write `bytes` to `path` crash-safely: a temporary file beside it, fsync,
/// rename over `path`, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = tmp_path(path);
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    install(&tmp, path)
}

/// Move a file that is already complete at `from` to `to` durably: fsync its
/// content, rename it over `to`, fsync `to`'s directory. `from` and `to` must
/// be on the same file system (a rename).
pub fn install(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::File::open(from)?.sync_all()?;
    std::fs::rename(from, to)?;
    sync_dir(parent(to))
}

/// Flush a directory's entries (created, renamed or removed files) to disk.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The temporary name a crash-safe write of `path` uses: `<name>.tmp` beside it.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.json");
        write_atomic(&path, b"first").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        write_atomic(&path, b"second, longer").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second, longer");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("meta.json")]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.json");
        write_atomic(&path, b"old").unwrap();
        // The temporary name is taken by a directory: the write fails before
        // the rename, and the destination is untouched.
        std::fs::create_dir(tmp_path(&path)).unwrap();
        assert!(write_atomic(&path, b"new").is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
    }

    #[test]
    fn install_moves_a_complete_file_over_the_destination() {
        let dir = tempfile::tempdir().unwrap();
        let staging = dir.path().join("staging");
        std::fs::create_dir(&staging).unwrap();
        let from = staging.join("engram.db");
        let to = dir.path().join("engram.db");
        std::fs::write(&from, b"restored").unwrap();
        std::fs::write(&to, b"previous").unwrap();
        install(&from, &to).unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), b"restored");
        assert!(!from.exists());
        // A missing source is an error and changes nothing.
        assert!(install(&from, &to).is_err());
        assert_eq!(std::fs::read(&to).unwrap(), b"restored");
    }

    #[test]
    fn tmp_path_is_beside_the_file() {
        assert_eq!(
            tmp_path(Path::new("/data/index/vectors.usearch")),
            PathBuf::from("/data/index/vectors.usearch.tmp")
        );
        assert_eq!(parent(Path::new("engram.db")), Path::new("."));
    }
}
