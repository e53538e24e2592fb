#!/usr/bin/env bash
# Installs what building and testing the workspace needs on a fresh Debian/Ubuntu machine that has Rust
# (rustup reads the pinned toolchain from rust-toolchain.toml):
#   - pkg-config and the FFmpeg development libraries (feature `ffmpeg`, found by ffmpeg-sys-next via pkg-config);
#   - libclang, the C interface library bindgen loads at build time (`libclang.so`, `libclang-<ver>.so`,
#     `libclang.so.<ver>`). `libclang-cpp.so.<ver>` is the C++ interface library: many base images ship it,
#     bindgen cannot use it, and it does not count;
#   - a C compiler (build-essential) for the crates that build C;
#   - cargo-nextest at a pinned version.
# The ffmpeg program is not needed (only `benches/frames.rs` encodes its input video with it).
# Safe to run again: it only installs what is missing.
#
#   ./scripts/setup.sh            install what is missing (apt-get, cargo install)
#   ./scripts/setup.sh --check    install nothing; list what is missing and exit 1 if anything is
#   ./scripts/setup.sh --self-test  check the libclang detection rules against known file names
#
# SETUP_LIB_DIRS (space-separated) replaces the folders searched for libclang (tests use it).
set -euo pipefail

NEXTEST_VERSION="0.9.143"

# Whether bindgen (clang-sys) would load a file of this name: it globs `libclang.so`, `libclang-*.so`,
# `libclang.so.*` and `libclang-*.so.*`, and skips names containing `-cpp.` (libclang-cpp).
is_bindgen_libclang() {
  local name="$1"
  case "$name" in
    *-cpp.*) return 1 ;;
    libclang.so | libclang-*.so | libclang.so.* | libclang-*.so.*) return 0 ;;
    *) return 1 ;;
  esac
}

# The folders clang-sys searches on Linux (LIBCLANG_PATH first), or SETUP_LIB_DIRS when set.
libclang_dirs() {
  if [ -n "${SETUP_LIB_DIRS:-}" ]; then
    echo "$SETUP_LIB_DIRS"
    return
  fi
  local dirs=()
  [ -n "${LIBCLANG_PATH:-}" ] && dirs+=("$LIBCLANG_PATH")
  if command -v llvm-config >/dev/null 2>&1; then dirs+=("$(llvm-config --libdir)"); fi
  local arch
  arch="$(gcc -print-multiarch 2>/dev/null || true)"
  [ -n "$arch" ] && dirs+=("/usr/lib/$arch" "/usr/local/lib/$arch")
  dirs+=(/usr/lib/llvm-*/lib /usr/local/llvm*/lib /usr/lib64 /usr/lib /usr/local/lib /usr/local/lib64)
  echo "${dirs[@]}"
}

# Prints the first usable libclang, or nothing.
find_libclang() {
  local dir path
  for dir in $(libclang_dirs); do
    [ -d "$dir" ] || continue
    for path in "$dir"/libclang*.so*; do
      [ -e "$path" ] || continue
      if is_bindgen_libclang "$(basename "$path")"; then
        echo "$path"
        return 0
      fi
    done
  done
  return 1
}

self_test() {
  local failed=0 name
  for name in libclang.so libclang-14.so libclang.so.14 libclang.so.1 libclang-14.so.1 libclang-19.1.7.so; do
    is_bindgen_libclang "$name" || { echo "self-test: $name should count as libclang" >&2; failed=1; }
  done
  for name in libclang-cpp.so.14 libclang-cpp.so libclang-cpp.so.19.1 libclangBasic.a libclang_rt.asan.so libclang.a; do
    if is_bindgen_libclang "$name"; then echo "self-test: $name must not count as libclang" >&2; failed=1; fi
  done
  # A folder holding only the C++ library (the base image that broke the demo) has no libclang.
  local tmp
  tmp="$(mktemp -d)"
  touch "$tmp/libclang-cpp.so.14"
  if SETUP_LIB_DIRS="$tmp" find_libclang >/dev/null; then
    echo "self-test: a folder with only libclang-cpp.so.14 was taken as having libclang" >&2
    failed=1
  fi
  touch "$tmp/libclang-14.so.1"
  if ! SETUP_LIB_DIRS="$tmp" find_libclang >/dev/null; then
    echo "self-test: libclang-14.so.1 was not found" >&2
    failed=1
  fi
  rm -rf "$tmp"
  if [ "$failed" -ne 0 ]; then exit 1; fi
  echo "setup: libclang detection self-test passed" >&2
}

mode="install"
case "${1:-}" in
  --check) mode="check" ;;
  --self-test) self_test; exit 0 ;;
  "") ;;
  *) echo "usage: $0 [--check | --self-test]" >&2; exit 2 ;;
esac

need_apt=()
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
if ! pkg-config --exists libavcodec libavformat libavutil libswscale libswresample 2>/dev/null; then
  need_apt+=(libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev libavfilter-dev libavdevice-dev)
fi
find_libclang >/dev/null || need_apt+=(libclang-dev)
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)

need_nextest=0
if ! command -v cargo-nextest >/dev/null 2>&1; then
  need_nextest=1
elif ! cargo nextest --version 2>/dev/null | grep -q "cargo-nextest $NEXTEST_VERSION"; then
  # Another version works too; say so rather than reinstalling over a user's own.
  echo "setup: cargo-nextest is not the pinned $NEXTEST_VERSION ($(cargo nextest --version 2>/dev/null | head -1))" >&2
fi

if [ "$mode" = "check" ]; then
  missing=("${need_apt[@]}")
  [ "$need_nextest" -eq 1 ] && missing+=("cargo-nextest@$NEXTEST_VERSION")
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup --check: missing ${missing[*]}" >&2
    exit 1
  fi
  echo "setup --check: libclang at $(find_libclang); FFmpeg $(pkg-config --modversion libavcodec) (libavcodec); $(cargo nextest --version | head -1)" >&2
  exit 0
fi

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
  if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null; } >&2; then
    echo "setup: apt-get failed. Install these packages by hand: ${need_apt[*]}" >&2
    exit 1
  fi
  if ! find_libclang >/dev/null; then
    echo "setup: libclang-dev is installed but no libclang.so was found; set LIBCLANG_PATH to its folder" >&2
    exit 1
  fi
fi

if [ "$need_nextest" -eq 1 ]; then
  echo "setup: installing cargo-nextest $NEXTEST_VERSION" >&2
  cargo install --locked "cargo-nextest@$NEXTEST_VERSION" >&2
fi
