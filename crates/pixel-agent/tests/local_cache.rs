//! `LocalEngine`'s KV cache: an engine whose capacity is sized to the episode budget allocates only what
//! its group's rollouts use.

use image::{Rgb, RgbImage};
use pixel_agent::{LocalEngine, Query, RolloutConfig, run_group};
use pixel_vlm::Qwen25Vl;
use pixel_vlm::backend::CpuBackend as B;
use pixel_vlm::processor::Processor;
use pixel_vlm::sampling::SamplingParams;

/// The committed tiny checkpoint as one folder (`pixel-testkit`).
fn checkpoint() -> tempfile::TempDir {
    pixel_testkit::tiny_checkpoint()
}

#[test]
fn a_group_allocates_the_kv_cache_its_rollouts_use_not_the_capacity() {
    let dir = checkpoint();
    let model = Qwen25Vl::<B>::from_pretrained(dir.path(), &Default::default()).expect("model");
    let processor = Processor::from_pretrained(dir.path()).expect("processor");
    // The tiny model's whole context, as the trainer sizes it from the episode budget.
    let mut engine = LocalEngine::new(&model, &processor, 4096);
    assert!(engine.cache().is_none());
    let config = RolloutConfig {
        first_turn: SamplingParams::default(),
        later_turns: SamplingParams::default(),
        max_new_tokens: 40,
        seed: 3,
        ..RolloutConfig::default()
    };
    let picture = RgbImage::from_fn(112, 84, |x, y| Rgb([(x * 2) as u8, (y * 3) as u8, 7]));
    let query = Query::image(picture, "What is this?");
    let out = run_group(&mut engine, &query, 4, &config).expect("group runs");
    let longest = out
        .iter()
        .map(|t| t.tokens.as_ref().expect("record").len())
        .max()
        .expect("rows");
    let cache = engine.cache().expect("an open group");
    assert_eq!(cache.capacity(), 4096);
    // Every fed token of the longest row (its last one is sampled, not fed).
    assert!(
        cache.len() + 1 >= longest,
        "{} slots for {longest} tokens",
        cache.len()
    );
    assert!(
        cache.allocated() >= cache.len() && cache.allocated() <= 2 * cache.len(),
        "{} slots allocated for {} used",
        cache.allocated(),
        cache.len()
    );
}
