//! Parity of [`resize_bicubic_torchvision`] with torchvision's antialiased bicubic on `uint8` tensors
//! (`torchvision.transforms.v2.functional.resize(t, [h, w], BICUBIC, antialias=True)`), byte for byte.
//! Fixtures: `scripts/gen_torchvision_resize_fixtures.py` (torch 2.15, torchvision 0.29.2; every CPU
//! path of torch agrees on them, see the manifest's `isa_max_diff`).

use std::path::{Path, PathBuf};

use pixel_ops::image::{Rgb, RgbImage};
use pixel_ops::resize::{
    BicubicKernel, PixelLimits, resize_bicubic, resize_bicubic_torchvision, smart_resize,
    smart_resize_image_with,
};
use pixel_ops::{Error, load_image};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images/torchvision")
}

fn manifest() -> Value {
    let text = std::fs::read_to_string(fixtures().join("manifest.json")).expect("fixture present");
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn u32_of(v: &Value) -> u32 {
    u32::try_from(v.as_u64().expect("a number")).expect("fits u32")
}

fn fnv1a64(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The generator's `noise(w, h, seed)`: a 64-bit LCG, the top byte per sample.
fn noise(w: u32, h: u32, seed: u64) -> RgbImage {
    let mut s = seed;
    let bytes = (0..w as usize * h as usize * 3)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (s >> 56) as u8
        })
        .collect();
    RgbImage::from_raw(w, h, bytes).expect("sized")
}

/// The generator's `structured(w, h)`.
fn structured(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let (x, y) = (u64::from(x), u64::from(y));
        Rgb([
            ((x * x + y * 3) % 256) as u8,
            ((x ^ y) & 255) as u8,
            ((((x / 7) + (y / 5)) % 2) * 255) as u8,
        ])
    })
}

/// The generator's `checker(w, h)`.
fn checker(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let v = if ((x / 3) + (y / 3)) % 2 == 1 { 255 } else { 0 };
        Rgb([if x < w / 2 { 255 } else { v }, v, v])
    })
}

fn source(spec: &Value) -> RgbImage {
    let (w, h) = (u32_of(&spec[1]), u32_of(&spec[2]));
    match spec[0].as_str().expect("a source kind") {
        "noise" => noise(w, h, spec[3].as_u64().expect("a seed")),
        "structured" => structured(w, h),
        "checker" => checker(w, h),
        other => panic!("unknown source {other}"),
    }
}

fn max_abs_diff(a: &RgbImage, b: &RgbImage) -> u8 {
    assert_eq!(a.dimensions(), b.dimensions());
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0)
}

#[test]
fn torchvision_resize_is_byte_exact_on_every_fixture() {
    let manifest = manifest();
    assert_eq!(
        manifest["isa_max_diff"], 0,
        "torch's own CPU paths agreed when the fixtures were made"
    );
    let cases = manifest["cases"].as_array().expect("cases");
    assert!(cases.len() >= 25, "{} cases", cases.len());
    let mut full = 0;
    for c in cases {
        let src = source(&c["source"]);
        let (w, h) = (u32_of(&c["width"]), u32_of(&c["height"]));
        let got = resize_bicubic_torchvision(&src, w, h).unwrap();
        assert_eq!(got.dimensions(), (w, h), "{c}");
        if let Some(name) = c["expected"].as_str() {
            let expected = load_image(fixtures().join(name)).unwrap();
            assert_eq!(max_abs_diff(&got, &expected), 0, "{c}");
            full += 1;
        }
        assert_eq!(
            fnv1a64(got.as_raw()),
            c["fnv1a64"].as_str().expect("a hash"),
            "{c}"
        );
    }
    assert!(full >= 15, "{full} full outputs");
}

/// The fixtures also record how far Pillow 13 is from torchvision: our Pillow kernel must land exactly
/// there, so the two kernels are really different code paths and both are right.
#[test]
fn pillow_kernel_differs_from_torchvision_exactly_as_pillow_does() {
    let manifest = manifest();
    let mut differing = 0;
    for c in manifest["cases"].as_array().expect("cases") {
        let src = source(&c["source"]);
        let (w, h) = (u32_of(&c["width"]), u32_of(&c["height"]));
        let tv = resize_bicubic_torchvision(&src, w, h).unwrap();
        let pil = resize_bicubic(&src, w, h).unwrap();
        let expected = c["pillow_max_diff"].as_u64().expect("a number");
        assert_eq!(u64::from(max_abs_diff(&pil, &tv)), expected, "{c}");
        differing += usize::from(expected > 0);
    }
    assert!(
        differing >= 5,
        "only {differing} cases tell the kernels apart"
    );
}

#[test]
fn the_kernel_enum_and_smart_resize_pick_the_torchvision_path() {
    let src = structured(300, 200);
    let limits = PixelLimits::new(28 * 28, 200 * 784);
    let (h, w) = smart_resize(200, 300, 28, limits).unwrap();
    let direct = resize_bicubic_torchvision(&src, w, h).unwrap();
    let via_enum = BicubicKernel::Torchvision.resize(&src, w, h).unwrap();
    let via_smart = smart_resize_image_with(&src, limits, BicubicKernel::Torchvision).unwrap();
    assert_eq!(direct, via_enum);
    assert_eq!(direct, via_smart);
    assert_ne!(direct, resize_bicubic(&src, w, h).unwrap());
    assert_eq!(BicubicKernel::Torchvision.name(), "torchvision");
    assert_eq!(
        serde_json::to_value(BicubicKernel::Torchvision).unwrap(),
        "torchvision"
    );
}

#[test]
fn huge_or_empty_targets_are_errors() {
    let src = noise(8, 8, 1);
    assert!(matches!(
        resize_bicubic_torchvision(&src, u32::MAX, 2),
        Err(Error::ResizeTooLarge { .. })
    ));
    assert!(matches!(
        resize_bicubic_torchvision(&src, 0, 5),
        Err(Error::ZeroSize { .. })
    ));
    assert!(matches!(
        resize_bicubic_torchvision(&RgbImage::new(0, 4), 5, 5),
        Err(Error::ZeroSize { .. })
    ));
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any sizes: no panic, the asked size, a flat image stays flat (the int16 weights of every axis
        /// still sum close enough to one), and the passes run horizontal first.
        #[test]
        fn any_sizes_keep_flat_images_flat_and_resize_width_first(
            in_w in 1u32..90, in_h in 1u32..90, out_w in 1u32..90, out_h in 1u32..90,
            color in any::<[u8; 3]>(),
        ) {
            let src = RgbImage::from_pixel(in_w, in_h, Rgb(color));
            let out = resize_bicubic_torchvision(&src, out_w, out_h).unwrap();
            prop_assert_eq!(out.dimensions(), (out_w, out_h));
            prop_assert!(out.pixels().all(|p| p.0 == color));
            // Horizontal pass first, each pass rounded to u8: two single-axis resizes in that order are
            // the same resize.
            let noisy = noise(in_w, in_h, u64::from(in_w * 131 + in_h));
            let wide = resize_bicubic_torchvision(&noisy, out_w, in_h).unwrap();
            prop_assert_eq!(
                resize_bicubic_torchvision(&wide, out_w, out_h).unwrap(),
                resize_bicubic_torchvision(&noisy, out_w, out_h).unwrap()
            );
        }
    }
}
