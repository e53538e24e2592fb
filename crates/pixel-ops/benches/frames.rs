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
    use std::time::{Duration, Instant};

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

    /// CPU seconds (user + system, all threads) this process has used, from `/proc/self/stat`
    /// (Linux; 0 elsewhere). Clock ticks are taken as 100 per second, the Linux default.
    fn cpu_seconds() -> f64 {
        let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
            return 0.0;
        };
        // Fields after the command name (in parentheses, it may hold spaces): utime and stime are
        // fields 14 and 15 of the line, 12 and 13 after the name.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (ticks(11) + ticks(12)) / 100.0
    }

    /// Whether `video`'s frames equal PyAV's decode-all frames, by the checksums
    /// `scripts/bench_frames_reference.py` writes beside the video (`"not checked"` without them).
    fn same_as_pyav(path: &std::path::Path, video: &Video) -> &'static str {
        let Ok(text) = std::fs::read_to_string(path.with_file_name("pyav_checksums.json")) else {
            return "not checked (run the Python script first)";
        };
        let expected: Vec<u64> = text
            .split("\"checksums\":")
            .nth(1)
            .map(|t| {
                t.trim_matches(|c: char| c == ' ' || c == '[' || c == ']' || c == '}' || c == '\n')
                    .split(',')
                    .filter_map(|v| v.trim().parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let got: Vec<u64> = video
            .frames()
            .iter()
            .map(|f| {
                f.as_raw().iter().enumerate().fold(0u64, |acc, (i, &b)| {
                    acc.wrapping_add(u64::from(b) * (i as u64 % 251 + 1))
                })
            })
            .collect();
        if got == expected {
            "identical to PyAV decode-all"
        } else {
            "DIFFERENT from PyAV decode-all"
        }
    }

    /// (name, strategy, threads, split groups across decoders).
    const CASES: [(&str, DecodeStrategy, usize, bool); 4] = [
        (
            "skip_to_keyframes_split_groups_auto",
            DecodeStrategy::SkipToKeyframes,
            0,
            true,
        ),
        (
            "skip_to_keyframes_frame_threads_auto",
            DecodeStrategy::SkipToKeyframes,
            0,
            false,
        ),
        (
            "skip_to_keyframes_1_thread",
            DecodeStrategy::SkipToKeyframes,
            1,
            true,
        ),
        (
            "decode_all_frame_threads_auto",
            DecodeStrategy::DecodeAll,
            0,
            true,
        ),
    ];

    pub fn bench(c: &mut Criterion) {
        let path = ensure_video();
        // Wall time swings on a shared machine; CPU time (all threads) is printed beside it so runs
        // can be compared with `scripts/bench_frames_reference.py`, which prints the same.
        let cases = CASES.map(|(name, strategy, threads, split_groups)| {
            let opts = DecodeOptions {
                strategy,
                threads,
                split_groups,
                ..Default::default()
            };
            (name, opts)
        });
        for (name, opts) in &cases {
            let (mut wall, mut cpu, mut same, mut decoded) = (f64::INFINITY, f64::INFINITY, "", 0);
            for _ in 0..3 {
                let (t, c) = (Instant::now(), cpu_seconds());
                let v = Video::from_file(&path, opts).expect("decode bench video");
                wall = wall.min(t.elapsed().as_secs_f64());
                cpu = cpu.min(cpu_seconds() - c);
                decoded = v.info().frames_decoded;
                same = same_as_pyav(&path, &v);
            }
            eprintln!(
                "{name:34} wall min {wall:.3} s  cpu min {cpu:.3} s  ({decoded} frames decoded; {same})"
            );
        }
        let mut group = c.benchmark_group("frames_720p30_60s_16");
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(20))
            .warm_up_time(Duration::from_secs(2));
        for (name, opts) in &cases {
            group.bench_function(*name, |b| {
                b.iter(|| black_box(Video::from_file(&path, opts).expect("decode bench video")))
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
