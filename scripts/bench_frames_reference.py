#!/usr/bin/env python3
"""Python reference timings for benchmark (b): decode and sample the official 16 frames from a 60 s
720p30 H.264 file with 8 keyframes (the file `crates/pixel-ops/benches/frames.rs` uses).

Run (from the repository root; decord and torchcodec are optional, e.g. in a venv that sees the system
packages: `python3 -m venv --system-site-packages scripts/.venv && scripts/.venv/bin/pip install --no-deps
torchcodec decord`):

    scripts/.venv/bin/python scripts/bench_frames_reference.py      # or python3 ...
    cargo bench -p pixel-ops --features ffmpeg --bench frames

The video is made with the `ffmpeg` CLI if missing (same arguments as the Rust bench) under
target/bench-frames/. Every method reads the same 16 indices (qwen-vl-utils `nframes=16`), and the script
checks that all of them return the same frames as PyAV decode-all.
"""
import json
import os
import statistics
import subprocess
import sys
import time

import av
import numpy as np
import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
VIDEO = os.environ.get("PIXEL_OPS_FRAMES_VIDEO",
                       os.path.join(ROOT, "target", "bench-frames", "video_720p30_60s.mp4"))
MAKE_VIDEO = ["-y", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30", "-t", "60",
              "-c:v", "libx264", "-preset", "fast", "-crf", "23", "-g", "225", "-keyint_min", "225",
              "-sc_threshold", "0", "-pix_fmt", "yuv420p"]
REPEATS = int(os.environ.get("REPEATS", "3"))


def ensure_video():
    if not os.path.exists(VIDEO):
        os.makedirs(os.path.dirname(VIDEO), exist_ok=True)
        subprocess.run(["ffmpeg"] + MAKE_VIDEO + [VIDEO], check=True)


def wanted_indices():
    from qwen_vl_utils import vision_process as vp
    with av.open(VIDEO) as c:
        s = c.streams.video[0]
        total = sum(1 for p in c.demux(s) if p.size)
        fps = float(s.average_rate)
    n = vp.smart_nframes({"nframes": 16}, total_frames=total, video_fps=fps)
    return torch.linspace(0, total - 1, n).round().long().tolist(), total


def pyav_decode_all(indices, thread_type=None):
    want = set(indices)
    got = {}
    with av.open(VIDEO) as c:
        s = c.streams.video[0]
        if thread_type:
            s.thread_type = thread_type
        for i, frame in enumerate(c.decode(s)):
            if i in want:
                got[i] = frame.to_ndarray(format="rgb24")
            if i >= indices[-1]:
                break
    return np.stack([got[i] for i in indices])


def decord_batch(indices):
    import decord
    vr = decord.VideoReader(VIDEO)
    return vr.get_batch(indices).asnumpy()


def torchcodec_frames(indices):
    from torchcodec.decoders import VideoDecoder
    d = VideoDecoder(VIDEO, num_ffmpeg_threads=int(os.environ.get("TORCHCODEC_NUM_THREADS", 8)))
    return d.get_frames_at(indices=indices).data.permute(0, 2, 3, 1).numpy()


def fetch_video(backend):
    from qwen_vl_utils import vision_process as vp
    vp.FORCE_QWENVL_VIDEO_READER = backend
    vp.get_video_reader_backend.cache_clear()
    return vp.fetch_video({"video": VIDEO, "nframes": 16})


def timeit(name, fn, reference=None):
    try:
        out = fn()
    except Exception as e:  # an optional backend that is missing or broken
        print(f"{name:42s} unavailable: {type(e).__name__}: {str(e)[:100]}")
        return None
    times, cpu = [], []
    for _ in range(REPEATS):
        t, c = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    same = ""
    if reference is not None and isinstance(out, np.ndarray):
        diff = int(np.abs(out.astype(np.int16) - reference.astype(np.int16)).max())
        same = f"  max |diff| vs PyAV decode-all = {diff}"
    print(f"{name:42s} wall min {min(times):.3f} s  median {statistics.median(times):.3f} s  "
          f"cpu min {min(cpu):.3f} s{same}")
    return min(times)


def main():
    ensure_video()
    indices, total = wanted_indices()
    print(f"video {VIDEO}: {total} frames; indices {indices}")
    print(f"python {sys.version.split()[0]}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"PyAV {av.__version__}, {os.cpu_count()} CPUs, {REPEATS} timed runs each")
    ref = pyav_decode_all(indices)
    # Per-frame checksums of the reference frames, for the Rust bench to compare its frames against.
    weights = (np.arange(ref[0].size, dtype=np.uint64) % 251) + 1
    sums = [int((f.reshape(-1).astype(np.uint64) * weights).sum()) for f in ref]
    with open(os.path.join(os.path.dirname(VIDEO), "pyav_checksums.json"), "w") as fh:
        json.dump({"indices": indices, "checksums": sums}, fh)
    timeit("PyAV decode-all (1 thread)", lambda: pyav_decode_all(indices), ref)
    timeit("PyAV decode-all (thread_type=AUTO)", lambda: pyav_decode_all(indices, "AUTO"), ref)
    timeit("decord VideoReader.get_batch", lambda: decord_batch(indices), ref)
    timeit("torchcodec get_frames_at", lambda: torchcodec_frames(indices), ref)
    timeit("qwen-vl-utils fetch_video (torchcodec)", lambda: fetch_video("torchcodec"))
    timeit("qwen-vl-utils fetch_video (decord)", lambda: fetch_video("decord"))
    timeit("qwen-vl-utils fetch_video (torchvision)", lambda: fetch_video("torchvision"))


if __name__ == "__main__":
    main()
