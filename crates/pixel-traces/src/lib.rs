//! Pixel Reasoner data: the official record formats, trace synthesis with self-correction, and procedural
//! synthetic datasets that need no downloads.
//!
//! - [`official`]: SFT `message_list` records and RL / eval records (`qid`, `question`, `image`,
//!   `is_video`, `answer` / `gt_answer`), read by [`load::load_records`] with per-record errors
//!   ([`OnError::Skip`] or [`OnError::Fail`]) and a file size cap; media paths stay under a
//!   [`DatasetRoot`], which also opens them ([`DatasetRoot::open`]) checking the file it opens.
//! - [`trace`]: the project's JSONL trajectory format, each text span marked trained or not.
//! - [`synth`]: traces from annotated samples (paper template, 30/20/20/30 image self-correction mix,
//!   90/10 video mix, text-only), analysis text from a [`Narrator`]: [`TemplateNarrator`] or a teacher
//!   model behind an OpenAI-compatible endpoint ([`TeacherNarrator`]).
//! - [`datasets`]: `needle`, `count`, `frames`, `text-only`, generated from a seed.
//!
//! ```
//! use pixel_traces::{SyntheticDataset, SynthConfig, Synthesizer, TemplateNarrator};
//!
//! let data = SyntheticDataset::by_name("needle").unwrap();
//! let synth = Synthesizer::new(SynthConfig { seed: 7, ..SynthConfig::default() }, TemplateNarrator);
//! let sample = data.sample(7, 0)?;
//! let made = synth.synthesize(&sample, 0)?;
//! // The answer is boxed in trained text; observations are never trained.
//! assert!(made.trace.trained_text().contains(&format!("\\boxed{{{}}}", sample.answer)));
//! assert!(!made.trace.trained_text().contains("Here is the cropped image"));
//! // One JSON line per trace; `made.write_images(dir)` writes the images it names.
//! let line = serde_json::to_string(&made.trace).unwrap();
//! assert!(line.starts_with("{\"id\":\"needle-7-0\""));
//! # Ok::<(), pixel_traces::Error>(())
//! ```

pub mod datasets;
pub mod error;
pub mod geometry;
pub mod load;
pub mod narrator;
pub mod official;
pub mod paths;
pub mod protocol_text;
pub mod sample;
pub mod synth;
pub mod teacher;
pub mod trace;

pub use datasets::SyntheticDataset;
pub use error::{Error, Location, Result};
pub use geometry::{FrameWindow, NormBox};
pub use load::{
    DEFAULT_MAX_RECORD_FILE_BYTES, FromRecord, Loaded, OnError, load_records,
    load_records_with_limit,
};
pub use narrator::{Modality, NarrationRequest, NarrationStep, Narrator, TemplateNarrator};
pub use official::{RlRecord, SftRecord};
pub use paths::{DatasetRoot, MediaFile};
pub use sample::{AnnotatedSample, Visual};
pub use synth::{SynthConfig, SynthesizedTrace, Synthesizer, Variant};
pub use teacher::{TeacherConfig, TeacherNarrator};
pub use trace::{Trace, TraceMessage, TracePart};
