//! M-RoPE position ids against `transformers`: 5.24's `get_rope_index` for the 5.x rule and 4.51.3's for
//! the original rule. Fixtures: `scripts/gen_vlm_processor_fixtures.py`.

use std::path::Path;

use pixel_vlm::rope_index::{RopeIndexConfig, VideoPositionRule, get_rope_index};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    input_ids: Vec<u32>,
    image_grid_thw: Vec<[usize; 3]>,
    video_grid_thw: Vec<[usize; 3]>,
    second_per_grid_ts: Vec<f64>,
}

#[derive(Deserialize)]
struct Expected {
    position_ids: [Vec<i64>; 3],
    rope_delta: i64,
}

#[derive(Deserialize)]
struct Fixture {
    config: serde_json::Value,
    cases: std::collections::BTreeMap<String, Case>,
    v5: std::collections::BTreeMap<String, Expected>,
    v4: std::collections::BTreeMap<String, Expected>,
}

fn fixture() -> Fixture {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/processor/rope_cases.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn check(rule: VideoPositionRule) -> usize {
    let f = fixture();
    let id = |k: &str| f.config[k].as_u64().unwrap() as u32;
    let config = RopeIndexConfig {
        rule,
        ..RopeIndexConfig::qwen2_5_vl(id("image_token_id"), id("video_token_id"))
    };
    let expected = match rule {
        VideoPositionRule::Original => &f.v4,
        VideoPositionRule::Transformers5 => &f.v5,
    };
    assert_eq!(expected.len(), f.cases.len());
    for (name, case) in &f.cases {
        // The processor hands second_per_grid_ts over as f32; the fixture stores those f32 values exactly.
        let spg: Vec<f32> = case.second_per_grid_ts.iter().map(|&s| s as f32).collect();
        let got = get_rope_index(
            &config,
            &case.input_ids,
            &case.image_grid_thw,
            &case.video_grid_thw,
            &spg,
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = &expected[name];
        for axis in 0..3 {
            assert_eq!(
                got.axis(axis),
                want.position_ids[axis].as_slice(),
                "{name}: axis {axis} ({rule:?})"
            );
        }
        assert_eq!(
            got.rope_delta, want.rope_delta,
            "{name}: rope_delta ({rule:?})"
        );
    }
    f.cases.len()
}

#[test]
fn original_rule_matches_transformers_4_51() {
    assert!(check(VideoPositionRule::Original) >= 9);
}

#[test]
fn transformers5_rule_matches_transformers_5_24() {
    assert!(check(VideoPositionRule::Transformers5) >= 9);
}

#[test]
fn the_rules_differ_exactly_on_text_after_videos() {
    let f = fixture();
    let mut differ = 0;
    for (name, case) in &f.cases {
        let same = f.v4[name].rope_delta == f.v5[name].rope_delta
            && f.v4[name].position_ids == f.v5[name].position_ids;
        if case.video_grid_thw.is_empty() {
            assert!(same, "{name}: no video, the rules must agree");
        } else if !same {
            differ += 1;
        }
    }
    // Guards the fixture itself: the video cases must exercise the difference.
    assert!(differ >= 4, "only {differ} cases tell the rules apart");
}
