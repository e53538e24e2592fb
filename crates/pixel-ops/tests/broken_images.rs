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

/// `data` with four bits flipped at positions drawn from `seed` (xorshift64, so failures reproduce).
fn flip_bits(data: &[u8], seed: &mut u64) -> Vec<u8> {
    let mut data = data.to_vec();
    for _ in 0..4 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        let i = (*seed as usize) % data.len();
        data[i] ^= 1 << (*seed % 8);
    }
    data
}

/// PNG checksums every chunk (and the signature is fixed), so any four flipped bits are caught: a
/// `Decode` error every time, never a panic or a silently different image.
#[test]
fn bit_flipped_pngs_are_always_decode_errors() {
    let full = encode(pixel_ops::image::ImageFormat::Png);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for case in 0..300 {
        let data = flip_bits(&full, &mut seed);
        match decode_image(&data) {
            Err(Error::Decode { .. }) => {}
            other => panic!("case {case}: expected a Decode error, got {other:?}"),
        }
    }
}

/// JPEG has no checksum: flipped bits in the scan data still decode (to other pixels), flips in the
/// headers are refused. Both outcomes occur, and every refusal is one of the decode errors, never a
/// panic.
#[test]
fn bit_flipped_jpegs_decode_or_are_typed_errors() {
    let full = encode(pixel_ops::image::ImageFormat::Jpeg);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let (mut decoded, mut refused) = (0, 0);
    for case in 0..300 {
        let data = flip_bits(&full, &mut seed);
        match decode_image(&data) {
            Ok(_) => decoded += 1,
            Err(
                Error::Decode { .. }
                | Error::ImageTooLarge { .. }
                | Error::ImageAllocTooLarge { .. },
            ) => refused += 1,
            Err(other) => panic!("case {case}: unexpected error {other:?}"),
        }
    }
    assert!(
        decoded > 0 && refused > 0,
        "{decoded} decoded, {refused} refused"
    );
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

fn png_bytes(image: impl Into<pixel_ops::image::DynamicImage>) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image
        .into()
        .write_to(&mut out, pixel_ops::image::ImageFormat::Png)
        .expect("encode");
    out.into_inner()
}

fn with_max_alloc(max_alloc: u64) -> DecodeLimits {
    DecodeLimits {
        max_alloc,
        ..DecodeLimits::default()
    }
}

/// The RGB copy counts against `max_alloc` with the decoded pixels, checked before decoding: a
/// 100x100 16-bit RGBA PNG decodes to 80,000 bytes, within a 100,000-byte limit, but converting it
/// makes an 8-bit RGBA copy and the RGB image (70,000 bytes more).
#[test]
fn rgb_conversion_counts_against_max_alloc() {
    use pixel_ops::image::{ImageBuffer, Luma, Rgb, Rgba};
    use pixel_ops::load::decode_dynamic;

    let rgba16 = png_bytes(ImageBuffer::from_pixel(
        100,
        100,
        Rgba([1000u16, 2, 3, 40000]),
    ));
    match decode_image_with(&rgba16, "rgba16.png", &with_max_alloc(100_000)) {
        Err(Error::ImageAllocTooLarge {
            what,
            width: 100,
            height: 100,
            decoded_bytes: 80_000,
            conversion_bytes: 70_000,
            max_alloc: 100_000,
        }) => assert_eq!(what, "rgba16.png"),
        other => panic!("expected ImageAllocTooLarge, got {other:?}"),
    }
    // Without the conversion the decoded pixels fit; with room for both the conversion succeeds.
    assert!(decode_dynamic(&rgba16, "rgba16.png", &with_max_alloc(100_000)).is_ok());
    assert!(decode_image_with(&rgba16, "rgba16.png", &with_max_alloc(150_000)).is_ok());

    // Grayscale: 10,000 decoded bytes plus a 30,000-byte RGB copy.
    let gray = png_bytes(ImageBuffer::from_pixel(100, 100, Luma([9u8])));
    assert!(matches!(
        decode_image_with(&gray, "gray.png", &with_max_alloc(39_999)),
        Err(Error::ImageAllocTooLarge {
            decoded_bytes: 10_000,
            conversion_bytes: 30_000,
            ..
        })
    ));
    assert!(decode_image_with(&gray, "gray.png", &with_max_alloc(40_000)).is_ok());

    // 8-bit RGB needs no copy: exactly its own 30,000 bytes.
    let rgb = png_bytes(ImageBuffer::from_pixel(100, 100, Rgb([1u8, 2, 3])));
    assert!(decode_image_with(&rgb, "rgb.png", &with_max_alloc(30_000)).is_ok());
    assert!(matches!(
        decode_image_with(&rgb, "rgb.png", &with_max_alloc(29_999)),
        Err(Error::ImageAllocTooLarge {
            conversion_bytes: 0,
            ..
        })
    ));
}

/// A file is read only up to `max_alloc` bytes: a longer one, or a special file that never ends, is
/// `FileTooLarge` without reading it whole.
#[test]
fn files_beyond_max_alloc_are_not_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.png");
    // 3,600 bytes of pixels, 10,000 bytes of trailing data after the PNG's end (ignored by the
    // decoder): only the file's size can exceed the limit.
    let mut bytes = png_bytes(pixel_ops::image::RgbImage::new(40, 30));
    bytes.extend(std::iter::repeat_n(0u8, 10_000));
    std::fs::write(&path, bytes).unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(pixel_ops::load::load_image_with(&path, &with_max_alloc(len)).is_ok());
    match pixel_ops::load::load_image_with(&path, &with_max_alloc(len - 1)) {
        Err(Error::FileTooLarge { path: p, max_bytes }) => {
            assert_eq!((p, max_bytes), (path, len - 1));
        }
        other => panic!("expected FileTooLarge, got {other:?}"),
    }
    let endless = Path::new("/dev/zero");
    if endless.exists() {
        assert!(matches!(
            pixel_ops::load::load_image_with(endless, &with_max_alloc(1 << 20)),
            Err(Error::FileTooLarge {
                max_bytes: 1_048_576,
                ..
            })
        ));
    }
}
