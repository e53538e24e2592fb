//! Video traces: clean, and wrong frames first, with the wrong window they use.

use ::image::RgbImage;
use rand::{Rng, RngCore};
use rand_chacha::ChaCha8Rng;

use super::{Builder, FRAMES_INTENT, Synthesizer, Variant, invalid};
use crate::Result;
use crate::geometry::FrameWindow;
use crate::narrator::{Modality, NarrationStep, Narrator};
use crate::official::Role;
use crate::protocol_text;
use crate::sample::AnnotatedSample;
use crate::trace::TracePart;

impl<N: Narrator> Synthesizer<N> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn video_trace(
        &self,
        sample: &AnnotatedSample,
        frames: &[RgbImage],
        window: FrameWindow,
        cue: &str,
        requested: Variant,
        b: &mut Builder,
        rng: &mut ChaCha8Rng,
    ) -> Result<Variant> {
        if window.first == 0 || window.is_empty() || window.last > frames.len() || window.len() > 8
        {
            return Err(invalid(
                sample,
                format!(
                    "frame window {}..={} is not 1-based, at most 8 frames, within {} frames",
                    window.first,
                    window.last,
                    frames.len()
                ),
            ));
        }
        let wrong = if requested == Variant::VideoWrong {
            wrong_window(window, frames.len(), rng)
        } else {
            None
        };
        let variant = if wrong.is_some() {
            Variant::VideoWrong
        } else {
            Variant::VideoClean
        };

        let paths: Vec<String> = frames
            .iter()
            .enumerate()
            .map(|(i, f)| b.store(&format!("frame_{:02}", i + 1), f.clone()))
            .collect();
        b.visuals += 1;
        b.push(
            Role::User,
            vec![
                TracePart::Video { video: paths },
                TracePart::text(protocol_text::user_text(&sample.question)),
            ],
        );
        let intent = format!("{FRAMES_INTENT} '{cue}'.");
        let overview: Vec<&RgbImage> = frames.iter().collect();
        let whole = self.narrate(
            sample,
            NarrationStep::WholeInput,
            Modality::Video,
            cue,
            overview,
            rng,
        )?;
        let mut lead = format!("{whole}\n\n{intent}\n");

        let show = |b: &mut Builder, selected: &[usize], tag: &str| -> Result<Vec<RgbImage>> {
            let seen: Vec<RgbImage> = selected
                .iter()
                .map(|&f| self.observe(&frames[f - 1]))
                .collect::<Result<_>>()?;
            // Numbered from the visuals so far, as `pixel-ops`' episode does (the released code's rule).
            let first = b.visuals;
            let last = first + seen.len() - 1;
            let (w, h) = (seen[0].width(), seen[0].height());
            let mut content = vec![TracePart::text(protocol_text::frames_observation(
                w, h, first, last,
            ))];
            for (f, image) in selected.iter().zip(&seen) {
                content.push(TracePart::Image {
                    image: b.add_image(&format!("{tag}_{f:02}"), image.clone()),
                });
            }
            b.push(Role::User, content);
            Ok(seen)
        };

        if let Some(wrong) = &wrong {
            b.push(
                Role::Assistant,
                vec![
                    TracePart::trained(lead),
                    TracePart::text(protocol_text::select_frames_call(wrong)),
                ],
            );
            let seen = show(b, wrong, "wrong")?;
            let mut images = vec![&frames[0]];
            images.extend(seen.iter());
            let missed = self.narrate(
                sample,
                NarrationStep::Missed,
                Modality::Video,
                cue,
                images,
                rng,
            )?;
            lead = format!("{missed}\n\n{intent}\n");
        }
        let selected = window.frames();
        b.push(
            Role::Assistant,
            vec![
                TracePart::trained(lead),
                TracePart::trained(protocol_text::select_frames_call(&selected)),
            ],
        );
        let seen = show(b, &selected, "selected")?;
        self.push_answer(
            b,
            sample,
            NarrationStep::Final,
            Modality::Video,
            cue,
            seen.iter().collect(),
            rng,
        )?;
        Ok(variant)
    }
}

/// Frames disjoint from `window`, as many as it has (at most what fits), in order; `None` if no frame is
/// left outside the window.
pub fn wrong_window(
    window: FrameWindow,
    total: usize,
    rng: &mut dyn RngCore,
) -> Option<Vec<usize>> {
    let outside: Vec<usize> = (1..=total)
        .filter(|f| *f < window.first || *f > window.last)
        .collect();
    if outside.is_empty() {
        return None;
    }
    // A contiguous run outside the window, like a plausible but wrong guess.
    let runs: Vec<Vec<usize>> = outside
        .chunk_by(|a, b| b == &(a + 1))
        .map(|run| run.to_vec())
        .collect();
    let run = &runs[rng.random_range(0..runs.len())];
    let len = window.len().min(run.len());
    let start = rng.random_range(0..=(run.len() - len));
    Some(run[start..start + len].to_vec())
}
