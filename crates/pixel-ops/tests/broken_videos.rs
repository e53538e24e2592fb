//! Broken video files give typed errors, never panics. Corpus: `scripts/gen_video_fixtures.py`.
#![cfg(feature = "ffmpeg")]

use std::path::PathBuf;

use pixel_ops::Error;
use pixel_ops::video::{DecodeOptions, DecodeStrategy, Video, probe_frame_count};

fn broken(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/video/broken")
        .join(name)
}

fn decode(name: &str) -> Error {
    let mut first = None;
    for strategy in [DecodeStrategy::SkipToKeyframes, DecodeStrategy::DecodeAll] {
        let opts = DecodeOptions {
            strategy,
            ..Default::default()
        };
        let err = Video::from_file(broken(name), &opts).expect_err(name);
        assert!(
            probe_frame_count(broken(name)).is_err()
                || matches!(err, Error::NFramesOutOfRange { .. }),
            "{name}"
        );
        // The message names the file, so a user knows which input failed.
        let msg = err.to_string();
        assert!(
            msg.contains(name) || matches!(err, Error::NFramesOutOfRange { .. }),
            "{name}: {msg}"
        );
        first.get_or_insert(err);
    }
    first.unwrap()
}

#[test]
fn zero_bytes() {
    let err = decode("zero_bytes.mp4");
    assert!(
        matches!(&err, Error::VideoDecode { reason, .. } if reason.contains("0 bytes")),
        "{err}"
    );
}

#[test]
fn random_bytes() {
    let err = decode("random_bytes.mp4");
    assert!(matches!(err, Error::VideoDecode { .. }), "{err}");
}

#[test]
fn header_only() {
    let err = decode("header_only.mp4");
    assert!(
        matches!(
            err,
            Error::VideoDecode { .. } | Error::NoVideoStream { .. } | Error::EmptyVideo { .. }
        ),
        "{err}"
    );
}

#[test]
fn truncated_with_index_at_the_end() {
    let err = decode("truncated_moov_at_end.mp4");
    assert!(matches!(err, Error::VideoDecode { .. }), "{err}");
}

#[test]
fn truncated_with_index_at_the_start() {
    let err = decode("truncated_faststart.mp4");
    assert!(
        matches!(&err, Error::VideoDecode { reason, .. } if reason.contains("truncated")),
        "{err}"
    );
}

#[test]
fn audio_only() {
    let err = decode("audio_only.wav");
    assert!(matches!(err, Error::NoVideoStream { .. }), "{err}");
}

#[test]
fn text_file() {
    let err = decode("text.mp4");
    assert!(matches!(err, Error::VideoDecode { .. }), "{err}");
}

#[test]
fn missing_file() {
    let err =
        Video::from_file(broken("does_not_exist.mp4"), &DecodeOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
}

#[test]
fn a_single_image_is_too_short_for_a_video() {
    // FFmpeg opens a PNG as a one-frame video; qwen-vl-utils' rule needs at least 2 frames.
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("one.png");
    pixel_ops::image::RgbImage::new(8, 8).save(&png).unwrap();
    let err = Video::from_file(&png, &DecodeOptions::default()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NFramesOutOfRange {
                total_frames: 1,
                ..
            } | Error::VideoDecode { .. }
        ),
        "{err}"
    );
}

/// Seeded corruptions of the good fixture (flipped bytes, cut tails): decoding returns frames or a typed
/// error, never panics or hangs.
#[test]
fn corrupted_copies_never_panic() {
    let good = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/video/numbered.mp4"),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        // xorshift64*: a fixed sequence, so failures reproduce.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let (mut ok, mut failed) = (0, 0);
    for case in 0..48 {
        let mut bytes = good.clone();
        let flips = 1 + (next() % 16) as usize;
        for _ in 0..flips {
            let at = (next() % bytes.len() as u64) as usize;
            bytes[at] ^= (next() % 255 + 1) as u8;
        }
        if case % 4 == 3 {
            let keep = (next() % bytes.len() as u64) as usize;
            bytes.truncate(keep);
        }
        let path = dir.path().join(format!("corrupt_{case}.mp4"));
        std::fs::write(&path, &bytes).unwrap();
        for strategy in [DecodeStrategy::SkipToKeyframes, DecodeStrategy::DecodeAll] {
            let opts = DecodeOptions {
                strategy,
                ..Default::default()
            };
            match Video::from_file(&path, &opts) {
                Ok(v) => {
                    assert_eq!(v.len(), 16);
                    ok += 1;
                }
                Err(_) => failed += 1,
            }
        }
    }
    // Both outcomes occur: most single-byte flips land in picture data and still decode.
    assert!(ok > 0 && failed > 0, "{ok} decoded, {failed} failed");
}

fn numbered() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/video/numbered.mp4")
}

/// One 64x48 frame of `numbered.mp4` as 8-bit RGB.
const FRAME_BYTES: u64 = 64 * 48 * 3;

/// Every way of decoding (strategy, threads, split groups): sequential and parallel skipping, and
/// decode-all.
const VARIANTS: [(DecodeStrategy, usize, bool); 4] = [
    (DecodeStrategy::SkipToKeyframes, 1, true),
    (DecodeStrategy::SkipToKeyframes, 3, true),
    (DecodeStrategy::SkipToKeyframes, 0, false),
    (DecodeStrategy::DecodeAll, 0, true),
];

fn options((strategy, threads, split_groups): (DecodeStrategy, usize, bool)) -> DecodeOptions {
    DecodeOptions {
        strategy,
        threads,
        split_groups,
        ..Default::default()
    }
}

/// The official 16 frames of the fixture take 16 x 9,216 bytes: a budget of exactly that decodes, one
/// byte less refuses the 16th frame (the first 15 are counted, whichever decoder kept them), and a
/// budget under one frame refuses the first.
#[test]
fn kept_frames_beyond_the_byte_budget_are_a_typed_error() {
    for variant in VARIANTS {
        let exact = DecodeOptions {
            max_total_bytes: 16 * FRAME_BYTES,
            ..options(variant)
        };
        let video = Video::from_file(numbered(), &exact).unwrap();
        assert_eq!(video.len(), 16, "{variant:?}");

        let short = DecodeOptions {
            max_total_bytes: 16 * FRAME_BYTES - 1,
            ..options(variant)
        };
        match Video::from_file(numbered(), &short) {
            Err(Error::FrameBudgetExceeded {
                what,
                frame_bytes,
                total_bytes,
                max_total_bytes,
                ..
            }) => {
                assert!(what.ends_with("numbered.mp4"), "{what}");
                assert_eq!(
                    (frame_bytes, total_bytes, max_total_bytes),
                    (FRAME_BYTES, 16 * FRAME_BYTES, 16 * FRAME_BYTES - 1),
                    "{variant:?}"
                );
            }
            other => panic!("{variant:?}: expected FrameBudgetExceeded, got {other:?}"),
        }

        let tiny = DecodeOptions {
            max_total_bytes: 1000,
            ..options(variant)
        };
        assert!(
            matches!(
                Video::from_file(numbered(), &tiny),
                Err(Error::FrameBudgetExceeded {
                    total_bytes: FRAME_BYTES,
                    max_total_bytes: 1000,
                    ..
                })
            ),
            "{variant:?}"
        );
    }
}

/// The default budget is the official 16 frames of a 4K RGB source.
#[test]
fn default_budget_holds_sixteen_4k_frames() {
    let budget = DecodeOptions::default().max_total_bytes;
    assert_eq!(budget, 16 * 3840 * 2160 * 3);
    assert_eq!(budget, pixel_ops::video::DEFAULT_MAX_TOTAL_FRAME_BYTES);
}

/// A frame limit below the fixture's 64x48 is refused from the header, naming the size; the exact
/// size decodes (FFmpeg's own backstop leaves room for padded widths).
#[test]
fn frames_beyond_the_pixel_limit_are_a_typed_error() {
    for variant in VARIANTS {
        let under = DecodeOptions {
            max_frame_pixels: 64 * 48 - 1,
            ..options(variant)
        };
        match Video::from_file(numbered(), &under) {
            Err(Error::ImageTooLarge {
                width: 64,
                height: 48,
                pixels: 3072,
                max_pixels: 3071,
                what,
                ..
            }) => assert!(what.ends_with("numbered.mp4"), "{what}"),
            other => panic!("{variant:?}: expected ImageTooLarge, got {other:?}"),
        }
        let exact = DecodeOptions {
            max_frame_pixels: 64 * 48,
            ..options(variant)
        };
        assert_eq!(Video::from_file(numbered(), &exact).unwrap().len(), 16);
    }
}

/// A motion-JPEG stream of 16 frames whose header (first frame) is 64x48 and whose frames from
/// number 8 on are `late`: a stream can change size after its header.
fn growing_mjpeg(dir: &std::path::Path, late: (u32, u32)) -> PathBuf {
    let mut bytes = Vec::new();
    for i in 0..16u32 {
        let (w, h) = if i < 8 { (64, 48) } else { late };
        let frame = pixel_ops::image::RgbImage::from_fn(w, h, |x, _| {
            pixel_ops::image::Rgb([(i * 10) as u8, x as u8, 7])
        });
        let mut jpeg = std::io::Cursor::new(Vec::new());
        frame
            .write_to(&mut jpeg, pixel_ops::image::ImageFormat::Jpeg)
            .unwrap();
        bytes.extend(jpeg.into_inner());
    }
    let path = dir.join(format!("grows_to_{}x{}.mjpeg", late.0, late.1));
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Frames that grow past the limit after a header within it are refused one by one, before they are
/// converted: `ImageTooLarge` naming the frame, with its real size.
#[test]
fn decoded_frames_are_checked_against_the_pixel_limit_not_just_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = growing_mjpeg(dir.path(), (64, 64));
    let unlimited = Video::from_file(&path, &DecodeOptions::default()).unwrap_err();
    assert!(
        matches!(
            unlimited,
            Error::FrameSizeMismatch { .. } | Error::VideoDecode { .. }
        ),
        "{unlimited}"
    );
    for variant in VARIANTS {
        let opts = DecodeOptions {
            max_frame_pixels: 64 * 48,
            ..options(variant)
        };
        match Video::from_file(&path, &opts) {
            Err(Error::ImageTooLarge {
                width: 64,
                height: 64,
                pixels: 4096,
                max_pixels: 3072,
                what,
                ..
            }) => {
                let frame: u64 = what
                    .rsplit_once("(frame ")
                    .and_then(|(_, n)| n.trim_end_matches(')').parse().ok())
                    .unwrap_or_else(|| panic!("the error names the frame: {what}"));
                assert!(frame >= 8, "{what}");
            }
            other => panic!("{variant:?}: expected ImageTooLarge, got {other:?}"),
        }
    }
}

/// Frames far beyond the limit (here 4x) are refused by FFmpeg's decoder before it allocates them;
/// the error names the frame that never came out and the decoder's failures.
#[test]
fn frames_far_beyond_the_pixel_limit_are_refused_by_the_decoder() {
    let dir = tempfile::tempdir().unwrap();
    let path = growing_mjpeg(dir.path(), (128, 96));
    for variant in VARIANTS {
        let opts = DecodeOptions {
            max_frame_pixels: 64 * 48,
            ..options(variant)
        };
        match Video::from_file(&path, &opts) {
            Err(Error::VideoDecode { what, reason }) => {
                assert!(what.ends_with("grows_to_128x96.mjpeg"), "{what}");
                assert!(reason.contains("the decoder failed"), "{reason}");
            }
            other => panic!("{variant:?}: expected VideoDecode, got {other:?}"),
        }
    }
}
