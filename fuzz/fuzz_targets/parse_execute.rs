//! Fuzz target: arbitrary model turns through `parse_turn` and `Episode::step`, on a small generated
//! image and a 16-frame generated video, with both tool sets.
//!
//! Input layout: the first byte picks the episode (image / video / DeepEyes image); the rest is split at
//! NUL bytes into up to 6 model turns (decoded lossily, as a tokenizer's output would be).

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pixel_ops::image::{Rgb, RgbImage};
use pixel_ops::{Episode, EpisodeConfig, PixelLimits, Step, ToolSet, parse_turn_bytes};

fn image() -> &'static RgbImage {
    static IMAGE: OnceLock<RgbImage> = OnceLock::new();
    IMAGE.get_or_init(|| {
        RgbImage::from_fn(96, 72, |x, y| {
            Rgb([(x * 2) as u8, (y * 3) as u8, ((x ^ y) * 5) as u8])
        })
    })
}

fn frames() -> &'static [RgbImage] {
    static FRAMES: OnceLock<Vec<RgbImage>> = OnceLock::new();
    FRAMES.get_or_init(|| {
        (0..16u32)
            .map(|i| RgbImage::from_fn(56, 42, |x, y| Rgb([(i * 16) as u8, x as u8, y as u8])))
            .collect()
    })
}

fn config(tools: ToolSet) -> EpisodeConfig {
    // Small resize bounds keep each execution cheap; the limits are the official ones.
    EpisodeConfig {
        tools,
        crop_resize: PixelLimits::new(4 * 784, 16 * 784),
        frame_resize: Some(PixelLimits::new(4 * 784, 16 * 784)),
        ..EpisodeConfig::default()
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let mut episode = match which % 3 {
        0 => Episode::from_image(image().clone(), config(ToolSet::PixelReasoner)),
        1 => Episode::from_video_frames(frames().to_vec(), config(ToolSet::PixelReasoner)),
        _ => Episode::from_image(image().clone(), config(ToolSet::DeepEyes)),
    };
    let tools = episode.config().tools;
    for turn in rest.split(|&b| b == 0).take(6) {
        let parsed = parse_turn_bytes(turn, tools);
        let text = String::from_utf8_lossy(turn);
        let before = episode.images().len();
        match episode.step(&text) {
            Step::Observation(obs) => {
                assert!(parsed.is_tool_call());
                assert_eq!(episode.images().len(), before + obs.images.len());
                assert!(obs.images.iter().all(|i| i.width() > 0 && i.height() > 0));
            }
            Step::Finished(_) => assert!(episode.is_finished()),
        }
        let stats = episode.stats();
        assert!(stats.operations_failed <= stats.operations_attempted);
        assert!(stats.operations_attempted <= episode.config().max_operations);
        assert!(episode.images().len() <= episode.config().max_images);
    }
});
