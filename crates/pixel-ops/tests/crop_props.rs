//! Properties of the crop operations on arbitrary boxes: no panics, results inside the image and larger
//! than the minimum.

use pixel_ops::crop::{
    CropConfig, CropSource, ZoomRule, plan_crop_normalized, zoom_in, zoom_in_box,
    zoom_in_box_deepeyes, zoom_in_with,
};
use pixel_ops::image::RgbImage;
use proptest::prelude::*;

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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn official_crop_lies_inside_and_exceeds_28(
        bbox in [any_coord(), any_coord(), any_coord(), any_coord()],
        w in 1u32..3000, h in 1u32..3000, scale in 1u32..4,
    ) {
        for source in [CropSource::ModelInput, CropSource::Original] {
            let cfg = CropConfig { source, ..CropConfig::default() };
            let target = if source == CropSource::Original { (w * scale, h * scale) } else { (w, h) };
            if let Ok(plan) = plan_crop_normalized(target, (w, h), bbox, &cfg) {
                let f = plan.frame_rect;
                prop_assert!(f.width > 28 && f.height > 28, "{f:?}");
                prop_assert!(f.x + f.width <= w && f.y + f.height <= h, "{f:?} in {w}x{h}");
                let t = plan.target_rect;
                prop_assert!(t.width > 0 && t.height > 0);
                prop_assert!(t.x + t.width <= target.0 && t.y + t.height <= target.1, "{t:?} in {target:?}");
                prop_assert!(plan.normalized.iter().all(|v| (0.0..=1.0).contains(v)));
            }
        }
    }

    #[test]
    fn zoom_in_lies_inside_and_is_at_least_28(
        bbox in [any_coord(), any_coord(), any_coord(), any_coord()],
        w in 1u32..400, h in 1u32..400,
    ) {
        if let Ok([l, t, r, b]) = zoom_in_box((w, h), bbox) {
            prop_assert!(l >= 0.0 && t >= 0.0 && r <= f64::from(w) && b <= f64::from(h), "{:?}", [l, t, r, b]);
            let img = RgbImage::new(w, h);
            let crop = zoom_in(&img, bbox).unwrap();
            prop_assert!(crop.width() >= 28 && crop.height() >= 28, "{:?}", crop.dimensions());
        }
    }

    #[test]
    fn deepeyes_zoom_in_is_at_least_28_and_never_panics(
        bbox in [any_coord(), any_coord(), any_coord(), any_coord()],
        w in 1u32..400, h in 1u32..400,
    ) {
        if let Ok([l, t, r, b]) = zoom_in_box_deepeyes((w, h), bbox) {
            prop_assert!(r > l && b > t);
            let img = RgbImage::new(w, h);
            let crop = zoom_in_with(&img, bbox, ZoomRule::DeepEyes).unwrap();
            // The box may reach outside the image (black there); when it was grown each side is >= 28.
            prop_assert!(crop.width() >= 1 && crop.height() >= 1);
        }
    }
}
