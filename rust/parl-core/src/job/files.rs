//! Writing shipped files into a job's working directory, refusing paths that escape it.

use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::protocol::ShippedFile;

/// Writes every file under `root`, creating folders as needed.
pub fn write_all(root: &Path, files: &[ShippedFile]) -> Result<()> {
    for file in files {
        let path = safe_join(root, &file.path)?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
        }
        std::fs::write(&path, &file.data).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
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

    #[test]
    fn writes_nested_files_and_refuses_escapes() {
        let root = std::env::temp_dir().join(format!("parl-files-{}", std::process::id()));
        let files = vec![
            ShippedFile { path: "a.py".into(), data: b"x = 1".to_vec() },
            ShippedFile { path: "pkg/b.py".into(), data: b"y = 2".to_vec() },
        ];
        write_all(&root, &files).unwrap();
        assert_eq!(std::fs::read(root.join("pkg/b.py")).unwrap(), b"y = 2");
        for bad in ["/etc/passwd", "../x", "a/../../x", ""] {
            let file = ShippedFile { path: bad.into(), data: vec![] };
            assert!(write_all(&root, &[file]).is_err(), "{bad} must be refused");
        }
        std::fs::remove_dir_all(root).unwrap();
    }
}
