//! Dumps needle tag views for the legibility check of `scripts/gen_traces_legibility.py`.
//!
//! For each sample it writes, as raw u8 RGB, a 48x48 window of the global view (the whole image resized
//! with `smart_resize` to the given limits) centred on the tag, for two model-input limits, and a 96x96
//! window of the cropped view (the official padded crop resized as an observation) centred on the tag;
//! plus the digit labels. A classifier trained on these windows ("told where the box is") measures how
//! legible the digit is in each view.
//!
//! ```text
//! cargo run --release -p pixel-traces --example dump_needles -- OUT_DIR N SEED
//! ```

use std::io::Write;

use pixel_traces::Visual;
use pixel_traces::datasets::NeedleConfig;
use pixel_traces::geometry::{CROP_PAD, official_crop, resize_for_model, round_outward};

/// Model-input limits compared: the official evaluation and a small CPU-demo budget (256 tokens).
const GLOBAL_LIMITS: [(u64, u64); 2] = [(401_408, 4_014_080), (3_136, 200_704)];
const GLOBAL_WINDOW: u32 = 48;
const CROP_WINDOW: u32 = 96;

fn window(image: &image::RgbImage, cx: f64, cy: f64, size: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity((size * size * 3) as usize);
    let x0 = cx.round() as i64 - i64::from(size / 2);
    let y0 = cy.round() as i64 - i64::from(size / 2);
    for y in 0..i64::from(size) {
        for x in 0..i64::from(size) {
            let (px, py) = (x0 + x, y0 + y);
            let inside = px >= 0
                && py >= 0
                && px < i64::from(image.width())
                && py < i64::from(image.height());
            let p = if inside {
                image.get_pixel(px as u32, py as u32).0
            } else {
                [0, 0, 0]
            };
            out.extend_from_slice(&p);
        }
    }
    out
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let out = std::path::PathBuf::from(args.get(1).ok_or("usage: dump_needles OUT_DIR N SEED")?);
    let n: u64 = args.get(2).map_or(Ok(2000), |s| s.parse())?;
    let seed: u64 = args.get(3).map_or(Ok(0), |s| s.parse())?;
    std::fs::create_dir_all(&out)?;
    let config = NeedleConfig::default();
    let obs = pixel_traces::SynthConfig::default();
    let mut globals: Vec<Vec<u8>> = vec![Vec::new(); GLOBAL_LIMITS.len()];
    let mut crops = Vec::new();
    let mut labels = Vec::new();
    for index in 0..n {
        let needle = config.generate(seed, index)?;
        let Visual::Image {
            image, reference, ..
        } = &needle.sample.visual
        else {
            unreachable!()
        };
        let (tcx, tcy) = (
            (reference.x1 + reference.x2) / 2.0,
            (reference.y1 + reference.y2) / 2.0,
        );
        for (k, (min, max)) in GLOBAL_LIMITS.iter().enumerate() {
            let global = resize_for_model(image, *min, *max)?;
            globals[k].extend(window(
                &global,
                tcx * f64::from(global.width()),
                tcy * f64::from(global.height()),
                GLOBAL_WINDOW,
            ));
        }
        let written = round_outward(*reference, 3);
        let (crop, region) = official_crop(image, written)?;
        let seen = resize_for_model(
            &crop,
            obs.observation_min_pixels,
            obs.observation_max_pixels,
        )?;
        let _ = CROP_PAD;
        let (rx, ry) = (
            (tcx - region.x1) / region.width(),
            (tcy - region.y1) / region.height(),
        );
        crops.extend(window(
            &seen,
            rx * f64::from(seen.width()),
            ry * f64::from(seen.height()),
            CROP_WINDOW,
        ));
        labels.push(needle.digit);
    }
    for (k, data) in globals.iter().enumerate() {
        std::fs::File::create(out.join(format!("global_{k}.u8")))?.write_all(data)?;
    }
    std::fs::File::create(out.join("crop.u8"))?.write_all(&crops)?;
    std::fs::File::create(out.join("labels.u8"))?.write_all(&labels)?;
    let meta = serde_json::json!({
        "n": n, "seed": seed, "global_window": GLOBAL_WINDOW, "crop_window": CROP_WINDOW,
        "global_limits": GLOBAL_LIMITS, "config": config,
    });
    std::fs::write(out.join("meta.json"), serde_json::to_string_pretty(&meta)?)?;
    println!("wrote {n} samples to {}", out.display());
    Ok(())
}
