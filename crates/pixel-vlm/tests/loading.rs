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
            ..
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

/// Qwen2.5-VL-7B-Instruct's `config.json` (the fields the model reads).
const QWEN_7B_CONFIG: &str = r#"{
    "architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl",
    "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
    "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
    "max_position_embeddings": 128000, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
    "hidden_act": "silu", "tie_word_embeddings": false, "torch_dtype": "bfloat16",
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
    "vision_end_token_id": 151653, "eos_token_id": 151645,
    "vision_config": {"depth": 32, "hidden_act": "silu", "hidden_size": 1280, "intermediate_size": 3420,
        "num_heads": 16, "in_chans": 3, "out_hidden_size": 3584, "patch_size": 14,
        "spatial_merge_size": 2, "temporal_patch_size": 2, "tokens_per_second": 2, "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31]}
}"#;

/// Measured before the header check: this loaded as an allocation of the whole 7B model (the process was
/// killed at 24 GB). Now every problem is listed from the headers, and extra layers are one entry.
#[test]
fn big_config_beside_tiny_weights_is_listed_before_any_allocation() {
    let dir = edited_flat(|_| {});
    std::fs::write(dir.path().join("config.json"), QWEN_7B_CONFIG).unwrap();
    match load(dir.path()) {
        Err(VlmError::Weights {
            missing,
            unexpected,
            mismatched,
            unsupported_dtype,
        }) => {
            assert!(
                mismatched.contains(
                    &"model.embed_tokens.weight: expected [152064, 3584], found [672, 48]"
                        .to_string()
                ),
                "{mismatched:?}"
            );
            // tiny_flat has 2 decoder layers and 3 vision blocks; the rest are summarised.
            assert!(
                missing.contains(&"model.layers.{2..=27}.* (312 tensors)".to_string()),
                "{missing:?}"
            );
            assert!(
                missing.contains(&"visual.blocks.{3..=31}.* (348 tensors)".to_string()),
                "{missing:?}"
            );
            assert!(unexpected.is_empty(), "{unexpected:?}");
            assert!(unsupported_dtype.is_empty());
        }
        other => panic!("expected a weights error, got {other:?}"),
    }
    // A config asking for 10^15 layers costs no more than the checkpoint's size to check.
    let absurd = QWEN_7B_CONFIG.replace(
        "\"num_hidden_layers\": 28",
        "\"num_hidden_layers\": 1000000000000000",
    );
    std::fs::write(dir.path().join("config.json"), absurd).unwrap();
    let err = load(dir.path()).unwrap_err();
    assert!(
        matches!(&err, VlmError::Weights { missing, .. }
            if missing.iter().any(|m| m.starts_with("model.layers.{2..=999999999999999}.*"))),
        "{err}"
    );
}

#[test]
fn unsupported_dtypes_are_listed_with_the_other_problems() {
    let dir = edited_flat(|t| {
        for (name, dtype) in [
            ("model.norm.weight", Dtype::F64),
            ("visual.merger.ln_q.weight", Dtype::I64),
        ] {
            let entry = t.iter_mut().find(|(n, ..)| n == name).unwrap();
            entry.1 = dtype;
            entry.3 = vec![0; entry.3.len() * 2];
        }
        t.retain(|(n, ..)| n != "model.layers.0.mlp.down_proj.weight");
    });
    match load(dir.path()) {
        Err(VlmError::Weights {
            missing,
            unsupported_dtype,
            ..
        }) => {
            assert_eq!(
                missing,
                vec!["model.layers.0.mlp.down_proj.weight".to_string()]
            );
            assert_eq!(
                unsupported_dtype,
                vec![
                    "visual.merger.ln_q.weight: I64".to_string(),
                    "model.norm.weight: F64".to_string()
                ]
            );
        }
        other => panic!("expected a weights error, got {other:?}"),
    }
}

/// A safetensors file with the given raw JSON header and `data_len` zero bytes after it.
fn raw_safetensors(path: &Path, header: &str, data_len: usize) {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.resize(bytes.len() + data_len, 0);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn hostile_headers_are_typed_errors_without_allocation() {
    let dir = edited_flat(|_| {});
    let path = dir.path().join("model.safetensors");
    for (header, what) in [
        // Element count overflows usize.
        (
            r#"{"a": {"dtype": "F32", "shape": [4294967296, 4294967296, 16], "data_offsets": [0, 8]}}"#,
            "more elements",
        ),
        // Byte count overflows.
        (
            r#"{"a": {"dtype": "F32", "shape": [4611686018427387904], "data_offsets": [0, 8]}}"#,
            "do not hold",
        ),
        // Data end overflows u64.
        (
            r#"{"a": {"dtype": "U8", "shape": [2], "data_offsets": [18446744073709551614, 18446744073709551615]}}"#,
            "do not hold",
        ),
        (
            r#"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [18446744073709551610, 18446744073709551614]}}"#,
            "beyond 2^64",
        ),
        // A huge tensor the file does not hold.
        (
            r#"{"a": {"dtype": "BF16", "shape": [1000000000], "data_offsets": [0, 2000000000]}}"#,
            "truncated",
        ),
        (
            r#"{"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 8]}}"#,
            "no shape",
        ),
    ] {
        raw_safetensors(&path, header, 8);
        let err = load(dir.path()).unwrap_err();
        assert!(
            matches!(&err, VlmError::Safetensors { reason, .. } if reason.contains(what)),
            "{header}: {err}"
        );
    }
}

#[test]
fn shard_names_must_stay_inside_the_checkpoint_folder() {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture("tiny_nested")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    for bad in [
        "../model-00001-of-00002.safetensors",
        "/etc/passwd",
        "sub/../../x.safetensors",
        "..",
        "",
        "a\\..\\..\\b.safetensors",
        "C:evil.safetensors",
    ] {
        let index = serde_json::json!({"weight_map": {
            "model.language_model.norm.weight": bad,
            "lm_head.weight": "model-00002-of-00002.safetensors"
        }});
        std::fs::write(
            dir.path().join("model.safetensors.index.json"),
            index.to_string(),
        )
        .unwrap();
        let err = load(dir.path()).unwrap_err();
        assert!(
            matches!(&err, VlmError::ShardPath { file, key, .. }
                if file == bad && key == "model.language_model.norm.weight"),
            "{bad:?}: {err}"
        );
    }
}
