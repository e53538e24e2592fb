//! PNG line charts of training metrics (plotters, bitmap backend; encoded with `image`).
//!
//! [`plot_metrics`] draws one chart per metric from [`MetricRecord`]s (x = step, one line per phase);
//! [`plot_series`] draws any labelled series on one chart (e.g. the RaPR of two runs). Charts are 960x540,
//! written atomically (a temporary file in the same folder, then a rename), so a reader never sees half a PNG.
//!
//! **Text and fonts.** plotters is built with its pure-Rust `ab_glyph` text (no fontconfig or freetype to
//! build against), which needs a font file at run time. The first chart looks for one, in order: the file
//! named by the environment variable `PIXEL_PLOT_FONT` (set it to `none` for charts without text), then the
//! usual places of common fonts (DejaVu Sans, Liberation Sans, Noto Sans, FreeSans, Arial) on Linux, macOS
//! and Windows, then any `.ttf`/`.otf` under the usual font folders (`/usr/share/fonts`, `~/.fonts`, ...).
//! Debian's `fonts-dejavu-core` provides the first choice. **When no font is found (or text cannot be drawn)
//! the chart is drawn without text** (the lines, grid and frame, with no title, tick labels or legend)
//! rather than failing.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;

use crate::error::{Result, RlError};
use crate::metrics::{MetricRecord, write_atomically};

/// Chart width in pixels.
const WIDTH: u32 = 960;
/// Chart height in pixels.
const HEIGHT: u32 = 540;

/// Line colours, one per series in order (repeated past the eighth).
const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// Writes one PNG line chart per key (x = step, one line per phase present) into `dir` as `{key}.png`,
/// returning the written paths; keys with no finite value are skipped. Files written atomically (temp + rename).
///
/// `dir` is created if missing. In the file name, characters of the key other than ASCII letters, digits,
/// `-`, `_` and `.` become `_` (`reward/mean` is written to `reward_mean.png`). Phases keep the order in
/// which they first appear; points are sorted by step, and NaN or infinite values are left out.
pub fn plot_metrics(records: &[MetricRecord], keys: &[&str], dir: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for &key in keys {
        let mut series: Vec<(&str, Vec<(f64, f64)>)> = Vec::new();
        for record in records {
            let Some(value) = record.get(key).filter(|v| v.is_finite()) else {
                continue;
            };
            let point = (record.step as f64, value);
            match series.iter_mut().find(|(phase, _)| *phase == record.phase) {
                Some((_, points)) => points.push(point),
                None => series.push((&record.phase, vec![point])),
            }
        }
        if series.is_empty() {
            continue;
        }
        for (_, points) in &mut series {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        let path = dir.join(format!("{}.png", file_stem(key)));
        draw_to_file(key, "step", key, &series, &path)?;
        written.push(path);
    }
    Ok(written)
}

/// Several series on one chart (e.g. RaPR of the curiosity run vs the control run): (label, points).
///
/// The x axis is labelled "step". NaN or infinite points are left out; a chart with no finite point is drawn
/// empty (axes over 0..1). The folder of `path` is created if missing; the file is written atomically.
pub fn plot_series(
    title: &str,
    y_label: &str,
    series: &[(&str, Vec<(f64, f64)>)],
    path: &Path,
) -> Result<()> {
    draw_to_file(title, "step", y_label, series, path)
}

/// `key` with every character outside `[A-Za-z0-9._-]` replaced by `_` (never empty).
fn file_stem(key: &str) -> String {
    let stem: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if stem.is_empty() || stem.chars().all(|c| c == '.') {
        format!("_{stem}")
    } else {
        stem
    }
}

fn draw_to_file(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(&str, Vec<(f64, f64)>)],
    path: &Path,
) -> Result<()> {
    let series: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(label, points)| {
            let finite = points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect();
            (*label, finite)
        })
        .collect();
    let chart = Chart {
        title,
        x_label,
        y_label,
        series: &series,
    };
    let rgb = if font_ready() {
        // Any failure to draw text falls back to a chart without text.
        render(&chart, true).or_else(|_| render(&chart, false))
    } else {
        render(&chart, false)
    }
    .map_err(|e| RlError::Plot(format!("{}: {e}", path.display())))?;
    let png = encode_png(&rgb).map_err(|e| RlError::Plot(format!("{}: {e}", path.display())))?;
    write_atomically(path, &png)
}

struct Chart<'a> {
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    series: &'a [(&'a str, Vec<(f64, f64)>)],
}

/// Draws `chart` into an RGB buffer of `WIDTH` x `HEIGHT`; with `text` false, no text at all is drawn (so no
/// font is needed).
fn render(chart: &Chart<'_>, text: bool) -> std::result::Result<Vec<u8>, String> {
    let mut buf = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, chart, text).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(buf)
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    chart: &Chart<'_>,
    text: bool,
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let (x_range, y_range) = ranges(chart.series);
    let mut builder = ChartBuilder::on(root);
    builder.margin(20);
    if text {
        builder
            .caption(chart.title, ("sans-serif", 24))
            .x_label_area_size(45)
            .y_label_area_size(80);
    }
    let mut ctx = builder.build_cartesian_2d(x_range.clone(), y_range.clone())?;

    let integral_x = chart
        .series
        .iter()
        .flat_map(|(_, points)| points.iter())
        .all(|(x, _)| x.fract() == 0.0);
    let x_fmt = move |v: &f64| {
        if integral_x && v.fract() == 0.0 {
            format!("{v:.0}")
        } else {
            tick_label(*v)
        }
    };
    let y_fmt = |v: &f64| tick_label(*v);
    let mut mesh = ctx.configure_mesh();
    mesh.x_labels(10).y_labels(8);
    if text {
        mesh.x_desc(chart.x_label)
            .y_desc(chart.y_label)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt);
    } else {
        mesh.disable_x_axis().disable_y_axis();
    }
    mesh.draw()?;

    let mut labelled = false;
    for (i, (label, points)) in chart.series.iter().enumerate() {
        if points.is_empty() {
            continue;
        }
        let color = COLORS[i % COLORS.len()];
        let line = ctx.draw_series(LineSeries::new(
            points.iter().copied(),
            color.stroke_width(2),
        ))?;
        if text && !label.is_empty() {
            line.label(*label).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
            labelled = true;
        }
        if points.len() <= 50 {
            ctx.draw_series(
                points
                    .iter()
                    .map(|&(x, y)| Circle::new((x, y), 3, color.filled())),
            )?;
        }
    }
    if labelled {
        ctx.configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.5))
            .label_font(("sans-serif", 16))
            .draw()?;
    }
    if !text {
        // The frame of the plotting area, which the axes draw when there is text.
        let (x0, x1) = (x_range.start, x_range.end);
        let (y0, y1) = (y_range.start, y_range.end);
        ctx.draw_series(std::iter::once(PathElement::new(
            vec![(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)],
            BLACK.stroke_width(1),
        )))?;
    }
    Ok(())
}

/// The x and y ranges covering every point with a margin; 0..1 where there is no point, a unit-wide range
/// around a single value.
fn ranges(series: &[(&str, Vec<(f64, f64)>)]) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
    let points = || series.iter().flat_map(|(_, points)| points.iter());
    let bounds = |values: &mut dyn Iterator<Item = f64>| {
        values.fold(None, |acc: Option<(f64, f64)>, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
    };
    let x = bounds(&mut points().map(|p| p.0));
    let y = bounds(&mut points().map(|p| p.1));
    let padded = |b: Option<(f64, f64)>, fraction: f64| match b {
        None => 0.0..1.0,
        Some((lo, hi)) if hi > lo => {
            let pad = (hi - lo) * fraction;
            (lo - pad)..(hi + pad)
        }
        Some((v, _)) => {
            let pad = if v == 0.0 { 1.0 } else { v.abs() * 0.1 };
            (v - pad)..(v + pad)
        }
    };
    (padded(x, 0.02), padded(y, 0.05))
}

/// A tick label: plain decimals for ordinary magnitudes, scientific notation for tiny or huge ones.
fn tick_label(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".to_string()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.2e}")
    } else {
        let s = format!("{v:.4}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        s.to_string()
    }
}

fn encode_png(rgb: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let image = image::RgbImage::from_raw(WIDTH, HEIGHT, rgb.to_vec())
        .ok_or_else(|| "the chart buffer has the wrong size".to_string())?;
    let mut png = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut png, image::ImageFormat::Png)
        .map_err(|e| e.to_string())?;
    Ok(png.into_inner())
}

/// Whether a font is registered with plotters for text (looked for once per process).
fn font_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(register_font)
}

/// At most this many candidate files are read before giving up (each read file stays in memory).
const MAX_FONT_TRIES: usize = 6;

fn register_font() -> bool {
    let candidates = match std::env::var_os("PIXEL_PLOT_FONT") {
        Some(v) if v.is_empty() || v == "none" => return false,
        Some(v) => {
            let mut c = vec![PathBuf::from(v)];
            c.extend(font_candidates());
            c
        }
        None => font_candidates(),
    };
    for path in candidates.into_iter().take(MAX_FONT_TRIES) {
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        // plotters keeps fonts as `&'static [u8]`: the one font used is kept for the life of the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
            for family in ["serif", "monospace"] {
                let _ = plotters::style::register_font(family, FontStyle::Normal, bytes);
            }
            return true;
        }
    }
    false
}

/// Font files to try, best first: well-known files of common sans fonts, then what the font folders hold.
fn font_candidates() -> Vec<PathBuf> {
    const KNOWN: &[&str] = &[
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/usr/share/fonts/truetype/liberation2/LiberationSans-Regular.ttf",
        "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
        "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
        "/usr/share/fonts/noto/NotoSans-Regular.ttf",
        "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
        "/System/Library/Fonts/Supplemental/Arial.ttf",
        "/Library/Fonts/Arial.ttf",
        "C:\\Windows\\Fonts\\arial.ttf",
    ];
    let mut found: Vec<PathBuf> = KNOWN
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .collect();
    let mut dirs = vec![
        PathBuf::from("/usr/share/fonts"),
        PathBuf::from("/usr/local/share/fonts"),
        PathBuf::from("/System/Library/Fonts"),
        PathBuf::from("/Library/Fonts"),
    ];
    if let Some(home) = std::env::var_os("HOME") {
        let home = PathBuf::from(home);
        dirs.push(home.join(".local/share/fonts"));
        dirs.push(home.join(".fonts"));
    }
    let mut scanned = Vec::new();
    for dir in dirs {
        scan_fonts(&dir, 4, &mut scanned);
    }
    // Regular sans faces first; bold, italic, mono, condensed and the like last.
    scanned.sort_by_key(|p| {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        let styled = [
            "bold",
            "italic",
            "oblique",
            "mono",
            "condensed",
            "light",
            "thin",
            "black",
        ]
        .iter()
        .any(|s| name.contains(s));
        (styled, !name.contains("sans"), name)
    });
    for path in scanned {
        if !found.contains(&path) {
            found.push(path);
        }
    }
    found
}

/// Collects `.ttf` and `.otf` files under `dir`, `depth` folders deep at most (bounded, for huge font trees).
fn scan_fonts(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    const MAX_FILES: usize = 4096;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if out.len() >= MAX_FILES {
            return;
        }
        let path = entry.path();
        if path.is_dir() {
            if depth > 0 {
                scan_fonts(&path, depth - 1, out);
            }
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("ttf") || e.eq_ignore_ascii_case("otf"))
        {
            out.push(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The path taken when no font exists: a chart drawn with no text must still come out, with content.
    #[test]
    fn render_without_text_needs_no_font_and_draws_lines() {
        let series = [
            ("a", vec![(1.0, 0.5), (2.0, 0.25), (3.0, 0.75)]),
            ("b", vec![(1.0, 1.0)]),
        ];
        let chart = Chart {
            title: "t",
            x_label: "step",
            y_label: "v",
            series: &series,
        };
        let rgb = render(&chart, false).unwrap();
        assert_eq!(rgb.len(), (WIDTH * HEIGHT * 3) as usize);
        let first = COLORS[0];
        let has_first_color = rgb
            .chunks_exact(3)
            .any(|p| p == [first.0, first.1, first.2]);
        assert!(has_first_color, "the first series' colour is not drawn");
        assert!(rgb.chunks_exact(3).any(|p| p == [255, 255, 255]));
    }

    #[test]
    fn file_stems_are_safe_names() {
        assert_eq!(file_stem("reward/mean"), "reward_mean");
        assert_eq!(file_stem("loss"), "loss");
        assert_eq!(file_stem(".."), "_..");
        assert_eq!(file_stem(""), "_");
    }

    #[test]
    fn tick_labels_switch_to_scientific_for_tiny_values() {
        assert_eq!(tick_label(0.0), "0");
        assert_eq!(tick_label(0.25), "0.25");
        assert_eq!(tick_label(3.0), "3");
        assert_eq!(tick_label(1e-6), "1.00e-6");
    }
}
