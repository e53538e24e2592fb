//! Tests of `config.json` parsing and validation, both layouts.

use super::*;

const FLAT: &str = r#"{
    "architectures": ["Qwen2_5_VLForConditionalGeneration"],
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 500,
    "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "hidden_act": "silu",
    "rope_scaling": {"type": "mrope", "rope_type": "default", "mrope_section": [2, 3, 3]},
    "image_token_id": 400, "video_token_id": 401, "vision_start_token_id": 398,
    "eos_token_id": 151645, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
    "vision_config": {"depth": 2, "hidden_size": 32, "intermediate_size": 48, "num_heads": 2,
        "out_hidden_size": 64, "fullatt_block_indexes": [1], "window_size": 56, "tokens_per_second": 2}
}"#;

const NESTED: &str = r#"{
    "model_type": "qwen2_5_vl", "image_token_id": 400, "video_token_id": 401,
    "vision_start_token_id": 398, "tie_word_embeddings": false,
    "text_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 500, "eos_token_id": [7, 8],
        "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 5000.0}},
    "vision_config": {"depth": 2, "hidden_size": 32, "intermediate_size": 48, "num_heads": 2,
        "out_hidden_size": 64, "fullatt_block_indexes": [1]}
}"#;

#[test]
fn dtype_names_parse_and_unknown_ones_are_named() {
    let with = |field: &str, value: &str| {
        FLAT.replacen(
            "\"torch_dtype\": \"bfloat16\"",
            &format!("\"{field}\": \"{value}\""),
            1,
        )
    };
    let dtype = |json: String| Qwen25VlConfig::from_json_str(&json).map(|c| c.torch_dtype);
    assert_eq!(
        dtype(with("dtype", "float16")).unwrap(),
        Some(FloatDType::F16)
    );
    assert_eq!(
        dtype(with("torch_dtype", "torch.float32")).unwrap(),
        Some(FloatDType::F32)
    );
    let err = dtype(with("torch_dtype", "int8")).unwrap_err();
    assert!(
        matches!(&err, VlmError::Config { field, .. } if field == "torch_dtype"),
        "{err}"
    );
}

#[test]
fn both_layouts_parse() {
    let flat = Qwen25VlConfig::from_json_str(FLAT).unwrap();
    assert_eq!(flat.text.mrope_section, [2, 3, 3]);
    assert_eq!(flat.text.rope_theta, 1e6);
    assert!(flat.tie_word_embeddings);
    assert_eq!(flat.eos_token_ids, vec![151645]);
    assert_eq!(flat.torch_dtype, Some(FloatDType::BF16));
    assert_eq!(flat.vision.window_size, 56);
    let nested = Qwen25VlConfig::from_json_str(NESTED).unwrap();
    assert_eq!(nested.text.rope_theta, 5000.0);
    assert_eq!(nested.text.num_key_value_heads, 2);
    assert!(!nested.tie_word_embeddings);
    assert_eq!(nested.eos_token_ids, vec![7, 8]);
    assert_eq!(nested.torch_dtype, None);
    assert_eq!(nested.vision.window_size, 112);
    assert_eq!(nested.vision.patch_dim(), 1176);
}

fn field_of(json: &str) -> String {
    match Qwen25VlConfig::from_json_str(json) {
        Err(VlmError::Config { field, .. }) => field,
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn errors_name_the_field() {
    assert_eq!(
        field_of(&FLAT.replace("[2, 3, 3]", "[2, 3, 4]")),
        "rope_scaling.mrope_section"
    );
    assert_eq!(
        field_of(&NESTED.replace("[2, 3, 3]", "[2, 3]")),
        "text_config.rope_parameters.mrope_section"
    );
    assert_eq!(
        field_of(&NESTED.replace("\"vocab_size\": 500,", "")),
        "text_config.vocab_size"
    );
    assert_eq!(
        field_of(&FLAT.replace("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3")),
        "num_key_value_heads"
    );
    assert_eq!(
        field_of(&FLAT.replace(
            "\"fullatt_block_indexes\": [1]",
            "\"fullatt_block_indexes\": [2]"
        )),
        "vision_config.fullatt_block_indexes"
    );
    assert_eq!(
        field_of(&FLAT.replace("\"image_token_id\": 400", "\"image_token_id\": 900")),
        "image_token_id"
    );
    assert_eq!(
        field_of(&FLAT.replace("\"out_hidden_size\": 64", "\"out_hidden_size\": 63")),
        "vision_config.out_hidden_size"
    );
    assert!(matches!(
        Qwen25VlConfig::from_json_str("{"),
        Err(VlmError::Json { .. })
    ));
}

#[test]
fn tokens_per_second_must_be_finite_and_positive() {
    for bad in ["0", "-2", "0.0"] {
        assert_eq!(
            field_of(&FLAT.replace(
                "\"tokens_per_second\": 2",
                &format!("\"tokens_per_second\": {bad}")
            )),
            "vision_config.tokens_per_second",
            "{bad}"
        );
    }
    // The vision RoPE base is checked the same way.
    assert_eq!(
        field_of(&NESTED.replace(
            "\"num_heads\": 2,",
            "\"num_heads\": 2, \"rope_parameters\": {\"rope_theta\": -1.0},"
        )),
        "vision_config.rope_parameters.rope_theta"
    );
}

#[test]
fn overflowing_size_products_name_the_field() {
    // patch_size^2 * in_channels * temporal_patch_size overflows; the window is a multiple of the
    // merge block, so the product check is what rejects it.
    let huge_patch = FLAT.replace(
        "\"window_size\": 56",
        "\"window_size\": 8589934592, \"patch_size\": 4294967296",
    );
    let err = Qwen25VlConfig::from_json_str(&huge_patch).unwrap_err();
    assert!(
        matches!(&err, VlmError::Config { field, reason }
            if field == "vision_config.patch_size" && reason.contains("overflows")),
        "{err}"
    );
    // The embedding table's element count overflows.
    let huge_vocab = FLAT.replace("\"vocab_size\": 500", "\"vocab_size\": 4611686018427387904");
    let err = Qwen25VlConfig::from_json_str(&huge_vocab).unwrap_err();
    assert!(
        matches!(&err, VlmError::Config { field, .. } if field == "vocab_size"),
        "{err}"
    );
    // patch_size * spatial_merge_size overflows in the window check.
    let huge_merge = NESTED.replace(
        "\"num_heads\": 2,",
        "\"num_heads\": 2, \"patch_size\": 4294967296, \"spatial_merge_size\": 4294967296,",
    );
    let err = Qwen25VlConfig::from_json_str(&huge_merge).unwrap_err();
    assert!(
        matches!(&err, VlmError::Config { field, .. } if field == "vision_config.spatial_merge_size"),
        "{err}"
    );
}

#[test]
fn a_config_edited_in_code_is_validated_again() {
    let mut config = Qwen25VlConfig::from_json_str(NESTED).unwrap();
    config.vision.tokens_per_second = f64::NAN;
    let err = config.validate().unwrap_err();
    assert!(
        matches!(&err, VlmError::Config { field, .. } if field == "vision_config.tokens_per_second"),
        "{err}"
    );
    config.vision.tokens_per_second = 2.0;
    config.text.num_attention_heads = 0;
    assert_eq!(config.text.head_dim(), 0, "no division by zero");
    let err = config.validate().unwrap_err();
    assert!(
        matches!(&err, VlmError::Config { field, .. } if field == "text_config.num_attention_heads"),
        "{err}"
    );
}
