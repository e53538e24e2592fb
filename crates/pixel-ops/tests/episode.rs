//! `Episode`: calls executed against the official `execute_tool` results (fixtures from
//! `scripts/gen_protocol_fixtures.py`), the limits, and the counters rewards read.

use pixel_ops::crop::{CropConfig, CropSource, crop_normalized};
use pixel_ops::episode::{EndReason, Episode, EpisodeConfig, Step, Visual};
use pixel_ops::image::{Rgb, RgbImage};
use pixel_ops::observation::{ObservationKind, crop_text, frames_text};
use pixel_ops::parse::{ToolCall, parse_call_json};
use pixel_ops::{ToolCallError, ToolSet};
use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/protocol");

fn gradient(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    })
}

fn video(w: u32, h: u32, n: u8) -> Vec<RgbImage> {
    (0..n)
        .map(|i| RgbImage::from_pixel(w, h, Rgb([i, 0, 0])))
        .collect()
}

fn turn(call: &ToolCall) -> String {
    format!("I should look closer.\n{}", call.render())
}

fn crop(bbox: [f64; 4], target_image: i64) -> String {
    turn(&ToolCall::Crop { bbox, target_image })
}

fn frames(f: &[i64]) -> String {
    turn(&ToolCall::SelectFrames { frames: f.to_vec() })
}

fn observation(step: Step) -> pixel_ops::Observation {
    match step {
        Step::Observation(o) => o,
        Step::Finished(r) => panic!("expected an observation, episode ended: {r:?}"),
    }
}

fn size(v: &Value) -> (u32, u32) {
    (v[0].as_u64().unwrap() as u32, v[1].as_u64().unwrap() as u32)
}

#[test]
fn execution_agrees_with_the_official_execute_tool() {
    let cases: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{FIXTURES}/execute_cases.json")).unwrap(),
    )
    .unwrap();
    let cases = cases.as_array().unwrap();
    assert_eq!(cases.len(), 30, "the README quotes 30 execute_tool calls");
    for case in cases {
        let setup = &case["setup"];
        let mut visuals = Vec::new();
        if let Some(v) = setup.get("video") {
            let (w, h) = size(v);
            visuals.push(Visual::Video(video(w, h, v[2].as_u64().unwrap() as u8)));
        }
        for s in setup
            .get("images")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let (w, h) = size(s);
            visuals.push(Visual::image(gradient(w, h)));
        }
        let n_before = visuals.len();
        let ep = Episode::new(visuals, EpisodeConfig::official_eval());
        let json =
            serde_json::json!({"name": case["name"], "arguments": case["arguments"]}).to_string();
        let call = parse_call_json(&json, ToolSet::PixelReasoner)
            .unwrap_or_else(|e| panic!("{json}: {e}"));
        let result = ep.run(&call);
        if let Some(message) = case.get("error") {
            let err = result
                .err()
                .unwrap_or_else(|| panic!("{json} on {setup}: must fail"));
            assert_eq!(
                err.to_string(),
                message.as_str().unwrap(),
                "{json} on {setup}"
            );
            continue;
        }
        let (obs, added) = result.unwrap_or_else(|e| panic!("{json} on {setup}: {e}"));
        let ok = &case["ok"];
        assert_eq!(added.len(), obs.images.len());
        if let Some(n) = ok.get("frames") {
            let (w, h) = size(&ok["size"]);
            assert_eq!(obs.images.len() as u64, n.as_u64().unwrap());
            assert!(obs.images.iter().all(|f| f.dimensions() == (w, h)));
            assert_eq!(
                obs.text,
                frames_text(w, h, n_before, n_before + obs.images.len() - 1)
            );
        } else {
            let (w, h) = size(&ok["shown"]);
            assert_eq!(obs.images[0].dimensions(), (w, h), "{json} on {setup}");
            assert_eq!(obs.text, crop_text(w, h));
        }
    }
}

#[test]
fn a_fifth_call_ends_the_episode_without_running() {
    let mut ep = Episode::from_image(gradient(280, 224), EpisodeConfig::default());
    for i in 0..4 {
        let obs = observation(ep.step(&crop([0.1, 0.1, 0.6, 0.6], 1)));
        assert_eq!(obs.kind, ObservationKind::Crop, "call {i}");
    }
    assert_eq!(ep.images().len(), 5);
    assert_eq!(
        ep.step(&crop([0.1, 0.1, 0.6, 0.6], 1)),
        Step::Finished(EndReason::MaxOperations)
    );
    let s = ep.stats();
    assert_eq!(
        (s.tool_calls, s.operations_attempted, s.operations_failed),
        (5, 4, 0)
    );
    assert_eq!(s.end, Some(EndReason::MaxOperations));
    assert!(s.used_pixel_reasoning() && !s.last_operation_failed);
    assert_eq!(ep.images().len(), 5, "the refused call added nothing");
    // Further turns change nothing.
    assert_eq!(
        ep.step("\\boxed{1}"),
        Step::Finished(EndReason::MaxOperations)
    );
    assert_eq!(ep.stats().tool_calls, 5);
}

#[test]
fn the_operation_limit_is_configurable() {
    let config = EpisodeConfig {
        max_operations: 1,
        ..EpisodeConfig::default()
    };
    let mut ep = Episode::from_image(gradient(280, 224), config);
    observation(ep.step(&crop([0.1, 0.1, 0.6, 0.6], 1)));
    assert_eq!(
        ep.step(&crop([0.1, 0.1, 0.6, 0.6], 1)),
        Step::Finished(EndReason::MaxOperations)
    );
}

#[test]
fn failures_become_error_observations_and_are_counted() {
    let mut ep = Episode::from_image(gradient(280, 224), EpisodeConfig::default());
    let obs = observation(ep.step(&crop([0.5, 0.5, 0.5, 0.5], 1)));
    // A zero-size normalized box still crops: the 0.1 padding makes it 0.2 of the image, 56x45 > 28.
    assert_eq!(obs.kind, ObservationKind::Crop);
    let obs = observation(ep.step(&crop([0.9, 0.1, 0.2, 0.5], 1)));
    assert_eq!(
        obs.text,
        "\nExecution error:\nCoordinate 'right' is less than 'left'\n"
    );
    assert_eq!(
        obs.kind,
        ObservationKind::Error(ToolCallError::RightLessThanLeft)
    );
    assert!(obs.images.is_empty());
    let obs =
        observation(ep.step("<tool_call>\n{\"name\": \"crop_image_normalized\"}\n</tool_call>"));
    assert!(
        obs.is_error()
            && obs
                .text
                .starts_with("\nExecution error:\nInvalid tool call")
    );
    let obs = observation(ep.step(&crop([0.2, 0.2, 0.4, 0.4], 9)));
    assert_eq!(
        obs.text,
        "\nExecution error:\nExecution Error: Incorrect `target_image` argument in `crop_image_normalized` operation. You can only pick an image within [1,2]\n"
    );
    assert_eq!(
        ep.step("So \\boxed{7}."),
        Step::Finished(EndReason::Answered)
    );
    let s = ep.stats();
    assert_eq!(
        (s.tool_calls, s.operations_attempted, s.operations_failed),
        (4, 4, 3)
    );
    assert!(
        s.last_operation_failed,
        "the last operation failed and was not fixed"
    );
}

#[test]
fn a_successful_call_clears_the_last_failure() {
    let mut ep = Episode::from_image(gradient(280, 224), EpisodeConfig::default());
    assert!(observation(ep.step(&crop([0.99, 0.99, 0.995, 0.995], 1))).is_error());
    assert!(ep.stats().last_operation_failed);
    assert!(!observation(ep.step(&crop([0.2, 0.2, 0.7, 0.7], 1))).is_error());
    ep.step("\\boxed{A}");
    assert!(!ep.stats().last_operation_failed);
}

#[test]
fn too_small_crops_report_the_official_message() {
    let mut ep = Episode::from_image(gradient(100, 100), EpisodeConfig::default());
    // Absolute box 1..3 px, padded by 0.1 of 100 px: 20x20 <= 28.
    let obs = observation(ep.step(&crop([1.0, 1.0, 3.0, 3.0], 1)));
    assert_eq!(
        obs.kind,
        ObservationKind::Error(ToolCallError::CropTooSmall {
            width: 13,
            height: 13
        })
    );
    assert_eq!(
        obs.text,
        "\nExecution error:\nCropped image is too small: 13x13\n"
    );
}

#[test]
fn select_frames_numbers_frames_as_the_official_code() {
    let mut ep = Episode::from_video_frames(video(56, 56, 16), EpisodeConfig::default());
    let obs = observation(ep.step(&frames(&[2, 9, 16])));
    assert_eq!(
        obs.text,
        "\nHere are the selected frames (Frame Size: 56x56, Numbered 1 to 3):"
    );
    assert_eq!(
        obs.images
            .iter()
            .map(|f| f.get_pixel(0, 0).0[0])
            .collect::<Vec<_>>(),
        vec![1, 8, 15]
    );
    let obs = observation(ep.step(&frames(&[1, 4])));
    assert_eq!(obs.kind, ObservationKind::Frames { first: 4, last: 5 });
    assert_eq!(ep.images().len(), 6);
    // After selection, `target_image` 1 is the video itself and cannot be cropped.
    let obs = observation(ep.step(&crop([0.1, 0.1, 0.9, 0.9], 1)));
    assert!(matches!(
        obs.kind,
        ObservationKind::Error(ToolCallError::TargetImageIsVideo {
            target: 1,
            available: 6
        })
    ));
    // `target_image` 2 is the first selected frame (frame 2 of the video).
    let obs = observation(ep.step(&crop([0.0, 0.0, 0.9, 0.9], 2)));
    assert_eq!(obs.kind, ObservationKind::Crop);
}

#[test]
fn select_frames_rules() {
    let mut ep = Episode::from_video_frames(video(56, 56, 16), EpisodeConfig::default());
    let err = |ep: &mut Episode, f: &[i64]| match observation(ep.step(&frames(f))).kind {
        ObservationKind::Error(e) => e,
        k => panic!("{f:?} must fail, got {k:?}"),
    };
    assert_eq!(
        err(&mut ep, &[1, 2, 3, 4, 5, 6, 7, 8, 9]),
        ToolCallError::TooManyFrames { count: 9, max: 8 }
    );
    assert_eq!(
        err(&mut ep, &[]),
        ToolCallError::NoFramesSelected { max: 8 }
    );
    assert_eq!(
        err(&mut ep, &[0, 3]),
        ToolCallError::FramesOutOfRange {
            frames: vec![0, 3],
            available: 16
        }
    );
    let mut ep = Episode::from_image(gradient(64, 64), EpisodeConfig::default());
    assert_eq!(err(&mut ep, &[1]), ToolCallError::SelectFramesOnImage);
}

#[test]
fn the_image_limit_ends_the_episode() {
    let mut ep = Episode::from_video_frames(video(56, 56, 16), EpisodeConfig::default());
    observation(ep.step(&frames(&[1, 2, 3, 4, 5, 6, 7, 8])));
    assert_eq!(ep.images().len(), 9);
    // 9 + 8 = 17 > 16: the result is not added and the episode ends.
    assert_eq!(
        ep.step(&frames(&[9, 10, 11, 12, 13, 14, 15, 16])),
        Step::Finished(EndReason::MaxImages)
    );
    assert_eq!(ep.images().len(), 9);
    assert_eq!(ep.stats().operations_attempted, 2);
    // Over the limit before the call: it does not run.
    let config = EpisodeConfig {
        max_images: 2,
        ..EpisodeConfig::default()
    };
    let mut ep = Episode::new(
        (0..3).map(|_| Visual::image(gradient(64, 64))).collect(),
        config,
    );
    assert_eq!(
        ep.step(&crop([0.1, 0.1, 0.9, 0.9], 1)),
        Step::Finished(EndReason::MaxImages)
    );
    assert_eq!(ep.stats().operations_attempted, 0);
}

#[test]
fn the_token_budget_stops_calls_not_answers() {
    let mut ep = Episode::from_image(gradient(280, 224), EpisodeConfig::default());
    observation(ep.step_with_tokens(&crop([0.1, 0.1, 0.6, 0.6], 1), 12_088));
    assert_eq!(
        ep.step_with_tokens(&crop([0.1, 0.1, 0.6, 0.6], 1), 12_089),
        Step::Finished(EndReason::TokenBudget)
    );
    let mut ep = Episode::from_image(gradient(280, 224), EpisodeConfig::default());
    assert_eq!(
        ep.step_with_tokens("\\boxed{A}", 50_000),
        Step::Finished(EndReason::Answered)
    );
    assert!(!ep.stats().used_pixel_reasoning());
}

#[test]
fn crops_of_the_full_resolution_original() {
    let original = gradient(1624, 1176);
    let shown = gradient(812, 588);
    let config = EpisodeConfig {
        crop: CropConfig {
            source: CropSource::Original,
            ..CropConfig::default()
        },
        ..EpisodeConfig::default()
    };
    let bbox = [0.4, 0.35, 0.55, 0.5];
    let mut ep = Episode::from_image_with_original(shown.clone(), original.clone(), config.clone());
    let obs = observation(ep.step(&crop(bbox, 1)));
    let expected_full = crop_normalized(&original, shown.dimensions(), bbox, &config.crop).unwrap();
    let Visual::Image {
        full: Some(full),
        shown: crop_shown,
    } = ep.images()[1].clone()
    else {
        panic!("no full crop kept")
    };
    assert_eq!(full, expected_full);
    assert_eq!(full.dimensions(), (569, 412));
    assert_eq!(crop_shown, obs.images[0]);
    // A crop of that crop reads coordinates against what the model saw and cuts the full crop.
    let obs2 = observation(ep.step(&crop([0.0, 0.0, 0.5, 0.5], 2)));
    assert_eq!(obs2.kind, ObservationKind::Crop);
    let Visual::Image {
        full: Some(full2), ..
    } = &ep.images()[2]
    else {
        panic!()
    };
    assert!(full2.width() > crop_shown.width() / 2);

    // The default crops what the model sees, and keeps no full-resolution copy.
    let mut ep =
        Episode::from_image_with_original(shown.clone(), original, EpisodeConfig::default());
    observation(ep.step(&crop(bbox, 1)));
    assert!(matches!(&ep.images()[1], Visual::Image { full: None, .. }));
}

#[test]
fn deepeyes_zoom_in() {
    let config = EpisodeConfig {
        tools: ToolSet::DeepEyes,
        ..EpisodeConfig::default()
    };
    let mut ep = Episode::from_image(gradient(400, 300), config.clone());
    let call = ToolCall::ZoomIn {
        bbox: [10.0, 20.0, 200.0, 220.0],
        label: Some("cat".into()),
    };
    let obs = observation(ep.step(&turn(&call)));
    assert_eq!(
        obs.text,
        "Zoomed in on the image to the region [10, 20, 200, 220] with label cat."
    );
    // Small boxes grow to 28 px about their centre.
    let obs = observation(ep.step(&turn(&ToolCall::ZoomIn {
        bbox: [100.0, 100.0, 110.0, 105.0],
        label: None,
    })));
    assert_eq!(
        obs.text,
        "Zoomed in on the image to the region [100, 100, 110, 105]."
    );
    let obs = observation(ep.step(&turn(&ToolCall::ZoomIn {
        bbox: [50.0, 50.0, 40.5, 60.0],
        label: None,
    })));
    assert_eq!(
        obs.text,
        "\nExecution error:\nError: The specified bounding box [50, 50, 40.5, 60] is invalid or results in a crop smaller than the minimum size of 28x28.\n"
    );
    // The Pixel Reasoner tools are unknown in this protocol.
    assert!(observation(ep.step(&crop([0.1, 0.1, 0.5, 0.5], 1))).is_error());
    let mut ep = Episode::from_video_frames(video(56, 56, 4), config);
    assert!(matches!(
        observation(ep.step(&turn(&call))).kind,
        ObservationKind::Error(ToolCallError::ImageToolOnVideo { .. })
    ));
}

#[test]
fn training_preset_resizes_frames() {
    let mut ep = Episode::from_video_frames(video(1120, 1120, 16), EpisodeConfig::official_train());
    let obs = observation(ep.step(&frames(&[1])));
    let (w, h) = obs.images[0].dimensions();
    assert!(u64::from(w) * u64::from(h) <= 400 * 784, "{w}x{h}");
    assert_eq!((w % 28, h % 28), (0, 0));
}

#[test]
fn config_round_trips_through_json_with_documented_defaults() {
    let c = EpisodeConfig::default();
    assert_eq!(
        (
            c.max_operations,
            c.max_images,
            c.max_total_tokens,
            c.max_frames_per_call
        ),
        (4, 16, Some(12_088), 8)
    );
    let json = serde_json::to_string(&c).unwrap();
    assert_eq!(serde_json::from_str::<EpisodeConfig>(&json).unwrap(), c);
    let partial: EpisodeConfig =
        serde_json::from_str(r#"{"max_operations": 2, "tools": "deep_eyes"}"#).unwrap();
    assert_eq!(
        (partial.max_operations, partial.tools, partial.max_images),
        (2, ToolSet::DeepEyes, 16)
    );
    assert!(serde_json::from_str::<EpisodeConfig>(r#"{"max_ops": 2}"#).is_err());
}
