//! Test helpers shared by the workspace's crates (a dev-dependency only; see the README).

use std::path::PathBuf;

/// `pixel-vlm`'s committed test fixtures.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../pixel-vlm/tests/fixtures")
}

/// The files of a complete tiny checkpoint folder: `(fixture folder, file name)`.
const FILES: [(&str, &str); 6] = [
    ("models/tiny_flat", "config.json"),
    ("models/tiny_flat", "model.safetensors"),
    ("tokenizer", "tokenizer.json"),
    ("tokenizer", "tokenizer_config.json"),
    ("tokenizer", "chat_template.json"),
    ("tokenizer", "preprocessor_config.json"),
];

/// The committed tiny Qwen2.5-VL model beside the test tokenizer, chat template and preprocessor config,
/// copied into one temporary folder (removed when the returned handle drops).
///
/// # Panics
/// When the fixtures are missing or the temporary folder cannot be written: a test cannot go on.
pub fn tiny_checkpoint() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let fixtures = fixtures();
    for (folder, name) in FILES {
        let from = fixtures.join(folder).join(name);
        std::fs::copy(&from, dir.path().join(name))
            .unwrap_or_else(|e| panic!("copying {}: {e}", from.display()));
    }
    dir
}

#[cfg(test)]
mod tests {
    #[test]
    fn tiny_checkpoint_holds_every_file_a_checkpoint_folder_needs() {
        let dir = super::tiny_checkpoint();
        for (_, name) in super::FILES {
            let len = std::fs::metadata(dir.path().join(name)).expect(name).len();
            assert!(len > 0, "{name} is empty");
        }
    }
}
