//! Video sampling against qwen-vl-utils fixtures, frame-file videos, and (feature `ffmpeg`) decoding
//! checked against PyAV. Fixtures: `scripts/gen_video_fixtures.py`.

use std::path::PathBuf;

use pixel_ops::image::{Rgb, RgbImage};
use pixel_ops::video::{
    FrameCount, FrameFilesOptions, FrameSampling, Video, VideoPixels, frame_indices, smart_nframes,
};
use pixel_ops::{DecodeLimits, Error, PixelLimits};
use serde_json::Value;

mod common;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/video")
        .join(name)
}

fn load_json(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name)).unwrap()).unwrap()
}

fn frame_count(options: &Value) -> FrameCount {
    if let Some(n) = options.get("nframes") {
        return FrameCount::NFrames(n.as_f64().unwrap());
    }
    let FrameCount::Fps {
        fps,
        min_frames,
        max_frames,
    } = FrameCount::default()
    else {
        unreachable!()
    };
    FrameCount::Fps {
        fps: options.get("fps").and_then(Value::as_f64).unwrap_or(fps),
        min_frames: options
            .get("min_frames")
            .and_then(Value::as_f64)
            .unwrap_or(min_frames),
        max_frames: options
            .get("max_frames")
            .and_then(Value::as_f64)
            .or(max_frames),
    }
}

fn as_u64s(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

#[test]
fn smart_nframes_and_indices_match_qwen_vl_utils() {
    let fx = load_json("sampling.json");
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() > 1000);
    let (mut ok, mut errors) = (0, 0);
    for c in cases {
        let total = c["total_frames"].as_u64().unwrap();
        let fps = c["video_fps"].as_f64().unwrap();
        let count = frame_count(&c["options"]);
        let got = smart_nframes(count, total, fps);
        if let Some(msg) = c.get("error") {
            let err = got.expect_err(&format!("{c}: expected an error"));
            assert!(matches!(err, Error::NFramesOutOfRange { .. }), "{c}: {err}");
            // Python prints the float (`4.0`); the Rust message states the same interval.
            assert!(
                msg.as_str()
                    .unwrap()
                    .starts_with(&format!("nframes should in interval [2, {total}]")),
                "{c}"
            );
            errors += 1;
            continue;
        }
        let n = got.unwrap_or_else(|e| panic!("{c}: {e}"));
        assert_eq!(n, c["nframes"].as_u64().unwrap(), "{c}");
        let plan = FrameSampling::plan(count, total, fps).unwrap();
        if let Some(idx) = c.get("indices") {
            assert_eq!(plan.indices, as_u64s(idx), "{c}");
        } else {
            assert_eq!(
                plan.indices.iter().sum::<u64>(),
                c["indices_sum"].as_u64().unwrap(),
                "{c}"
            );
            assert_eq!(plan.indices[..8], as_u64s(&c["indices_head"])[..], "{c}");
            assert_eq!(
                plan.indices[plan.indices.len() - 8..],
                as_u64s(&c["indices_tail"])[..],
                "{c}"
            );
        }
        let sample_fps = c["sample_fps"].as_f64().unwrap();
        assert!(
            (plan.sample_fps - sample_fps).abs() <= 1e-12 * sample_fps,
            "{c}"
        );
        assert!((plan.second_per_grid_t() - 2.0 / sample_fps).abs() < 1e-9);
        ok += 1;
    }
    assert!(ok > 500 && errors > 50, "{ok} ok, {errors} errors");
}

#[test]
fn linspace_round_matches_torch_float32() {
    let fx = load_json("sampling.json");
    for c in fx["linspace"].as_array().unwrap() {
        let (s, e, n) = (
            c["start"].as_u64().unwrap(),
            c["end"].as_u64().unwrap(),
            c["n"].as_u64().unwrap(),
        );
        assert_eq!(frame_indices(s, e, n), as_u64s(&c["indices"]), "{c}");
    }
    // A tie: linspace(0, 3, 3) = [0, 1.5, 3] rounds 1.5 to 2 (ties to even).
    assert_eq!(frame_indices(0, 3, 3), [0, 2, 3]);
    assert_eq!(frame_indices(0, 5, 3), [0, 2, 5]);
}

#[test]
fn pixel_bounds_match_fetch_video() {
    let fx = load_json("sampling.json");
    for c in fx["pixel_bounds"].as_array().unwrap() {
        let px = VideoPixels {
            min_pixels: c["min_pixels"].as_u64().unwrap(),
            max_pixels: None,
            total_pixels: c["total_pixels"].as_f64().unwrap(),
        };
        let (min, max) = px.bounds(c["nframes"].as_u64().unwrap());
        assert_eq!(min, px.min_pixels);
        assert_eq!(max, c["max_pixels"].as_f64().unwrap().floor() as u64, "{c}");
    }
    assert_eq!(VideoPixels::official().bounds(16).1, 512 * 28 * 28);
}

#[test]
fn frame_sizes_match_fetch_video() {
    let fx = load_json("sampling.json");
    let sizes = fx["frame_sizes"].as_array().unwrap();
    assert!(sizes.len() >= 50);
    for c in sizes {
        let (h, w, n) = (
            c["height"].as_u64().unwrap(),
            c["width"].as_u64().unwrap(),
            c["nframes"].as_u64().unwrap(),
        );
        let px = if c["official"].as_bool().unwrap() {
            VideoPixels::official()
        } else {
            VideoPixels::default()
        };
        let got = pixel_ops::smart_resize(h as u32, w as u32, 28, px.limits(n));
        match c.get("resized") {
            Some(r) => assert_eq!(
                got.unwrap(),
                (r[0].as_u64().unwrap() as u32, r[1].as_u64().unwrap() as u32),
                "{c}"
            ),
            None => assert!(
                matches!(got, Err(Error::AspectRatio { .. })),
                "{c}: {got:?}"
            ),
        }
    }
}

fn numbered_frame(i: u8, w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, _| Rgb([i, (x % 256) as u8, 7]))
}

#[test]
fn frame_files_pad_to_even_and_keep_order() {
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<PathBuf> = (0..3u8)
        .map(|i| {
            let p = dir.path().join(format!("f{i}.png"));
            numbered_frame(i * 10, 30, 20).save(&p).unwrap();
            p
        })
        .collect();
    let v = Video::from_frame_files(&paths, &FrameFilesOptions::default()).unwrap();
    assert_eq!(v.len(), 4);
    assert_eq!((v.width(), v.height()), (30, 20));
    let firsts: Vec<u8> = v.frames().iter().map(|f| f.get_pixel(0, 0).0[0]).collect();
    assert_eq!(firsts, [0, 10, 20, 20]);
    assert_eq!(v.info().padded, 1);
    assert_eq!(v.info().frame_indices, [0, 1, 2, 2]);
    assert!((v.second_per_grid_t() - 1.0).abs() < 1e-12);

    let no_pad = FrameFilesOptions {
        pad_to_even: false,
        ..Default::default()
    };
    assert_eq!(Video::from_frame_files(&paths, &no_pad).unwrap().len(), 3);

    // Frame 4 differs in size.
    let odd = dir.path().join("odd.png");
    numbered_frame(1, 31, 20).save(&odd).unwrap();
    let mut mixed = paths.clone();
    mixed.push(odd);
    let err = Video::from_frame_files(&mixed, &FrameFilesOptions::default()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::FrameSizeMismatch {
                index: 3,
                width: 31,
                ..
            }
        ),
        "{err}"
    );

    let missing = [dir.path().join("nope.png")];
    assert!(matches!(
        Video::from_frame_files(&missing, &FrameFilesOptions::default()),
        Err(Error::Io { .. })
    ));
    let empty: [PathBuf; 0] = [];
    assert!(matches!(
        Video::from_frame_files(&empty, &FrameFilesOptions::default()),
        Err(Error::EmptyVideo { .. })
    ));
}

/// `n` frame files of `w x h` in `dir`.
fn frame_files(dir: &std::path::Path, n: u8, w: u32, h: u32) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let p = dir.join(format!("f{i}.png"));
            numbered_frame(i, w, h).save(&p).unwrap();
            p
        })
        .collect()
}

/// A list longer than `max_files` is refused before any file is read (the files do not exist, so
/// reading one would be an `Io` error); the default cap is qwen-vl-utils' 768 frames.
#[test]
fn frame_lists_longer_than_max_files_are_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let missing: Vec<PathBuf> = (0..769)
        .map(|i| dir.path().join(format!("{i}.png")))
        .collect();
    let five = FrameFilesOptions {
        max_files: 4,
        ..Default::default()
    };
    match Video::from_frame_files(&missing[..5], &five) {
        Err(Error::TooManyFrameFiles {
            what,
            count: 5,
            max_files: 4,
        }) => assert!(what.ends_with("0.png"), "{what}"),
        other => panic!("expected TooManyFrameFiles, got {other:?}"),
    }
    let defaults = FrameFilesOptions::default();
    assert_eq!(defaults.max_files, 768);
    assert!(matches!(
        Video::from_frame_files(&missing, &defaults),
        Err(Error::TooManyFrameFiles {
            count: 769,
            max_files: 768,
            ..
        })
    ));
    assert!(matches!(
        Video::from_frame_files(&missing[..768], &defaults),
        Err(Error::Io { .. })
    ));
}

/// Three 30x20 frames padded to four keep 4 x 1,800 bytes: that budget loads them, one byte less
/// refuses the last file (which fills two slots), and without padding three frames fit in less.
#[test]
fn frame_list_budget_counts_every_kept_frame_with_the_padding() {
    let dir = tempfile::tempdir().unwrap();
    let paths = frame_files(dir.path(), 3, 30, 20);
    let budget = |max_total_bytes, pad_to_even| FrameFilesOptions {
        max_total_bytes,
        pad_to_even,
        ..Default::default()
    };
    assert_eq!(
        Video::from_frame_files(&paths, &budget(7200, true))
            .unwrap()
            .len(),
        4
    );
    match Video::from_frame_files(&paths, &budget(7199, true)) {
        Err(Error::FrameBudgetExceeded {
            what,
            index: 2,
            frame_bytes: 3600,
            total_bytes: 7200,
            max_total_bytes: 7199,
        }) => assert!(what.ends_with("f2.png"), "{what}"),
        other => panic!("expected FrameBudgetExceeded, got {other:?}"),
    }
    assert_eq!(
        Video::from_frame_files(&paths, &budget(5400, false))
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        FrameFilesOptions::default().max_total_bytes,
        16 * 3840 * 2160 * 3
    );
}

/// The budget is checked from each file's header, before its pixels are decoded: a PNG header
/// claiming 100000x100000 (30 GB as RGB) with the image limits lifted is refused by the budget
/// at once, not allocated.
#[test]
fn frame_list_budget_is_checked_before_decoding() {
    let bomb = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/images/broken/bomb_header_100000.png");
    let lifted = FrameFilesOptions {
        limits: DecodeLimits {
            max_width: u32::MAX,
            max_height: u32::MAX,
            max_pixels: u64::MAX,
            max_alloc: u64::MAX,
        },
        ..Default::default()
    };
    match Video::from_frame_files(&[&bomb], &lifted) {
        Err(Error::FrameBudgetExceeded {
            index: 0,
            frame_bytes,
            ..
        }) => assert_eq!(frame_bytes, 2 * 3 * 100_000 * 100_000, "padded to two"),
        other => panic!("expected FrameBudgetExceeded, got {other:?}"),
    }
}

/// Each frame file is loaded under the image decode limits.
#[test]
fn frame_files_are_loaded_under_the_image_limits() {
    let dir = tempfile::tempdir().unwrap();
    let paths = frame_files(dir.path(), 2, 30, 20);
    let small = FrameFilesOptions {
        limits: DecodeLimits {
            max_pixels: 599,
            ..DecodeLimits::default()
        },
        ..Default::default()
    };
    match Video::from_frame_files(&paths, &small) {
        Err(Error::ImageTooLarge {
            what,
            width: 30,
            height: 20,
            max_pixels: 599,
            ..
        }) => assert!(what.ends_with("f0.png"), "{what}"),
        other => panic!("expected ImageTooLarge, got {other:?}"),
    }
}

#[test]
fn memory_videos_are_checked_and_resized() {
    assert!(matches!(
        Video::from_frames(vec![], 2.0),
        Err(Error::EmptyVideo { .. })
    ));
    assert!(matches!(
        Video::from_frames(vec![RgbImage::new(4, 4)], 0.0),
        Err(Error::InvalidVideoFps { .. })
    ));
    assert!(matches!(
        Video::from_frames(vec![RgbImage::new(0, 4)], 2.0),
        Err(Error::ZeroSize { .. })
    ));
    let v = Video::from_frames((0..4).map(|i| numbered_frame(i, 100, 60)).collect(), 2.0).unwrap();
    let limits = PixelLimits::new(4 * 784, 512 * 784);
    assert_eq!(v.model_size(limits).unwrap(), (56, 112));
    let r = v.resized(limits).unwrap();
    assert_eq!((r.width(), r.height(), r.len()), (112, 56, 4));
    // Each frame is resized on its own: frame 3 keeps its red level.
    assert_eq!(r.frames()[3].get_pixel(50, 30).0[0], 3);
    let picked = r.select_frames(&[4, 1]).unwrap();
    assert_eq!(picked.numbers, [4, 1]);
    assert_eq!((picked.width, picked.height), (112, 56));
}

#[cfg(feature = "ffmpeg")]
mod decoding {
    use super::*;
    use pixel_ops::video::{DecodeOptions, DecodeStrategy, probe_frame_count};

    /// The frame number drawn into a frame of `numbered.mp4`: 8 blocks along the top, LSB first.
    fn read_number(f: &RgbImage) -> u32 {
        (0..8)
            .map(|bit| u32::from(f.get_pixel(bit * 8 + 4, 8).0[1] > 128) << bit)
            .sum()
    }

    fn pyav_frames(meta: &Value) -> Vec<RgbImage> {
        let (w, h) = (
            meta["width"].as_u64().unwrap() as u32,
            meta["height"].as_u64().unwrap() as u32,
        );
        let raw = std::fs::read(fixture("numbered_rgb.bin")).unwrap();
        let size = (w * h * 3) as usize;
        raw.chunks_exact(size)
            .map(|c| RgbImage::from_raw(w, h, c.to_vec()).unwrap())
            .collect()
    }

    fn max_abs_diff(a: &RgbImage, b: &RgbImage) -> u8 {
        a.as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(x, y)| x.abs_diff(*y))
            .max()
            .unwrap()
    }

    #[test]
    fn probe_counts_frames_like_pyav() {
        let meta = load_json("numbered.json");
        let (n, fps) = probe_frame_count(fixture("numbered.mp4")).unwrap();
        assert_eq!(n, meta["total_frames"].as_u64().unwrap());
        assert!((fps - meta["fps"].as_f64().unwrap()).abs() < 1e-9);
    }

    #[test]
    fn sampled_frames_are_the_right_frames_and_match_pyav() {
        let meta = load_json("numbered.json");
        let reference = pyav_frames(&meta);
        let mut worst = 0u8;
        for (name, sample) in meta["samples"].as_object().unwrap() {
            let want = as_u64s(&sample["indices"]);
            let count = frame_count(&sample["options"]);
            let mut decoded = Vec::new();
            let mut work = Vec::new();
            // (strategy, threads, split groups): work[2] is the parallel-groups path (3 decoders on
            // the fixture's 5 groups), work[4] decode-all on one thread.
            let variants = [
                (DecodeStrategy::SkipToKeyframes, 1, true),
                (DecodeStrategy::SkipToKeyframes, 0, false),
                (DecodeStrategy::SkipToKeyframes, 3, true),
                (DecodeStrategy::SkipToKeyframes, 0, true),
                (DecodeStrategy::DecodeAll, 1, true),
                (DecodeStrategy::DecodeAll, 0, true),
            ];
            for (strategy, threads, split_groups) in variants {
                {
                    let opts = DecodeOptions {
                        count,
                        strategy,
                        threads,
                        split_groups,
                        ..Default::default()
                    };
                    let v = Video::from_file(fixture("numbered.mp4"), &opts).unwrap();
                    assert_eq!(v.info().frame_indices, want, "{name} {strategy:?}");
                    assert_eq!(v.info().total_frames, 30);
                    let numbers: Vec<u64> = v
                        .frames()
                        .iter()
                        .map(|f| u64::from(read_number(f)))
                        .collect();
                    assert_eq!(numbers, want, "{name} {strategy:?}: wrong frames decoded");
                    for (f, &i) in v.frames().iter().zip(&want) {
                        worst = worst.max(max_abs_diff(f, &reference[i as usize]));
                    }
                    work.push(v.info().frames_decoded);
                    decoded.push(v);
                }
            }
            eprintln!(
                "{name}: frames decoded (skip: 1 thread, frame threads, 3 decoders, auto; all: 1 thread, auto) = {work:?}"
            );
            // Decode-all stops after the last wanted frame; skipping decodes only wanted groups.
            assert!(
                work[4] > *want.last().unwrap() && work[..4].iter().all(|&w| w <= work[4]),
                "{name}: {work:?}"
            );
            if name != "all_30" {
                assert!(
                    work[0] < work[4] && work[2] < work[4],
                    "{name}: nothing skipped: {work:?}"
                );
            }
            // Skipping to keyframes and threading give exactly the decode-all frames.
            for other in &decoded[1..] {
                assert!(
                    other.frames() == decoded[0].frames(),
                    "{name}: strategies disagree"
                );
            }
        }
        // PyAV bundles a newer FFmpeg (8) than the system's (5.1 here); H.264 decoding is
        // bit-exact, and so is swscale's YUV->RGB with the same flags on this fixture
        // (docs/performance.md states 0 levels).
        assert_eq!(worst, 0, "max |rust - pyav| = {worst}");
    }

    #[test]
    fn official_sixteen_frames_and_select_frames() {
        let v = Video::from_file(fixture("numbered.mp4"), &DecodeOptions::default()).unwrap();
        assert_eq!(v.len(), 16);
        assert!((v.info().sample_fps - 8.0).abs() < 1e-12);
        let picked = v.select_frames(&[1, 16, 9]).unwrap();
        let numbers: Vec<u32> = picked.frames.iter().map(read_number).collect();
        assert_eq!(numbers, [0, 29, 15]);
        assert_eq!((picked.width, picked.height), (64, 48));
        assert!(v.select_frames(&[17]).is_err());
    }

    #[test]
    fn too_many_frames_asked_is_a_typed_error() {
        let opts = DecodeOptions {
            count: FrameCount::NFrames(32.0),
            ..Default::default()
        };
        let err = Video::from_file(fixture("numbered.mp4"), &opts).unwrap_err();
        assert!(
            matches!(
                err,
                Error::NFramesOutOfRange {
                    total_frames: 30,
                    ..
                }
            ),
            "{err}"
        );
    }
}

mod properties {
    use super::*;
    use pixel_ops::video::select_frames;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any counts and frame rates: a frame count in `[2, total]` and even, or a typed error.
        #[test]
        fn smart_nframes_is_even_and_in_range_or_an_error(
            total in 0u64..5000,
            fps in prop_oneof![Just(0.0), Just(f64::NAN), Just(-1.0), 0.01f64..240.0],
            n in prop_oneof![Just(f64::NAN), Just(f64::INFINITY), -10.0f64..2000.0],
            fixed in any::<bool>(),
        ) {
            let count = if fixed { FrameCount::NFrames(n) } else { FrameCount::default() };
            match smart_nframes(count, total, fps) {
                Ok(k) => prop_assert!(k >= 2 && k <= total && k % 2 == 0),
                Err(e) => {
                    let typed = matches!(e, Error::NFramesOutOfRange { .. } | Error::InvalidVideoFps { .. });
                    prop_assert!(typed, "{}", e);
                }
            }
        }

        /// Indices are `n` non-decreasing values from `start` to `end`.
        #[test]
        fn indices_span_the_range_in_order(start in 0u64..100_000, len in 0u64..100_000, n in 0u64..800) {
            let end = start + len;
            let idx = frame_indices(start, end, n);
            prop_assert_eq!(idx.len() as u64, n);
            prop_assert!(idx.windows(2).all(|w| w[0] <= w[1]));
            prop_assert!(idx.iter().all(|&i| (start..=end).contains(&i)));
            if n >= 2 {
                prop_assert_eq!(idx[0], start);
                prop_assert_eq!(*idx.last().unwrap(), end);
            }
        }
    }

    /// Any selection from model text: the frames asked for (in the order asked), or a typed error;
    /// never a panic. Numbers are drawn mostly within the video's frames (about half the selections
    /// are valid), and at least a quarter must succeed so the frames returned are checked.
    #[test]
    fn select_frames_returns_the_frames_asked_for_or_an_error() {
        let strategy = (0usize..20).prop_flat_map(|n| {
            let number = prop_oneof![
                18 => 1..=(n as i64).max(1),
                1 => -2i64..22,
                1 => any::<i64>(),
            ];
            (proptest::collection::vec(number, 0..10), Just(n))
        });
        let cases = 512;
        let selected = super::common::count_accepted(cases, strategy, |(sel, n)| {
            let frames: Vec<RgbImage> = (0..n)
                .map(|i| RgbImage::from_pixel(2, 2, Rgb([i as u8, 0, 0])))
                .collect();
            let Ok(s) = select_frames(&frames, &sel) else {
                return Ok(false);
            };
            prop_assert!(!sel.is_empty() && sel.len() <= 8);
            prop_assert_eq!(s.frames.len(), sel.len());
            for (f, &k) in s.frames.iter().zip(&sel) {
                prop_assert_eq!(i64::from(f.get_pixel(0, 0).0[0]) + 1, k);
            }
            Ok(true)
        });
        assert!(
            selected >= cases / 4,
            "{selected} of {cases} selections succeeded"
        );
    }
}
