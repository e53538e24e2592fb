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
