//! Trace synthesis: mix proportions, disjoint wrong operations, loss masks, determinism.

use std::collections::BTreeMap;

use pixel_traces::datasets::{CountConfig, FramesConfig, NeedleConfig, TextOnlyConfig};
use pixel_traces::geometry::{self, CROP_PAD, FrameWindow, NormBox};
use pixel_traces::narrator::Modality;
use pixel_traces::official::Role;
use pixel_traces::synth::{coarse_box, wrong_box, wrong_window};
use pixel_traces::{
    DatasetRoot, SynthConfig, Synthesizer, TemplateNarrator, Trace, TracePart, Variant,
};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn synth(seed: u64) -> Synthesizer<TemplateNarrator> {
    Synthesizer::new(
        SynthConfig {
            seed,
            ..SynthConfig::default()
        },
        TemplateNarrator,
    )
}

fn small_needle() -> NeedleConfig {
    NeedleConfig {
        width: 448,
        height: 336,
        glyph_min: 10,
        glyph_max: 12,
        clutter: 20,
        ..NeedleConfig::default()
    }
}

/// Parses the boxes of every `crop_image_normalized` call in `text` with the trained flag of its span.
fn crop_calls(trace: &Trace) -> Vec<(bool, [f64; 4], usize)> {
    let mut out = Vec::new();
    for m in &trace.messages {
        for p in &m.content {
            if let TracePart::Text { text, train } = p
                && let Some(start) = text.find("<tool_call>\n")
            {
                let json = &text[start + 12..text.find("\n</tool_call>").unwrap()];
                let v: serde_json::Value = serde_json::from_str(json).unwrap();
                if v["name"] == "crop_image_normalized" {
                    let b: Vec<f64> = v["arguments"]["bbox_2d"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_f64().unwrap())
                        .collect();
                    out.push((
                        *train,
                        [b[0], b[1], b[2], b[3]],
                        v["arguments"]["target_image"].as_u64().unwrap() as usize,
                    ));
                }
            }
        }
    }
    out
}

#[test]
fn image_mix_matches_the_paper_within_tolerance() {
    let s = synth(3);
    let n = 20_000;
    let mut counts: BTreeMap<Variant, usize> = BTreeMap::new();
    for i in 0..n {
        let mut rng = s.rng_for(i);
        *counts
            .entry(s.choose_variant(Modality::Image, &mut rng))
            .or_default() += 1;
    }
    let share = |v| counts.get(&v).copied().unwrap_or(0) as f64 / n as f64;
    // 3 standard deviations of a binomial share at n = 20,000 is under 0.01.
    for (v, p) in [
        (Variant::Clean, 0.3),
        (Variant::OneWrong, 0.2),
        (Variant::TwoWrong, 0.2),
        (Variant::CoarseToFine, 0.3),
    ] {
        assert!((share(v) - p).abs() < 0.01, "{v:?}: {} vs {p}", share(v));
    }
    let mut wrong = 0;
    for i in 0..n {
        let mut rng = s.rng_for(i);
        if s.choose_variant(Modality::Video, &mut rng) == Variant::VideoWrong {
            wrong += 1;
        }
    }
    assert!(
        (wrong as f64 / n as f64 - 0.1).abs() < 0.008,
        "video wrong share {}",
        wrong as f64 / n as f64
    );
}

#[test]
fn end_to_end_needle_traces_build_the_variant_drawn_and_never_fall_back() {
    let s = synth(11);
    let data = small_needle();
    let mut counts: BTreeMap<Variant, usize> = BTreeMap::new();
    let n = 80;
    for i in 0..n {
        let sample = data.generate(11, i).unwrap().sample;
        let drawn = s.choose_variant(Modality::Image, &mut s.rng_for(i));
        let made = s.synthesize(&sample, i).unwrap();
        made.trace.validate(&DatasetRoot::new("out")).unwrap();
        // The needle's tag is small, so a disjoint wrong crop and a coarse crop always fit: a fallback to
        // `Clean` here would be a synthesis bug, not bad luck.
        assert_eq!(made.variant, drawn, "sample {i}");
        *counts.entry(made.variant).or_default() += 1;
    }
    // 80 draws of the 30/20/20/30 mix give every variant (the shares are checked on 20,000 draws above).
    for v in [
        Variant::Clean,
        Variant::OneWrong,
        Variant::TwoWrong,
        Variant::CoarseToFine,
    ] {
        assert!(
            counts.get(&v).copied().unwrap_or(0) > 10,
            "{v:?} too rare: {counts:?}"
        );
    }
}

#[test]
fn a_cue_too_large_for_wrong_or_coarse_crops_falls_back_to_clean_and_says_so() {
    let s = synth(2);
    let mut sample = small_needle().generate(2, 0).unwrap().sample;
    let pixel_traces::Visual::Image { reference, .. } = &mut sample.visual else {
        unreachable!()
    };
    // Covering most of the image: no padded crop region misses it, and it is over 0.4 of a side.
    *reference = NormBox::new(0.05, 0.05, 0.95, 0.95).unwrap();
    for requested in [Variant::OneWrong, Variant::TwoWrong, Variant::CoarseToFine] {
        let made = s.synthesize_as(&sample, 0, requested).unwrap();
        assert_eq!(made.variant, Variant::Clean, "{requested:?}");
        assert_eq!(made.trace.variant, "clean", "{requested:?}");
        assert_eq!(crop_calls(&made.trace).len(), 1, "{requested:?}");
    }
}

#[test]
fn wrong_crops_are_untrained_and_miss_the_cue_and_the_right_crop_is_trained() {
    let s = synth(5);
    let data = small_needle();
    for i in 0..12 {
        let needle = data.generate(5, i).unwrap();
        let pixel_traces::Visual::Image { reference, .. } = needle.sample.visual else {
            unreachable!()
        };
        for variant in [Variant::Clean, Variant::OneWrong, Variant::TwoWrong] {
            let made = s.synthesize_as(&needle.sample, i, variant).unwrap();
            assert_eq!(made.variant, variant);
            let calls = crop_calls(&made.trace);
            let wrong = match variant {
                Variant::OneWrong => 1,
                Variant::TwoWrong => 2,
                _ => 0,
            };
            assert_eq!(calls.len(), wrong + 1);
            // The official tool reads a box as normalized only if all four values are below 1.
            assert!(
                calls
                    .iter()
                    .all(|c| c.1.iter().all(|v| (0.0..1.0).contains(v))),
                "{calls:?}"
            );
            for (train, bbox, target) in &calls[..wrong] {
                assert!(!train, "a wrong crop is trained");
                assert_eq!(*target, 1);
                let region = NormBox::new(bbox[0], bbox[1], bbox[2], bbox[3])
                    .unwrap()
                    .padded(CROP_PAD);
                assert!(
                    !region.intersects(reference),
                    "wrong crop region {region:?} touches the cue {reference:?}"
                );
            }
            let (train, bbox, _) = calls[wrong];
            assert!(train, "the right crop is not trained");
            assert!(
                NormBox::new(bbox[0], bbox[1], bbox[2], bbox[3])
                    .unwrap()
                    .contains(reference)
            );
            // Observations are never trained; the answer is.
            for m in &made.trace.messages {
                if m.role == Role::User {
                    assert!(
                        m.content
                            .iter()
                            .all(|p| !matches!(p, TracePart::Text { train: true, .. }))
                    );
                }
            }
            let trained = made.trace.trained_text();
            assert!(trained.contains(&format!("\\boxed{{{}}}", needle.sample.answer)));
            assert!(
                trained.contains("Now I will zoom in to look clearer at 'the small tag with a")
            );
            assert!(!trained.contains("Here is the cropped image"));
            assert_eq!(made.trace.num_tool_calls(), wrong + 1);
        }
    }
}

#[test]
fn coarse_to_fine_refines_inside_the_first_crop() {
    let s = synth(8);
    let data = small_needle();
    for i in 0..10 {
        let needle = data.generate(8, i).unwrap();
        let made = s
            .synthesize_as(&needle.sample, i, Variant::CoarseToFine)
            .unwrap();
        assert_eq!(made.variant, Variant::CoarseToFine);
        let calls = crop_calls(&made.trace);
        assert_eq!(calls.len(), 2);
        assert!(
            calls
                .iter()
                .all(|c| c.1.iter().all(|v| (0.0..1.0).contains(v))),
            "{calls:?}"
        );
        assert!(
            calls.iter().all(|c| c.0),
            "both calls of a coarse-to-fine trace are trained"
        );
        assert_eq!(calls[0].2, 1);
        assert_eq!(
            calls[1].2, 2,
            "the refinement targets the first crop (image 2)"
        );
        // Map the refined crop region back to the original: it must hold the tag and be smaller than
        // the coarse region.
        let pixel_traces::Visual::Image { reference, .. } = needle.sample.visual else {
            unreachable!()
        };
        let b = |c: &(bool, [f64; 4], usize)| NormBox::new(c.1[0], c.1[1], c.1[2], c.1[3]).unwrap();
        let r1 = b(&calls[0]).padded(CROP_PAD);
        let r2 = b(&calls[1]).padded(CROP_PAD);
        let fine = NormBox::new(
            r1.x1 + r2.x1 * r1.width(),
            r1.y1 + r2.y1 * r1.height(),
            r1.x1 + r2.x2 * r1.width(),
            r1.y1 + r2.y2 * r1.height(),
        )
        .unwrap();
        let eps = 2e-3;
        assert!(
            fine.x1 <= reference.x1 + eps && fine.y1 <= reference.y1 + eps,
            "{fine:?} vs {reference:?}"
        );
        assert!(
            fine.x2 >= reference.x2 - eps && fine.y2 >= reference.y2 - eps,
            "{fine:?} vs {reference:?}"
        );
        assert!(fine.width() * fine.height() < r1.width() * r1.height());
        assert!(r1.contains(reference));
    }
}

#[test]
fn video_traces_mask_wrong_frames_and_select_the_window() {
    let s = synth(2);
    let data = FramesConfig {
        width: 160,
        height: 120,
        glyph_height: 9,
        ..FramesConfig::default()
    };
    for i in 0..6 {
        let sample = data.generate(2, i).unwrap();
        let pixel_traces::Visual::Video { window, .. } = &sample.visual else {
            unreachable!()
        };
        let window = *window;
        for variant in [Variant::VideoClean, Variant::VideoWrong] {
            let made = s.synthesize_as(&sample, i, variant).unwrap();
            assert_eq!(made.variant, variant);
            let untrained = made.trace.untrained_text();
            let trained = made.trace.trained_text();
            let right = format!("{{\"target_frames\": {:?}}}", window.frames());
            assert!(trained.contains(&right), "{trained}");
            if variant == Variant::VideoWrong {
                let start = untrained.find("\"target_frames\": [").unwrap() + 18;
                let list = &untrained[start..start + untrained[start..].find(']').unwrap()];
                let frames: Vec<usize> = list.split(", ").map(|f| f.parse().unwrap()).collect();
                assert!(
                    frames.iter().all(|f| *f < window.first || *f > window.last),
                    "{frames:?} vs {window:?}"
                );
                assert!(!trained.contains(&format!("\"target_frames\": [{list}]")));
                let (k, n) = (frames.len(), window.len());
                assert!(
                    untrained.contains(&format!(", Numbered 1 to {k}):")),
                    "{untrained}"
                );
                assert!(
                    untrained.contains(&format!(", Numbered {} to {}):", k + 1, k + n)),
                    "{untrained}"
                );
            }
            assert!(untrained.contains("Here are the selected frames (Frame Size: "));
            // Numbering as pixel-ops' episode: from the visuals so far (the video counts as one).
            if variant == Variant::VideoClean {
                assert!(
                    untrained.contains(&format!(", Numbered 1 to {}):", window.len())),
                    "{untrained}"
                );
            }
            assert!(!trained.contains("Here are the selected frames"));
            assert_eq!(made.trace.media_paths().len(), made.images.len());
        }
    }
}

#[test]
fn text_only_and_count_traces() {
    let s = synth(4);
    let text = TextOnlyConfig::default().generate(4, 1).unwrap();
    let made = s.synthesize(&text, 1).unwrap();
    assert_eq!(made.variant, Variant::TextOnly);
    assert_eq!(made.trace.messages.len(), 2);
    assert!(made.images.is_empty());
    assert!(
        made.trace
            .trained_text()
            .ends_with(&format!("\\boxed{{{}}}.", text.answer))
    );
    let count = CountConfig::default().generate(4, 2).unwrap();
    let made = s.synthesize(&count, 2).unwrap();
    made.trace.validate(&DatasetRoot::new("x")).unwrap();
    assert!(
        made.trace
            .trained_text()
            .contains(&format!("\\boxed{{{}}}", count.answer))
    );
}

#[test]
fn synthesis_is_deterministic_for_a_seed_and_order_free() {
    let data = small_needle();
    // The trace of needle sample `i` (data seed 9) synthesized under `seed`, as JSON.
    let trace_json = |seed: u64, i: u64| {
        serde_json::to_string(
            &synth(seed)
                .synthesize(&data.generate(9, i).unwrap().sample, i)
                .unwrap()
                .trace,
        )
        .unwrap()
    };
    let a: Vec<String> = (0..4).map(|i| trace_json(9, i)).collect();
    let b: Vec<String> = (0..4).rev().map(|i| trace_json(9, i)).collect();
    assert_eq!(a, b.into_iter().rev().collect::<Vec<_>>());
    assert_ne!(a[0], trace_json(10, 0));
}

#[test]
fn box_decimals_out_of_range_is_an_error_not_a_panic() {
    let sample = small_needle().generate(1, 0).unwrap().sample;
    for box_decimals in [-2, 0, 16] {
        let s = Synthesizer::new(
            SynthConfig {
                box_decimals,
                ..SynthConfig::default()
            },
            TemplateNarrator,
        );
        let err = s.synthesize_as(&sample, 0, Variant::Clean).unwrap_err();
        assert!(
            matches!(err, pixel_traces::Error::Config(_)),
            "{box_decimals}: {err}"
        );
    }
    // Below 1 counts as 1 in the geometry helper, which never panics.
    let b = NormBox::new(0.12, 0.34, 0.56, 0.78).unwrap();
    assert_eq!(geometry::round_outward(b, 0), geometry::round_outward(b, 1));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A box inside a frame, written in the frame's coordinates and mapped back, is the box again (how a
    /// crop of a crop's box reaches the original image).
    #[test]
    fn a_box_relative_to_its_frame_maps_back_within_it(
        fx in 0.0f64..0.5, fy in 0.0f64..0.5, fw in 0.05f64..0.5, fh in 0.05f64..0.5,
        a in 0.0f64..1.0, b in 0.0f64..1.0, c in 0.0f64..1.0, d in 0.0f64..1.0,
    ) {
        let frame = NormBox::new(fx, fy, fx + fw, fy + fh).unwrap();
        let (x1, x2) = (a.min(c), a.max(c));
        let (y1, y2) = (b.min(d), b.max(d));
        let inner = NormBox { x1: fx + x1 * fw, y1: fy + y1 * fh, x2: fx + x2 * fw, y2: fy + y2 * fh };
        let back = inner.relative_to(frame).within(frame);
        for (got, want) in back.to_array().iter().zip(inner.to_array()) {
            prop_assert!((got - want).abs() < 1e-12, "{back:?} against {inner:?}");
        }
        // And a box written in the frame lands inside the frame.
        let written = NormBox { x1, y1, x2, y2 }.within(frame);
        prop_assert!(frame.padded(1e-12).contains(written));
    }

    #[test]
    fn wrong_boxes_never_reveal_the_cue(
        x in 0.0f64..0.95, y in 0.0f64..0.95, w in 0.01f64..0.3, h in 0.01f64..0.3, seed in any::<u64>()
    ) {
        let reference = NormBox::new(x, y, (x + w).min(1.0), (y + h).min(1.0)).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let first = wrong_box(reference, 800, 600, 3, &[], &mut rng);
        // A small cue always leaves room for a disjoint wrong crop.
        prop_assert!(first.is_some() || w >= 0.1 || h >= 0.1);
        if let Some(first) = first {
            prop_assert!(!first.padded(CROP_PAD).intersects(reference));
            if let Some(second) = wrong_box(reference, 800, 600, 3, &[first], &mut rng) {
                prop_assert!(!second.padded(CROP_PAD).intersects(reference));
                prop_assert!(!second.padded(CROP_PAD).intersects(first.padded(CROP_PAD)));
            }
        }
        if let Some(coarse) = coarse_box(reference, 800, 600, 3, &mut rng) {
            prop_assert!(coarse.contains(reference));
            prop_assert!(coarse.width() >= 0.25 - 1e-9 || coarse.width() >= 1.0 - 1e-9);
            let refined = geometry::round_outward(reference.relative_to(coarse.padded(CROP_PAD)), 3);
            prop_assert!(refined.x2 <= 1.0 && refined.y2 <= 1.0);
        }
    }

    #[test]
    fn wrong_windows_are_disjoint(first in 1usize..=16, len in 1usize..=8, seed in any::<u64>()) {
        let last = (first + len - 1).min(16);
        let window = FrameWindow { first, last };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let wrong = wrong_window(window, 16, &mut rng).unwrap();
        prop_assert!(!wrong.is_empty() && wrong.len() <= window.len());
        prop_assert!(wrong.iter().all(|f| *f < first || *f > last));
        prop_assert!(wrong.windows(2).all(|p| p[1] == p[0] + 1));
    }
}

/// The mini demo's canvases: 448 px, 36-42 px digits.
fn demo_needle() -> NeedleConfig {
    NeedleConfig {
        width: 448,
        height: 448,
        glyph_min: 36,
        glyph_max: 42,
        ..NeedleConfig::default()
    }
}

/// With a small model view (observations at most 112 x 112), the refined crop of a coarse-to-fine trace cut
/// from the observed coarse crop is an enlargement of a few dozen pixels; cut from the coarse crop at full
/// resolution it keeps the canvas's detail, as a rollout that crops originals shows it.
#[test]
fn refining_from_the_original_keeps_more_pixels_of_the_tag_under_a_small_view() {
    let data = demo_needle();
    let config = |refine_from_original| SynthConfig {
        seed: 3,
        box_decimals: 2,
        observation_min_pixels: 56 * 56,
        observation_max_pixels: 112 * 112,
        refine_from_original,
        ..SynthConfig::default()
    };
    let mut compared = 0;
    for i in 0..6 {
        let sample = data.generate(3, i).unwrap().sample;
        let made = |from_original| {
            Synthesizer::new(config(from_original), TemplateNarrator)
                .synthesize_as(&sample, i, Variant::CoarseToFine)
                .unwrap()
        };
        let (view, original) = (made(false), made(true));
        if view.variant != Variant::CoarseToFine {
            continue;
        }
        assert_eq!(
            crop_calls(&view.trace),
            crop_calls(&original.trace),
            "the same calls either way"
        );
        // The last image is the refined crop as the model sees it.
        let pixels = |m: &pixel_traces::SynthesizedTrace| {
            let (w, h) = m.images.last().unwrap().1.dimensions();
            w * h
        };
        assert!(
            pixels(&original) > pixels(&view),
            "sample {i}: {} px from the original, {} px from the view",
            pixels(&original),
            pixels(&view)
        );
        compared += 1;
    }
    assert!(compared >= 3, "only {compared} coarse-to-fine traces");
}

/// With `coarse_grid`, a zoom in two steps names the grid cell holding the tag's centre first (a box that
/// follows from where the tag is, not a random one), then the tag inside that cell's crop; wrong crops are
/// other cells whose crops miss the tag.
#[test]
fn a_grid_zoom_names_the_tags_cell_then_the_tag_inside_its_crop() {
    let data = demo_needle();
    let synth = Synthesizer::new(
        SynthConfig {
            seed: 5,
            box_decimals: 2,
            coarse_grid: 4,
            refine_from_original: true,
            ..SynthConfig::default()
        },
        TemplateNarrator,
    );
    let mut checked = [0usize; 2];
    for i in 0..24 {
        let sample = data.generate(5, i).unwrap().sample;
        let pixel_traces::Visual::Image { reference, .. } = sample.visual else {
            unreachable!()
        };
        let (cx, cy) = (
            (reference.x1 + reference.x2) / 2.0,
            (reference.y1 + reference.y2) / 2.0,
        );
        let cell = |v: f64| (v * 4.0).floor().min(3.0) / 4.0;
        for (k, requested) in [Variant::CoarseToFine, Variant::OneWrong]
            .into_iter()
            .enumerate()
        {
            let made = synth.synthesize_as(&sample, i, requested).unwrap();
            if made.variant != requested {
                // The cell's padded crop does not hold the whole tag: written clean.
                assert_eq!(made.variant, Variant::Clean);
                continue;
            }
            let calls = crop_calls(&made.trace);
            let wrong = usize::from(requested == Variant::OneWrong);
            assert_eq!(calls.len(), wrong + 2, "sample {i}: {calls:?}");
            for (trained, b, target) in &calls[..wrong] {
                assert!(!trained && *target == 1);
                let region = NormBox::new(b[0], b[1], b[2], b[3])
                    .unwrap()
                    .padded(CROP_PAD);
                assert!(
                    !region.intersects(reference),
                    "a wrong cell's crop holds the tag"
                );
                assert!((b[2] - b[0] - 0.25).abs() < 0.011, "not a cell: {b:?}");
            }
            let (trained, coarse, target) = calls[wrong];
            assert!(trained && target == 1);
            let expect = [
                cell(cx),
                cell(cy),
                (cell(cx) + 0.25).min(0.99),
                (cell(cy) + 0.25).min(0.99),
            ];
            for (got, want) in coarse.iter().zip(expect) {
                assert!(
                    (got - want).abs() < 1e-9,
                    "sample {i}: cell {coarse:?}, want {expect:?}"
                );
            }
            // The refined box, in the coarse crop's coordinates, maps back onto the tag.
            let (trained, fine, target) = calls[wrong + 1];
            assert!(trained && target == 2 + wrong);
            let region = NormBox::new(coarse[0], coarse[1], coarse[2], coarse[3])
                .unwrap()
                .padded(CROP_PAD);
            let [x1, y1, x2, y2] = NormBox::new(fine[0], fine[1], fine[2], fine[3])
                .unwrap()
                .within(region)
                .to_array();
            // The crop region is rounded to pixels; boxes to hundredths.
            let slack = 0.012;
            assert!(
                x1 <= reference.x1 + slack
                    && reference.x2 <= x2 + slack
                    && y1 <= reference.y1 + slack
                    && reference.y2 <= y2 + slack,
                "sample {i}: refined {fine:?} maps to [{x1}, {y1}, {x2}, {y2}], tag {reference:?}"
            );
            assert!(
                x2 - x1 < 0.5 * region.width() + slack,
                "the refined box is not smaller than the cell's crop"
            );
            checked[k] += 1;
        }
    }
    assert!(
        checked.iter().all(|&c| c >= 8),
        "too few two-step traces: {checked:?}"
    );
}

/// With `fine_grid`, the second box of a grid zoom is the cell of the first crop holding the tag's centre
/// whenever that cell's crop holds the tag inset by `fine_inset` (its digit), and the tag's own box
/// otherwise; a larger inset lets the cell be used more often.
#[test]
fn a_fine_grid_writes_the_tags_cell_of_the_first_crop_when_its_crop_holds_the_tags_core() {
    let data = demo_needle();
    let synth = |fine_inset| {
        Synthesizer::new(
            SynthConfig {
                seed: 5,
                box_decimals: 2,
                coarse_grid: 4,
                fine_grid: 4,
                fine_inset,
                refine_from_original: true,
                ..SynthConfig::default()
            },
            TemplateNarrator,
        )
    };
    let mut cells = [0usize; 2];
    let mut two_step = 0;
    for (k, inset) in [0.0, 0.25].into_iter().enumerate() {
        let synth = synth(inset);
        for i in 0..32 {
            let sample = data.generate(5, i).unwrap().sample;
            let pixel_traces::Visual::Image { reference, .. } = sample.visual else {
                unreachable!()
            };
            let made = synth
                .synthesize_as(&sample, i, Variant::CoarseToFine)
                .unwrap();
            if made.variant != Variant::CoarseToFine {
                continue;
            }
            two_step += 1;
            let calls = crop_calls(&made.trace);
            let (_, coarse, _) = calls[0];
            let (_, fine, target) = calls[1];
            assert_eq!(target, 2);
            let region = NormBox::new(coarse[0], coarse[1], coarse[2], coarse[3])
                .unwrap()
                .padded(CROP_PAD);
            let fine_box = NormBox::new(fine[0], fine[1], fine[2], fine[3]).unwrap();
            let is_cell = fine
                .iter()
                .all(|v| ((v * 4.0) - (v * 4.0).round()).abs() < 1e-9 || (v - 0.99).abs() < 1e-9)
                && (fine[2] - fine[0] - 0.25).abs() < 0.011;
            if !is_cell {
                continue;
            }
            cells[k] += 1;
            // The cell, mapped onto the canvas, holds the tag's centre, and its padded crop the tag's core.
            let on_canvas = fine_box.within(region);
            let (cx, cy) = (
                (reference.x1 + reference.x2) / 2.0,
                (reference.y1 + reference.y2) / 2.0,
            );
            let slack = 0.012;
            assert!(
                on_canvas.x1 <= cx + slack
                    && cx <= on_canvas.x2 + slack
                    && on_canvas.y1 <= cy + slack
                    && cy <= on_canvas.y2 + slack,
                "sample {i}: the cell {fine:?} does not hold the tag's centre"
            );
            let crop = fine_box.padded(CROP_PAD).within(region);
            let core = reference.inset(inset);
            assert!(
                crop.x1 <= core.x1 + slack
                    && core.x2 <= crop.x2 + slack
                    && crop.y1 <= core.y1 + slack
                    && core.y2 <= crop.y2 + slack,
                "sample {i} (inset {inset}): the cell's crop {crop:?} cuts the tag's core {core:?}"
            );
        }
    }
    assert!(two_step >= 40, "too few two-step traces: {two_step}");
    assert!(
        cells[1] > cells[0] && cells[1] >= 28,
        "cells written with the whole tag / its core: {cells:?}"
    );
}

/// `NormBox::inset` moves each side in by a share of the size, and never turns the box inside out.
#[test]
fn inset_moves_each_side_in_by_a_share_of_the_size() {
    let b = NormBox::new(0.2, 0.4, 0.6, 0.6).unwrap();
    let i = b.inset(0.25);
    for (got, want) in i.to_array().into_iter().zip([0.3, 0.45, 0.5, 0.55]) {
        assert!((got - want).abs() < 1e-12, "{i:?}");
    }
    let c = b.inset(3.0);
    assert!((c.x1 - c.x2).abs() < 1e-12 && (c.y1 - c.y2).abs() < 1e-12);
    assert_eq!(b.inset(f64::NAN), b);
}
