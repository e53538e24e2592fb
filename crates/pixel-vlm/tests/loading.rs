//! Checkpoint loading errors are typed and list every problem; good checkpoints load in both layouts.

use std::path::{Path, PathBuf};

use pixel_vlm::loading::checkpoint_shapes;
use pixel_vlm::{Qwen25Vl, VlmError};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

type B = pixel_vlm::backend::CpuBackend;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(name)
}

/// Copies `tiny_flat` into a temp dir, rewriting its tensors through `edit`.
fn edited_flat(
    edit: impl FnOnce(&mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>),
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("tiny_flat");
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    edit(&mut tensors);
    write(&dir.path().join("model.safetensors"), &tensors);
    dir
}

fn write(path: &Path, tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

fn load(dir: &Path) -> Result<Qwen25Vl<B>, VlmError> {
    Qwen25Vl::<B>::from_pretrained(dir, &Default::default())
}

#[test]
fn both_layouts_load_with_canonical_names() {
    for name in ["tiny_flat", "tiny_nested"] {
        let shapes = checkpoint_shapes(fixture(name)).unwrap();
        assert!(
            shapes.contains_key("model.layers.0.self_attn.q_proj.bias"),
            "{name}"
        );
        assert!(shapes.contains_key("visual.merger.mlp.0.weight"), "{name}");
        load(&fixture(name)).unwrap();
    }
}

#[test]
fn missing_extra_and_misshaped_tensors_are_listed_together() {
    let dir = edited_flat(|t| {
        t.retain(|(n, ..)| n != "model.layers.1.mlp.up_proj.weight");
        t.push((
            "model.layers.9.extra.weight".into(),
            Dtype::F32,
            vec![2],
            vec![0; 8],
        ));
        let bias = t
            .iter_mut()
            .find(|(n, ..)| n == "visual.blocks.0.attn.qkv.bias")
            .unwrap();
        bias.2 = vec![bias.2[0] - 1];
        bias.3.truncate(bias.3.len() - 4);
    });
    match load(dir.path()) {
        Err(VlmError::Weights {
            missing,
            unexpected,
            mismatched,
        }) => {
            assert_eq!(
                missing,
                vec!["model.layers.1.mlp.up_proj.weight".to_string()]
            );
            assert_eq!(unexpected, vec!["model.layers.9.extra.weight".to_string()]);
            assert_eq!(mismatched.len(), 1);
            assert!(
                mismatched[0]
                    .starts_with("visual.blocks.0.attn.qkv.bias: expected [96], found [95]"),
                "{mismatched:?}"
            );
        }
        other => panic!("expected a weights error, got {other:?}"),
    }
}

#[test]
fn untied_checkpoint_without_lm_head_is_missing_it() {
    let dir = edited_flat(|t| t.retain(|(n, ..)| n != "lm_head.weight"));
    let err = load(dir.path()).unwrap_err();
    assert!(
        matches!(&err, VlmError::Weights { missing, .. } if missing == &["lm_head.weight".to_string()]),
        "{err}"
    );
}

#[test]
fn truncated_file_is_a_safetensors_error() {
    let dir = edited_flat(|_| {});
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let err = load(dir.path()).unwrap_err();
    assert!(
        matches!(&err, VlmError::Safetensors { reason, .. } if reason.contains("truncated")),
        "{err}"
    );
    std::fs::write(&path, &bytes[..5]).unwrap();
    assert!(matches!(
        load(dir.path()),
        Err(VlmError::Safetensors { .. })
    ));
}

#[test]
fn wrong_folders_are_not_checkpoints() {
    assert!(matches!(
        load(Path::new("/definitely/not/here")),
        Err(VlmError::NotACheckpoint { .. })
    ));
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        load(empty.path()),
        Err(VlmError::NotACheckpoint { .. })
    ));
    std::fs::copy(
        fixture("tiny_flat").join("config.json"),
        empty.path().join("config.json"),
    )
    .unwrap();
    let err = load(empty.path()).unwrap_err();
    assert!(
        matches!(&err, VlmError::NotACheckpoint { reason, .. } if reason.contains("safetensors")),
        "{err}"
    );
}

#[test]
fn broken_config_and_index_are_typed() {
    let dir = edited_flat(|_| {});
    std::fs::write(dir.path().join("config.json"), "{\"vision_config\": {}}").unwrap();
    assert!(matches!(load(dir.path()), Err(VlmError::Config { .. })));
    std::fs::write(dir.path().join("config.json"), "not json").unwrap();
    assert!(matches!(load(dir.path()), Err(VlmError::Json { .. })));

    let sharded = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture("tiny_nested")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, sharded.path().join(p.file_name().unwrap())).unwrap();
    }
    std::fs::remove_file(sharded.path().join("model-00002-of-00002.safetensors")).unwrap();
    assert!(matches!(load(sharded.path()), Err(VlmError::Io { .. })));
    std::fs::write(sharded.path().join("model.safetensors.index.json"), "{}").unwrap();
    assert!(matches!(load(sharded.path()), Err(VlmError::Json { .. })));
}
