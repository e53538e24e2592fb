#!/usr/bin/env python3
"""Writes the pixel-ops video fixtures under crates/pixel-ops/tests/fixtures/video/.

Regenerate (needs python3 with qwen-vl-utils, torch, numpy, av (PyAV), and the `ffmpeg` CLI with libx264):

    python3 scripts/gen_video_fixtures.py

Outputs (all small, committed):
  sampling.json     qwen-vl-utils `smart_nframes` and the `torch.linspace(...).round()` frame indices for
                    many (total_frames, video_fps, option) cases, including ties and errors.
  numbered.mp4      64x48, 15 fps, 2 s (30 frames) H.264 with B-frames and a keyframe every 7 frames; each
                    frame carries its own number as 8 binary blocks along the top (white = 1, LSB first).
  numbered.json     facts about numbered.mp4 as PyAV reads it (frame count, fps, keyframes) and the indices
                    qwen-vl-utils samples from it.
  numbered_rgb.bin  every frame of numbered.mp4 decoded by PyAV (decode-all, rgb24), concatenated.
  broken/           files that must fail with typed errors: zero bytes, random bytes, an MP4 header
                    only, truncated MP4s (index at the end / at the start), an audio-only WAV, a text file.
"""
import json
import os
import subprocess
import tempfile

import logging

import av
import numpy as np
import torch
from qwen_vl_utils import vision_process as vp

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "crates", "pixel-ops", "tests", "fixtures", "video")
W, H, FPS, N, GOP = 64, 48, 15, 30, 7


def sampling_cases():
    cases = []
    fps_values = [0.5, 2.0, 7.5, 23.976023976023978, 29.97002997002997, 30.0, 60.0]
    options = [
        {},
        {"fps": 1.0},
        {"fps": 4.0},
        {"fps": 2.0, "min_frames": 3, "max_frames": 31},
        {"fps": 0.5, "min_frames": 8},
        {"fps": 2.0, "max_frames": 17},
    ]
    totals = list(range(1, 26)) + [31, 33, 47, 48, 59, 60, 61, 99, 100, 101, 119, 120, 121, 149, 150, 151, 240, 299,
                                   300, 301, 450, 599, 600, 899, 900, 1000, 1799, 1800, 3600]
    for total in totals:
        for video_fps in fps_values:
            for opt in options:
                cases.append((total, video_fps, opt))
    # `nframes`: ties (odd counts round to even: 1->0, 3->4, 5->4, 7->8, 9->8), and too many for the video.
    for total in [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 23, 24, 25, 30, 31, 33, 48, 100, 301, 1000, 4000]:
        for n in [1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 15, 16, 17, 31, 32, 33, 64, 100.5, 2.5, 16.0]:
            cases.append((total, 30.0, {"nframes": n}))
    out = []
    for total, video_fps, opt in cases:
        rec = {"total_frames": total, "video_fps": video_fps, "options": opt}
        try:
            n = vp.smart_nframes(dict(opt), total_frames=total, video_fps=video_fps)
            idx = torch.linspace(0, total - 1, n).round().long().tolist()
            rec["nframes"] = n
            if n <= 32:
                rec["indices"] = idx
            else:  # long lists: a checksum and both ends keep the fixture small
                rec["indices_sum"] = sum(idx)
                rec["indices_head"] = idx[:8]
                rec["indices_tail"] = idx[-8:]
            rec["sample_fps"] = n / max(total, 1e-6) * video_fps
        except ValueError as e:
            rec["error"] = str(e)
        out.append(rec)
    # Index rule alone, incl. exact .5 ties and the float32 arithmetic, for (start, end, n) triples.
    linspace = []
    for end in list(range(0, 64)) + [99, 119, 149, 299, 449, 599, 899, 1799, 3599, 17999]:
        for n in [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 16, 17, 24, 31, 32, 33, 48, 64]:
            linspace.append({"start": 0, "end": end, "n": n,
                             "indices": torch.linspace(0, end, n).round().long().tolist()})
    for start, end, n in [(10, 20, 4), (3, 9, 5), (100, 299, 16), (7, 7, 3), (1, 2, 4)]:
        linspace.append({"start": start, "end": end, "n": n,
                         "indices": torch.linspace(start, end, n).round().long().tolist()})
    # VideoPixels bounds: max(min(VIDEO_MAX, total/n*2), int(min*1.05)).
    pixels = []
    for n in [2, 4, 16, 64, 300, 301, 768]:
        for min_pixels, total_pixels in [(vp.VIDEO_MIN_TOKEN_NUM * 784, vp.MODEL_SEQ_LEN * 784 * 0.9),
                                         (128 * 784, 24576 * 784), (256 * 784, 4096 * 784)]:
            max_pixels = max(min(vp.VIDEO_MAX_TOKEN_NUM * 784, total_pixels / n * vp.FRAME_FACTOR),
                             int(min_pixels * 1.05))
            pixels.append({"nframes": n, "min_pixels": min_pixels, "total_pixels": total_pixels,
                           "max_pixels": max_pixels})
    # Frame sizes `fetch_video` resizes to: smart_resize(h, w, 28, min_pixels, max_pixels) with the
    # per-frame bounds above, for the default bounds and the official `max_pixels = 512*28*28`.
    sizes = []
    for h, w in [(720, 1280), (1080, 1920), (480, 640), (48, 64), (360, 202), (2160, 3840), (100, 1000),
                 (1280, 720), (33, 4000)]:
        for n in [4, 16, 64, 768]:
            for official in [False, True]:
                min_pixels = vp.VIDEO_MIN_TOKEN_NUM * 784
                total_pixels = vp.MODEL_SEQ_LEN * 784 * 0.9
                max_pixels = max(min(vp.VIDEO_MAX_TOKEN_NUM * 784, total_pixels / n * vp.FRAME_FACTOR),
                                 int(min_pixels * 1.05))
                if official:
                    max_pixels = min(512 * 784, max_pixels)
                rec = {"height": h, "width": w, "nframes": n, "official": official}
                try:
                    rec["resized"] = list(vp.smart_resize(h, w, factor=28, min_pixels=min_pixels,
                                                          max_pixels=max_pixels))
                except ValueError as e:
                    rec["error"] = str(e)
                sizes.append(rec)
    return {"cases": out, "linspace": linspace, "pixel_bounds": pixels, "frame_sizes": sizes}


def numbered_frames():
    frames = []
    yy, xx = np.mgrid[0:H, 0:W]
    for i in range(N):
        f = np.zeros((H, W, 3), np.uint8)
        # Smooth moving background, so motion compensation has work to do.
        f[..., 0] = (xx * 3 + i * 5) % 200 + 20
        f[..., 1] = (yy * 4 + i * 3) % 200 + 20
        f[..., 2] = ((xx + yy) * 2 + i * 7) % 200 + 20
        f[:16] = 0
        for bit in range(8):
            if (i >> bit) & 1:
                f[2:14, bit * 8 + 1:bit * 8 + 7] = 255
        frames.append(f)
    return frames


def encode(frames, path, faststart):
    cmd = ["ffmpeg", "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{W}x{H}",
           "-r", str(FPS), "-i", "-", "-c:v", "libx264", "-threads", "1", "-g", str(GOP), "-keyint_min", str(GOP),
           "-sc_threshold", "0", "-bf", "2", "-crf", "18", "-pix_fmt", "yuv420p"]
    if faststart:
        cmd += ["-movflags", "+faststart"]
    subprocess.run(cmd + [path], input=b"".join(f.tobytes() for f in frames), check=True)


def main():
    logging.getLogger("qwen_vl_utils").setLevel(logging.ERROR)
    vp.logger.setLevel(logging.ERROR)
    os.makedirs(os.path.join(OUT, "broken"), exist_ok=True)
    with open(os.path.join(OUT, "sampling.json"), "w") as fh:
        json.dump(sampling_cases(), fh, separators=(",", ":"))

    frames = numbered_frames()
    video = os.path.join(OUT, "numbered.mp4")
    encode(frames, video, faststart=True)

    # PyAV decode-all: the reference frames.
    with av.open(video) as c:
        s = c.streams.video[0]
        decoded = [fr.to_ndarray(format="rgb24") for fr in c.decode(s)]
        avg_fps = float(s.average_rate)
    with av.open(video) as c:
        keyframes = [i for i, p in enumerate(c.demux(c.streams.video[0])) if p.size and p.is_keyframe]
    assert len(decoded) == N, len(decoded)
    np.concatenate([d.reshape(-1) for d in decoded]).tofile(os.path.join(OUT, "numbered_rgb.bin"))
    samples = {}
    for name, opt in [("official_16", {"nframes": 16}), ("default_fps", {}), ("all_30", {"nframes": 30}),
                      ("nframes_6", {"nframes": 6})]:
        n = vp.smart_nframes(dict(opt), total_frames=N, video_fps=avg_fps)
        samples[name] = {"options": opt, "indices": torch.linspace(0, N - 1, n).round().long().tolist()}
    meta = {"width": W, "height": H, "total_frames": len(decoded), "fps": avg_fps,
            "keyframes_decode_order": keyframes, "samples": samples,
            "pyav_version": av.__version__, "ffmpeg_in_pyav": list(av.library_versions["libavcodec"])}
    with open(os.path.join(OUT, "numbered.json"), "w") as fh:
        json.dump(meta, fh, indent=1)

    broken = os.path.join(OUT, "broken")
    data = open(video, "rb").read()
    open(os.path.join(broken, "zero_bytes.mp4"), "wb").close()
    rng = np.random.default_rng(7)
    open(os.path.join(broken, "random_bytes.mp4"), "wb").write(rng.integers(0, 256, 4096, np.uint8).tobytes())
    ftyp_len = int.from_bytes(data[:4], "big")
    open(os.path.join(broken, "header_only.mp4"), "wb").write(data[:ftyp_len])
    # Index (moov) at the start, media data cut in half.
    open(os.path.join(broken, "truncated_faststart.mp4"), "wb").write(data[: len(data) * 6 // 10])
    with tempfile.TemporaryDirectory() as tmp:
        late = os.path.join(tmp, "late.mp4")
        encode(frames, late, faststart=False)
        late_data = open(late, "rb").read()
        # Index at the end: cutting the file loses it.
        open(os.path.join(broken, "truncated_moov_at_end.mp4"), "wb").write(late_data[: len(late_data) * 6 // 10])
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=0.05",
                    "-ac", "1", "-ar", "8000", os.path.join(broken, "audio_only.wav")], check=True)
    open(os.path.join(broken, "text.mp4"), "w").write("this is not a video\n" * 10)


if __name__ == "__main__":
    main()
