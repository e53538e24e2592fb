//! Properties of the crop operations on arbitrary boxes: no panics, and every crop that succeeds lies
//! inside the image and is larger than the minimum. Each property also counts the boxes the operation
//! accepted and requires a share of them, so the checks on a successful crop are exercised.

use pixel_ops::crop::{
    CropConfig, CropSource, ZoomRule, plan_crop_normalized, zoom_in, zoom_in_box,
    zoom_in_box_deepeyes, zoom_in_with,
};
use pixel_ops::image::RgbImage;
use proptest::prelude::*;

mod common;

const CASES: u32 = 512;

fn any_coord() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => -0.2f64..1.2,
        4 => -100.0f64..3000.0,
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => any::<f64>(),
        1 => Just(1.0),
        1 => Just(0.0),
    ]
}

/// Arbitrary boxes half of the time; otherwise boxes inside the image that are large enough (in
/// normalized or absolute coordinates), so a good share of cases must succeed (about 55-70% do; the tests require 40%).
fn any_box(w: u32, h: u32) -> impl Strategy<Value = [f64; 4]> {
    let (w, h) = (f64::from(w), f64::from(h));
    prop_oneof![
        [any_coord(), any_coord(), any_coord(), any_coord()],
        (0.0f64..0.5, 0.0f64..0.5, 0.3f64..0.5, 0.3f64..0.5).prop_map(|(x, y, dx, dy)| [
            x,
            y,
            x + dx,
            y + dy
        ]),
        (0.0f64..0.5, 0.0f64..0.5, 0.3f64..0.5, 0.3f64..0.5).prop_map(move |(x, y, dx, dy)| [
            x * w,
            y * h,
            (x + dx) * w,
            (y + dy) * h
        ]),
    ]
}

fn image_and_box(max_side: u32) -> impl Strategy<Value = (u32, u32, [f64; 4])> {
    (1u32..max_side, 1u32..max_side).prop_flat_map(|(w, h)| (Just(w), Just(h), any_box(w, h)))
}

/// The official `crop_image_normalized`: a crop that succeeds is more than 28 px on both sides of the
/// frame it is cut from, inside that frame, and maps to a non-empty box inside the target image.
#[test]
fn official_crop_lies_inside_and_exceeds_28() {
    let strategy = (image_and_box(3000), 1u32..4);
    let accepted = common::count_accepted(CASES, strategy, |((w, h, bbox), scale)| {
        let mut accepted = false;
        for source in [CropSource::ModelInput, CropSource::Original] {
            let cfg = CropConfig {
                source,
                ..CropConfig::default()
            };
            let target = if source == CropSource::Original {
                (w * scale, h * scale)
            } else {
                (w, h)
            };
            let Ok(plan) = plan_crop_normalized(target, (w, h), bbox, &cfg) else {
                continue;
            };
            accepted = true;
            let f = plan.frame_rect;
            prop_assert!(f.width > 28 && f.height > 28, "{f:?}");
            prop_assert!(
                f.x + f.width <= w && f.y + f.height <= h,
                "{f:?} in {w}x{h}"
            );
            let t = plan.target_rect;
            prop_assert!(t.width > 0 && t.height > 0);
            prop_assert!(
                t.x + t.width <= target.0 && t.y + t.height <= target.1,
                "{t:?} in {target:?}"
            );
            prop_assert!(plan.normalized.iter().all(|v| (0.0..=1.0).contains(v)));
        }
        Ok(accepted)
    });
    assert!(
        accepted >= CASES * 2 / 5,
        "{accepted} of {CASES} boxes cropped"
    );
}

/// verl's `image_zoom_in_tool`: a box that is accepted lies inside the image, and the crop is at
/// least 28 px on both sides.
#[test]
fn zoom_in_lies_inside_and_is_at_least_28() {
    let accepted = common::count_accepted(CASES, image_and_box(400), |(w, h, bbox)| {
        let Ok([l, t, r, b]) = zoom_in_box((w, h), bbox) else {
            return Ok(false);
        };
        prop_assert!(
            l >= 0.0 && t >= 0.0 && r <= f64::from(w) && b <= f64::from(h),
            "{:?}",
            [l, t, r, b]
        );
        let img = RgbImage::new(w, h);
        let crop = zoom_in(&img, bbox).unwrap();
        prop_assert!(
            crop.width() >= 28 && crop.height() >= 28,
            "{:?}",
            crop.dimensions()
        );
        Ok(true)
    });
    assert!(
        accepted >= CASES * 2 / 5,
        "{accepted} of {CASES} boxes zoomed"
    );
}

/// DeepEyes' `image_zoom_in_tool`: an accepted box is non-empty, and the crop is at least 28 px on
/// both sides (a box already that large is kept, a smaller one is grown about its centre; either may
/// reach outside the image, which is black there).
#[test]
fn deepeyes_zoom_in_is_at_least_28() {
    let accepted = common::count_accepted(CASES, image_and_box(400), |(w, h, bbox)| {
        let Ok([l, t, r, b]) = zoom_in_box_deepeyes((w, h), bbox) else {
            return Ok(false);
        };
        prop_assert!(r > l && b > t);
        let img = RgbImage::new(w, h);
        let crop = zoom_in_with(&img, bbox, ZoomRule::DeepEyes).unwrap();
        prop_assert!(
            crop.width() >= 28 && crop.height() >= 28,
            "{:?} from {:?}",
            crop.dimensions(),
            [l, t, r, b]
        );
        Ok(true)
    });
    assert!(
        accepted >= CASES * 2 / 5,
        "{accepted} of {CASES} boxes zoomed"
    );
}
