//! Benchmark (b): decode and sample the official 16 frames from a 60 s 720p30 H.264 file with 8
//! keyframes.
//!
//! The video is `target/bench-frames/video_720p30_60s.mp4` (override with `PIXEL_OPS_FRAMES_VIDEO`),
//! made with the `ffmpeg` CLI on first use by this bench or by `scripts/bench_frames_reference.py`
//! (same command), never committed. Run both:
//!
//! ```text
//! python3 scripts/bench_frames_reference.py
//! cargo bench -p pixel-ops --features ffmpeg --bench frames
//! ```
//!
//! Without the `ffmpeg` feature the bench is empty.

use criterion::{Criterion, criterion_group, criterion_main};

#[cfg(feature = "ffmpeg")]
mod video {
    use std::hint::black_box;
    use std::path::PathBuf;
    use std::process::Command;
    use std::time::Duration;

    use criterion::Criterion;
    use pixel_ops::video::{DecodeOptions, DecodeStrategy, Video};

    /// The `ffmpeg` arguments that make the bench video; `scripts/bench_frames_reference.py` uses
    /// the same ones.
    const MAKE_VIDEO: &[&str] = &[
        "-y",
        "-loglevel",
        "error",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=1280x720:rate=30",
        "-t",
        "60",
        "-c:v",
        "libx264",
        "-preset",
        "fast",
        "-crf",
        "23",
        "-g",
        "225",
        "-keyint_min",
        "225",
        "-sc_threshold",
        "0",
        "-pix_fmt",
        "yuv420p",
    ];

    fn video_path() -> PathBuf {
        if let Ok(p) = std::env::var("PIXEL_OPS_FRAMES_VIDEO") {
            return PathBuf::from(p);
        }
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/bench-frames/video_720p30_60s.mp4")
    }

    fn ensure_video() -> PathBuf {
        let path = video_path();
        if !path.exists() {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).expect("create bench dir");
            }
            let status = Command::new("ffmpeg")
                .args(MAKE_VIDEO)
                .arg(&path)
                .status()
                .expect("run the ffmpeg CLI");
            assert!(status.success(), "ffmpeg failed to make {}", path.display());
        }
        path
    }

    pub fn bench(c: &mut Criterion) {
        let path = ensure_video();
        let mut group = c.benchmark_group("frames_720p30_60s_16");
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(20))
            .warm_up_time(Duration::from_secs(2));
        let cases = [
            (
                "skip_to_keyframes_threads_auto",
                DecodeStrategy::SkipToKeyframes,
                0,
            ),
            (
                "skip_to_keyframes_1_thread",
                DecodeStrategy::SkipToKeyframes,
                1,
            ),
            ("decode_all_threads_auto", DecodeStrategy::DecodeAll, 0),
        ];
        for (name, strategy, threads) in cases {
            let opts = DecodeOptions {
                strategy,
                threads,
                ..Default::default()
            };
            group.bench_function(name, |b| {
                b.iter(|| black_box(Video::from_file(&path, &opts).expect("decode bench video")))
            });
        }
        group.finish();
    }
}

fn benches(c: &mut Criterion) {
    #[cfg(feature = "ffmpeg")]
    video::bench(c);
    #[cfg(not(feature = "ffmpeg"))]
    let _ = c;
}

criterion_group!(frames, benches);
criterion_main!(frames);
