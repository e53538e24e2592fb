//! The loop on the committed tiny Qwen2.5-VL checkpoint: scripted and sampled groups, checked against an
//! independent render + tokenization of the final conversation, `get_rope_index` over the whole sequence,
//! the training forward and a full forward of the whole sequence.

use burn::tensor::activation::log_softmax;
use image::{Rgb, RgbImage};
use pixel_agent::{
    Engine, LocalEngine, Query, RolloutConfig, RolloutEnd, Trajectory, VisualKind, run_group,
};
use pixel_ops::{EndReason, PixelLimits};
use pixel_vlm::backend::CpuBackend as B;
use pixel_vlm::chat_template::RenderOptions;
use pixel_vlm::processor::Processor;
use pixel_vlm::rope_index::get_rope_index;
use pixel_vlm::train::Targets;
use pixel_vlm::{ForwardInput, Qwen25Vl, VisualInput};
use serde_json::json;

/// The committed tiny checkpoint as one folder (`pixel-testkit`).
fn checkpoint() -> tempfile::TempDir {
    pixel_testkit::tiny_checkpoint()
}

fn picture() -> RgbImage {
    RgbImage::from_fn(112, 84, |x, y| {
        Rgb([(x * 2) as u8, (y * 3) as u8, ((x + y) % 256) as u8])
    })
}

fn config() -> RolloutConfig {
    let mut config = RolloutConfig::greedy();
    // Small crops keep the test fast; the processor fits every image to its own small limits anyway.
    config.episode.crop_resize = PixelLimits::new(784, 9408);
    config.max_new_tokens = 128; // the scripted turns are up to ~80 tokens
    config
}

fn crop_call(bbox: [f64; 4], target: usize) -> String {
    format!(
        "Let me look closer.<tool_call>\n{{\"name\": \"crop_image_normalized\", \"arguments\": \
         {{\"bbox_2d\": [{}, {}, {}, {}], \"target_image\": {target}}}}}\n</tool_call>",
        bbox[0], bbox[1], bbox[2], bbox[3]
    )
}

/// The scripted turns of three rows: answer at once; one crop then answer; two crops (the second of the
/// first crop) then answer.
fn scripts() -> Vec<Vec<String>> {
    vec![
        vec!["The answer is \\boxed{A}.".into()],
        vec![
            crop_call([0.2, 0.2, 0.6, 0.6], 1),
            "Now it is clear: \\boxed{B}.".into(),
        ],
        vec![
            crop_call([0.1, 0.1, 0.7, 0.7], 1),
            crop_call([0.2, 0.2, 0.8, 0.8], 2),
            "Finally \\boxed{C}.".into(),
        ],
    ]
}

/// Runs the scripted group: each row's turns are forced, turn by turn.
fn run_scripted(
    model: &Qwen25Vl<B>,
    processor: &Processor,
) -> (Vec<Trajectory>, Vec<Vec<Vec<u32>>>) {
    let scripts = scripts();
    let im_end = processor.tokenizer.special().im_end;
    let tokens: Vec<Vec<Vec<u32>>> = scripts
        .iter()
        .map(|turns| {
            turns
                .iter()
                .map(|t| {
                    let mut ids = processor.tokenizer.encode(t).expect("encode");
                    ids.push(im_end);
                    ids
                })
                .collect()
        })
        .collect();
    let mut engine = ScriptedLocal {
        inner: LocalEngine::new(model, processor, 4096),
        scripts: tokens.clone(),
        turn: vec![0; scripts.len()],
    };
    let query = Query::image(picture(), "What letter is written in the corner?");
    let out = run_group(&mut engine, &query, scripts.len(), &config()).expect("group runs");
    (out, tokens)
}

/// A [`LocalEngine`] whose rows emit scripted turns (teacher forcing through `force_next_turn`).
struct ScriptedLocal<'m> {
    inner: LocalEngine<'m, B>,
    scripts: Vec<Vec<Vec<u32>>>,
    turn: Vec<usize>,
}

impl Engine for ScriptedLocal<'_> {
    type Prepared = pixel_agent::local::PreparedTurn;

    fn is_token_exact(&self) -> bool {
        true
    }
    fn model_view(&self, image: &RgbImage) -> pixel_agent::Result<RgbImage> {
        self.inner.model_view(image)
    }
    fn open(
        &mut self,
        system: &str,
        question: &pixel_agent::UserTurn,
        rows: usize,
    ) -> pixel_agent::Result<()> {
        self.inner.open(system, question, rows)
    }
    fn rows(&self) -> usize {
        self.inner.rows()
    }
    fn context_tokens(&self, row: usize) -> usize {
        self.inner.context_tokens(row)
    }
    fn prepare(
        &self,
        row: usize,
        turn: &pixel_agent::UserTurn,
    ) -> pixel_agent::Result<Self::Prepared> {
        self.inner.prepare(row, turn)
    }
    fn prepared_tokens(&self, prepared: &Self::Prepared) -> usize {
        self.inner.prepared_tokens(prepared)
    }
    fn append(&mut self, turns: Vec<Option<Self::Prepared>>) -> pixel_agent::Result<()> {
        self.inner.append(turns)
    }
    fn generate(
        &mut self,
        active: &[bool],
        sampling: &pixel_agent::TurnSampling,
    ) -> pixel_agent::Result<Vec<Option<pixel_agent::Generated>>> {
        for (row, &a) in active.iter().enumerate() {
            if a {
                let turn = self.turn[row];
                self.inner
                    .force_next_turn(row, self.scripts[row][turn].clone())?;
                self.turn[row] += 1;
            }
        }
        self.inner.generate(active, sampling)
    }
    fn record(&self, row: usize) -> Option<pixel_agent::TokenRecord> {
        self.inner.record(row)
    }
}

fn load() -> (tempfile::TempDir, Qwen25Vl<B>, Processor) {
    let dir = checkpoint();
    let device = Default::default();
    let model = Qwen25Vl::<B>::from_pretrained(dir.path(), &device).expect("tiny model loads");
    let processor = Processor::from_pretrained(dir.path()).expect("processor loads");
    (dir, model, processor)
}

#[test]
fn a_call_ended_by_endoftext_ends_the_rollout_without_an_error() {
    let (_dir, model, processor) = load();
    let special = *processor.tokenizer.special();
    let mut call = processor
        .tokenizer
        .encode(&crop_call([0.2, 0.2, 0.6, 0.6], 1))
        .expect("encode");
    // `<|endoftext|>` is a stop token of Qwen2.5-VL, but the turn then lacks the `<|im_end|>` a user turn
    // must follow: before this was handled, the observation's turn failed and ended GRPO training.
    let eot = special
        .stop_tokens()
        .iter()
        .copied()
        .find(|&t| t != special.im_end)
        .expect("a second stop token");
    call.push(eot);
    let mut engine = ScriptedLocal {
        inner: LocalEngine::new(&model, &processor, 4096),
        scripts: vec![vec![call]],
        turn: vec![0],
    };
    let query = Query::image(picture(), "What letter is written in the corner?");
    let out = run_group(&mut engine, &query, 1, &config()).expect("the group runs");
    assert_eq!(out[0].end, RolloutEnd::EndOfText);
    assert_eq!(out[0].turns.len(), 1);
    assert!(out[0].operations.is_empty(), "no observation was appended");
}

#[test]
fn rows_that_stop_at_different_turns_all_run_to_their_answer() {
    let (_dir, model, processor) = load();
    let (out, _) = run_scripted(&model, &processor);
    let turns: Vec<usize> = out.iter().map(|t| t.turns.len()).collect();
    assert_eq!(turns, vec![1, 2, 3]);
    for t in &out {
        assert_eq!(
            t.end,
            RolloutEnd::Episode(EndReason::Answered),
            "row {}",
            t.row
        );
        assert!(t.final_text.contains("\\boxed{"), "{}", t.final_text);
        assert_eq!(t.operations.len(), t.turns.len() - 1);
        assert!(t.operations.iter().all(|o| !o.failed), "{:?}", t.operations);
        // The question's image plus one crop per operation.
        assert_eq!(t.images.len(), 1 + t.operations.len());
    }
    assert!(!out[0].stats.used_pixel_reasoning());
    assert!(out[2].stats.used_pixel_reasoning());
}

#[test]
fn trajectory_tokens_equal_one_render_of_the_final_conversation_tokenized_once() {
    let (_dir, model, processor) = load();
    let (out, _) = run_scripted(&model, &processor);
    let system = pixel_ops::ToolSet::PixelReasoner.system_prompt();
    let question =
        pixel_ops::ToolSet::PixelReasoner.user_text("What letter is written in the corner?");
    for t in &out {
        let mut messages = vec![
            json!({"role": "system", "content": system}),
            json!({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}),
        ];
        for (k, turn) in t.turns.iter().enumerate() {
            messages.push(json!({"role": "assistant", "content": turn.text}));
            if let Some(op) = t.operations.get(k) {
                let mut content = vec![json!({"type": "text", "text": op.observation})];
                content.extend((0..op.images_added).map(|_| json!({"type": "image"})));
                messages.push(json!({"role": "user", "content": content}));
            }
        }
        let text = processor
            .apply_chat_template(&messages, &RenderOptions::default())
            .expect("render");
        // The rendered conversation ends with "<|im_end|>\n"; the record ends at the sampled <|im_end|>.
        let text = text.strip_suffix('\n').expect("ends with a newline");
        let once = processor
            .process(text, &t.images, &[])
            .expect("process the whole conversation");
        let record = t.tokens.as_ref().expect("token-exact record");
        assert_eq!(record.token_ids, once.input_ids, "row {}", t.row);
        // Its visual spans are the images' pad runs.
        let image_pad = processor.tokenizer.special().image_pad;
        assert_eq!(record.visuals.len(), t.images.len());
        for span in &record.visuals {
            assert_eq!(span.kind, VisualKind::Image);
            assert!(
                record.token_ids[span.start..span.start + span.len]
                    .iter()
                    .all(|&id| id == image_pad)
            );
            assert_ne!(record.token_ids[span.start - 1], image_pad);
            assert_ne!(
                record.token_ids.get(span.start + span.len),
                Some(&image_pad)
            );
        }
    }
}

#[test]
fn loss_mask_covers_exactly_the_sampled_tokens() {
    let (_dir, model, processor) = load();
    let (out, scripted) = run_scripted(&model, &processor);
    for (t, turns) in out.iter().zip(&scripted) {
        let record = t.tokens.as_ref().expect("record");
        let masked: Vec<u32> = record
            .token_ids
            .iter()
            .zip(&record.loss_mask)
            .filter(|(_, m)| **m)
            .map(|(id, _)| *id)
            .collect();
        let sampled: Vec<u32> = turns.concat();
        assert_eq!(masked, sampled, "row {}", t.row);
        assert_eq!(record.sampled_len(), sampled.len());
        // Each turn's tokens are contiguous and end with <|im_end|>; nothing after the last one.
        let im_end = processor.tokenizer.special().im_end;
        assert_eq!(record.token_ids.last(), Some(&im_end));
        assert_eq!(record.loss_mask.last(), Some(&true));
        let runs = record
            .loss_mask
            .windows(2)
            .filter(|w| !w[0] && w[1])
            .count();
        assert_eq!(runs, turns.len(), "one masked run per turn");
        // Log-probs exactly where the mask is.
        for (m, lp) in record.loss_mask.iter().zip(&record.logprobs) {
            if *m {
                assert!(lp.is_finite() && *lp <= 0.0);
            } else {
                assert_eq!(*lp, 0.0);
            }
        }
    }
}

#[test]
fn positions_equal_get_rope_index_over_the_whole_sequence() {
    let (_dir, model, processor) = load();
    let (out, _) = run_scripted(&model, &processor);
    let rope = processor.rope_config();
    for t in &out {
        let record = t.tokens.as_ref().expect("record");
        let grids: Vec<[usize; 3]> = record.visuals.iter().map(|v| v.grid_thw).collect();
        let whole = get_rope_index(&rope, &record.token_ids, &grids, &[], &[]).expect("rope");
        for axis in 0..3 {
            assert_eq!(
                record.positions[axis],
                whole.axis(axis),
                "row {} axis {axis}",
                t.row
            );
        }
    }
}

#[test]
fn sampling_logprobs_equal_the_training_forward_and_a_full_cached_forward() {
    let (_dir, model, processor) = load();
    let (out, _) = run_scripted(&model, &processor);
    let t = &out[2];
    let record = t.tokens.as_ref().expect("record");
    let images = processor
        .image_processor
        .preprocess_images(&t.images)
        .expect("patches");
    let visual = VisualInput {
        pixel_values: images.pixel_values,
        grid_thw: images.grid_thw,
    };
    let n = record.len();
    let positions = record.positions.concat();
    let input = ForwardInput {
        input_ids: &record.token_ids,
        batch: 1,
        positions: &positions,
        valid: None,
        generated: Some(&record.loss_mask),
        images: Some(&visual),
        videos: None,
    };
    // (a) The training forward (no cache) with the rollout's greedy temperature (1).
    let hidden = model.forward_train(&input).expect("training forward");
    let mut targets: Vec<u32> = record.token_ids[1..].to_vec();
    targets.push(0);
    let trained: Vec<f32> = model
        .target_logprobs(hidden, &Targets::new(&targets))
        .expect("target log-probs")
        .logprobs
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("f32");
    // (b) One full forward of the whole sequence through the KV-cache path.
    let mut cache = model.new_cache(1, n).expect("cache");
    let logits = model.forward(&input, &mut cache).expect("forward"); // [1, n, vocab]
    let logp = log_softmax(logits, 2);
    let vocab = model.config.text.vocab_size;
    let values: Vec<f32> = logp.into_data().convert::<f32>().to_vec().expect("f32");
    let mut checked = 0;
    for i in 1..n {
        if record.loss_mask[i] {
            let full = values[(i - 1) * vocab + record.token_ids[i] as usize];
            for (what, value) in [("full forward", full), ("training forward", trained[i - 1])] {
                assert!(
                    (value - record.logprobs[i]).abs() < 1e-4,
                    "token {i}: {what} {value} vs sampled {}",
                    record.logprobs[i]
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, record.sampled_len());
}

#[test]
fn a_sampled_group_runs_every_row_to_an_end() {
    let (_dir, model, processor) = load();
    let mut engine = LocalEngine::new(&model, &processor, 4096);
    let mut config = config();
    config.first_turn = pixel_vlm::sampling::SamplingParams::default();
    config.later_turns = config.first_turn;
    config.max_new_tokens = 12;
    config.seed = 5;
    let query = Query::image(picture(), "What is this?");
    let out = run_group(&mut engine, &query, 4, &config).expect("group runs");
    assert_eq!(out.len(), 4);
    for t in &out {
        assert!(!t.turns.is_empty());
        let record = t.tokens.as_ref().expect("record");
        assert_eq!(record.len(), record.loss_mask.len());
        assert_eq!(record.len(), record.positions[0].len());
        let sampled: usize = t.turns.iter().map(|g| g.tokens.len()).sum();
        assert_eq!(record.sampled_len(), sampled);
    }
    // Rows draw from their own streams: a random model gives different texts.
    let first: Vec<&Vec<u32>> = out.iter().map(|t| &t.turns[0].tokens).collect();
    assert!(first.windows(2).any(|w| w[0] != w[1]), "{first:?}");
}

/// A picture larger than the test processor's 9,408-pixel view, with detail the view loses.
fn large_picture() -> RgbImage {
    RgbImage::from_fn(448, 336, |x, y| {
        let checker = if (x / 2 + y / 2) % 2 == 0 { 255 } else { 0 };
        Rgb([checker, (x % 256) as u8, (y % 256) as u8])
    })
}

/// One row: a crop of `bbox`, then an answer; returns the image the crop added.
fn crop_once(
    model: &Qwen25Vl<B>,
    processor: &Processor,
    config: &RolloutConfig,
    bbox: [f64; 4],
) -> RgbImage {
    let im_end = processor.tokenizer.special().im_end;
    let turns: Vec<Vec<u32>> = [crop_call(bbox, 1), "\\boxed{A}".into()]
        .iter()
        .map(|t| {
            let mut ids = processor.tokenizer.encode(t).expect("encode");
            ids.push(im_end);
            ids
        })
        .collect();
    let mut engine = ScriptedLocal {
        inner: LocalEngine::new(model, processor, 4096),
        scripts: vec![turns],
        turn: vec![0],
    };
    let query = Query::image(large_picture(), "What is in the corner?");
    let out = run_group(&mut engine, &query, 1, config).expect("group runs");
    let t = out.into_iter().next().expect("one row");
    assert_eq!(t.operations.len(), 1);
    assert!(!t.operations[0].failed, "{:?}", t.operations);
    assert_eq!(t.images.len(), 2, "the question's image and the crop");
    t.images[1].clone()
}

#[test]
fn crops_come_from_the_given_image_under_crop_source_original() {
    let (_dir, model, processor) = load();
    let bbox = [0.2, 0.2, 0.6, 0.6];
    let original = large_picture();
    let shown = processor
        .image_processor
        .fit(&original)
        .expect("fit")
        .into_owned();
    assert!(shown.width() < original.width(), "the view is smaller");

    let mut config = config();
    let from_view = crop_once(&model, &processor, &config, bbox);
    config.episode.crop.source = pixel_ops::CropSource::Original;
    let from_given = crop_once(&model, &processor, &config, bbox);

    let cut = |source: &RgbImage| {
        let c = pixel_ops::crop_normalized(source, shown.dimensions(), bbox, &config.episode.crop)
            .expect("crop");
        pixel_ops::smart_resize_image(&c, config.episode.crop_resize).expect("resize")
    };
    assert_eq!(from_given, cut(&original), "cut from the image as given");
    assert_eq!(
        from_view,
        cut(&shown),
        "cut from the model's view (official)"
    );
    assert_ne!(from_given, from_view);
}
