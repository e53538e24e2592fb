//! The committed tiny checkpoint as a complete folder, shared by the end-to-end tests.

use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../pixel-vlm/tests/fixtures")
}

/// The tiny model's weights and config beside the test tokenizer, chat template and preprocessor config.
pub fn checkpoint() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let model = fixtures().join("models/tiny_flat");
    for name in ["config.json", "model.safetensors"] {
        std::fs::copy(model.join(name), dir.path().join(name)).expect("copy model");
    }
    for name in [
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.json",
        "preprocessor_config.json",
    ] {
        std::fs::copy(
            fixtures().join("tokenizer").join(name),
            dir.path().join(name),
        )
        .expect("copy tokenizer");
    }
    dir
}
