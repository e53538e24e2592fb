//! The trainers' memory options on the committed tiny checkpoint: per-decoder-layer activation recompute
//! (`recompute_activations`) takes the plain backward's step (full, LoRA, GRPO); f32 master weights
//! (`master_weights`) move a bf16 policy at a learning rate where plain bf16 steps leave it in place, save
//! the f32 copies in checkpoints and resume to the uninterrupted run; both together on two data-parallel
//! ranks take the one-device step; the combinations that cannot work are refused by `validate()`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::tensor::{DType, FloatDType};
use common::{
    checkpoint, max_param_diff, needle_examples, params_by_path, short_rollout, text_tasks,
};
use pixel_agent::Trajectory;
use pixel_rl::config::{GrpoConfig, SftConfig};
use pixel_rl::data::Task;
use pixel_rl::metrics::read_jsonl;
use pixel_rl::optim::AdamWSettings;
use pixel_rl::parallel::DataParallel;
use pixel_rl::reward::PerRollout;
use pixel_rl::trainer::{GrpoTrainer, SftTrainer};
use pixel_vlm::Qwen25Vl;
use pixel_vlm::backend::CpuBackend as B;
use pixel_vlm::lora::LoraConfig;
use pixel_vlm::processor::Processor;

type AB = Autodiff<B>;
type Params = BTreeMap<String, Vec<f32>>;

fn load(dir: &Path, dtype: FloatDType) -> Qwen25Vl<AB> {
    Qwen25Vl::<AB>::from_pretrained_with_dtype(dir, &Default::default(), dtype).expect("model")
}

/// 4 examples in batches of 2; AdamW ε 1e-3 so the first steps are not ~lr·sign(g) (a sign flip of a
/// near-zero gradient would hide the comparison).
fn sft_config() -> SftConfig {
    SftConfig::demo()
        .with_epochs(1)
        .with_batch_size(2)
        .with_micro_batch_size(1)
        .with_learning_rate(1e-3)
        .with_warmup_ratio(0.0)
        .with_adamw(AdamWSettings {
            epsilon: 1e-3,
            ..AdamWSettings::RECIPE
        })
}

/// The trained parameters before and after two SFT steps on the f32 checkpoint (with LoRA: the adapters
/// the trainer added, drawn from the config's seed).
fn sft_two_steps(source: &Path, config: SftConfig) -> (Params, Params) {
    let mut trainer = SftTrainer::new(
        load(source, FloatDType::F32),
        needle_examples(source),
        config,
    )
    .expect("trainer");
    let start = params_by_path(&trainer.model().valid());
    trainer.train().expect("train");
    (start, params_by_path(&trainer.model().valid()))
}

fn assert_recompute_takes_the_plain_step(config: SftConfig, what: &str) {
    let dir = checkpoint();
    let (start, plain) = sft_two_steps(dir.path(), config.clone());
    let (start_again, recomputed) =
        sft_two_steps(dir.path(), config.with_recompute_activations(true));
    assert_eq!(
        start, start_again,
        "both runs start from the same parameters"
    );
    let moved = max_param_diff(&start, &plain);
    let diff = max_param_diff(&plain, &recomputed);
    eprintln!("{what}: 2 steps moved up to {moved:e}; recompute vs plain {diff:e}");
    assert!(moved > 1e-4, "the steps must move the parameters: {moved}");
    assert!(diff < 1e-6, "recompute vs plain: {diff}");
}

#[test]
fn sft_with_recompute_takes_the_plain_step() {
    assert_recompute_takes_the_plain_step(sft_config(), "full SFT");
}

#[test]
fn lora_sft_with_recompute_takes_the_plain_step() {
    let lora = LoraConfig::new().with_rank(4).with_alpha(8.0);
    assert_recompute_takes_the_plain_step(sft_config().with_lora(Some(lora)), "LoRA SFT");
}

fn grpo_config(iterations: usize) -> GrpoConfig {
    GrpoConfig::demo(iterations)
        .with_group_size(2)
        .with_queries_per_buffer(2)
        .with_updates_per_buffer(1)
        .with_micro_batch_rows(2)
        .with_drop_uniform_groups(false)
        .with_learning_rate(1e-3)
        .with_min_lr_rate(1.0)
        .with_adamw(AdamWSettings {
            epsilon: 1e-3,
            ..AdamWSettings::RECIPE
        })
        .with_rollout(short_rollout(3))
}

fn grpo_trainer(
    model: Qwen25Vl<AB>,
    dir: &Path,
    config: GrpoConfig,
) -> GrpoTrainer<AB, Vec<Task>, PerRollout<impl Fn(&Task, &Trajectory) -> f64>> {
    let reward = PerRollout(|_: &Task, t: &Trajectory| f64::from(u8::from(t.row == 0)));
    GrpoTrainer::new(
        model,
        Processor::from_pretrained(dir).expect("processor"),
        text_tasks(4),
        reward,
        config,
    )
    .expect("grpo")
}

#[test]
fn grpo_with_recompute_takes_the_plain_step() {
    let dir = checkpoint();
    let start = params_by_path(&load(dir.path(), FloatDType::F32).valid());
    let run = |config: GrpoConfig| {
        let mut t = grpo_trainer(load(dir.path(), FloatDType::F32), dir.path(), config);
        let records = t.train().expect("train");
        (records, params_by_path(&t.model().valid()))
    };
    let (plain_records, plain) = run(grpo_config(1));
    let (records, recomputed) = run(grpo_config(1).with_recompute_activations(true));
    let moved = max_param_diff(&start, &plain);
    let diff = max_param_diff(&plain, &recomputed);
    eprintln!("GRPO 1 iteration: moved up to {moved:e}; recompute vs plain {diff:e}");
    assert!(moved > 1e-4, "the step must move the parameters: {moved}");
    assert!(diff < 1e-6, "recompute vs plain: {diff}");
    for (a, b) in plain_records.iter().zip(&records) {
        for key in ["loss", "grad_norm", "entropy"] {
            let (x, y) = (a.get(key).expect(key), b.get(key).expect(key));
            assert!(
                (x - y).abs() <= 1e-5 * x.abs().max(1.0),
                "{key}: {x} vs {y}"
            );
        }
    }
}

/// Share of the elements that moved in `reference` (vs `start`) that also moved in `other`.
fn moved_share(start: &Params, reference: &Params, other: &Params) -> f64 {
    let (mut moved, mut also) = (0usize, 0usize);
    for (path, s) in start {
        for ((a, r), o) in s.iter().zip(&reference[path]).zip(&other[path]) {
            if r != a {
                moved += 1;
                also += usize::from(o != a);
            }
        }
    }
    assert!(moved > 0, "the reference run moved nothing");
    also as f64 / moved as f64
}

/// Mean |Δother − Δreference| / mean |Δreference| over the elements that moved in `reference`.
fn move_gap(start: &Params, reference: &Params, other: &Params) -> f64 {
    let (mut gap, mut size) = (0f64, 0f64);
    for (path, s) in start {
        for ((a, r), o) in s.iter().zip(&reference[path]).zip(&other[path]) {
            if r != a {
                gap += f64::from(((o - a) - (r - a)).abs());
                size += f64::from((r - a).abs());
            }
        }
    }
    gap / size
}

#[test]
fn master_weights_move_a_bf16_policy_that_plain_bf16_steps_leave_in_place() {
    let dir = checkpoint();
    // The checkpoint rounded to bf16 and written in f32: the f32 reference run starts where bf16 does.
    let rounded = tempfile::tempdir().expect("temp");
    load(dir.path(), FloatDType::BF16)
        .valid()
        .save_pretrained(rounded.path(), FloatDType::F32)
        .expect("save");
    let examples = needle_examples(dir.path());
    // The recipe's AdamW (ε 1e-8) at a tiny learning rate, 2 steps.
    let config = SftConfig::demo()
        .with_epochs(1)
        .with_batch_size(2)
        .with_micro_batch_size(1)
        .with_learning_rate(1e-6)
        .with_warmup_ratio(0.0)
        .with_min_lr_rate(1.0);
    let run = |model: Qwen25Vl<AB>, config: SftConfig| {
        let mut t = SftTrainer::new(model, examples.clone(), config).expect("trainer");
        t.train().expect("train");
        t
    };
    let start = params_by_path(&load(rounded.path(), FloatDType::F32).valid());
    let f32_run = params_by_path(
        &run(load(rounded.path(), FloatDType::F32), config.clone())
            .model()
            .valid(),
    );
    let plain = params_by_path(
        &run(load(rounded.path(), FloatDType::BF16), config.clone())
            .model()
            .valid(),
    );
    let trainer = run(
        load(rounded.path(), FloatDType::BF16),
        config.with_master_weights(true),
    );
    assert_eq!(
        trainer.model().dtype(),
        DType::BF16,
        "the policy stays bf16"
    );
    let master = params_by_path(&trainer.master_weights().expect("copies").valid());
    let policy = params_by_path(&trainer.model().valid());

    let plain_share = moved_share(&start, &f32_run, &plain);
    let master_share = moved_share(&start, &f32_run, &master);
    let gap = move_gap(&start, &f32_run, &master);
    eprintln!(
        "lr 1e-6, 2 steps: of the elements an f32 run moved, plain bf16 moved {:.3} %, the master \
         copies {:.3} % (mean gap to the f32 moves {:.2} %)",
        100.0 * plain_share,
        100.0 * master_share,
        100.0 * gap
    );
    assert!(plain_share < 0.02, "plain bf16 moved {plain_share}");
    assert!(master_share > 0.99, "master copies moved {master_share}");
    assert!(
        gap < 0.1,
        "the master copies' moves vs the f32 run's: {gap}"
    );
    // The policy is the copies rounded to bf16 (half an ulp: 2^-9 relative).
    for (path, m) in &master {
        for (w, c) in policy[path].iter().zip(m) {
            assert!(
                (w - c).abs() <= c.abs() * 2f32.powi(-8),
                "{path}: {w} vs copy {c}"
            );
        }
    }
}

fn master_sft_run(source: &Path, run_dir: &Path, stop_after: Option<usize>) -> SftTrainer<AB> {
    let config = sft_config()
        .with_epochs(2)
        .with_learning_rate(1e-4)
        .with_checkpoint_every(2)
        .with_seed(3)
        .with_master_weights(true)
        .with_recompute_activations(true);
    let mut trainer = SftTrainer::new(
        load(source, FloatDType::BF16),
        needle_examples(source),
        config,
    )
    .expect("trainer")
    .with_run_dir(run_dir, Some(source))
    .expect("run dir");
    common::train_until(&mut trainer, stop_after);
    trainer
}

#[test]
fn a_master_weights_run_checkpoints_the_f32_copies_and_resumes_to_the_uninterrupted_run() {
    let dir = checkpoint();
    let runs = tempfile::tempdir().expect("temp");
    let (whole, stopped) = (runs.path().join("whole"), runs.path().join("stopped"));
    let a = master_sft_run(dir.path(), &whole, None);
    master_sft_run(dir.path(), &stopped, Some(2));
    // The checkpoint after step 2 holds the copies, values a bf16 model cannot hold.
    let ckpt = pixel_rl::checkpoint::latest_checkpoint(&stopped)
        .expect("list")
        .expect("one");
    let saved = params_by_path(
        &Qwen25Vl::<B>::from_pretrained(ckpt.join("model"), &Default::default()).expect("load"),
    );
    let off_grid = saved
        .values()
        .flatten()
        .filter(|v| v.to_bits() & 0xFFFF != 0) // a bf16 value is an f32 with its low 16 bits zero
        .count();
    eprintln!("checkpoint 2: {off_grid} values off the bf16 grid");
    assert!(off_grid > 1000, "the f32 copies were not saved: {off_grid}");

    let b = master_sft_run(dir.path(), &stopped, None);
    assert_eq!(b.step(), 4);
    assert_eq!(
        b.model().dtype(),
        DType::BF16,
        "resumed in the policy's dtype"
    );
    let copies = |t: &SftTrainer<AB>| params_by_path(&t.master_weights().expect("copies").valid());
    assert_eq!(copies(&a), copies(&b), "master copies after 4 steps");
    assert_eq!(
        params_by_path(&a.model().valid()),
        params_by_path(&b.model().valid())
    );
    let (ma, mb) = (
        read_jsonl(&whole.join("metrics.jsonl")).expect("whole"),
        read_jsonl(&stopped.join("metrics.jsonl")).expect("resumed"),
    );
    assert_eq!(ma.len(), 4);
    assert_eq!(ma, mb);
}

#[test]
fn grpo_with_master_weights_and_recompute_resumes_to_the_uninterrupted_run() {
    let dir = checkpoint();
    let runs = tempfile::tempdir().expect("temp");
    let config = grpo_config(2)
        .with_learning_rate(1e-5)
        .with_master_weights(true)
        .with_recompute_activations(true);
    let run = |run_dir: &Path, stop_after_one: bool| {
        let mut t = grpo_trainer(
            load(dir.path(), FloatDType::BF16),
            dir.path(),
            config.clone(),
        )
        .with_run_dir(run_dir, Some(dir.path()))
        .expect("run dir");
        if stop_after_one {
            t.iterate().expect("iteration");
            t.checkpoint().expect("checkpoint");
        } else {
            t.train().expect("train");
        }
        t
    };
    let start = params_by_path(&load(dir.path(), FloatDType::BF16).valid());
    let (whole, stopped) = (runs.path().join("whole"), runs.path().join("stopped"));
    let a = run(&whole, false);
    run(&stopped, true);
    let b = run(&stopped, false);
    let copies =
        |t: &GrpoTrainer<AB, _, _>| params_by_path(&t.master_weights().expect("copies").valid());
    let moved = max_param_diff(&start, &copies(&a));
    eprintln!("GRPO bf16 + master + recompute, 2 iterations: copies moved up to {moved:e}");
    assert!(moved > 1e-6, "the copies must move: {moved}");
    assert_eq!(copies(&a), copies(&b), "master copies");
    assert_eq!(b.model().dtype(), DType::BF16);
    let (ma, mb) = (
        read_jsonl(&whole.join("metrics.jsonl")).expect("whole"),
        read_jsonl(&stopped.join("metrics.jsonl")).expect("resumed"),
    );
    assert_eq!(ma.len(), 2);
    assert_eq!(ma, mb);
}

#[test]
fn master_weights_and_recompute_on_two_thread_ranks_take_the_one_device_step() {
    let dir = checkpoint();
    let examples = needle_examples(dir.path());
    let config = sft_config()
        .with_batch_size(4)
        .with_master_weights(true)
        .with_recompute_activations(true);
    let trainer = || {
        SftTrainer::new(
            load(dir.path(), FloatDType::BF16),
            examples.clone(),
            config.clone(),
        )
        .expect("sft")
    };
    let copies = |t: &SftTrainer<AB>| params_by_path(&t.master_weights().expect("copies").valid());
    let mut single = trainer();
    single.train().expect("train");
    let want = copies(&single);
    let ranks: Vec<Params> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|rank| {
                let trainer = &trainer;
                s.spawn(move || {
                    let mut t = trainer()
                        .with_data_parallel(&DataParallel::threads(rank, 2))
                        .expect("join");
                    t.train().expect("train");
                    copies(&t)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("rank"))
            .collect()
    });
    let diff = max_param_diff(&want, &ranks[0]);
    eprintln!("bf16 + master + recompute, one step of 4 examples: one device vs 2 ranks {diff:e}");
    // The ranks' forwards run in bf16 on their own shards: the summed gradient differs from the one-device
    // one by bf16 rounding, not by a step (lr 1e-3).
    assert!(diff < 1e-4, "{diff}");
    assert_eq!(ranks[0], ranks[1], "the ranks' copies are identical");
}

#[test]
fn combinations_that_cannot_work_are_refused() {
    let lora = LoraConfig::new().with_rank(4);
    let err = SftConfig::demo()
        .with_lora(Some(lora.clone()))
        .with_master_weights(true)
        .validate()
        .expect_err("master + lora");
    assert!(err.to_string().contains("master_weights"), "{err}");
    let err = GrpoConfig::demo(1)
        .with_lora(Some(lora.clone().with_dropout(0.1)))
        .with_recompute_activations(true)
        .validate()
        .expect_err("recompute + dropout");
    assert!(err.to_string().contains("dropout"), "{err}");
    for ok in [
        GrpoConfig::demo(1)
            .with_lora(Some(lora.clone()))
            .with_recompute_activations(true)
            .validate(),
        GrpoConfig::demo(1)
            .with_master_weights(true)
            .with_recompute_activations(true)
            .validate(),
        SftConfig::demo()
            .with_lora(Some(lora))
            .with_recompute_activations(true)
            .validate(),
    ] {
        ok.expect("supported");
    }
}

#[test]
fn recompute_runs_the_layer_by_layer_backward() {
    // A model that already has adapters with dropout: the plain backward trains it, the layer-by-layer one
    // refuses it (its forward would draw other masks): the trainer's option reaches `backward_recomputed`.
    let dir = checkpoint();
    let dropout = LoraConfig::new().with_rank(4).with_dropout(0.1);
    let step = |recompute: bool| {
        let model = load(dir.path(), FloatDType::F32)
            .with_lora(&dropout)
            .expect("adapters");
        let config = sft_config().with_recompute_activations(recompute);
        SftTrainer::new(model, needle_examples(dir.path()), config)
            .expect("trainer")
            .train_step()
    };
    step(false).expect("the plain backward trains with dropout");
    let err = step(true).expect_err("recompute refuses dropout");
    assert!(err.to_string().contains("dropout"), "{err}");
}
