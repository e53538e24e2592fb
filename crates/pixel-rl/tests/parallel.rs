//! Data parallel on the CPU: two ranks (threads of this process, or two processes over loopback) against one
//! device with the same global batch. The gradients summed over the ranks equal the one-device gradient;
//! the SFT and GRPO trainers take the one-device step and their ranks hold identical parameters after it.
//!
//! `burn-collective`'s local server is one per process and backend, so the tests that join take a lock
//! (under `cargo test` they share a process; nextest runs each in its own).

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use common::{
    checkpoint, max_param_diff, needle_examples, params_by_path, short_rollout, text_tasks,
};
use pixel_agent::Trajectory;
use pixel_rl::config::{GrpoConfig, SftConfig};
use pixel_rl::data::Task;
use pixel_rl::metrics::MetricRecord;
use pixel_rl::optim::AdamWSettings;
use pixel_rl::parallel::{DataParallel, ProcessGroup, all_reduce_gradients};
use pixel_rl::reward::PerRollout;
use pixel_rl::sft::{SftExample, sft_loss};
use pixel_rl::trainer::{GrpoTrainer, SftTrainer};
use pixel_vlm::Qwen25Vl;
use pixel_vlm::backend::CpuBackend as B;
use pixel_vlm::lora::LoraConfig;
use pixel_vlm::processor::Processor;

type AB = Autodiff<B>;
type Params = std::collections::BTreeMap<String, Vec<f32>>;

static COLLECTIVE: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    COLLECTIVE.lock().unwrap_or_else(|e| e.into_inner())
}

fn load(dir: &Path) -> Qwen25Vl<AB> {
    Qwen25Vl::<AB>::from_pretrained(dir, &Default::default()).expect("model")
}

/// Runs `f(rank)` on two threads and returns their results by rank.
fn two_ranks<T: Send>(f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..2).map(|r| s.spawn(move || f(r))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("rank"))
            .collect()
    })
}

/// Gradients by parameter path.
fn grads_by_path(model: &Qwen25Vl<AB>, grads: &GradientsParams) -> Params {
    let mut out = Params::new();
    for (path, id, shape) in pixel_rl::checkpoint::parameter_paths(model) {
        let g = match shape.len() {
            1 => grads.get::<B, 1>(id).map(|t| t.into_data()),
            2 => grads.get::<B, 2>(id).map(|t| t.into_data()),
            3 => grads.get::<B, 3>(id).map(|t| t.into_data()),
            4 => grads.get::<B, 4>(id).map(|t| t.into_data()),
            5 => grads.get::<B, 5>(id).map(|t| t.into_data()),
            d => panic!("{path}: rank {d}"),
        };
        if let Some(g) = g {
            out.insert(path, g.convert::<f32>().to_vec().expect("f32"));
        }
    }
    out
}

/// The largest `|a - b|` relative to the largest `|a|` of the same tensor, over all tensors.
fn max_rel_diff(a: &Params, b: &Params) -> f32 {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    a.iter()
        .map(|(k, x)| {
            let scale = x.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12);
            let d = x
                .iter()
                .zip(&b[k])
                .map(|(p, q)| (p - q).abs())
                .fold(0.0, f32::max);
            d / scale
        })
        .fold(0.0, f32::max)
}

#[test]
fn reduced_gradients_of_two_thread_ranks_equal_the_one_device_gradient() {
    let _lock = serial();
    let dir = checkpoint();
    let examples = needle_examples(dir.path());
    let model = load(dir.path()).with_frozen_vision();
    let all: Vec<&SftExample> = examples.iter().collect();
    let normalizer: usize = all.iter().map(|e| e.trained_tokens()).sum();
    let loss = sft_loss(&model, &all, normalizer).expect("loss");
    let single = grads_by_path(
        &model,
        &GradientsParams::from_grads(loss.backward(), &model),
    );
    assert!(single.values().flatten().any(|g| g.abs() > 1e-3));

    // Each rank: its half of the batch, normalised by the whole batch's tokens; the sum over the ranks.
    let ranks = two_ranks(|rank| {
        let model = model.clone();
        let dp = DataParallel::threads(rank, 2).with_bucket_elements(50_000);
        let c = dp.join::<B>(&Default::default()).expect("join");
        let mine: Vec<&SftExample> = dp.shard(all.len()).map(|i| all[i]).collect();
        let loss = sft_loss(&model, &mine, normalizer).expect("loss");
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let own = grads_by_path(&model, &grads);
        let summed = all_reduce_gradients(&model, grads, &c).expect("all-reduce");
        (own, grads_by_path(&model, &summed))
    });
    for (rank, (own, summed)) in ranks.iter().enumerate() {
        let shard_gap = max_rel_diff(&single, own);
        let diff = max_rel_diff(&single, summed);
        eprintln!("rank {rank}: summed vs one device {diff:e} (its own shard: {shard_gap:e})");
        assert!(
            shard_gap > 0.05,
            "a shard's gradient alone is not the batch's"
        );
        assert!(diff < 1e-4, "rank {rank}: {diff}");
    }
    assert_eq!(ranks[0].1, ranks[1].1, "every rank gets the same sum");
}

/// SFT, one optimizer step over a global batch of 4 (2 per rank, micro-batches of 1), AdamW with a large
/// ε so the step is a smooth function of the gradient (with ε = 1e-8 the first step is ~lr·sign(g)).
fn sft_config() -> SftConfig {
    SftConfig::demo()
        .with_epochs(2)
        .with_batch_size(4)
        .with_micro_batch_size(1)
        .with_learning_rate(1e-3)
        .with_warmup_ratio(0.0)
        .with_adamw(AdamWSettings {
            epsilon: 1e-3,
            ..AdamWSettings::RECIPE
        })
}

fn assert_same_record(a: &MetricRecord, b: &MetricRecord, keys: &[&str]) {
    for key in keys {
        let (x, y) = (a.get(key).expect(key), b.get(key).expect(key));
        assert!(
            (x - y).abs() <= 1e-4 * x.abs().max(1.0),
            "{key}: one device {x}, data parallel {y}"
        );
    }
}

#[test]
fn sft_on_two_thread_ranks_takes_the_one_device_step() {
    sft_on_two_threads(sft_config(), "SFT");
}

#[test]
fn lora_sft_on_two_thread_ranks_takes_the_one_device_step() {
    // Only the adapters are trainable: only they are reduced, and the base stays where it was.
    let lora = LoraConfig::new().with_rank(4).with_alpha(8.0);
    sft_on_two_threads(sft_config().with_lora(Some(lora)), "LoRA SFT");
}

fn sft_on_two_threads(config: SftConfig, what: &str) {
    let _lock = serial();
    let dir = checkpoint();
    let examples = needle_examples(dir.path());
    let sft_config = || config.clone();
    let mut single =
        SftTrainer::new(load(dir.path()), examples.clone(), sft_config()).expect("sft");
    let start = params_by_path(&single.model().valid());
    let want: Vec<MetricRecord> = (0..2).map(|_| single.train_step().expect("step")).collect();
    let want_params = params_by_path(&single.model().valid());

    let ranks = two_ranks(|rank| {
        let mut t = SftTrainer::new(load(dir.path()), examples.clone(), sft_config())
            .expect("sft")
            .with_data_parallel(&DataParallel::threads(rank, 2))
            .expect("join");
        let records: Vec<MetricRecord> = (0..2).map(|_| t.train_step().expect("step")).collect();
        (records, params_by_path(&t.model().valid()))
    });
    for (records, params) in &ranks {
        for (a, b) in want.iter().zip(records) {
            assert_same_record(a, b, &["loss", "grad_norm", "trained_tokens", "examples"]);
        }
        let moved = max_param_diff(&start, params);
        let diff = max_param_diff(&want_params, params);
        eprintln!(
            "{what} 2 steps: params moved up to {moved:e}, one device vs data parallel {diff:e}"
        );
        assert!(moved > 1e-4, "the steps must move the parameters: {moved}");
        assert!(diff < 1e-5, "{diff}");
    }
    assert_eq!(
        ranks[0].1, ranks[1].1,
        "the ranks' parameters are identical"
    );
}

#[test]
fn rank_0_writes_the_run_folder_and_every_rank_resumes_from_it() {
    let _lock = serial();
    let dir = checkpoint();
    let examples = needle_examples(dir.path());
    let runs = tempfile::tempdir().expect("temp");
    let run = runs.path().join("run");
    // Two steps (2 epochs of one batch of 4), then the run extended to 3 epochs and resumed; a constant
    // learning rate, so the schedule does not depend on the run's length.
    let constant_lr = || sft_config().with_min_lr_rate(1.0);
    let ranks_run = |epochs: usize| {
        two_ranks(|rank| {
            let config = constant_lr().with_epochs(epochs).with_checkpoint_every(1);
            let mut t = SftTrainer::new(load(dir.path()), examples.clone(), config)
                .expect("sft")
                .with_data_parallel(&DataParallel::threads(rank, 2))
                .expect("join")
                .with_run_dir(&run, Some(dir.path()))
                .expect("run dir");
            let resumed_at = t.step();
            t.train().expect("train");
            (resumed_at, params_by_path(&t.model().valid()))
        })
    };
    let first = ranks_run(2);
    assert_eq!([first[0].0, first[1].0], [0, 0]);
    let lines = || {
        pixel_rl::metrics::read_jsonl(&run.join("metrics.jsonl"))
            .expect("metrics")
            .len()
    };
    assert_eq!(lines(), 2, "one line per step: rank 1 writes nothing");
    let second = ranks_run(3);
    assert_eq!(
        [second[0].0, second[1].0],
        [2, 2],
        "both ranks resume at step 2"
    );
    assert_eq!(lines(), 3);
    assert_eq!(
        second[0].1, second[1].1,
        "the ranks' parameters are identical"
    );
    let mut single =
        SftTrainer::new(load(dir.path()), examples, constant_lr().with_epochs(3)).expect("sft");
    single.train().expect("train");
    let diff = max_param_diff(&params_by_path(&single.model().valid()), &second[0].1);
    assert!(
        diff < 1e-5,
        "resumed data-parallel run vs one device: {diff}"
    );
}

/// Two text tasks, groups of 2, one update per buffer on the whole buffer; row 0 of each group rewarded.
fn grpo_config() -> GrpoConfig {
    GrpoConfig::demo(2)
        .with_group_size(2)
        .with_queries_per_buffer(2)
        .with_updates_per_buffer(1)
        .with_micro_batch_rows(4)
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
    dir: &Path,
) -> GrpoTrainer<AB, Vec<Task>, PerRollout<impl Fn(&Task, &Trajectory) -> f64>> {
    let reward = PerRollout(|_: &Task, t: &Trajectory| f64::from(u8::from(t.row == 0)));
    GrpoTrainer::new(
        load(dir),
        Processor::from_pretrained(dir).expect("processor"),
        text_tasks(4),
        reward,
        grpo_config(),
    )
    .expect("grpo")
}

#[test]
fn grpo_on_two_thread_ranks_takes_the_one_device_step() {
    let _lock = serial();
    let dir = checkpoint();
    let start = params_by_path(&load(dir.path()).valid());
    let mut single = grpo_trainer(dir.path());
    let want = single.train().expect("train");
    let want_params = params_by_path(&single.model().valid());
    let moved = max_param_diff(&start, &want_params);
    assert!(moved > 1e-4, "the steps must move the parameters: {moved}");
    assert!(
        want.iter()
            .all(|r| r.get("grad_norm").is_some_and(|g| g > 0.0))
    );

    let ranks = two_ranks(|rank| {
        let mut t = grpo_trainer(dir.path())
            .with_data_parallel(&DataParallel::threads(rank, 2))
            .expect("join");
        let records = t.train().expect("train");
        (records, params_by_path(&t.model().valid()))
    });
    for (records, params) in &ranks {
        assert_eq!(records.len(), want.len());
        for (a, b) in want.iter().zip(records) {
            assert_same_record(
                a,
                b,
                &["loss", "grad_norm", "trained_tokens", "entropy", "reward"],
            );
            // Each rank rolled out one group; the sums over the ranks are the one-device counts.
            assert_eq!(a.get("groups_drawn"), b.get("groups_drawn"));
            assert_eq!(a.get("response_length"), b.get("response_length"));
        }
        let diff = max_param_diff(&want_params, params);
        eprintln!(
            "GRPO 2 iterations: params moved up to {moved:e}, one device vs data parallel {diff:e}"
        );
        assert!(diff < 1e-5, "{diff}");
    }
    assert_eq!(
        ranks[0].1, ranks[1].1,
        "the ranks' parameters are identical"
    );
}

#[test]
fn ranks_that_start_from_different_weights_are_refused() {
    let _lock = serial();
    let dir = checkpoint();
    let examples = needle_examples(dir.path());
    let errors = two_ranks(|rank| {
        // Adapters seeded differently on each rank: their A matrices differ.
        let config =
            sft_config().with_lora(Some(LoraConfig::new().with_rank(2).with_seed(rank as u64)));
        match SftTrainer::new(load(dir.path()), examples.clone(), config)
            .expect("sft")
            .with_data_parallel(&DataParallel::threads(rank, 2))
        {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    });
    for e in errors {
        assert!(e.contains("differs between ranks"), "{e:?}");
    }
}

#[test]
fn joining_after_the_run_folder_is_refused() {
    let dir = checkpoint();
    let runs = tempfile::tempdir().expect("temp");
    let err = SftTrainer::new(load(dir.path()), needle_examples(dir.path()), sft_config())
        .expect("sft")
        .with_run_dir(runs.path(), None)
        .expect("run")
        .with_data_parallel(&DataParallel::threads(0, 1))
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("before with_run_dir"), "{err}");
}

const CHILD_ENV: &str = "PIXEL_RL_DP_CHILD";

/// One rank of [`sft_on_two_processes_over_loopback_takes_the_one_device_step`], run in a child process
/// (ignored otherwise): two SFT steps, then its parameters and metrics into the folder it was given.
#[test]
#[ignore = "a child of sft_on_two_processes_over_loopback_takes_the_one_device_step"]
fn dp_process_rank() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        eprintln!("not a child process: nothing to do");
        return;
    };
    let parts: Vec<&str> = spec.split('|').collect();
    let [rank, address, source, out] = parts[..] else {
        panic!("bad {CHILD_ENV}: {spec}");
    };
    let rank: usize = rank.parse().expect("rank");
    let source = Path::new(source);
    let group = ProcessGroup::new(address);
    let mut t = SftTrainer::new(load(source), needle_examples(source), sft_config())
        .expect("sft")
        .with_data_parallel(&DataParallel::processes(rank, 2, group))
        .expect("join");
    let records: Vec<MetricRecord> = (0..2).map(|_| t.train_step().expect("step")).collect();
    let out = Path::new(out).join(format!("rank{rank}"));
    t.model()
        .valid()
        .save_pretrained(&out, burn::tensor::FloatDType::F32)
        .expect("save");
    let losses: Vec<f64> = records
        .iter()
        .map(|r| r.get("loss").expect("loss"))
        .collect();
    std::fs::write(
        out.join("losses.json"),
        serde_json::to_vec(&losses).expect("json"),
    )
    .expect("write");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn sft_on_two_processes_over_loopback_takes_the_one_device_step() {
    let dir = checkpoint();
    let out = tempfile::tempdir().expect("temp");
    let address = format!("127.0.0.1:{}", free_port());
    let exe = std::env::current_exe().expect("test binary");
    let mut children: Vec<_> = (0..2)
        .map(|rank| {
            let spec = format!(
                "{rank}|{address}|{}|{}",
                dir.path().display(),
                out.path().display()
            );
            Command::new(&exe)
                .args(["--exact", "dp_process_rank", "--ignored", "--nocapture"])
                .env(CHILD_ENV, spec)
                .spawn()
                .expect("spawn a rank")
        })
        .collect();
    // The one-device run meanwhile.
    let examples = needle_examples(dir.path());
    let mut single = SftTrainer::new(load(dir.path()), examples, sft_config()).expect("sft");
    let losses: Vec<f64> = (0..2)
        .map(|_| {
            single
                .train_step()
                .expect("step")
                .get("loss")
                .expect("loss")
        })
        .collect();
    let want = params_by_path(&single.model().valid());
    let deadline = Instant::now() + Duration::from_secs(120);
    for child in &mut children {
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            if Instant::now() > deadline {
                child.kill().ok();
                panic!("a rank did not finish in 120 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "a rank failed: {status}");
    }
    let ranks: Vec<Params> = (0..2)
        .map(|r| {
            let path = out.path().join(format!("rank{r}"));
            let theirs: Vec<f64> =
                serde_json::from_slice(&std::fs::read(path.join("losses.json")).expect("losses"))
                    .expect("json");
            for (a, b) in losses.iter().zip(&theirs) {
                assert!((a - b).abs() <= 1e-4 * a.abs(), "loss {a} vs {b}");
            }
            params_by_path(
                &Qwen25Vl::<B>::from_pretrained(&path, &Default::default()).expect("load"),
            )
        })
        .collect();
    let diff = max_param_diff(&want, &ranks[0]);
    eprintln!("two processes, 2 SFT steps: one device vs rank 0 {diff:e}");
    assert!(diff < 1e-5, "{diff}");
    assert_eq!(
        ranks[0], ranks[1],
        "the processes' parameters are identical"
    );
}
