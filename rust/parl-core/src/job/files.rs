//! Shipped files: writing them into a job's working directory (refusing paths that escape
//! it), and the worker-wide bundle cache that lets a client send its files once per worker.

use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::protocol::{FileBundle, ShippedFile};

/// Writes every file under `root`, creating folders as needed; a path ending in '/' is an
/// (empty) folder.
pub fn write_all(root: &Path, files: &[ShippedFile]) -> Result<()> {
    for file in files {
        let path = safe_join(root, file.path.trim_end_matches('/'))?;
        if file.path.ends_with('/') {
            std::fs::create_dir_all(&path)
                .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
        }
        std::fs::write(&path, &file.data).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    }
    Ok(())
}

/// The worker's cache of bundles: `<root>/<hash>/` holds the files of one bundle.
#[derive(Debug, Clone)]
pub struct BundleCache {
    root: PathBuf,
}

impl BundleCache {
    pub fn new(root: PathBuf) -> BundleCache {
        BundleCache { root }
    }

    fn dir(&self, hash: &str) -> Option<PathBuf> {
        // The hash names a folder: accept hex only, so it cannot name anything else.
        let valid = !hash.is_empty() && hash.len() <= 128 && hash.bytes().all(|b| b.is_ascii_hexdigit());
        valid.then(|| self.root.join(hash))
    }

    /// Copies a cached bundle into `workdir`. False if the worker does not have it.
    pub fn restore(&self, hash: &str, workdir: &Path) -> Result<bool> {
        let Some(dir) = self.dir(hash).filter(|d| d.is_dir()) else { return Ok(false) };
        copy_tree(&dir, workdir)?;
        // Touched on use, so retention removes the bundles nobody uses any more.
        let _ = std::fs::File::open(&dir).and_then(|f| f.set_modified(std::time::SystemTime::now()));
        Ok(true)
    }

    /// Stores a bundle (written to a temporary folder, then renamed, so that a concurrent job
    /// never sees half of it).
    pub fn store(&self, bundle: &FileBundle) -> Result<()> {
        let Some(dir) = self.dir(&bundle.hash) else {
            return Err(Error::Protocol(format!("invalid bundle hash {:?}", bundle.hash)));
        };
        if dir.is_dir() {
            return Ok(());
        }
        let tmp = self.root.join(format!(".tmp-{}-{}", bundle.hash, std::process::id()));
        if let Err(e) = write_all(&tmp, &bundle.files) {
            // A full disk (or a bad bundle) must not leave half a bundle behind.
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        std::fs::create_dir_all(&self.root).map_err(|e| Error::io("creating the bundle cache", e))?;
        if std::fs::rename(&tmp, &dir).is_err() {
            // Another job stored it first: theirs is identical.
            let _ = std::fs::remove_dir_all(&tmp);
        }
        Ok(())
    }
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| Error::io(format!("creating {}", to.display()), e))?;
    let entries = std::fs::read_dir(from).map_err(|e| Error::io(format!("reading {}", from.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("reading {}", from.display()), e))?;
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .map_err(|e| Error::io(format!("copying to {}", target.display()), e))?;
        }
    }
    Ok(())
}

/// `root/relative`, or an error if `relative` is absolute or climbs out with "..".
fn safe_join(root: &Path, relative: &str) -> Result<PathBuf> {
    let rel = Path::new(relative);
    let escapes = rel.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if relative.is_empty() || escapes {
        return Err(Error::Protocol(format!(
            "refused to write shipped file {relative:?}: not a plain relative path"
        )));
    }
    Ok(root.join(rel))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("parl-files-{name}-{}", std::process::id()))
    }

    fn file(path: &str, data: &[u8]) -> ShippedFile {
        ShippedFile { path: path.into(), data: data.to_vec() }
    }

    #[test]
    fn writes_nested_files_and_empty_folders_and_refuses_escapes() {
        let root = temp("write");
        write_all(&root, &[file("a.py", b"x = 1"), file("pkg/b.py", b"y = 2"), file("empty/", b"")]).unwrap();
        assert_eq!(std::fs::read(root.join("pkg/b.py")).unwrap(), b"y = 2");
        assert!(root.join("empty").is_dir());
        for bad in ["/etc/passwd", "../x", "a/../../x", ""] {
            assert!(write_all(&root, &[file(bad, b"")]).is_err(), "{bad} must be refused");
        }
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_bundle_that_cannot_be_written_leaves_nothing_behind() {
        let cache_dir = temp("failed");
        let cache = BundleCache::new(cache_dir.clone());
        // "a" as a file, then "a/b" needs "a" as a folder: the write fails half-way.
        let bundle = FileBundle::new(vec![file("a", b"1"), file("a/b", b"2")]);
        assert!(cache.store(&bundle).is_err());
        let left: Vec<_> = std::fs::read_dir(&cache_dir).map(|d| d.flatten().collect()).unwrap_or_default();
        assert!(left.is_empty(), "left behind: {left:?}");
        let _ = std::fs::remove_dir_all(cache_dir);
    }

    #[test]
    fn a_stored_bundle_is_restored_into_any_workdir() {
        let (cache_dir, work) = (temp("cache"), temp("work"));
        let cache = BundleCache::new(cache_dir.clone());
        let bundle = FileBundle::new(vec![file("data/x.bin", b"123"), file("m.py", b"")]);
        assert!(!cache.restore(&bundle.hash, &work).unwrap());
        cache.store(&bundle).unwrap();
        assert!(cache.restore(&bundle.hash, &work).unwrap());
        assert_eq!(std::fs::read(work.join("data/x.bin")).unwrap(), b"123");
        assert!(!cache.restore("../../etc", &work).unwrap());
        let _ = std::fs::remove_dir_all(cache_dir);
        let _ = std::fs::remove_dir_all(work);
    }
}
