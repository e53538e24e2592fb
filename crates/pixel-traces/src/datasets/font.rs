//! Two 5x7 bitmap fonts for digits (rounded and square), drawn at any size with varied strokes, slant
//! and jitter.

use image::RgbImage;
use rand::{Rng, RngCore};

use super::draw::{Rect, fill_rect};

/// Each digit as 7 rows of 5 cells (`#` ink): a rounded font and a square one.
const FONTS: [[[&str; 7]; 10]; 2] = [ROUNDED, SQUARE];

#[rustfmt::skip]
const ROUNDED: [[&str; 7]; 10] = [
    [".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."], // 0
    ["..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."], // 1
    [".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"], // 2
    ["#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."], // 3
    ["...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."], // 4
    ["#####", "#....", "####.", "....#", "....#", "#...#", ".###."], // 5
    ["..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."], // 6
    ["#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."], // 7
    [".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."], // 8
    [".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."], // 9
];

#[rustfmt::skip]
const SQUARE: [[&str; 7]; 10] = [
    ["#####", "#...#", "#...#", "#...#", "#...#", "#...#", "#####"], // 0
    [".##..", "..#..", "..#..", "..#..", "..#..", "..#..", "#####"], // 1
    ["####.", "....#", "....#", ".###.", "#....", "#....", "#####"], // 2
    ["####.", "....#", "....#", ".###.", "....#", "....#", "####."], // 3
    ["#...#", "#...#", "#...#", "#####", "....#", "....#", "....#"], // 4
    ["#####", "#....", "#....", "####.", "....#", "....#", "####."], // 5
    [".####", "#....", "#....", "####.", "#...#", "#...#", ".###."], // 6
    ["#####", "#...#", "....#", "...#.", "..#..", "..#..", "..#.."], // 7
    [".###.", "#...#", ".###.", "#...#", "#...#", "#...#", ".###."], // 8
    [".###.", "#...#", "#...#", ".####", "....#", "....#", "####."], // 9
];

/// Number of fonts.
pub const NUM_FONTS: usize = FONTS.len();

/// Columns and rows of the font's cell grid.
pub const GLYPH_COLS: u32 = 5;
/// Rows of the font's cell grid.
pub const GLYPH_ROWS: u32 = 7;

/// Whether cell `(col, row)` of `digit` in `font` is ink (false for anything out of range).
pub fn ink(font: usize, digit: u8, col: u32, row: u32) -> bool {
    FONTS
        .get(font)
        .and_then(|digits| digits.get(usize::from(digit)))
        .and_then(|rows| rows.get(row as usize))
        .and_then(|cells| cells.as_bytes().get(col as usize))
        .is_some_and(|c| *c == b'#')
}

/// How one glyph is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GlyphStyle {
    /// Which font (`0..NUM_FONTS`).
    pub font: usize,
    /// Share of each cell the stroke fills (0.5 thin .. 1.0 bold).
    pub stroke: f32,
    /// Horizontal shift per row from the middle, in cells (slant; 0 upright).
    pub slant: f32,
    /// Maximum random offset of each cell, in pixels.
    pub jitter: i64,
}

/// The thinnest stroke [`GlyphStyle::random`] draws (a share of the cell).
pub const STROKE_MIN: f32 = 0.55;

impl GlyphStyle {
    /// A random style: either font, stroke 0.55-1.0, slant up to ±0.12 cells per row, jitter 0-1 px.
    pub fn random(rng: &mut dyn RngCore) -> Self {
        Self::random_with_stroke(rng, STROKE_MIN)
    }

    /// A random style whose stroke is `stroke_min..=1.0` (`stroke_min` clamped to `0.1..=1.0`; a
    /// non-finite one is [`STROKE_MIN`]), otherwise as [`GlyphStyle::random`] (the same draws from `rng`).
    pub fn random_with_stroke(rng: &mut dyn RngCore, stroke_min: f32) -> Self {
        let stroke_min = if stroke_min.is_finite() {
            stroke_min.clamp(0.1, 1.0)
        } else {
            STROKE_MIN
        };
        Self {
            font: rng.random_range(0..NUM_FONTS),
            stroke: rng.random_range(stroke_min..=1.0),
            slant: rng.random_range(-0.12..=0.12),
            jitter: rng.random_range(0..=1),
        }
    }
}

/// Draws `digit` into the box at `(x, y)` of `height` pixels (width 5/7 of it) in `colour`.
pub fn draw_digit(
    img: &mut RgbImage,
    digit: u8,
    (x, y): (i64, i64),
    height: u32,
    style: GlyphStyle,
    colour: [u8; 3],
    rng: &mut dyn RngCore,
) {
    let cell_h = height as f32 / GLYPH_ROWS as f32;
    let cell_w = cell_h; // square cells: the glyph is 5/7 as wide as tall
    let ink_w = (cell_w * style.stroke).max(1.0);
    let ink_h = (cell_h * style.stroke).max(1.0);
    for row in 0..GLYPH_ROWS {
        let shift = (3.0 - row as f32) * style.slant * cell_w;
        for col in 0..GLYPH_COLS {
            if !ink(style.font, digit, col, row) {
                continue;
            }
            let jx = if style.jitter > 0 {
                rng.random_range(-style.jitter..=style.jitter)
            } else {
                0
            };
            let jy = if style.jitter > 0 {
                rng.random_range(-style.jitter..=style.jitter)
            } else {
                0
            };
            let cx = x as f32 + (col as f32 + 0.5) * cell_w + shift;
            let cy = y as f32 + (row as f32 + 0.5) * cell_h;
            let x0 = (cx - ink_w / 2.0).round() as i64 + jx;
            let y0 = (cy - ink_h / 2.0).round() as i64 + jy;
            fill_rect(
                img,
                Rect::at(
                    x0,
                    y0,
                    ink_w.round().max(1.0) as i64,
                    ink_h.round().max(1.0) as i64,
                ),
                colour,
            );
        }
    }
}

/// Width in pixels of a glyph `height` pixels tall.
pub fn glyph_width(height: u32) -> u32 {
    (height * GLYPH_COLS).div_ceil(GLYPH_ROWS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(font: usize, digit: u8) -> Vec<bool> {
        (0..35).map(|i| ink(font, digit, i % 5, i / 5)).collect()
    }

    #[test]
    fn every_digit_is_distinct_and_inked() {
        for font in 0..NUM_FONTS {
            for a in 0..10u8 {
                let this = cells(font, a);
                assert!(
                    this.iter().filter(|c| **c).count() >= 9,
                    "font {font}: digit {a} too sparse"
                );
                for b in (a + 1)..10 {
                    assert_ne!(
                        this,
                        cells(font, b),
                        "font {font}: {a} and {b} look the same"
                    );
                }
            }
        }
        let differ = (0..10u8).filter(|&d| cells(0, d) != cells(1, d)).count();
        assert!(differ >= 8, "only {differ} digits differ between the fonts");
        assert!(!ink(0, 10, 0, 0) && !ink(NUM_FONTS, 0, 1, 0) && !ink(0, 0, 5, 0));
    }
}
