//! The loop: a group of rollouts of one query, turn after turn, within the official limits.
//!
//! For each turn, every row still running samples one assistant turn. Its text is parsed and executed by
//! the row's `pixel-ops` [`Episode`] (which ends the rollout on an answer, on a 5th call, on more than 16
//! images or when the token budget is spent). A call's observation becomes the row's next user turn; it is
//! prepared first and appended only if the whole context still fits in the token budget, so no image
//! joins a context that is then cut. Rows end at different turns; a finished row is neither sampled nor
//! fed again.
//!
//! Sampling follows the official rollouts: the first turn at temperature 1.0, later turns at 0.9, top-p
//! 0.95, top-k 40, 2,048 new tokens per turn ([`RolloutConfig::default`]);
//! [`RolloutConfig::greedy`] is the official evaluation's decoding.

use image::RgbImage;
use pixel_ops::{CropSource, Episode, EpisodeConfig, Step, Video, Visual};
use pixel_vlm::sampling::SamplingParams;
use serde::{Deserialize, Serialize};

use crate::conversation::{Part, UserTurn};
use crate::engine::{Engine, TurnEnd, TurnSampling};
use crate::error::{AgentError, Result};
use crate::trajectory::{OperationRecord, RolloutEnd, Trajectory};

/// The visual input of a query.
#[derive(Debug, Clone, PartialEq)]
pub enum Media {
    /// One or more images (`target_image` 1 is the first).
    Images(Vec<RgbImage>),
    /// A video as its sampled frames (official: 16).
    Video(Video),
}

/// A question about images or a video.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// The images or the video.
    pub media: Media,
    /// The question (the tool set's guidelines are appended to it).
    pub question: String,
}

impl Query {
    /// A question about one image.
    pub fn image(image: RgbImage, question: impl Into<String>) -> Self {
        Self {
            media: Media::Images(vec![image]),
            question: question.into(),
        }
    }

    /// A question about a video.
    pub fn video(video: Video, question: impl Into<String>) -> Self {
        Self {
            media: Media::Video(video),
            question: question.into(),
        }
    }
}

/// Settings of a group of rollouts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RolloutConfig {
    /// The episode's limits and tool settings (official evaluation by default: 4 calls, 16 images,
    /// 12,088 tokens).
    pub episode: EpisodeConfig,
    /// The system prompt; `None` uses the tool set's official prompt with its tool block.
    pub system: Option<String>,
    /// The text after the question in the first user turn; `None` uses the tool set's official guidelines
    /// ([`pixel_ops::ToolSet::user_text`]), `Some("")` none (the question alone),
    /// `Some(g)` the question, a blank line, then `g`. With [`system`](Self::system) it lets a model
    /// trained from scratch (which cannot read instructions) skip ~600 tokens of constant text.
    pub guidelines: Option<String>,
    /// Sampling of the first turn (official: temperature 1.0, top-p 0.95, top-k 40).
    pub first_turn: SamplingParams,
    /// Sampling of later turns (official: temperature 0.9).
    pub later_turns: SamplingParams,
    /// New tokens per turn (official: 2,048).
    pub max_new_tokens: usize,
    /// Seed of the group's draws.
    pub seed: u64,
}

impl Default for RolloutConfig {
    fn default() -> Self {
        let official = SamplingParams {
            temperature: 1.0,
            top_k: 40,
            top_p: 0.95,
        };
        Self {
            episode: EpisodeConfig::official_eval(),
            system: None,
            guidelines: None,
            first_turn: official,
            later_turns: SamplingParams {
                temperature: 0.9,
                ..official
            },
            max_new_tokens: 2048,
            seed: 0,
        }
    }
}

impl RolloutConfig {
    /// Greedy decoding on every turn (the official evaluation).
    pub fn greedy() -> Self {
        Self {
            first_turn: SamplingParams::greedy(),
            later_turns: SamplingParams::greedy(),
            ..Self::default()
        }
    }

    /// The sampling settings of turn `turn` (0-based).
    pub fn sampling(&self, turn: usize) -> TurnSampling {
        TurnSampling {
            params: if turn == 0 {
                self.first_turn
            } else {
                self.later_turns
            },
            max_new_tokens: self.max_new_tokens,
            // A different stream of draws per turn; rows draw from their own streams within it.
            seed: self
                .seed
                .wrapping_add((turn as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        }
    }

    /// The text of the first user turn for `question`: the question and the guidelines
    /// (see [`guidelines`](Self::guidelines)).
    pub fn question_text(&self, question: &str) -> String {
        match self.guidelines.as_deref() {
            None => self.episode.tools.user_text(question),
            Some("") => question.to_owned(),
            Some(g) => format!("{question}\n\n{g}"),
        }
    }

    /// The system prompt (see [`system`](Self::system)).
    pub fn system_prompt(&self) -> String {
        self.system
            .clone()
            .unwrap_or_else(|| self.episode.tools.system_prompt())
    }
}

/// What happened, reported to the observer of [`run_group_with`] as it happens.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// Row `row` sampled turn `turn` (0-based).
    Turn {
        /// The row.
        row: usize,
        /// The turn.
        turn: usize,
        /// Its text.
        text: &'a str,
    },
    /// Row `row`'s call was executed; this observation is its next user turn.
    Observation {
        /// The row.
        row: usize,
        /// The observation text.
        text: &'a str,
        /// Images it adds.
        images: &'a [RgbImage],
    },
    /// Row `row` ended.
    End {
        /// The row.
        row: usize,
        /// Why.
        end: RolloutEnd,
    },
}

/// Row state while the group runs.
struct RowRun {
    episode: Episode,
    trajectory: Trajectory,
    running: bool,
}

/// Runs `rows` rollouts of `query` on `engine` until every row has ended, and returns their trajectories
/// (row order).
///
/// # Errors
/// The engine's errors (model, processor, server). A model's bad calls are not errors: they become the
/// official error observations.
pub fn run_group<E: Engine>(
    engine: &mut E,
    query: &Query,
    rows: usize,
    config: &RolloutConfig,
) -> Result<Vec<Trajectory>> {
    run_group_with(engine, query, rows, config, |_| {})
}

/// As [`run_group`], reporting every turn, observation and end to `observe` as it happens.
///
/// # Errors
/// As [`run_group`].
pub fn run_group_with<E: Engine>(
    engine: &mut E,
    query: &Query,
    rows: usize,
    config: &RolloutConfig,
    mut observe: impl FnMut(Event<'_>),
) -> Result<Vec<Trajectory>> {
    if rows == 0 {
        return Err(AgentError::Request("a group needs at least one row".into()));
    }
    let (media, visuals, images) = match &query.media {
        Media::Images(list) => {
            let shown = list
                .iter()
                .map(|i| engine.model_view(i))
                .collect::<Result<Vec<_>>>()?;
            (
                shown.iter().cloned().map(Part::Image).collect::<Vec<_>>(),
                // With `CropSource::Original` the episode keeps the image as given (the caller's
                // pre-resized copy, as the official code keeps) and cuts crops from it; otherwise crops
                // come from the model's view.
                list.iter()
                    .zip(&shown)
                    .map(|(given, shown)| Visual::Image {
                        shown: shown.clone(),
                        full: (config.episode.crop.source == CropSource::Original)
                            .then(|| given.clone()),
                    })
                    .collect::<Vec<_>>(),
                shown,
            )
        }
        Media::Video(video) => (
            vec![Part::Video(video.clone())],
            vec![Visual::Video(video.frames().to_vec())],
            Vec::new(),
        ),
    };
    let question = UserTurn::with_text(media, config.question_text(&query.question));
    engine.open(&config.system_prompt(), &question, rows)?;

    let mut runs: Vec<RowRun> = (0..rows)
        .map(|row| RowRun {
            episode: Episode::new(visuals.clone(), config.episode.clone()),
            trajectory: Trajectory {
                row,
                turns: Vec::new(),
                operations: Vec::new(),
                final_text: String::new(),
                end: RolloutEnd::TurnLength,
                stats: Default::default(),
                tokens: None,
                images: images.clone(),
            },
            running: true,
        })
        .collect();

    let mut turn = 0;
    while runs.iter().any(|r| r.running) {
        let active: Vec<bool> = runs.iter().map(|r| r.running).collect();
        let generated = engine.generate(&active, &config.sampling(turn))?;
        let mut appends = Vec::with_capacity(rows);
        for (row, (run, generated)) in runs.iter_mut().zip(generated).enumerate() {
            let Some(generated) = generated.filter(|_| run.running) else {
                appends.push(None);
                continue;
            };
            let text = generated.text.clone();
            let turn_end = generated.end;
            observe(Event::Turn {
                row,
                turn,
                text: &text,
            });
            run.trajectory.turns.push(generated);
            run.trajectory.final_text = text.clone();
            // Why the row ends after this turn, if it does (one place below ends it).
            let ended = if turn_end == TurnEnd::Length {
                Some(RolloutEnd::TurnLength)
            } else {
                let context = engine.context_tokens(row);
                match run.episode.step_with_tokens(&text, context) {
                    Step::Finished(reason) => Some(RolloutEnd::Episode(reason)),
                    Step::Observation(_) if turn_end == TurnEnd::EndOfText => {
                        Some(RolloutEnd::EndOfText)
                    }
                    Step::Observation(observation) => {
                        let user = UserTurn::observation(&observation);
                        let prepared = engine.prepare(row, &user)?;
                        let after = context + engine.prepared_tokens(&prepared);
                        run.trajectory.operations.push(OperationRecord {
                            turn,
                            observation: observation.text.clone(),
                            failed: observation.is_error(),
                            images_added: observation.images.len(),
                        });
                        let budget = config.episode.max_total_tokens;
                        if budget.is_some_and(|max| after > max) {
                            Some(RolloutEnd::ObservationTooLong)
                        } else {
                            observe(Event::Observation {
                                row,
                                text: &observation.text,
                                images: &observation.images,
                            });
                            run.trajectory.images.extend(observation.images);
                            appends.push(Some(prepared));
                            None
                        }
                    }
                }
            };
            if let Some(end) = ended {
                run.running = false;
                run.trajectory.end = end;
                observe(Event::End { row, end });
                appends.push(None);
            }
        }
        if appends.iter().any(Option::is_some) {
            engine.append(appends)?;
        }
        turn += 1;
    }
    for (row, run) in runs.iter_mut().enumerate() {
        run.trajectory.stats = run.episode.stats().clone();
        run.trajectory.tokens = engine.record(row);
    }
    Ok(runs.into_iter().map(|r| r.trajectory).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_text_follows_the_guidelines_setting() {
        let mut c = RolloutConfig::default();
        assert_eq!(
            c.question_text("Q?"),
            pixel_ops::ToolSet::PixelReasoner.user_text("Q?"),
            "None is the official text"
        );
        assert!(c.question_text("Q?").contains("Guidelines:"));
        c.guidelines = Some(String::new());
        assert_eq!(c.question_text("Q?"), "Q?");
        c.guidelines = Some("Be brief.".into());
        assert_eq!(c.question_text("Q?"), "Q?\n\nBe brief.");
    }

    #[test]
    fn system_prompt_is_official_unless_given() {
        let mut c = RolloutConfig::default();
        assert_eq!(c.system_prompt(), c.episode.tools.system_prompt());
        assert!(c.system_prompt().contains("<tools>"));
        c.system = Some("Zoom.".into());
        assert_eq!(c.system_prompt(), "Zoom.");
    }
}
