//! SFT examples from synthesized traces on the committed tiny checkpoint: which tokens each mask rule
//! trains, and that SFT overfits one self-correction trace.

mod common;

use common::checkpoint;
use std::collections::HashMap;

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use image::RgbImage;
use pixel_rl::sft::{MaskRule, SftExample, build_example, build_example_with_system, sft_loss};
use pixel_traces::official::Role;
use pixel_traces::{
    SynthConfig, SynthesizedTrace, Synthesizer, SyntheticDataset, TemplateNarrator, TracePart,
    Variant,
};
use pixel_vlm::Qwen25Vl;
use pixel_vlm::backend::CpuBackend as B;
use pixel_vlm::processor::Processor;

/// A synthesized `needle` trace of the given variant.
fn trace(variant: Variant) -> SynthesizedTrace {
    let synth = Synthesizer::new(SynthConfig::default(), TemplateNarrator);
    let data = SyntheticDataset::by_name("needle").expect("needle");
    let sample = data.sample(3, 0).expect("a sample");
    synth
        .synthesize_as(&sample, 0, variant)
        .expect("the variant can be built")
}

fn example(processor: &Processor, made: &SynthesizedTrace, rule: MaskRule) -> SftExample {
    let images: HashMap<&str, &RgbImage> =
        made.images.iter().map(|(n, i)| (n.as_str(), i)).collect();
    let load = |name: &str| -> Result<RgbImage, String> {
        images
            .get(name)
            .map(|i| (*i).clone())
            .ok_or_else(|| format!("no image {name}"))
    };
    build_example(processor, &made.trace, rule, &load).expect("example builds")
}

fn trained_text(processor: &Processor, e: &SftExample) -> String {
    let ids: Vec<u32> = e
        .token_ids
        .iter()
        .zip(&e.loss_mask)
        .filter(|(_, m)| **m)
        .map(|(id, _)| *id)
        .collect();
    processor.tokenizer.decode(&ids, false).expect("decode")
}

#[test]
fn the_paper_rule_trains_the_trained_spans_and_their_end_tokens_only() {
    let dir = checkpoint();
    let processor = Processor::from_pretrained(dir.path()).expect("processor");
    let made = trace(Variant::OneWrong);
    assert_eq!(made.variant, Variant::OneWrong);
    let e = example(&processor, &made, MaskRule::Paper);
    // The trained spans, each assistant message's closed by <|im_end|> when its last span is trained.
    let mut want = String::new();
    for m in made
        .trace
        .messages
        .iter()
        .filter(|m| m.role == Role::Assistant)
    {
        let mut last = false;
        for part in &m.content {
            if let TracePart::Text { text, train } = part {
                if *train {
                    want.push_str(text);
                }
                last = *train;
            }
        }
        if last {
            want.push_str("<|im_end|>");
        }
    }
    assert_eq!(trained_text(&processor, &e), want);
    // The wrong call is in the sequence but not trained.
    let untrained = made.trace.untrained_text();
    assert!(
        untrained.contains("<tool_call>"),
        "the one_wrong trace has an untrained call"
    );
    assert!(e.trained_tokens() > 0 && e.trained_tokens() < e.len());
    assert_eq!(e.positions[0].len(), e.len());
}

#[test]
fn a_given_system_prompt_replaces_the_official_one_and_keeps_the_trained_tokens() {
    let dir = checkpoint();
    let processor = Processor::from_pretrained(dir.path()).expect("processor");
    let made = trace(Variant::Clean);
    let official = example(&processor, &made, MaskRule::Paper);
    let images: HashMap<&str, &RgbImage> =
        made.images.iter().map(|(n, i)| (n.as_str(), i)).collect();
    let load = |name: &str| -> Result<RgbImage, String> {
        images
            .get(name)
            .map(|i| (*i).clone())
            .ok_or_else(|| format!("no image {name}"))
    };
    let short = build_example_with_system(
        &processor,
        &made.trace,
        MaskRule::Paper,
        Some("Zoom in."),
        &load,
    )
    .expect("example builds");
    let text = processor
        .tokenizer
        .decode(&short.token_ids, false)
        .expect("decode");
    assert!(
        text.starts_with("<|im_start|>system\nZoom in.<|im_end|>"),
        "{text}"
    );
    assert!(!text.contains("<tools>"));
    assert!(short.len() < official.len());
    assert_eq!(
        trained_text(&processor, &short),
        trained_text(&processor, &official)
    );
    assert_eq!(short.positions[0].len(), short.len());
}

#[test]
fn the_released_rule_trains_the_last_two_assistant_turns_with_their_headers() {
    let dir = checkpoint();
    let processor = Processor::from_pretrained(dir.path()).expect("processor");
    let made = trace(Variant::TwoWrong);
    let e = example(&processor, &made, MaskRule::ReleasedLastTwoTurns);
    let assistant: Vec<String> = made
        .trace
        .messages
        .iter()
        .filter(|m| m.role == Role::Assistant)
        .map(|m| m.text())
        .collect();
    assert!(assistant.len() >= 3, "a two_wrong trace has several turns");
    let want: String = assistant[assistant.len() - 2..]
        .iter()
        .map(|t| format!("<|im_start|>assistant\n{t}<|im_end|>"))
        .collect();
    assert_eq!(trained_text(&processor, &e), want);
}

#[test]
fn sft_overfits_one_self_correction_trace() {
    let dir = checkpoint();
    let processor = Processor::from_pretrained(dir.path()).expect("processor");
    let made = trace(Variant::CoarseToFine);
    let e = example(&processor, &made, MaskRule::Paper);
    let device = Default::default();
    let mut model = Qwen25Vl::<Autodiff<B>>::from_pretrained(dir.path(), &device)
        .expect("tiny model")
        .with_frozen_vision();
    let mut optim = AdamWConfig::new().with_weight_decay(0.0).init();
    let n = e.trained_tokens();
    let first = sft_loss(&model, &[&e], n).expect("loss");
    let first_value: f32 = first.clone().into_scalar();
    let mut last_value = first_value;
    for _ in 0..40 {
        let loss = sft_loss(&model, &[&e], n).expect("loss");
        last_value = loss.clone().into_scalar();
        let grads = GradientsParams::from_grads(loss.backward(), &model.model);
        model.model = optim.step(1e-2, model.model, grads);
    }
    // From about ln(vocab) = 6.5 nats per token to well under a nat.
    assert!(first_value > 4.0, "initial loss {first_value}");
    assert!(
        last_value < 1.0,
        "after 40 steps: {last_value} (from {first_value})"
    );
    // The inference model (no autodiff) computes the same loss.
    let valid = Qwen25Vl {
        model: model.model.valid(),
        config: model.config.clone(),
    };
    let again: f32 = sft_loss(&valid, &[&e], n).expect("loss").into_scalar();
    assert!(again < 1.5, "{again}");
}
