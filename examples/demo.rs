//! The `pixel-ops` walkthrough: the Pixel Reasoner tool protocol on a generated image and video.
//!
//! It renders the system prompt and the first user turn, then plays scripted model turns through an
//! [`Episode`]: a zoom-in on a detail too small to read at model-input resolution, a call with a bad box
//! (an error observation), a `select_frames` on a 16-frame video, and the final answers. Everything the
//! model would receive is written to `--out`: observation texts, the crop, the selected frames and a
//! transcript (`transcript.md`, `transcript.json`).
//!
//! ```text
//! cargo run --release --example demo -- --out out/demo
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use image::{Rgb, RgbImage};
use indicatif::{ProgressBar, ProgressStyle};
use pixel_ops::{
    CropConfig, CropSource, Episode, EpisodeConfig, ModelTurn, Observation, PixelLimits, Step,
    ToolSet, Video, parse_turn, smart_resize_image,
};
use serde_json::{Value, json};
use tracing::{info, warn};

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "Pixel Reasoner tool protocol walkthrough on a generated image and video")]
struct Args {
    /// Output folder for observations, crops, frames and the transcript.
    #[arg(long, default_value = "out/demo")]
    out: PathBuf,
    /// Which image a crop cuts: the model-input image (official) or the full-resolution original.
    #[arg(long, value_enum, default_value_t = Source::ModelInput)]
    crop_source: Source,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Source {
    ModelInput,
    Original,
}

/// 3x5 bitmaps of the digits 0-9 (rows top to bottom, 3 bits each, most significant bit on the left).
const DIGITS: [[u8; 5]; 10] = [
    [7, 5, 5, 5, 7],
    [2, 6, 2, 2, 7],
    [7, 1, 7, 4, 7],
    [7, 1, 3, 1, 7],
    [5, 5, 7, 1, 1],
    [7, 4, 7, 1, 7],
    [7, 4, 7, 5, 7],
    [7, 1, 2, 2, 2],
    [7, 5, 7, 5, 7],
    [7, 5, 7, 1, 7],
];

fn fill(img: &mut RgbImage, x0: u32, y0: u32, w: u32, h: u32, color: [u8; 3]) {
    for y in y0..(y0 + h).min(img.height()) {
        for x in x0..(x0 + w).min(img.width()) {
            img.put_pixel(x, y, Rgb(color));
        }
    }
}

/// Draws `text` (digits only) with the 3x5 font at `scale` pixels per font pixel.
fn draw_digits(img: &mut RgbImage, x0: u32, y0: u32, text: &str, scale: u32, color: [u8; 3]) {
    for (i, d) in text.chars().filter_map(|c| c.to_digit(10)).enumerate() {
        let gx = x0 + i as u32 * 4 * scale;
        for (row, bits) in DIGITS[d as usize].iter().enumerate() {
            for col in 0..3 {
                if bits & (4 >> col) != 0 {
                    fill(
                        img,
                        gx + col * scale,
                        y0 + row as u32 * scale,
                        scale,
                        scale,
                        color,
                    );
                }
            }
        }
    }
}

/// A 2400x1800 street-like scene with a small yellow sign reading "47" in the upper right.
fn generate_scene() -> (RgbImage, [f64; 4]) {
    let (w, h) = (2400u32, 1800u32);
    let mut img = RgbImage::from_fn(w, h, |x, y| {
        if y < h / 2 {
            Rgb([110 + (y * 60 / h) as u8, 160 + (y * 40 / h) as u8, 230])
        } else {
            let stripe = ((x / 60 + y / 60) % 2) as u8 * 12;
            Rgb([95 + stripe, 90 + stripe, 85 + stripe])
        }
    });
    // Buildings.
    for (i, (bx, bw, bh)) in [
        (100u32, 500u32, 700u32),
        (700, 400, 500),
        (1250, 600, 800),
        (1950, 350, 600),
    ]
    .into_iter()
    .enumerate()
    {
        let shade = 150 - 20 * i as u8;
        fill(
            &mut img,
            bx,
            h / 2 - bh,
            bw,
            bh,
            [shade, shade - 20, shade - 40],
        );
        for wy in (h / 2 - bh + 40..h / 2 - 40).step_by(90) {
            for wx in (bx + 30..bx + bw - 60).step_by(80) {
                fill(&mut img, wx, wy, 40, 50, [200, 210, 230]);
            }
        }
    }
    // The sign: 64x36 px yellow board with a black frame; digits 5 px wide, 10 px tall.
    let (sx, sy, sw, sh) = (1700u32, 390u32, 64u32, 36u32);
    fill(&mut img, sx - 2, sy - 2, sw + 4, sh + 4, [20, 20, 20]);
    fill(&mut img, sx, sy, sw, sh, [240, 200, 30]);
    draw_digits(&mut img, sx + 20, sy + 8, "47", 2, [10, 10, 10]);
    let bbox = [
        f64::from(sx) / f64::from(w),
        f64::from(sy) / f64::from(h),
        f64::from(sx + sw) / f64::from(w),
        f64::from(sy + sh) / f64::from(h),
    ];
    (img, bbox)
}

/// 16 frames of a red ball crossing a 448x252 field; frame 11 shows a green flag.
fn generate_video() -> Vec<RgbImage> {
    (0..16u32)
        .map(|t| {
            let mut f = RgbImage::from_fn(448, 252, |x, y| {
                Rgb([30, 90 + (y / 6) as u8, 40 + (x / 8) as u8])
            });
            let cx = 20 + t * 26;
            for y in 0..252u32 {
                for x in 0..448u32 {
                    let (dx, dy) = (x as i64 - cx as i64, y as i64 - 150);
                    if dx * dx + dy * dy < 18 * 18 {
                        f.put_pixel(x, y, Rgb([220, 30, 30]));
                    }
                }
            }
            if t == 10 {
                fill(&mut f, 300, 40, 6, 90, [240, 240, 240]);
                fill(&mut f, 306, 40, 50, 30, [20, 200, 60]);
            }
            draw_digits(&mut f, 8, 8, &(t + 1).to_string(), 3, [255, 255, 255]);
            f
        })
        .collect()
}

fn call_turn(reasoning: &str, json: &str) -> String {
    format!("{reasoning}\n<tool_call>\n{json}\n</tool_call>")
}

/// Writes an observation's images and returns the transcript entry of the user turn.
fn record_observation(out: &Path, stem: &str, obs: &Observation) -> Result<Value> {
    let mut files = Vec::new();
    for (i, img) in obs.images.iter().enumerate() {
        let name = if obs.images.len() == 1 {
            format!("{stem}.png")
        } else {
            format!("{stem}_{}.png", i + 1)
        };
        img.save(out.join(&name))
            .with_context(|| format!("writing {name}"))?;
        files.push(name);
    }
    fs::write(out.join(format!("{stem}.txt")), &obs.text)?;
    Ok(json!({"role": "user", "text": obs.text, "images": files}))
}

struct Transcript {
    messages: Vec<Value>,
}

impl Transcript {
    fn push(&mut self, v: Value) {
        self.messages.push(v);
    }

    fn markdown(&self) -> String {
        let mut md = String::from("# pixel-ops demo transcript\n");
        for m in &self.messages {
            let role = m["role"].as_str().unwrap_or("?");
            if role == "episode" {
                md.push_str(&format!(
                    "\n---\n\n## {}\n",
                    m["title"].as_str().unwrap_or("")
                ));
                continue;
            }
            md.push_str(&format!("\n### {role}\n\n"));
            if let Some(images) = m["images"].as_array() {
                for i in images {
                    let name = i.as_str().unwrap_or("");
                    md.push_str(&format!("![{name}]({name})\n"));
                }
            }
            md.push_str(&format!(
                "```text\n{}\n```\n",
                m["text"].as_str().unwrap_or("")
            ));
            if let Some(parsed) = m.get("parsed") {
                md.push_str(&format!("\nparsed: `{parsed}`\n"));
            }
        }
        md
    }
}

fn describe(turn: &str, tools: ToolSet) -> Value {
    match parse_turn(turn, tools) {
        ModelTurn::Answer => json!("final answer (no tool call)"),
        ModelTurn::ToolCall(Ok(call)) => json!(format!("{call:?}")),
        ModelTurn::ToolCall(Err(e)) => json!(format!("invalid call: {e}")),
    }
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let bar = ProgressBar::new(10);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );

    // --- Image episode -------------------------------------------------------------------------------
    bar.set_message("generating the image");
    let (original, sign_box) = generate_scene();
    original.save(args.out.join("image_original.png"))?;
    let shown = smart_resize_image(&original, PixelLimits::OFFICIAL_EVAL)?;
    shown.save(args.out.join("image_model_input.png"))?;
    info!(original = ?original.dimensions(), model_input = ?shown.dimensions(), "generated the scene");
    bar.inc(1);

    let tools = ToolSet::PixelReasoner;
    let system = tools.system_prompt();
    fs::write(args.out.join("system_prompt.txt"), &system)?;
    let question = "What number is written on the small yellow sign?";
    let user = tools.user_text(question);
    println!("=== system ===\n{system}\n\n=== user ===\n<image>\n{user}\n");
    let mut transcript = Transcript {
        messages: Vec::new(),
    };
    transcript.push(json!({"role": "episode", "title": "Image: zoom in on a small sign"}));
    transcript.push(json!({"role": "system", "text": system}));
    transcript.push(json!({"role": "user", "text": user, "images": ["image_model_input.png"]}));
    bar.inc(1);

    let source = match args.crop_source {
        Source::ModelInput => CropSource::ModelInput,
        Source::Original => CropSource::Original,
    };
    let config = EpisodeConfig {
        crop: CropConfig {
            source,
            ..CropConfig::default()
        },
        ..EpisodeConfig::default()
    };
    let mut episode = Episode::from_image_with_original(shown, original, config);

    let b = sign_box.map(|v| (v * 1000.0).round() / 1000.0);
    // Where the sign lies inside the first crop (the official crop pads the box by 0.1 on every side).
    let outer = [b[0] - 0.1, b[1] - 0.1, b[2] + 0.1, b[3] + 0.1].map(|v| v.clamp(0.0, 1.0));
    let inner = [
        (b[0] - outer[0]) / (outer[2] - outer[0]),
        (b[1] - outer[1]) / (outer[3] - outer[1]),
        (b[2] - outer[0]) / (outer[2] - outer[0]),
        (b[3] - outer[1]) / (outer[3] - outer[1]),
    ];
    let turns = [
        call_turn(
            "There is a small yellow sign on the building to the right, but it is too small to read. Let me zoom in.",
            &format!(
                "{{\"name\": \"crop_image_normalized\", \"arguments\": {{\"bbox_2d\": [{:.3}, {:.3}, {:.3}, {:.3}], \"target_image\": 1}}}}",
                b[0], b[1], b[2], b[3]
            ),
        ),
        call_turn(
            "The sign is in the crop now, but still small. Let me zoom into the crop.",
            // Deliberately wrong: x2 < x1. The error comes back as an observation.
            "{\"name\": \"crop_image_normalized\", \"arguments\": {\"bbox_2d\": [0.9, 0.45, 0.3, 0.55], \"target_image\": 2}}",
        ),
        call_turn(
            "I swapped the x coordinates. Let me fix the box.",
            &format!(
                "{{\"name\": \"crop_image_normalized\", \"arguments\": {{\"bbox_2d\": [{:.2}, {:.2}, {:.2}, {:.2}], \"target_image\": 2}}}}",
                inner[0], inner[1], inner[2], inner[3]
            ),
        ),
        "The zoomed crop shows the sign clearly: it reads 47.\n\nThe number on the sign is \\boxed{47}.".to_owned(),
    ];
    let mut crops = 0;
    for (i, turn) in turns.iter().enumerate() {
        bar.set_message(format!("image turn {}", i + 1));
        let parsed = describe(turn, tools);
        println!("=== assistant ===\n{turn}\n--- parsed: {parsed}\n");
        transcript.push(json!({"role": "assistant", "text": turn, "parsed": parsed}));
        match episode.step(turn) {
            Step::Observation(obs) => {
                if obs.is_error() {
                    warn!(text = %obs.text.trim(), "the call failed: error observation");
                } else {
                    info!(text = %obs.text.trim(), "the call ran");
                }
                println!("=== user (observation) ===\n{}\n", obs.text);
                let stem = if obs.is_error() {
                    "image_error_observation".to_owned()
                } else {
                    crops += 1;
                    format!("image_crop_{crops}")
                };
                transcript.push(record_observation(&args.out, &stem, &obs)?);
            }
            Step::Finished(reason) => {
                info!(?reason, stats = ?episode.stats(), "image episode ended")
            }
        }
        bar.inc(1);
    }
    let image_stats = episode.stats().clone();

    // --- Video episode -------------------------------------------------------------------------------
    bar.set_message("generating the video");
    let video = Video::from_frames(generate_video(), 2.0)?;
    for (i, f) in video.frames().iter().enumerate() {
        f.save(args.out.join(format!("video_frame_{:02}.png", i + 1)))?;
    }
    let vquestion = "In which frame does the green flag appear?";
    let vuser = tools.user_text(vquestion);
    transcript.push(json!({"role": "episode", "title": "Video: select frames"}));
    transcript.push(json!({"role": "user", "text": vuser, "images": ["video_frame_01.png ... video_frame_16.png (the video)"]}));
    println!("=== user ===\n<video: 16 frames>\n{vuser}\n");
    let mut vepisode = Episode::from_video(&video, EpisodeConfig::default());
    bar.inc(1);
    let vturns = [
        call_turn(
            "The flag is small and appears briefly. Let me look at frames in the second half.",
            "{\"name\": \"select_frames\", \"arguments\": {\"target_frames\": [9, 10, 11, 12]}}",
        ),
        "The flag is visible in the third selected frame, which is frame 11 of the video.\n\nThe answer is \\boxed{11}.".to_owned(),
    ];
    for (i, turn) in vturns.iter().enumerate() {
        bar.set_message(format!("video turn {}", i + 1));
        let parsed = describe(turn, tools);
        println!("=== assistant ===\n{turn}\n--- parsed: {parsed}\n");
        transcript.push(json!({"role": "assistant", "text": turn, "parsed": parsed}));
        match vepisode.step(turn) {
            Step::Observation(obs) => {
                info!(text = %obs.text.trim(), "frames selected");
                println!("=== user (observation) ===\n{}\n", obs.text);
                transcript.push(record_observation(
                    &args.out,
                    "video_selected_frames",
                    &obs,
                )?);
            }
            Step::Finished(reason) => {
                info!(?reason, stats = ?vepisode.stats(), "video episode ended")
            }
        }
        bar.inc(1);
    }

    let summary = json!({
        "image_episode": image_stats,
        "video_episode": vepisode.stats(),
        "crop_source": format!("{source:?}"),
        "messages": transcript.messages,
    });
    fs::write(
        args.out.join("transcript.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    fs::write(args.out.join("transcript.md"), transcript.markdown())?;
    bar.finish_with_message("done");
    println!(
        "image episode: {} calls, {} failed, ended: {:?}; video episode: {} calls, ended: {:?}",
        image_stats.tool_calls,
        image_stats.operations_failed,
        image_stats.end,
        vepisode.stats().tool_calls,
        vepisode.stats().end
    );
    println!("wrote {}", args.out.display());
    Ok(())
}
