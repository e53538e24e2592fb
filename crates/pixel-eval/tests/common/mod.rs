//! Helpers shared by the tests: small sample folders written on the spot (never copies of the data), and a
//! scripted engine.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use image::{Rgb, RgbImage};
use pixel_agent::{AgentError, Engine, Generated, Part, TurnEnd, TurnSampling, UserTurn};

/// A PNG of `w` x `h` with a gradient.
pub fn png(path: &Path, w: u32, h: u32) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    RgbImage::from_fn(w, h, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 128]))
        .save(path)
        .unwrap();
}

/// The bytes of a PNG of `w` x `h`.
pub fn png_bytes(w: u32, h: u32) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    RgbImage::from_pixel(w, h, Rgb([10, 200, 30]))
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

/// Writes `lines` as a file.
pub fn write_lines(path: &Path, lines: &[String]) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// A V* Bench folder with `n` questions: question `i` asks to "say" a letter; images 64x48.
pub fn vstar_folder(dir: &Path, n: usize) {
    let mut lines = Vec::new();
    for i in 0..n {
        let category = if i % 3 == 0 {
            "relative_position"
        } else {
            "direct_attributes"
        };
        let image = format!("{category}/img_{i}.png");
        png(&dir.join(&image), 64, 48);
        let label = ["A", "B", "C", "D"][i % 4];
        let zoom = if i % 2 == 0 { " zoom" } else { "" };
        let text = format!(
            "Question {i}{zoom}: say {label}\n(A) red\n(B) blue\n(C) green\n(D) white\nAnswer with the option's letter from the given choices directly."
        );
        lines.push(
            serde_json::json!({"image": image, "text": text, "category": category, "question_id": i, "label": label})
                .to_string(),
        );
    }
    write_lines(&dir.join("test_questions.jsonl"), &lines);
}

/// What a [`Scripted`] engine shares with the test after it is moved.
#[derive(Debug, Default)]
pub struct Counters {
    /// `generate` calls.
    pub generated: AtomicUsize,
    /// `open` calls (questions started).
    pub opened: AtomicUsize,
    /// `generate` calls running now (engines sharing these counters).
    pub generating: AtomicUsize,
    /// The most `generate` calls that ran at once.
    pub most_generating: AtomicUsize,
}

/// An engine that answers from the question: `say X` -> `\boxed{X}` (or a wrong letter for questions with
/// `wrong`); questions with `zoom` first call `crop_image_normalized`. Optionally fails (server down) after
/// `fail_after` questions, or sleeps before each turn.
pub struct Scripted {
    question: String,
    turn: usize,
    pub fail_after: Option<usize>,
    pub delay: Duration,
    pub counters: Arc<Counters>,
}

impl Scripted {
    /// `n` engines sharing one set of counters (for concurrent runs), each sleeping `delay` per turn.
    pub fn pool(n: usize, delay: Duration) -> Vec<Self> {
        let counters = Arc::new(Counters::default());
        (0..n)
            .map(|_| {
                let mut e = Self::new();
                e.counters = Arc::clone(&counters);
                e.delay = delay;
                e
            })
            .collect()
    }

    pub fn new() -> Self {
        Self {
            question: String::new(),
            turn: 0,
            fail_after: None,
            delay: Duration::ZERO,
            counters: Arc::new(Counters::default()),
        }
    }

    fn reply(&self) -> String {
        if self.question.contains("zoom") && self.turn == 0 {
            return "Let me look closer.<tool_call>\n{\"name\": \"crop_image_normalized\", \"arguments\": {\"bbox_2d\": [0.1, 0.1, 0.6, 0.6], \"target_image\": 1}}\n</tool_call>".into();
        }
        if self.question.contains("badcall") && self.turn == 0 {
            return "<tool_call>\n{\"name\": \"crop_image_normalized\", \"arguments\": {\"bbox_2d\": [0.9, 0.9, 0.1, 0.1], \"target_image\": 7}}\n</tool_call>".into();
        }
        let said = self
            .question
            .split("say ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or("?")
            .to_string();
        let answer = if self.question.contains("wrong") {
            format!("not-{said}")
        } else {
            said
        };
        format!("After looking, the answer is \\boxed{{{answer}}}.")
    }
}

impl Engine for Scripted {
    type Prepared = usize;

    fn is_token_exact(&self) -> bool {
        false
    }

    fn open(&mut self, _system: &str, question: &UserTurn, rows: usize) -> pixel_agent::Result<()> {
        let opened = self.counters.opened.fetch_add(1, Ordering::SeqCst);
        if self.fail_after.is_some_and(|n| opened >= n) {
            return Err(AgentError::Unreachable {
                url: "http://127.0.0.1:9".into(),
                attempts: 1,
                reason: "connection refused".into(),
            });
        }
        assert_eq!(rows, 1);
        self.question = question
            .parts
            .iter()
            .filter_map(|p| match p {
                Part::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        self.turn = 0;
        Ok(())
    }

    fn rows(&self) -> usize {
        1
    }

    fn context_tokens(&self, _row: usize) -> usize {
        100 + 50 * self.turn
    }

    fn prepare(&self, _row: usize, turn: &UserTurn) -> pixel_agent::Result<usize> {
        Ok(10 + 20 * turn.images().count())
    }

    fn prepared_tokens(&self, prepared: &usize) -> usize {
        *prepared
    }

    fn append(&mut self, _turns: Vec<Option<usize>>) -> pixel_agent::Result<()> {
        Ok(())
    }

    fn generate(
        &mut self,
        active: &[bool],
        _sampling: &TurnSampling,
    ) -> pixel_agent::Result<Vec<Option<Generated>>> {
        let now = self.counters.generating.fetch_add(1, Ordering::SeqCst) + 1;
        self.counters
            .most_generating
            .fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(self.delay);
        self.counters.generating.fetch_sub(1, Ordering::SeqCst);
        self.counters.generated.fetch_add(1, Ordering::SeqCst);
        let text = self.reply();
        self.turn += 1;
        Ok(active
            .iter()
            .map(|&a| {
                a.then(|| Generated {
                    text: text.clone(),
                    tokens: Vec::new(),
                    logprobs: Vec::new(),
                    end: TurnEnd::Stop,
                })
            })
            .collect())
    }

    fn record(&self, _row: usize) -> Option<pixel_agent::TokenRecord> {
        None
    }
}
