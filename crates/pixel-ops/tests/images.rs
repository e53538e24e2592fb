//! Parity of the image operations with the Python reference (qwen-vl-utils, Pillow 13.0, the official
//! `crop_image_normalized`, verl's `image_zoom_in_tool`). Fixtures: `scripts/gen_image_fixtures.py`.

use std::path::{Path, PathBuf};

use pixel_ops::crop::{
    CropConfig, ZoomRule, crop_normalized, zoom_in, zoom_in_box, zoom_in_box_deepeyes, zoom_in_with,
};
use pixel_ops::image::{Rgb, RgbImage};
use pixel_ops::resize::{IMAGE_FACTOR, PixelLimits, resize_bicubic, smart_resize};
use pixel_ops::{Error, load_image};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images")
}

fn read_json(name: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join(name)).expect("fixture present");
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn fnv1a64(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The generator's `procedural(w, h)`.
fn procedural(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let (x, y) = (u64::from(x), u64::from(y));
        Rgb([
            ((x * x + y * 3) % 256) as u8,
            ((x ^ y) & 255) as u8,
            ((((x / 7) + (y / 5)) % 2) * 255) as u8,
        ])
    })
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

fn u32_of(v: &Value) -> u32 {
    v.as_u64().expect("integer") as u32
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("list")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

/// A crop case's image size, its procedural image and its `bbox`.
fn crop_case(c: &Value) -> ((u32, u32), RgbImage, [f64; 4]) {
    let (w, h) = (u32_of(&c["image"][0]), u32_of(&c["image"][1]));
    let b = f64s(&c["bbox"]);
    ((w, h), procedural(w, h), [b[0], b[1], b[2], b[3]])
}

/// The crop has the case's `size` and `fnv1a64` hash.
fn assert_crop_matches(got: &RgbImage, c: &Value) {
    assert_eq!(
        got.dimensions(),
        (u32_of(&c["size"][0]), u32_of(&c["size"][1])),
        "{c}"
    );
    assert_eq!(fnv1a64(got.as_raw()), c["fnv1a64"].as_str().unwrap(), "{c}");
}

#[test]
fn smart_resize_matches_qwen_vl_utils() {
    let cases = read_json("smart_resize.json");
    let cases = cases.as_array().expect("list");
    assert!(cases.len() >= 1000, "{} cases", cases.len());
    let (mut ties, mut errors) = (0, 0);
    for c in cases {
        let (h, w) = (u32_of(&c[0]), u32_of(&c[1]));
        let limits = PixelLimits::new(c[2].as_u64().unwrap(), c[3].as_u64().unwrap());
        let got = smart_resize(h, w, IMAGE_FACTOR, limits);
        if h % 28 == 14 || w % 28 == 14 {
            ties += 1;
        }
        match &c[4] {
            Value::Array(hw) => {
                assert_eq!(got.unwrap(), (u32_of(&hw[0]), u32_of(&hw[1])), "case {c}");
            }
            Value::String(kind) if kind == "aspect" => {
                errors += 1;
                assert!(
                    matches!(got, Err(Error::AspectRatio { .. })),
                    "case {c}: {got:?}"
                );
            }
            Value::String(kind) if kind == "zero" => {
                errors += 1;
                assert!(
                    matches!(got, Err(Error::ZeroSize { .. })),
                    "case {c}: {got:?}"
                );
            }
            other => panic!("unknown expectation {other}"),
        }
    }
    assert!(ties > 100 && errors > 50, "ties {ties}, errors {errors}");
}

#[test]
fn aspect_ratio_message_matches_python() {
    let e = smart_resize(1, 201, 28, PixelLimits::QWEN_VL_UTILS).unwrap_err();
    assert_eq!(
        e.to_string(),
        "absolute aspect ratio must be smaller than 200, got 201.0"
    );
}

#[test]
fn bicubic_resize_is_bit_exact_with_pillow() {
    let manifest = read_json("resize/manifest.json");
    let dir = fixtures().join("resize");
    let cases = manifest["cases"].as_array().expect("cases");
    assert!(cases.len() >= 20);
    for c in cases {
        let (w, h) = (u32_of(&c["width"]), u32_of(&c["height"]));
        if let Some(src) = c["src"].as_str() {
            let src = load_image(dir.join(src)).unwrap();
            let expected = load_image(dir.join(c["expected"].as_str().unwrap())).unwrap();
            let got = resize_bicubic(&src, w, h).unwrap();
            assert_eq!(max_abs_diff(&got, &expected), 0, "{c}");
        } else {
            let p = &c["procedural"];
            let src = procedural(u32_of(&p[0]), u32_of(&p[1]));
            let got = resize_bicubic(&src, w, h).unwrap();
            assert_eq!(fnv1a64(got.as_raw()), c["fnv1a64"].as_str().unwrap(), "{c}");
        }
    }
}

#[test]
fn rgba_is_composited_like_qwen_vl_utils() {
    let dir = fixtures().join("alpha");
    let got = load_image(dir.join("rgba.png")).unwrap();
    let expected = load_image(dir.join("rgba_to_rgb.png")).unwrap();
    assert_eq!(max_abs_diff(&got, &expected), 0);
}

/// zune-jpeg (the `image` crate) and libjpeg-turbo (Pillow) may round the IDCT and chroma upsampling
/// differently; this pins how far apart they are on a q90 4:2:0 file with hard edges.
#[test]
fn jpeg_decode_is_close_to_pillow() {
    let dir = fixtures().join("jpeg");
    let got = load_image(dir.join("q90.jpg")).unwrap();
    let expected = load_image(dir.join("q90_pillow.png")).unwrap();
    let diff = max_abs_diff(&got, &expected);
    let differing = got
        .as_raw()
        .iter()
        .zip(expected.as_raw())
        .filter(|(a, b)| a != b)
        .count();
    eprintln!(
        "JPEG decode vs Pillow: max {diff} levels, {differing} of {} samples differ",
        got.as_raw().len()
    );
    assert!(diff <= JPEG_TOLERANCE, "max difference {diff} levels");
}

/// Measured maximum difference between zune-jpeg and Pillow's libjpeg-turbo on the fixture.
const JPEG_TOLERANCE: u8 = 3;

#[test]
fn official_crop_matches_reference() {
    let all = read_json("crop.json");
    let cases = all["crop_image_normalized"].as_array().unwrap();
    let cfg = CropConfig::default();
    let (mut ok, mut err) = (0, 0);
    for c in cases {
        let ((w, h), img, bbox) = crop_case(c);
        let got = crop_normalized(&img, (w, h), bbox, &cfg);
        match c.get("error") {
            Some(msg) => {
                err += 1;
                assert_eq!(got.unwrap_err().to_string(), msg.as_str().unwrap(), "{c}");
            }
            None => {
                ok += 1;
                let got = got.unwrap_or_else(|e| panic!("{c}: {e}"));
                assert_crop_matches(&got, c);
            }
        }
    }
    assert!(ok > 50 && err > 50, "ok {ok}, errors {err}");
}

#[test]
fn verl_zoom_in_matches_reference() {
    let all = read_json("crop.json");
    let cases = all["image_zoom_in_tool"].as_array().unwrap();
    let (mut ok, mut err) = (0, 0);
    for c in cases {
        let ((w, h), img, bbox) = crop_case(c);
        if c.get("error").is_some() {
            err += 1;
            assert!(
                matches!(zoom_in_box((w, h), bbox), Err(Error::ZoomBoxInvalid { .. })),
                "{c}"
            );
            continue;
        }
        ok += 1;
        let expected = f64s(&c["box"]);
        assert_eq!(zoom_in_box((w, h), bbox).unwrap().to_vec(), expected, "{c}");
        let got = zoom_in(&img, bbox).unwrap();
        assert_crop_matches(&got, c);
    }
    assert!(ok > 50 && err > 50, "ok {ok}, errors {err}");
}

fn encode_png(img: pixel_ops::image::DynamicImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, pixel_ops::image::ImageFormat::Png)
        .expect("encode png");
    out.into_inner()
}

#[test]
fn grayscale_and_16_bit_become_rgb8() {
    use pixel_ops::image::{DynamicImage, ImageBuffer, Luma, LumaA, Rgb as P3};
    let gray = ImageBuffer::from_fn(4, 2, |x, y| Luma([(x * 60 + y) as u8]));
    let rgb = pixel_ops::decode_image(&encode_png(DynamicImage::ImageLuma8(gray))).unwrap();
    assert_eq!(rgb.get_pixel(3, 1).0, [181, 181, 181]);

    // 16-bit samples scale to 8 bits as round(v / 257).
    let deep: ImageBuffer<P3<u16>, Vec<u16>> = ImageBuffer::from_fn(2, 1, |x, _| {
        P3([x as u16 * 65535, 257 * 100 + 128, 257 * 100 + 129])
    });
    let rgb = pixel_ops::decode_image(&encode_png(DynamicImage::ImageRgb16(deep))).unwrap();
    assert_eq!(rgb.get_pixel(0, 0).0, [0, 100, 101]);
    assert_eq!(rgb.get_pixel(1, 0).0, [255, 100, 101]);

    // Gray + alpha is composited on white like RGBA.
    let la = ImageBuffer::from_fn(2, 1, |x, _| LumaA([0u8, if x == 0 { 0 } else { 255 }]));
    let rgb = pixel_ops::decode_image(&encode_png(DynamicImage::ImageLumaA8(la))).unwrap();
    assert_eq!(rgb.get_pixel(0, 0).0, [255, 255, 255]);
    assert_eq!(rgb.get_pixel(1, 0).0, [0, 0, 0]);
}

#[test]
fn deepeyes_zoom_in_matches_reference() {
    let all = read_json("crop.json");
    let cases = all["image_zoom_in_tool_deepeyes"].as_array().unwrap();
    let (mut ok, mut err) = (0, 0);
    for c in cases {
        let ((w, h), img, bbox) = crop_case(c);
        if c.get("error").is_some() {
            err += 1;
            let e = zoom_in_box_deepeyes((w, h), bbox).unwrap_err();
            assert_eq!(e.to_string(), "ZOOM IN ARGUMENTS ARE INVALID", "{c}");
            continue;
        }
        ok += 1;
        let expected = f64s(&c["box"]);
        assert_eq!(
            zoom_in_box_deepeyes((w, h), bbox).unwrap().to_vec(),
            expected,
            "{c}"
        );
        let got = zoom_in_with(&img, bbox, ZoomRule::DeepEyes).unwrap();
        assert_crop_matches(&got, c);
    }
    assert!(ok > 50 && err > 50, "ok {ok}, errors {err}");
}
