//! Broken image inputs give typed errors, never panics or giant allocations.
//! The committed corpus is written by `scripts/gen_image_fixtures.py`; more cases are generated here.

use std::path::{Path, PathBuf};

use pixel_ops::load::{DecodeLimits, decode_image_with};
use pixel_ops::{Error, decode_image, load_image};

fn broken(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/images/broken")
        .join(name)
}

#[test]
fn bomb_headers_are_rejected_before_allocation() {
    for (name, w, h) in [
        ("bomb_header_100000.png", 100_000, 100_000),
        ("bomb_pixels_20000.png", 20_000, 20_000),
        ("bomb_header_65500.jpg", 65_500, 65_500),
    ] {
        let start = std::time::Instant::now();
        match load_image(broken(name)) {
            Err(Error::ImageTooLarge {
                width,
                height,
                what,
                ..
            }) => {
                assert_eq!((width, height), (w, h), "{name}");
                assert!(what.ends_with(name), "error names the file: {what}");
            }
            other => panic!("{name}: expected ImageTooLarge, got {other:?}"),
        }
        // A rejected header costs microseconds; decoding 10^10 pixels would take minutes.
        assert!(
            start.elapsed().as_secs() < 5,
            "{name} took {:?}",
            start.elapsed()
        );
    }
}

#[test]
fn broken_files_are_decode_errors_naming_the_file() {
    for name in [
        "truncated.png",
        "truncated.jpg",
        "header_only.jpg",
        "empty.png",
        "garbage.bin",
        "text.png",
    ] {
        match load_image(broken(name)) {
            Err(e @ Error::Decode { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(name), "{name}: {msg}");
            }
            other => panic!("{name}: expected Decode, got {other:?}"),
        }
    }
}

#[test]
fn missing_file_is_io_error() {
    assert!(matches!(
        load_image(broken("no_such_file.png")),
        Err(Error::Io { .. })
    ));
}

fn encode(format: pixel_ops::image::ImageFormat) -> Vec<u8> {
    let img = pixel_ops::image::RgbImage::from_fn(40, 30, |x, y| {
        pixel_ops::image::Rgb([x as u8 * 6, y as u8 * 8, 77])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).expect("encode");
    out.into_inner()
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    for format in [
        pixel_ops::image::ImageFormat::Png,
        pixel_ops::image::ImageFormat::Jpeg,
    ] {
        let full = encode(format);
        assert!(decode_image(&full).is_ok());
        // Cutting anywhere before the image data ends must fail cleanly.
        for cut in (0..full.len() * 9 / 10).step_by(7) {
            match decode_image(&full[..cut]) {
                Err(Error::Decode { .. }) => {}
                other => panic!(
                    "{format:?} cut at {cut} of {}: expected Decode, got {other:?}",
                    full.len()
                ),
            }
        }
    }
}

#[test]
fn bit_flips_never_panic() {
    let full = encode(pixel_ops::image::ImageFormat::Png);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..300 {
        let mut data = full.clone();
        for _ in 0..4 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let i = (seed as usize) % data.len();
            data[i] ^= 1 << (seed % 8);
        }
        // Whatever survives the flips is a real image; everything else is a typed error.
        if let Ok(img) = decode_image(&data) {
            assert!(img.width() > 0 && img.height() > 0);
        }
    }
}

#[test]
fn custom_limits_apply() {
    let png = encode(pixel_ops::image::ImageFormat::Png);
    let tight = DecodeLimits {
        max_width: 20,
        ..DecodeLimits::default()
    };
    assert!(matches!(
        decode_image_with(&png, "x.png", &tight),
        Err(Error::ImageTooLarge { width: 40, .. })
    ));
    let few = DecodeLimits {
        max_pixels: 100,
        ..DecodeLimits::default()
    };
    assert!(matches!(
        decode_image_with(&png, "x.png", &few),
        Err(Error::ImageTooLarge { .. })
    ));
}
