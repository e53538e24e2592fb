//! Synthetic datasets: the needle is below one merged token globally and above it after the crop;
//! samples are deterministic and carry valid references.

use pixel_traces::datasets::{
    CountConfig, FramesConfig, NeedleConfig, SyntheticDataset, TextOnlyConfig,
};
use pixel_traces::geometry::{CROP_PAD, smart_resize};
use pixel_traces::{SynthConfig, Visual};

/// One merged visual token covers 28 x 28 input pixels (patch 14, 2 x 2 merge).
const TOKEN: f64 = 28.0;
/// The official evaluation limits of the model-input image.
const GLOBAL_MIN: u64 = 401_408;
const GLOBAL_MAX: u64 = 4_014_080;

#[test]
fn needle_detail_is_below_one_token_globally_and_above_it_after_the_crop() {
    let config = NeedleConfig::default();
    let synth = SynthConfig::default();
    let (gh, gw) = smart_resize(config.height, config.width, GLOBAL_MIN, GLOBAL_MAX).unwrap();
    let global_scale = f64::from(gh) / f64::from(config.height);
    let mut worst_global: f64 = 0.0;
    let mut worst_crop = f64::INFINITY;
    for i in 0..40 {
        let needle = config.generate(1, i).unwrap();
        let Visual::Image {
            reference, image, ..
        } = &needle.sample.visual
        else {
            unreachable!()
        };
        assert_eq!(
            (image.width(), image.height()),
            (config.width, config.height)
        );
        assert!((f64::from(gw) / f64::from(config.width) - global_scale).abs() < 0.05);
        // The digit as the model sees it in the global view.
        let global = f64::from(needle.glyph_height) * global_scale;
        worst_global = worst_global.max(global);
        // The official crop of the reference box (padded 0.1), resized for the model as an observation.
        let region = reference.padded(CROP_PAD);
        let (l, t, r, b) = region.to_pixels(config.width, config.height);
        let (ch, _cw) = smart_resize(
            b - t,
            r - l,
            synth.observation_min_pixels,
            synth.observation_max_pixels,
        )
        .unwrap();
        let crop = f64::from(needle.glyph_height) * f64::from(ch) / f64::from(b - t);
        worst_crop = worst_crop.min(crop);
    }
    println!(
        "digit height: global view at most {worst_global:.1} px, cropped view at least {worst_crop:.1} px"
    );
    assert!(
        worst_global < TOKEN,
        "digit {worst_global:.1} px tall in the global view: not below one token"
    );
    assert!(
        worst_crop > TOKEN,
        "digit {worst_crop:.1} px tall after the crop: not above one token"
    );
}

#[test]
fn samples_are_deterministic_and_distinct() {
    for name in SyntheticDataset::NAMES {
        let data = SyntheticDataset::by_name(name).unwrap();
        let a = data.sample(5, 3).unwrap();
        let b = data.sample(5, 3).unwrap();
        let c = data.sample(5, 4).unwrap();
        assert_eq!(
            (&a.question, &a.answer, &a.id),
            (&b.question, &b.answer, &b.id),
            "{name}"
        );
        match (&a.visual, &b.visual, &c.visual) {
            (
                Visual::Image { image: x, .. },
                Visual::Image { image: y, .. },
                Visual::Image { image: z, .. },
            ) => {
                assert_eq!(x, y, "{name}");
                assert_ne!(x, z, "{name}");
            }
            (
                Visual::Video { frames: x, .. },
                Visual::Video { frames: y, .. },
                Visual::Video { frames: z, .. },
            ) => {
                assert_eq!(x, y, "{name}");
                assert_ne!(x, z, "{name}");
            }
            (Visual::None, Visual::None, Visual::None) => assert_ne!(a.question, c.question),
            _ => panic!("{name}: visual kinds differ"),
        }
    }
}

#[test]
fn needle_answers_are_option_letters_pointing_at_the_digit() {
    let config = NeedleConfig {
        width: 512,
        height: 384,
        clutter: 30,
        ..NeedleConfig::default()
    };
    for i in 0..20 {
        let n = config.generate(2, i).unwrap();
        let pos = (n.sample.answer.as_bytes()[0] - b'A') as usize;
        assert_eq!(n.sample.options[pos], n.digit.to_string());
        assert_eq!(n.sample.options.len(), 4);
        assert!(
            n.sample
                .question
                .contains(&format!("\n{}. {}", n.sample.answer, n.digit))
        );
        // The tag lies inside the image and the reference box is the tag.
        let Visual::Image { reference, .. } = n.sample.visual else {
            unreachable!()
        };
        let (l, t, r, b) = reference.to_pixels(512, 384);
        assert_eq!((l, t, r, b), n.tag);
    }
}

#[test]
fn count_answers_match_the_target_discs_in_the_reference_box() {
    let config = CountConfig::default();
    for i in 0..15 {
        let s = config.generate(3, i).unwrap();
        let count: u32 = s.answer.parse().unwrap();
        assert!((config.min_count..=config.max_count).contains(&count));
        let Visual::Image { reference, cue, .. } = &s.visual else {
            unreachable!()
        };
        assert!(
            reference.width() <= config.cluster + 0.02
                && reference.height() <= config.cluster + 0.03
        );
        assert!(
            s.question.contains(cue.trim_start_matches("the ")),
            "{} / {cue}",
            s.question
        );
    }
}

#[test]
fn frames_hold_the_sign_in_exactly_one_frame_inside_the_window() {
    let config = FramesConfig::default();
    for i in 0..5 {
        let s = config.generate(4, i).unwrap();
        let Visual::Video { frames, window, .. } = &s.visual else {
            unreachable!()
        };
        assert_eq!(frames.len(), 16);
        assert!(window.len() <= 3 && window.first >= 1 && window.last <= 16);
        // Frames differ from their neighbours by the moving disc; the sign frame differs most from the
        // background-only frames. Find the frame whose neighbours disagree with it most.
        let diff = |a: &image::RgbImage, b: &image::RgbImage| {
            a.pixels().zip(b.pixels()).filter(|(p, q)| p != q).count()
        };
        let mut best = (0, 0);
        for f in 0..16 {
            let n = if f == 0 { 1 } else { f - 1 };
            let d = diff(&frames[f], &frames[n]);
            if d > best.1 {
                best = (f + 1, d);
            }
        }
        let sign = best.0;
        assert!(
            sign >= window.first.saturating_sub(1) && sign <= window.last + 1,
            "sign near frame {sign}, window {window:?}"
        );
    }
}

#[test]
fn invalid_configs_are_refused() {
    assert!(
        NeedleConfig {
            glyph_min: 30,
            glyph_max: 20,
            ..NeedleConfig::default()
        }
        .generate(0, 0)
        .is_err()
    );
    assert!(
        NeedleConfig {
            width: 40,
            ..NeedleConfig::default()
        }
        .generate(0, 0)
        .is_err()
    );
    assert!(
        CountConfig {
            min_count: 0,
            ..CountConfig::default()
        }
        .generate(0, 0)
        .is_err()
    );
    assert!(
        FramesConfig {
            window_radius: 4,
            ..FramesConfig::default()
        }
        .generate(0, 0)
        .is_err()
    );
    for bad in [
        FramesConfig {
            window_radius: usize::MAX,
            ..FramesConfig::default()
        },
        // Tall and narrow: the moving disc does not fit across (an error, not a panic).
        FramesConfig {
            height: 10_000,
            ..FramesConfig::default()
        },
    ] {
        assert!(bad.generate(0, 0).is_err(), "{bad:?}");
    }
    assert!(TextOnlyConfig { max_operand: 1 }.generate(0, 0).is_err());
    assert!(SyntheticDataset::by_name("nope").is_none());
}
