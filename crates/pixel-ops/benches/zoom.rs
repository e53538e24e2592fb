//! Benchmark (a): one zoom-in step on a 4000x3000 q90 JPEG under the official evaluation limits.
//!
//! The JPEG is `target/bench-zoom/photo_4000x3000_q90.jpg` (override with `PIXEL_OPS_ZOOM_JPEG`):
//! `scripts/bench_zoom_reference.py` writes it with Pillow and times the Python pipeline on it; if it
//! is missing, this bench writes an equivalent one with the `image` crate's encoder. Run both:
//!
//! ```text
//! python3 scripts/bench_zoom_reference.py
//! cargo bench -p pixel-ops --bench zoom
//! ```
//!
//! The group `torchvision` times the serving engine's kernel ([`resize_bicubic_torchvision`]) beside the
//! Pillow one on the same resizes (torchvision's own time for them: `F.resize` on the uint8 tensor).

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use pixel_ops::crop::{CropConfig, crop_normalized};
use pixel_ops::image::{Rgb, RgbImage};
use pixel_ops::resize::{
    PixelLimits, resize_bicubic, resize_bicubic_torchvision, smart_resize_image,
};
use pixel_ops::{decode_image, load_image};

const BOX: [f64; 4] = [0.40, 0.35, 0.55, 0.50];

fn jpeg_path() -> PathBuf {
    if let Ok(p) = std::env::var("PIXEL_OPS_ZOOM_JPEG") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/bench-zoom/photo_4000x3000_q90.jpg")
}

/// A photo-like procedural image: smooth gradients, fine texture and hard edges (text-like blocks).
fn procedural_photo(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let (xf, yf) = (f64::from(x), f64::from(y));
        let smooth = 128.0 + 100.0 * ((xf / 310.0).sin() * (yf / 270.0).cos());
        let tex = ((x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)) >> 13) % 40;
        let edge = if (x / 23 + y / 17) % 5 == 0 { 90 } else { 0 };
        let v = |off: f64| {
            (smooth + off + f64::from(tex) - 20.0 - f64::from(edge)).clamp(0.0, 255.0) as u8
        };
        Rgb([v(0.0), v(-30.0), v(25.0)])
    })
}

fn ensure_jpeg() -> Vec<u8> {
    let path = jpeg_path();
    if !path.exists() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("create bench dir");
        }
        let img = procedural_photo(4000, 3000);
        let mut out = std::fs::File::create(&path).expect("create jpeg");
        let enc = pixel_ops::image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90);
        img.write_with_encoder(enc).expect("encode jpeg");
    }
    std::fs::read(&path).expect("read jpeg")
}

/// Crop the padded box out of the model-input image and resize it as the official `resize_cropped`.
fn crop_and_resize(model_input: &RgbImage) -> RgbImage {
    let crop = crop_normalized(
        model_input,
        model_input.dimensions(),
        BOX,
        &CropConfig::default(),
    )
    .expect("crop");
    smart_resize_image(&crop, PixelLimits::OFFICIAL_EVAL_CROP).expect("resize crop")
}

fn bench(c: &mut Criterion) {
    let bytes = ensure_jpeg();
    let path = jpeg_path();
    let original = decode_image(&bytes).expect("decode");
    let model_input = smart_resize_image(&original, PixelLimits::OFFICIAL_EVAL).expect("resize");
    assert_eq!(model_input.dimensions(), (2296, 1708));
    assert_eq!(crop_and_resize(&model_input).dimensions(), (812, 588));

    let mut g = c.benchmark_group("zoom");
    g.sample_size(10);
    g.bench_function("full_step_4000x3000_jpeg", |b| {
        b.iter(|| {
            let img = load_image(black_box(&path)).expect("load");
            let model_input = smart_resize_image(&img, PixelLimits::OFFICIAL_EVAL).expect("resize");
            crop_and_resize(&model_input)
        })
    });
    g.bench_function("decode_jpeg_4000x3000", |b| {
        b.iter(|| decode_image(black_box(&bytes)).expect("decode"))
    });
    g.bench_function("resize_4000x3000_to_2296x1708", |b| {
        b.iter(|| resize_bicubic(black_box(&original), 2296, 1708).expect("resize"))
    });
    g.sample_size(50);
    g.bench_function("crop_resize_loaded_2296x1708_to_812x588", |b| {
        b.iter(|| crop_and_resize(black_box(&model_input)))
    });
    g.finish();

    // The same resizes with torchvision's kernel: a downscale of the original, and a small crop scaled up
    // to the engine's minimum (the engine stage's typical work).
    let crop = RgbImage::from_fn(420, 300, |x, y| model_input[(x + 900, y + 600)]);
    let mut g = c.benchmark_group("torchvision");
    g.sample_size(10);
    g.bench_function("resize_4000x3000_to_2296x1708", |b| {
        b.iter(|| resize_bicubic_torchvision(black_box(&original), 2296, 1708).expect("resize"))
    });
    g.sample_size(50);
    g.bench_function("upscale_420x300_to_756x532", |b| {
        b.iter(|| resize_bicubic_torchvision(black_box(&crop), 756, 532).expect("resize"))
    });
    g.bench_function("pillow_upscale_420x300_to_756x532", |b| {
        b.iter(|| resize_bicubic(black_box(&crop), 756, 532).expect("resize"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
