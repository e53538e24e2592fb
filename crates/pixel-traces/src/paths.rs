//! Resolving media paths written in records against a dataset root, without letting them escape it.

use std::path::{Component, Path, PathBuf};

use crate::{Error, Result};

/// A directory that media paths in records are relative to.
///
/// [`DatasetRoot::resolve`] refuses absolute paths, `..` components and symlinks (on any component that
/// exists), so a record can only name files inside the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetRoot {
    root: PathBuf,
}

impl DatasetRoot {
    /// A root at `dir` (not checked for existence until a path is resolved).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { root: dir.into() }
    }

    /// The root directory.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// Resolves `rel` (as written in a record) to a path under the root.
    ///
    /// A `file://` prefix is accepted and stripped (qwen-vl-utils writes it). The file need not exist; the
    /// components that do exist must not be symlinks.
    ///
    /// # Errors
    /// [`Error::UnsafePath`] for an empty, absolute, URL, `..`-climbing or symlinked path.
    pub fn resolve(&self, rel: &str) -> Result<PathBuf> {
        let unsafe_path = |reason| Error::UnsafePath {
            path: rel.to_string(),
            reason,
        };
        let stripped = rel.strip_prefix("file://").unwrap_or(rel);
        if stripped.is_empty() {
            return Err(unsafe_path("empty path"));
        }
        if stripped.contains("://") {
            return Err(unsafe_path(
                "URLs are not fetched; download the file under the root",
            ));
        }
        if stripped.contains('\0') {
            return Err(unsafe_path("NUL byte in path"));
        }
        let path = Path::new(stripped);
        let mut out = self.root.clone();
        for component in path.components() {
            match component {
                Component::Normal(part) => {
                    out.push(part);
                    if let Ok(meta) = std::fs::symlink_metadata(&out)
                        && meta.file_type().is_symlink()
                    {
                        return Err(unsafe_path("passes through a symlink"));
                    }
                }
                Component::CurDir => {}
                Component::ParentDir => return Err(unsafe_path("contains '..'")),
                Component::RootDir | Component::Prefix(_) => {
                    return Err(unsafe_path("absolute paths are not allowed"));
                }
            }
        }
        if out == self.root {
            return Err(unsafe_path("names the root itself"));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_relative_paths_resolve_under_the_root() {
        let root = DatasetRoot::new("/data/set");
        assert_eq!(
            root.resolve("images/a.jpg").unwrap(),
            PathBuf::from("/data/set/images/a.jpg")
        );
        assert_eq!(
            root.resolve("./b.png").unwrap(),
            PathBuf::from("/data/set/b.png")
        );
        assert_eq!(
            root.resolve("file://c/d.png").unwrap(),
            PathBuf::from("/data/set/c/d.png")
        );
    }

    #[test]
    fn escapes_are_refused() {
        let root = DatasetRoot::new("/data/set");
        for bad in [
            "../x.jpg",
            "a/../../x.jpg",
            "a/..",
            "/etc/passwd",
            "file:///etc/passwd",
            "",
            ".",
            "http://h/x.jpg",
        ] {
            let err = root.resolve(bad).unwrap_err();
            assert!(matches!(err, Error::UnsafePath { .. }), "{bad}: {err}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.png"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        std::fs::write(dir.path().join("real/ok.png"), b"x").unwrap();
        let root = DatasetRoot::new(dir.path());
        assert!(root.resolve("real/ok.png").is_ok());
        let err = root.resolve("link/secret.png").unwrap_err();
        assert!(
            matches!(
                err,
                Error::UnsafePath {
                    reason: "passes through a symlink",
                    ..
                }
            ),
            "{err}"
        );
    }
}
