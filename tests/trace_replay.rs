//! Synthesized traces replayed through a `pixel-ops` [`Episode`]: every observation the trace shows the
//! model (its text and its images, pixel for pixel) is what the episode produces from the trace's own
//! assistant turns, and every trace ends with an answer.
//!
//! Trace synthesis (`pixel-traces`) writes the observations itself; this test is what ties them to the
//! operations a model's calls really run during rollouts and evaluation.

use std::collections::HashMap;

use pixel_reasoner::pixel_ops::PixelLimits;
use pixel_reasoner::pixel_ops::episode::{EndReason, Episode, EpisodeConfig, Step, Visual};
use pixel_reasoner::pixel_ops::image::RgbImage;
use pixel_reasoner::pixel_traces::official::Role;
use pixel_reasoner::pixel_traces::{
    SynthConfig, Synthesizer, SyntheticDataset, TemplateNarrator, Trace, TracePart, Variant,
};

/// `Err(message)` unless `cond` holds.
macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// Replays one trace: the number of observations compared, or what differed.
fn replay(
    trace: &Trace,
    images: &HashMap<&str, &RgbImage>,
    config: &SynthConfig,
) -> Result<usize, String> {
    let image = |name: &str| -> Result<RgbImage, String> {
        images.get(name).map(|i| (*i).clone()).ok_or_else(|| {
            format!(
                "{}: the trace names {name}, which it does not carry",
                trace.id
            )
        })
    };
    let limits = PixelLimits::new(config.observation_min_pixels, config.observation_max_pixels);
    let episode_config = EpisodeConfig {
        crop_resize: limits,
        frame_resize: Some(limits),
        ..EpisodeConfig::official_eval()
    };
    let first = &trace.messages[0];
    check!(
        first.role == Role::User,
        "{}: starts with a user turn",
        trace.id
    );
    let mut visuals = Vec::new();
    for part in &first.content {
        match part {
            TracePart::Image { image: name } => visuals.push(Visual::image(image(name)?)),
            TracePart::Video { video } => visuals.push(Visual::Video(
                video.iter().map(|f| image(f)).collect::<Result<_, _>>()?,
            )),
            TracePart::Text { .. } => {}
        }
    }
    let mut episode = Episode::new(visuals, episode_config);

    let mut compared = 0;
    let mut messages = trace.messages[1..].iter().peekable();
    while let Some(message) = messages.next() {
        check!(
            message.role == Role::Assistant,
            "{}: turns alternate",
            trace.id
        );
        match episode.step(&message.text()) {
            Step::Observation(observation) => {
                let shown = messages
                    .next()
                    .ok_or_else(|| format!("{}: a call with no observation after it", trace.id))?;
                check!(
                    shown.role == Role::User,
                    "{}: an observation is a user turn",
                    trace.id
                );
                check!(
                    observation.text == shown.text(),
                    "{}: observation text {:?} != {:?}",
                    trace.id,
                    observation.text,
                    shown.text()
                );
                let mut shown_images = Vec::new();
                for part in &shown.content {
                    if let TracePart::Image { image: name } = part {
                        shown_images.push(image(name)?);
                    }
                }
                check!(
                    observation.images.len() == shown_images.len(),
                    "{}: {} observed images, the trace shows {}",
                    trace.id,
                    observation.images.len(),
                    shown_images.len()
                );
                for (i, (ours, theirs)) in observation.images.iter().zip(&shown_images).enumerate()
                {
                    check!(
                        ours.dimensions() == theirs.dimensions(),
                        "{}: image {i} is {:?}, the trace's {:?}",
                        trace.id,
                        ours.dimensions(),
                        theirs.dimensions()
                    );
                    check!(
                        ours == theirs,
                        "{}: image {i} differs from the episode's crop",
                        trace.id
                    );
                }
                compared += 1;
            }
            Step::Finished(reason) => {
                check!(
                    reason == EndReason::Answered,
                    "{}: ended with {reason:?}",
                    trace.id
                );
                check!(
                    messages.peek().is_none(),
                    "{}: messages after the answer",
                    trace.id
                );
            }
        }
    }
    check!(
        episode.is_finished(),
        "{}: the last turn did not answer",
        trace.id
    );
    Ok(compared)
}

#[test]
fn synthesized_traces_replay_through_an_episode_with_identical_observations() {
    let config = SynthConfig {
        seed: 11,
        ..SynthConfig::default()
    };
    let synth = Synthesizer::new(config.clone(), TemplateNarrator);
    let mut observations = 0;
    let mut variants: HashMap<Variant, usize> = HashMap::new();
    for name in SyntheticDataset::NAMES {
        let data = SyntheticDataset::by_name(name).expect("a listed dataset");
        for index in 0..12 {
            let sample = data.sample(config.seed, index).expect("a sample");
            let made = synth.synthesize(&sample, index).expect("a trace");
            let images: HashMap<&str, &RgbImage> =
                made.images.iter().map(|(n, i)| (n.as_str(), i)).collect();
            observations += replay(&made.trace, &images, &config).unwrap_or_else(|e| panic!("{e}"));
            *variants.entry(made.variant).or_default() += 1;
        }
    }
    // The replay covered every kind of trace that calls operations, not just the easy ones.
    for v in [
        Variant::Clean,
        Variant::OneWrong,
        Variant::TwoWrong,
        Variant::CoarseToFine,
        Variant::VideoClean,
        Variant::TextOnly,
    ] {
        assert!(
            variants.contains_key(&v),
            "no {v:?} trace among {variants:?}"
        );
    }
    assert!(
        observations >= 40,
        "only {observations} observations compared"
    );
}

#[test]
fn a_trace_whose_crop_was_altered_fails_the_replay_check() {
    // The check above can fail: change one pixel of a crop the trace shows and the replay must notice.
    let config = SynthConfig::default();
    let synth = Synthesizer::new(config.clone(), TemplateNarrator);
    let data = SyntheticDataset::by_name("needle").expect("needle");
    let sample = data.sample(0, 0).expect("a sample");
    let mut made = synth.synthesize(&sample, 0).expect("a trace");
    let crop_name = made
        .trace
        .messages
        .iter()
        .skip(1)
        .filter(|m| m.role == Role::User)
        .flat_map(|m| m.content.iter())
        .find_map(|p| match p {
            TracePart::Image { image } => Some(image.clone()),
            _ => None,
        })
        .expect("a needle trace shows a crop");
    let (_, crop) = made
        .images
        .iter_mut()
        .find(|(n, _)| *n == crop_name)
        .expect("the crop is carried");
    let px = crop.get_pixel_mut(0, 0);
    px.0[0] = px.0[0].wrapping_add(1);
    let images: HashMap<&str, &RgbImage> =
        made.images.iter().map(|(n, i)| (n.as_str(), i)).collect();
    let error =
        replay(&made.trace, &images, &config).expect_err("an altered crop passed the replay");
    assert!(error.contains("differs from the episode's crop"), "{error}");
}
