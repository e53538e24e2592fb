//! Synthetic datasets: the needle is below one merged token globally and above it after the crop;
//! samples are deterministic and carry valid references.

use pixel_traces::datasets::draw::PALETTE;
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
    // `docs/traces.md` quotes these two figures ("Over 40 samples: at most 19.7 px tall in the global view,
    // at least 34.4 px in the cropped view"); the samples are deterministic, so they are exact.
    assert_eq!(
        (format!("{worst_global:.1}"), format!("{worst_crop:.1}")),
        ("19.7".to_string(), "34.4".to_string()),
        "the digit heights docs/traces.md quotes"
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

/// The 4-connected regions of pixels exactly `colour` in `image`, as (pixel count, bounding box
/// `(left, top, right, bottom)` with exclusive ends).
fn regions_of(image: &image::RgbImage, colour: [u8; 3]) -> Vec<(usize, (u32, u32, u32, u32))> {
    let (w, h) = image.dimensions();
    let mut seen = vec![false; (w * h) as usize];
    let mut regions = Vec::new();
    for start in 0..w * h {
        if seen[start as usize] || image.get_pixel(start % w, start / w).0 != colour {
            continue;
        }
        seen[start as usize] = true;
        let mut stack = vec![start];
        let (mut n, mut bbox) = (0, (w, h, 0, 0));
        while let Some(p) = stack.pop() {
            let (x, y) = (p % w, p / w);
            n += 1;
            bbox = (
                bbox.0.min(x),
                bbox.1.min(y),
                bbox.2.max(x + 1),
                bbox.3.max(y + 1),
            );
            let neighbours = [
                (x > 0).then(|| p - 1),
                (x + 1 < w).then(|| p + 1),
                (y > 0).then(|| p - w),
                (y + 1 < h).then(|| p + w),
            ];
            for q in neighbours.into_iter().flatten() {
                if !seen[q as usize] && image.get_pixel(q % w, q / w).0 == colour {
                    seen[q as usize] = true;
                    stack.push(q);
                }
            }
        }
        regions.push((n, bbox));
    }
    regions
}

#[test]
fn count_answers_match_the_target_discs_in_the_reference_box() {
    let config = CountConfig::default();
    // The smallest disc (radius 4) covers 49 pixels; stray texture pixels of the same colour are far fewer.
    let min_disc = 45;
    for i in 0..15 {
        let s = config.generate(3, i).unwrap();
        let count: usize = s.answer.parse().unwrap();
        assert!((config.min_count as usize..=config.max_count as usize).contains(&count));
        let Visual::Image {
            image,
            reference,
            cue,
        } = &s.visual
        else {
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
        // Count the discs of the colour the question names, over the whole image.
        let target = PALETTE
            .iter()
            .find(|c| s.question.contains(&format!("How many {} circles", c.name)))
            .unwrap_or_else(|| panic!("no palette colour in {:?}", s.question));
        let discs: Vec<_> = regions_of(image, target.rgb)
            .into_iter()
            .filter(|(n, _)| *n >= min_disc)
            .collect();
        assert_eq!(discs.len(), count, "sample {i}: {} discs", target.name);
        // Every one of them lies in the reference box.
        let (l, t, r, b) = reference.to_pixels(image.width(), image.height());
        for (_, (x0, y0, x1, y1)) in discs {
            assert!(
                x0 >= l && y0 >= t && x1 <= r && y1 <= b,
                "sample {i}: disc {:?} outside the box {:?}",
                (x0, y0, x1, y1),
                (l, t, r, b)
            );
        }
    }
}

#[test]
fn frames_hold_the_sign_in_exactly_one_frame_inside_the_window() {
    let config = FramesConfig::default();
    for i in 0..8 {
        let s = config.generate(4, i).unwrap();
        let Visual::Video { frames, window, .. } = &s.visual else {
            unreachable!()
        };
        assert_eq!(frames.len(), 16);
        // The moving disc: the palette colour every frame shows most of (the sign may hide part of it).
        let ball = PALETTE
            .iter()
            .map(|c| {
                let least = frames
                    .iter()
                    .map(|f| f.pixels().filter(|p| p.0 == c.rgb).count())
                    .min()
                    .unwrap_or(0);
                (least, c.rgb)
            })
            .max()
            .map(|(_, rgb)| rgb)
            .unwrap();
        // Every frame is the same scene with the disc drawn on it, except where the sign is. A pixel shows
        // "something else" in a frame when it is not the disc's colour there and at least two other frames
        // agree on another value that is not the disc's colour either (the scene behind it). A frame
        // without the sign never has such a pixel: it shows the scene or the disc everywhere.
        let (w, h) = frames[0].dimensions();
        let mut odd = [0usize; 16];
        for y in 0..h {
            for x in 0..w {
                let values: Vec<[u8; 3]> = frames.iter().map(|f| f.get_pixel(x, y).0).collect();
                // How many frames show each value here (the value differs from `v` below, so the
                // frame being judged is never among them).
                let mut counts: Vec<([u8; 3], usize)> = Vec::new();
                for v in &values {
                    match counts.iter_mut().find(|(u, _)| u == v) {
                        Some((_, n)) => *n += 1,
                        None => counts.push((*v, 1)),
                    }
                }
                for (f, v) in values.iter().enumerate() {
                    if *v != ball && counts.iter().any(|(u, n)| u != v && *u != ball && *n >= 2) {
                        odd[f] += 1;
                    }
                }
            }
        }
        let with_sign: Vec<usize> = (0..16).filter(|&f| odd[f] > 0).map(|f| f + 1).collect();
        assert_eq!(
            with_sign.len(),
            1,
            "sample {i}: frames {with_sign:?} differ ({odd:?})"
        );
        let sign = with_sign[0];
        // Most of the tag's plate shows (it is drawn over the disc).
        assert!(
            odd[sign - 1] >= 200,
            "sample {i}: {} odd pixels",
            odd[sign - 1]
        );
        // The reference window is the sign frame and its neighbours (clipped to the clip).
        let expected_window = (
            sign.saturating_sub(config.window_radius).max(1),
            (sign + config.window_radius).min(16),
        );
        assert_eq!(
            (window.first, window.last),
            expected_window,
            "sample {i}: sign in frame {sign}"
        );
    }
}

/// Dark pixels inside a tag's plate (its 2 px border left out): the digit's ink (20-90 plus noise of 30,
/// against a plate of at least 205 minus 30).
fn ink_pixels(image: &image::RgbImage, (x0, y0, x1, y1): (u32, u32, u32, u32)) -> usize {
    (y0 + 2..y1.saturating_sub(2))
        .flat_map(|y| (x0 + 2..x1.saturating_sub(2)).map(move |x| (x, y)))
        .filter(|&(x, y)| {
            image
                .get_pixel(x, y)
                .0
                .iter()
                .map(|&c| u32::from(c))
                .sum::<u32>()
                < 3 * 150
        })
        .count()
}

#[test]
fn a_larger_stroke_min_draws_bolder_digits_from_the_same_draws() {
    let thin = NeedleConfig::default();
    let bold = NeedleConfig {
        stroke_min: 1.0,
        ..NeedleConfig::default()
    };
    let (mut thin_ink, mut bold_ink) = (0, 0);
    for i in 0..12 {
        let (a, b) = (thin.generate(5, i).unwrap(), bold.generate(5, i).unwrap());
        // The same random draws: the same digit on the same tag, only its stroke differs.
        assert_eq!((a.digit, a.tag), (b.digit, b.tag));
        let image = |n: &pixel_traces::datasets::NeedleSample| match &n.sample.visual {
            Visual::Image { image, .. } => image.clone(),
            _ => panic!("a needle sample is an image"),
        };
        let (thin_n, bold_n) = (ink_pixels(&image(&a), a.tag), ink_pixels(&image(&b), b.tag));
        // Not a superset pixel by pixel: a stroke's square is centred in its font cell and rounded to
        // pixels, so a wider square can start one pixel later (centre 10.4: width 2.0 covers 9-10, width
        // 1.5 covers 10-11) and a sample may lose a pixel or two. Never a tenth of its ink.
        assert!(
            10 * bold_n >= 9 * thin_n,
            "sample {i}: stroke 1.0 drew {bold_n} ink pixels, the default {thin_n}"
        );
        thin_ink += thin_n;
        bold_ink += bold_n;
    }
    assert!(
        bold_ink as f64 > 1.2 * thin_ink as f64,
        "stroke 1.0 drew {bold_ink} ink pixels in all, the default {thin_ink}"
    );
}

#[test]
fn invalid_configs_are_refused() {
    for stroke_min in [0.05, 1.5, f32::NAN] {
        assert!(
            NeedleConfig {
                stroke_min,
                ..NeedleConfig::default()
            }
            .generate(0, 0)
            .is_err(),
            "stroke_min {stroke_min} was accepted"
        );
    }
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
