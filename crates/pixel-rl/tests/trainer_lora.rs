//! LoRA through the trainers (`config.lora`): SFT steps move only the adapters, a run's checkpoints hold the
//! adapters in PEFT's layout and resume to the same state as a run that never stopped, and the merged
//! export loads as a plain Hugging Face folder with the adapter model's logits; a GRPO run with adapters and
//! a KL term (the base as the reference) checkpoints and resumes the same way.

mod common;

use std::path::Path;

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::tensor::FloatDType;
use common::{checkpoint, max_param_diff, needle_examples, params_by_path};
use pixel_agent::Trajectory;
use pixel_rl::config::{GrpoConfig, SftConfig};
use pixel_rl::data::Task;
use pixel_rl::metrics::{MetricRecord, read_jsonl};
use pixel_rl::reward::PerRollout;
use pixel_rl::sft::SftExample;
use pixel_rl::trainer::{GrpoTrainer, SftTrainer};
use pixel_vlm::backend::CpuBackend as B;
use pixel_vlm::lora::{ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, LoraConfig};
use pixel_vlm::processor::Processor;
use pixel_vlm::{ForwardInput, Qwen25Vl};

type AB = Autodiff<B>;

fn load(dir: &Path) -> Qwen25Vl<AB> {
    Qwen25Vl::<AB>::from_pretrained(dir, &Default::default()).expect("model")
}

/// Rank-4 adapters on the decoder; 4 examples in batches of 2 (2 steps per epoch, 4 in all).
fn config() -> SftConfig {
    SftConfig::demo()
        .with_epochs(2)
        .with_batch_size(2)
        .with_micro_batch_size(1)
        .with_learning_rate(1e-2)
        .with_warmup_ratio(0.0)
        .with_checkpoint_every(2)
        .with_seed(3)
        .with_lora(Some(LoraConfig::new().with_rank(4).with_alpha(8.0)))
}

fn lora_run(source: &Path, run_dir: &Path, stop_after: Option<usize>) -> SftTrainer<AB> {
    let mut trainer = SftTrainer::new(load(source), needle_examples(source), config())
        .expect("trainer")
        .with_run_dir(run_dir, Some(source))
        .expect("run dir");
    common::train_until(&mut trainer, stop_after);
    trainer
}

#[test]
fn lora_sft_moves_only_the_adapters_and_resumes_from_its_adapter_checkpoint() {
    let dir = checkpoint();
    let base = params_by_path(&load(dir.path()).valid());
    let runs = tempfile::tempdir().expect("temp");
    let (whole, stopped) = (runs.path().join("whole"), runs.path().join("stopped"));
    let trained = params_by_path(&lora_run(dir.path(), &whole, None).model().valid());

    // Every base parameter is bit for bit where it started; the adapters are the only new ones and moved.
    let adapters: Vec<&String> = trained.keys().filter(|k| !base.contains_key(*k)).collect();
    assert_eq!(
        adapters.len(),
        2 * 7 * 2,
        "lora_a and lora_b of 7 projections x 2 layers"
    );
    for (path, values) in &base {
        assert_eq!(&trained[path], values, "{path} changed");
    }
    let lora_b_moved = adapters
        .iter()
        .filter(|k| k.ends_with("lora_b"))
        .all(|k| trained[*k].iter().any(|v| *v != 0.0));
    assert!(lora_b_moved, "every B (zero at the start) must have moved");

    // The checkpoint holds the adapters (PEFT's files) and no copy of the base.
    let last = pixel_rl::checkpoint::latest_checkpoint(&whole)
        .expect("list")
        .expect("a checkpoint");
    assert!(last.join("adapter").join(ADAPTER_WEIGHTS_FILE).is_file());
    assert!(last.join("adapter").join(ADAPTER_CONFIG_FILE).is_file());
    assert!(!last.join("model").exists());

    // Stopped after 3 steps (inside the second epoch) and resumed: the same state and the same run.
    let first = lora_run(dir.path(), &stopped, Some(3));
    let at_stop = params_by_path(&first.model().valid());
    drop(first);
    let resumed = SftTrainer::new(load(dir.path()), needle_examples(dir.path()), config())
        .expect("trainer")
        .with_run_dir(&stopped, Some(dir.path()))
        .expect("resume");
    assert_eq!(resumed.step(), 3);
    assert_eq!(params_by_path(&resumed.model().valid()), at_stop);
    drop(resumed);
    let finished = params_by_path(&lora_run(dir.path(), &stopped, None).model().valid());
    assert_eq!(
        finished, trained,
        "the resumed run ends where the whole run did"
    );
    let (a, b) = (
        read_jsonl(&whole.join("metrics.jsonl")).expect("whole"),
        read_jsonl(&stopped.join("metrics.jsonl")).expect("resumed"),
    );
    assert_eq!(a.len(), 4);
    assert_eq!(a, b);
}

fn logits(model: &Qwen25Vl<B>, e: &SftExample) -> Vec<f32> {
    let positions: Vec<i64> = e.positions.concat();
    let input = ForwardInput {
        input_ids: &e.token_ids,
        batch: 1,
        positions: &positions,
        valid: None,
        generated: None,
        images: Some(&e.images),
        videos: None,
    };
    model
        .logits(model.forward_train(&input).expect("forward"))
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("f32")
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn the_merged_export_loads_and_gives_the_adapter_models_logits() {
    let dir = checkpoint();
    let runs = tempfile::tempdir().expect("temp");
    let examples = needle_examples(dir.path());
    let mut trainer = SftTrainer::new(load(dir.path()), examples.clone(), config())
        .expect("trainer")
        .with_run_dir(runs.path().join("run"), Some(dir.path()))
        .expect("run dir");
    for _ in 0..2 {
        trainer.train_step().expect("step");
    }
    let out = trainer
        .export(runs.path().join("export"), FloatDType::F32)
        .expect("export");
    assert!(
        out.join("tokenizer.json").is_file(),
        "processor files beside the weights"
    );
    let merged = Qwen25Vl::<B>::from_pretrained(&out, &Default::default()).expect("load");
    assert!(merged.lora_sites().is_empty());
    let adapted = trainer.model().valid();
    let base = load(dir.path()).valid();
    // The merged folder holds the base's parameters, the adapted projections changed.
    let moved = max_param_diff(&params_by_path(&base), &params_by_path(&merged));
    assert!(
        moved > 1e-4,
        "merging must change the adapted weights: {moved}"
    );
    let e = &examples[0];
    let (ours, theirs, before) = (logits(&adapted, e), logits(&merged, e), logits(&base, e));
    let diff = max_abs_diff(&ours, &theirs);
    let effect = max_abs_diff(&ours, &before);
    eprintln!("merged export vs adapter model logits: {diff:e} (adapters' effect {effect:e})");
    assert!(effect > 1e-2, "the adapters must matter: {effect}");
    assert!(diff < 1e-4, "{diff}");
}

#[test]
fn a_lora_config_with_a_model_that_has_adapters_is_refused() {
    let dir = checkpoint();
    let model = load(dir.path())
        .with_lora(&LoraConfig::new())
        .expect("adapters");
    let err = SftTrainer::new(model.clone(), needle_examples(dir.path()), config())
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("has LoRA adapters already"), "{err}");
    // Adapters the trainer did not add: training works, a run folder (checkpoints) is refused.
    let runs = tempfile::tempdir().expect("temp");
    let err = SftTrainer::new(model, needle_examples(dir.path()), config().with_lora(None))
        .expect("trainer")
        .with_run_dir(runs.path(), None)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("did not add"), "{err}");
}

/// GRPO with LoRA adapters and the k3 KL against the frozen base, one text task, groups of 2.
fn grpo_lora_run(source: &Path, run_dir: &Path, iterations: usize) -> Vec<MetricRecord> {
    let mut config = GrpoConfig::demo(iterations)
        .with_group_size(2)
        .with_queries_per_buffer(1)
        .with_updates_per_buffer(1)
        .with_learning_rate(1e-2)
        .with_min_lr_rate(1.0)
        .with_rollout(common::short_rollout(3))
        .with_lora(Some(LoraConfig::new().with_rank(2)));
    config.surrogate.kl_beta = 0.1;
    let reward = PerRollout(|_: &Task, t: &Trajectory| f64::from(u8::from(t.row == 0)));
    let mut trainer = GrpoTrainer::new(
        load(source),
        Processor::from_pretrained(source).expect("processor"),
        common::text_tasks(1),
        reward,
        config,
    )
    .expect("grpo")
    .with_run_dir(run_dir, Some(source))
    .expect("run dir");
    trainer.train().expect("train")
}

#[test]
fn a_lora_grpo_run_checkpoints_its_adapters_and_resumes_to_the_same_metrics() {
    let dir = checkpoint();
    let runs = tempfile::tempdir().expect("temp");
    let (whole, stopped) = (runs.path().join("whole"), runs.path().join("stopped"));
    let records = grpo_lora_run(dir.path(), &whole, 3);
    // The reference is the base: KL 0 before the first step, then positive.
    let kl: Vec<f64> = records.iter().map(|r| r.get("kl").expect("kl")).collect();
    assert!(kl[0].abs() < 1e-6 && kl[2] > 0.0, "{kl:?}");
    let last = pixel_rl::checkpoint::latest_checkpoint(&whole)
        .expect("list")
        .expect("a checkpoint");
    assert!(last.join("adapter").join(ADAPTER_WEIGHTS_FILE).is_file());
    assert!(!last.join("model").exists() && !last.join("reference").exists());
    grpo_lora_run(dir.path(), &stopped, 1);
    grpo_lora_run(dir.path(), &stopped, 3);
    assert_eq!(
        read_jsonl(&whole.join("metrics.jsonl")).expect("whole"),
        read_jsonl(&stopped.join("metrics.jsonl")).expect("resumed")
    );
}

#[test]
fn an_older_checkpoint_without_lora_resumes_and_other_adapters_are_refused() {
    let dir = checkpoint();
    let runs = tempfile::tempdir().expect("temp");
    let (plain, adapted) = (runs.path().join("plain"), runs.path().join("lora"));
    let trainer = |config: SftConfig, run: &Path| {
        SftTrainer::new(load(dir.path()), needle_examples(dir.path()), config)
            .expect("trainer")
            .with_run_dir(run, Some(dir.path()))
    };
    // A run without adapters, its state.json rewritten as before the `lora` field existed.
    let mut t = trainer(config().with_lora(None), &plain).expect("run");
    t.train_step().expect("step");
    let ckpt = t.checkpoint().expect("checkpoint");
    drop(t);
    let state_path = ckpt.join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path).expect("state")).expect("json");
    let removed = state["config"]
        .as_object_mut()
        .expect("config")
        .remove("lora");
    assert_eq!(removed, Some(serde_json::Value::Null));
    std::fs::write(&state_path, serde_json::to_vec(&state).expect("json")).expect("write");
    assert_eq!(
        trainer(config().with_lora(None), &plain)
            .expect("resume")
            .step(),
        1
    );

    // A LoRA checkpoint is refused by a run with other adapters, and by a run without any.
    let mut t = trainer(config(), &adapted).expect("run");
    t.train_step().expect("step");
    t.checkpoint().expect("checkpoint");
    drop(t);
    let other = config().with_lora(Some(LoraConfig::new().with_rank(8)));
    for c in [other, config().with_lora(None)] {
        let err = trainer(c, &adapted).err().expect("refused").to_string();
        assert!(err.contains("another config"), "{err}");
    }
}
