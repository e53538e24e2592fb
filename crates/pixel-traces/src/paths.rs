//! Resolving media paths written in records against a dataset root, without letting them escape it, and
//! opening them so that the file read is the file checked.

use std::fs::{File, Metadata};
use std::path::{Component, Path, PathBuf};

use image::RgbImage;
use pixel_ops::load::{DecodeLimits, decode_image_with};

use crate::load::read_file_capped;
use crate::{Error, Result};

/// A directory that media paths in records are relative to.
///
/// [`DatasetRoot::resolve`] refuses absolute paths, `..` components and symlinks (on any component that
/// exists), so a record can only name files inside the root. It checks a path, and a path can change
/// before it is opened; read media with [`DatasetRoot::open`], [`DatasetRoot::read`] or
/// [`DatasetRoot::load_image`], which check the file they open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetRoot {
    root: PathBuf,
}

/// A media file opened under a [`DatasetRoot`]: the handle and the canonical path it was opened at.
#[derive(Debug)]
pub struct MediaFile {
    /// The canonical (absolute, symlink-free) path under the canonical root.
    pub path: PathBuf,
    /// The open file, a regular file, checked to be the one at `path`.
    pub file: File,
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
    /// components that do exist must not be symlinks. This validates records; to read the file use
    /// [`open`](Self::open) (the returned path is only as safe as the directory is still when it is opened).
    ///
    /// # Errors
    /// [`Error::UnsafePath`] for an empty, absolute, URL, `..`-climbing or symlinked path.
    pub fn resolve(&self, rel: &str) -> Result<PathBuf> {
        let relative = relative_path(rel)?;
        let mut out = self.root.clone();
        for part in relative.components() {
            out.push(part);
            if let Ok(meta) = std::fs::symlink_metadata(&out)
                && meta.file_type().is_symlink()
            {
                return Err(unsafe_path(rel, "passes through a symlink"));
            }
        }
        Ok(out)
    }

    /// Opens the media file `rel` (as written in a record) for reading, checking the file it opens.
    ///
    /// The root and the path are made canonical (`std::fs::canonicalize`: absolute, every symlink
    /// followed); the canonical path must be exactly the canonical root joined with `rel`, which refuses a
    /// symlink anywhere on the way, whether it points outside the root or not. The file must be a regular
    /// file (a directory, device or FIFO is refused before it is opened). That canonical path is opened,
    /// and then, on Unix, checked again: it must still be canonical (no directory on it was swapped for a
    /// symlink) and still name the very file opened (same device and inode), so a swap of any component
    /// between the check and the open is caught instead of read.
    ///
    /// What this still assumes: the root directory itself is trusted (it is canonicalised as it is), and no
    /// other process swaps a component for a symlink and back several times, timed around the open and
    /// both checks, while the call runs (closing that too needs `openat` with `O_NOFOLLOW` per component,
    /// which `std` does not offer). A hard link inside the root is a file of the root like any other. On
    /// other platforms the after-open check is skipped.
    ///
    /// # Errors
    /// [`Error::UnsafePath`] as for [`resolve`](Self::resolve), and for a path that resolves outside the
    /// root or through a symlink, is not a regular file, or changed while being opened; [`Error::Io`] if the
    /// root or the file cannot be found or opened.
    pub fn open(&self, rel: &str) -> Result<MediaFile> {
        self.open_with(rel, |_| {})
    }

    /// [`open`](Self::open), calling `between` after the checks and before the file is opened (tests use it
    /// to swap files at the worst moment).
    fn open_with(&self, rel: &str, between: impl FnOnce(&Path)) -> Result<MediaFile> {
        let relative = relative_path(rel)?;
        let root = canonical(&self.root)?;
        let expected = root.join(&relative);
        let path = canonical(&expected)?;
        if path != expected {
            let reason = if path.starts_with(&root) {
                "passes through a symlink"
            } else {
                "resolves outside the root (through a symlink)"
            };
            return Err(unsafe_path(rel, reason));
        }
        let checked = std::fs::symlink_metadata(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        if !checked.file_type().is_file() {
            return Err(unsafe_path(rel, "not a regular file"));
        }
        between(&path);
        let file = File::open(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let opened = file.metadata().map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let changed = || unsafe_path(rel, "changed while it was being opened");
        if !opened.file_type().is_file() || !same_file(&checked, &opened) {
            return Err(changed());
        }
        // Had a directory on the path been a symlink both at the first check and at the open, both would
        // have followed it to the same outside file: the path must still be canonical now, and still name
        // the opened file.
        if canonical(&path).ok().as_ref() != Some(&path) {
            return Err(changed());
        }
        match std::fs::symlink_metadata(&path) {
            Ok(now) if same_file(&now, &opened) => Ok(MediaFile { path, file }),
            _ => Err(changed()),
        }
    }

    /// Reads the media file `rel` whole (see [`open`](Self::open)), refusing one of more than `max_bytes`
    /// (checked before reading and enforced while reading).
    ///
    /// # Errors
    /// As [`open`](Self::open), and [`Error::FileTooLarge`] if the file is over `max_bytes`.
    pub fn read(&self, rel: &str, max_bytes: u64) -> Result<Vec<u8>> {
        let MediaFile { path, file } = self.open(rel)?;
        read_file_capped(file, &path, max_bytes)
    }

    /// Reads and decodes the image `rel` under `limits`, converted to RGB (as `pixel_ops::load_image`
    /// does). The file itself may be at most `limits.max_alloc` bytes, the most the decoder may allocate.
    ///
    /// # Errors
    /// As [`read`](Self::read), and [`Error::Ops`] if the bytes are not a readable image within `limits`.
    pub fn load_image(&self, rel: &str, limits: &DecodeLimits) -> Result<RgbImage> {
        let MediaFile { path, file } = self.open(rel)?;
        let bytes = read_file_capped(file, &path, limits.max_alloc)?;
        Ok(decode_image_with(
            &bytes,
            &path.display().to_string(),
            limits,
        )?)
    }
}

fn unsafe_path(rel: &str, reason: &'static str) -> Error {
    Error::UnsafePath {
        path: rel.to_string(),
        reason,
    }
}

/// The lexical checks of a record's media path: `rel` without its `file://` prefix, as plain components.
fn relative_path(rel: &str) -> Result<PathBuf> {
    let stripped = rel.strip_prefix("file://").unwrap_or(rel);
    if stripped.is_empty() {
        return Err(unsafe_path(rel, "empty path"));
    }
    if stripped.contains("://") {
        return Err(unsafe_path(
            rel,
            "URLs are not fetched; download the file under the root",
        ));
    }
    if stripped.contains('\0') {
        return Err(unsafe_path(rel, "NUL byte in path"));
    }
    let mut out = PathBuf::new();
    for component in Path::new(stripped).components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err(unsafe_path(rel, "contains '..'")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(unsafe_path(rel, "absolute paths are not allowed"));
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(unsafe_path(rel, "names the root itself"));
    }
    Ok(out)
}

fn canonical(path: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Whether two metadata describe the same file (device and inode); always true off Unix, where `std` does
/// not expose a file identity.
fn same_file(a: &Metadata, b: &Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        a.dev() == b.dev() && a.ino() == b.ino()
    }
    #[cfg(not(unix))]
    {
        let _ = (a, b);
        true
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

    fn reason(err: &Error) -> &'static str {
        match err {
            Error::UnsafePath { reason, .. } => reason,
            other => panic!("not an UnsafePath: {other}"),
        }
    }

    #[test]
    fn open_and_read_give_the_file_under_the_canonical_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("img")).unwrap();
        std::fs::write(dir.path().join("img/a.png"), b"hello").unwrap();
        let root = DatasetRoot::new(dir.path());
        let opened = root.open("img/a.png").unwrap();
        let canonical_root = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(opened.path, canonical_root.join("img/a.png"));
        assert_eq!(root.read("./img/a.png", 5).unwrap(), b"hello");
        let err = root.read("file://img/a.png", 4).unwrap_err();
        assert!(
            matches!(&err, Error::FileTooLarge { path, limit: 4 } if path == &opened.path),
            "{err}"
        );
    }

    #[test]
    fn open_refuses_escapes_absolute_paths_and_non_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("img")).unwrap();
        let root = DatasetRoot::new(dir.path().join("img"));
        std::fs::write(dir.path().join("secret.png"), b"x").unwrap();
        for (bad, why) in [
            ("../secret.png", "contains '..'"),
            ("a/../../secret.png", "contains '..'"),
            ("/etc/passwd", "absolute paths are not allowed"),
            ("file:///etc/passwd", "absolute paths are not allowed"),
            (".", "names the root itself"),
        ] {
            assert_eq!(reason(&root.open(bad).unwrap_err()), why, "{bad}");
        }
        std::fs::create_dir(dir.path().join("img/sub")).unwrap();
        assert_eq!(reason(&root.open("sub").unwrap_err()), "not a regular file");
        let missing = root.open("none.png").unwrap_err();
        assert!(matches!(missing, Error::Io { .. }), "{missing}");
    }

    #[test]
    fn load_image_decodes_under_the_limits() {
        let dir = tempfile::tempdir().unwrap();
        image::RgbImage::new(3, 2)
            .save(dir.path().join("a.png"))
            .unwrap();
        std::fs::write(dir.path().join("b.png"), b"not a png").unwrap();
        let root = DatasetRoot::new(dir.path());
        let limits = DecodeLimits::default();
        assert_eq!(
            root.load_image("a.png", &limits).unwrap().dimensions(),
            (3, 2)
        );
        let err = root.load_image("b.png", &limits).unwrap_err();
        assert!(matches!(err, Error::Ops(_)), "{err}");
        let tiny = DecodeLimits {
            max_alloc: 8,
            ..limits
        };
        let err = root.load_image("a.png", &tiny).unwrap_err();
        assert!(matches!(err, Error::FileTooLarge { limit: 8, .. }), "{err}");
    }

    /// A root with `real/ok.png` inside and `secret.png` in a directory outside it.
    #[cfg(unix)]
    fn root_and_outside() -> (tempfile::TempDir, tempfile::TempDir, DatasetRoot) {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.png"), b"secret").unwrap();
        std::fs::write(outside.path().join("ok.png"), b"secret").unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        std::fs::write(dir.path().join("real/ok.png"), b"ok").unwrap();
        let root = DatasetRoot::new(dir.path());
        (dir, outside, root)
    }

    #[cfg(unix)]
    #[test]
    fn open_refuses_symlinks_out_of_the_root_and_within_it() {
        use std::os::unix::fs::symlink;
        let (dir, outside, root) = root_and_outside();
        symlink(outside.path(), dir.path().join("link")).unwrap();
        symlink(
            outside.path().join("secret.png"),
            dir.path().join("evil.png"),
        )
        .unwrap();
        symlink(dir.path().join("real/ok.png"), dir.path().join("alias.png")).unwrap();
        assert_eq!(root.read("real/ok.png", 100).unwrap(), b"ok");
        for bad in ["link/secret.png", "evil.png"] {
            assert_eq!(
                reason(&root.open(bad).unwrap_err()),
                "resolves outside the root (through a symlink)",
                "{bad}"
            );
        }
        assert_eq!(
            reason(&root.open("alias.png").unwrap_err()),
            "passes through a symlink"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_file_swapped_for_a_symlink_after_the_check_is_not_read() {
        let (dir, outside, root) = root_and_outside();
        let err = root
            .open_with("real/ok.png", |path| {
                std::fs::remove_file(path).unwrap();
                std::os::unix::fs::symlink(outside.path().join("secret.png"), path).unwrap();
            })
            .unwrap_err();
        assert_eq!(reason(&err), "changed while it was being opened");
        assert!(dir.path().join("real/ok.png").is_symlink());
    }

    #[cfg(unix)]
    #[test]
    fn a_directory_swapped_for_a_symlink_after_the_check_is_not_read() {
        let (dir, outside, root) = root_and_outside();
        let err = root
            .open_with("real/ok.png", |_| {
                std::fs::rename(dir.path().join("real"), dir.path().join("old")).unwrap();
                std::os::unix::fs::symlink(outside.path(), dir.path().join("real")).unwrap();
            })
            .unwrap_err();
        assert_eq!(reason(&err), "changed while it was being opened");
    }
}
