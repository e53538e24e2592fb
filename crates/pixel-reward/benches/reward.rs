//! Throughput of answer matching and of the group reward: `cargo bench -p pixel-reward`.
//!
//! A GRPO step scores (queries x 8) responses; matching must stay negligible next to generation. The
//! `adversarial_1mb` group times whole judgements of 1 MB hostile responses (unclosed boxes and tags, deep
//! nesting, a mix), which must stay linear (`cargo bench -p pixel-reward -- adversarial`).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use pixel_reward::{
    AdvantageConfig, AnswerKind, Matcher, RewardConfig, RolloutOutcome, advantages, extract_answer,
};

/// A realistic response: a few hundred characters of reasoning, a tool call, then a boxed answer.
fn response(answer: &str) -> String {
    format!(
        "The image shows a street with shops and a sign on the left. The sign is too small to read, so I \
         will zoom in.\n<tool_call>\n{{\"name\": \"crop_image_normalized\", \"arguments\": {{\"bbox_2d\": \
         [0.1, 0.2, 0.3, 0.4], \"target_image\": 1}}}}\n</tool_call>\nThe cropped image shows the Woolshops \
         sign with a sheep on it. Comparing with the options, the answer is \\boxed{{{answer}}}.<|im_end|>"
    )
}

fn bench(c: &mut Criterion) {
    let mc = response("(B) Sheep");
    let num = response("1,234.50 cm");
    let span = response("Troubles and The Siege of Krishnapur");
    let doc = response("Denver R. Bronco");
    let auto = Matcher::default().with_options(["Lion", "Sheep", "Tiger", "Elephant"]);
    let plain = Matcher::default();
    let anls = Matcher::new(AnswerKind::Anls);

    c.bench_function("extract_answer", |b| {
        b.iter(|| extract_answer(black_box(&mc)))
    });
    c.bench_function("judge/multiple_choice", |b| {
        b.iter(|| auto.judge(black_box(&mc), &["B"]))
    });
    c.bench_function("judge/number", |b| {
        b.iter(|| plain.judge(black_box(&num), &["1234.5"]))
    });
    c.bench_function("judge/multi_span", |b| {
        b.iter(|| plain.judge(black_box(&span), &["troubles, the siege of krishnapur"]))
    });
    c.bench_function("judge/anls", |b| {
        b.iter(|| anls.judge(black_box(&doc), &["Denver Broncos", "Denver R. Broncos"]))
    });

    let group: Vec<_> = (0..8)
        .map(|i| RolloutOutcome::new(i % 3 == 0, u32::from(i == 0) * 2))
        .collect();
    let cfg = RewardConfig::default();
    c.bench_function("group_rewards+advantages/8", |b| {
        b.iter(|| {
            let g = cfg
                .group_rewards(black_box(&group))
                .unwrap_or_else(|e| panic!("{e}"));
            advantages(&g.totals(), AdvantageConfig::default()).unwrap_or_else(|e| panic!("{e}"))
        })
    });
}

/// One megabyte (at least) of `unit` repeated.
fn repeat_to_1mb(unit: &str) -> String {
    unit.repeat((1usize << 20).div_ceil(unit.len()))
}

fn adversarial(c: &mut Criterion) {
    let half = 1 << 19;
    let cases = [
        ("unclosed_boxed", repeat_to_1mb(r"\boxed{")),
        ("unclosed_answer_tags", repeat_to_1mb("<answer>")),
        (
            "nested_braces",
            format!(r"\boxed{{{}7{}}}", "{".repeat(half), "}".repeat(half)),
        ),
        // The worst case of the normaliser's 64 unwrapping passes: every one finds an unclosed wrapper.
        ("unclosed_text", repeat_to_1mb(r"\text{")),
        (
            "mixed",
            repeat_to_1mb(r"\boxed{<answer>\text{{\fbox{\{ \mbox {x}}"),
        ),
    ];
    let matcher = Matcher::default();
    let mut group = c.benchmark_group("adversarial_1mb");
    group.sample_size(10);
    for (name, text) in &cases {
        group.bench_function(format!("judge/{name}"), |b| {
            b.iter(|| matcher.judge(black_box(text), &["B"]))
        });
    }
    group.finish();
}

criterion_group!(benches, bench, adversarial);
criterion_main!(benches);
