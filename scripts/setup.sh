#!/usr/bin/env bash
# Installs what building and testing the workspace needs on a fresh Debian/Ubuntu machine that has Rust:
# the FFmpeg development libraries (video decoding, feature `ffmpeg`), clang (bindgen) and pkg-config,
# and cargo-nextest. Safe to run again: it only installs what is missing.
set -euo pipefail

need_apt=()
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
if ! pkg-config --exists libavcodec libavformat libavutil libswscale 2>/dev/null; then
  need_apt+=(libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev libavfilter-dev libavdevice-dev)
fi
if ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 && ! ls /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1; then
  need_apt+=(clang libclang-dev)
fi
command -v ffmpeg >/dev/null 2>&1 || need_apt+=(ffmpeg)

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      echo "setup: missing ${need_apt[*]} and not root (no sudo). Install them with:" >&2
      echo "  apt-get install ${need_apt[*]}" >&2
      exit 1
    fi
  fi
  if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}"; } >&2; then
    echo "setup: apt-get failed. Install these packages by hand: ${need_apt[*]}" >&2
    exit 1
  fi
fi

if ! command -v cargo-nextest >/dev/null 2>&1; then
  echo "setup: installing cargo-nextest" >&2
  cargo install --locked cargo-nextest >&2
fi
