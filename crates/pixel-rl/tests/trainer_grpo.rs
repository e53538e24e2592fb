//! The GRPO trainer end to end on the committed tiny checkpoint: it learns a rewarded answer, it drops
//! reward-uniform groups and refills from the data, it tops short buffers up from replay, and a run killed
//! with `kill -9` and resumed writes the same metrics as an uninterrupted run.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::tensor::activation::log_softmax;
use common::{checkpoint, short_rollout, text_tasks};
use pixel_agent::Trajectory;
use pixel_rl::config::GrpoConfig;
use pixel_rl::data::{EpochCursor, Task};
use pixel_rl::metrics::{MetricRecord, MetricSink, read_jsonl};
use pixel_rl::reward::{PerRollout, Reward};
use pixel_rl::trainer::GrpoTrainer;
use pixel_vlm::backend::CpuBackend as B;
use pixel_vlm::processor::Processor;
use pixel_vlm::{ForwardInput, Qwen25Vl};

type AB = Autodiff<B>;

/// Next-token log-probs of `model` after the rollout prompt of `task` (rendered by one 1-token rollout).
fn next_logprobs(model: &Qwen25Vl<B>, processor: &Processor, task: &Task) -> Vec<f32> {
    let mut engine = pixel_agent::LocalEngine::new(model, processor, 256);
    let out =
        pixel_agent::run_group(&mut engine, &task.query, 1, &short_rollout(1)).expect("rollout");
    let r = out[0].tokens.clone().expect("record");
    let n = r.len() - 1;
    let positions: Vec<i64> = (0..3).flat_map(|a| r.positions[a][..n].to_vec()).collect();
    let input = ForwardInput {
        input_ids: &r.token_ids[..n],
        batch: 1,
        positions: &positions,
        valid: None,
        generated: None,
        images: None,
        videos: None,
    };
    let hidden = model.forward_train(&input).expect("forward");
    let logits = model.logits(hidden.narrow(1, n - 1, 1));
    log_softmax(logits, 2)
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("f32")
}

/// A config for one text task, one update per buffer, answers of one token.
fn one_token_config(iterations: usize) -> GrpoConfig {
    GrpoConfig::demo(iterations)
        .with_queries_per_buffer(1)
        .with_updates_per_buffer(1)
        .with_micro_batch_rows(8)
        .with_learning_rate(3e-5)
        .with_min_lr_rate(1.0)
        .with_rollout(short_rollout(1))
}

#[test]
fn the_trainer_raises_the_rewarded_answers_share_above_0_9() {
    let dir = checkpoint();
    let processor = Processor::from_pretrained(dir.path()).expect("processor");
    let model = Qwen25Vl::<AB>::from_pretrained(dir.path(), &Default::default()).expect("model");
    let tasks = text_tasks(1);
    // The less likely of the two answers top-k 2 samples is the rewarded one.
    let lp = next_logprobs(&model.valid(), &processor, &tasks[0]);
    let mut order: Vec<u32> = (0..lp.len() as u32).collect();
    order.sort_by(|&a, &b| lp[b as usize].total_cmp(&lp[a as usize]));
    let (rewarded, other) = (order[1], order[0]);
    let share = |model: &Qwen25Vl<B>| {
        let lp = next_logprobs(model, &processor, &tasks[0]);
        let (a, b) = (lp[rewarded as usize].exp(), lp[other as usize].exp());
        a / (a + b)
    };
    let start = share(&model.valid());
    assert!(
        start <= 0.5,
        "the rewarded answer starts less likely: {start}"
    );

    let reward = PerRollout(move |_: &Task, t: &Trajectory| {
        f64::from(u8::from(t.turns[0].tokens.first() == Some(&rewarded)))
    });
    let mut trainer = GrpoTrainer::new(
        model,
        Processor::from_pretrained(dir.path()).expect("processor"),
        tasks.clone(),
        reward,
        one_token_config(60),
    )
    .expect("trainer");
    let mut end = start;
    let mut trained = 0;
    while trainer.iteration() < 60 && end <= 0.95 {
        let records = trainer.iterate().expect("iteration");
        if records[0].get("groups_trained") == Some(1.0) {
            trained += 1;
        }
        end = share(&trainer.model().valid());
    }
    eprintln!("rewarded share {start:.3} -> {end:.3} after {trained} trained buffers");
    assert!(
        trained >= 3,
        "{trained} trained buffers: too few to be a test"
    );
    assert!(
        end > 0.9,
        "the rewarded answer's share went from {start} to {end}"
    );
}

#[test]
fn uniform_groups_are_dropped_and_refilled_up_to_the_draw_limit() {
    let dir = checkpoint();
    let processor = Processor::from_pretrained(dir.path()).expect("processor");
    let model = Qwen25Vl::<AB>::from_pretrained(dir.path(), &Default::default()).expect("model");
    // Tasks 0-2 reward everything (uniform groups), tasks 3-5 reward one rollout of the group.
    let tasks = text_tasks(6);
    let reward = PerRollout(|task: &Task, t: &Trajectory| {
        let k: usize = task.id[1..].parse().expect("id");
        if k < 3 {
            1.0
        } else {
            f64::from(u8::from(t.row == 0))
        }
    });
    let config = GrpoConfig::demo(1)
        .with_group_size(4)
        .with_queries_per_buffer(2)
        .with_updates_per_buffer(1)
        .with_max_draw_factor(2.0)
        .with_rollout(short_rollout(1))
        .with_seed(11);
    let mut trainer =
        GrpoTrainer::new(model, processor, tasks, reward, config.clone()).expect("trainer");
    let record = trainer.iterate().expect("iteration").remove(0);

    // What the trainer must have done, from the same seeded order: draw until 2 non-uniform groups or 4
    // draws.
    let order = EpochCursor::permutation(6, config.seed, 0);
    let (mut drawn, mut kept, mut uniform) = (0, 0, 0);
    for &k in &order {
        if kept == 2 || drawn == 4 {
            break;
        }
        drawn += 1;
        if k < 3 { uniform += 1 } else { kept += 1 }
    }
    assert_eq!(
        record.get("groups_drawn"),
        Some(drawn as f64),
        "order {order:?}"
    );
    assert_eq!(record.get("groups_trained"), Some(kept as f64));
    assert_eq!(
        record.get("uniform_share"),
        Some(uniform as f64 / drawn as f64)
    );
    assert_eq!(record.get("groups_replayed"), Some(0.0));
}

/// Records the iteration each group was scored in (from [`Reward::begin_iteration`]).
struct IterationLog<R> {
    inner: R,
    now: std::sync::atomic::AtomicUsize,
    groups: std::sync::Mutex<Vec<usize>>,
}

impl<R: Reward> Reward for IterationLog<R> {
    fn score_group(
        &self,
        task: &Task,
        trajectories: &[Trajectory],
    ) -> pixel_rl::Result<pixel_rl::reward::GroupScore> {
        let now = self.now.load(std::sync::atomic::Ordering::SeqCst);
        self.groups.lock().expect("log").push(now);
        self.inner.score_group(task, trajectories)
    }

    fn begin_iteration(&self, iteration: usize) {
        self.now
            .store(iteration, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn the_reward_is_told_each_iteration_before_its_groups_are_scored() {
    let dir = checkpoint();
    let processor = Processor::from_pretrained(dir.path()).expect("processor");
    let model = Qwen25Vl::<AB>::from_pretrained(dir.path(), &Default::default()).expect("model");
    let log = IterationLog {
        inner: PerRollout(|_: &Task, t: &Trajectory| f64::from(u8::from(t.row == 0))),
        // Not 0: a trainer that never calls the hook leaves this in the log.
        now: std::sync::atomic::AtomicUsize::new(99),
        groups: std::sync::Mutex::new(Vec::new()),
    };
    let config = GrpoConfig::demo(3)
        .with_group_size(2)
        .with_queries_per_buffer(2)
        .with_updates_per_buffer(1)
        .with_rollout(short_rollout(1));
    let mut trainer =
        GrpoTrainer::new(model, processor, text_tasks(4), &log, config).expect("trainer");
    let mut drawn = Vec::new();
    for _ in 0..3 {
        let record = trainer.iterate().expect("iteration").remove(0);
        drawn.push(record.get("groups_drawn").expect("groups_drawn") as usize);
    }
    let groups = log.groups.lock().expect("log").clone();
    let expected: Vec<usize> = drawn
        .iter()
        .enumerate()
        .flat_map(|(k, &n)| std::iter::repeat_n(k, n))
        .collect();
    assert_eq!(groups, expected, "groups drawn per iteration {drawn:?}");
}

#[test]
fn a_short_buffer_is_topped_up_from_replay() {
    let dir = checkpoint();
    let processor = Processor::from_pretrained(dir.path()).expect("processor");
    let model = Qwen25Vl::<AB>::from_pretrained(dir.path(), &Default::default()).expect("model");
    // Iteration 1 rewards row 0 (informative); from then on every group is uniform.
    let tasks = text_tasks(4);
    let calls = std::cell::Cell::new(0usize);
    let reward = PerRollout(move |_: &Task, t: &Trajectory| {
        calls.set(calls.get() + 1);
        if calls.get() <= 8 {
            f64::from(u8::from(t.row == 0))
        } else {
            0.0
        }
    });
    let config = GrpoConfig::demo(2)
        .with_group_size(4)
        .with_queries_per_buffer(2)
        .with_updates_per_buffer(1)
        .with_max_draw_factor(1.0)
        .with_selective_replay(true)
        .with_rollout(short_rollout(1));
    let mut trainer = GrpoTrainer::new(model, processor, tasks, reward, config).expect("trainer");
    let first = trainer.iterate().expect("iteration 1").remove(0);
    assert_eq!(first.get("groups_trained"), Some(2.0));
    assert_eq!(first.get("groups_replayed"), Some(0.0));
    let second = trainer.iterate().expect("iteration 2").remove(0);
    assert_eq!(second.get("uniform_share"), Some(1.0));
    assert_eq!(second.get("groups_replayed"), Some(2.0), "{second:?}");
    assert!(second.get("loss").is_some_and(f64::is_finite));
}

// ---- kill -9 and resume ----

const CHILD_ENV: &str = "PIXEL_RL_TEST_RUN_DIR";
const CHILD_SOURCE_ENV: &str = "PIXEL_RL_TEST_SOURCE";

fn resume_config() -> GrpoConfig {
    GrpoConfig::demo(5)
        .with_group_size(4)
        .with_queries_per_buffer(2)
        .with_updates_per_buffer(2)
        .with_micro_batch_rows(2)
        .with_learning_rate(1e-3)
        .with_recompute_old_logprobs(true)
        .with_selective_replay(true)
        .with_rollout(short_rollout(6))
        .with_seed(5)
}

fn parity_reward() -> PerRollout<impl Fn(&Task, &Trajectory) -> f64> {
    PerRollout(|_: &Task, t: &Trajectory| {
        let tokens = &t.turns[0].tokens;
        f64::from(u8::from(tokens.first().is_some_and(|x| x % 2 == 0))) + 0.1 * tokens.len() as f64
    })
}

/// Slows the child down after its first records so the parent can kill it mid-run.
struct Slow;

impl MetricSink for Slow {
    fn record(&mut self, _: &MetricRecord) -> pixel_rl::Result<()> {
        std::thread::sleep(Duration::from_millis(150));
        Ok(())
    }
}

fn run(source: &Path, run_dir: &Path, slow: bool) {
    let processor = Processor::from_pretrained(source).expect("processor");
    let model = Qwen25Vl::<AB>::from_pretrained(source, &Default::default()).expect("model");
    let trainer = GrpoTrainer::new(
        model,
        processor,
        text_tasks(3),
        parity_reward(),
        resume_config(),
    )
    .expect("trainer");
    let trainer = if slow {
        trainer.with_sink(Slow)
    } else {
        trainer
    };
    let mut trainer = trainer
        .with_run_dir(run_dir, Some(source))
        .expect("run dir");
    trainer.train().expect("train");
}

#[test]
#[ignore = "the child process of a_run_killed_with_sigkill_resumes_to_the_same_metrics"]
fn child_grpo_run() {
    let (Ok(run_dir), Ok(source)) = (std::env::var(CHILD_ENV), std::env::var(CHILD_SOURCE_ENV))
    else {
        return;
    };
    run(Path::new(&source), Path::new(&run_dir), true);
}

#[test]
fn a_run_killed_with_sigkill_resumes_to_the_same_metrics() {
    let dir = checkpoint();
    let runs = tempfile::tempdir().expect("temp");
    let whole = runs.path().join("whole");
    let killed = runs.path().join("killed");
    run(dir.path(), &whole, false);

    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "child_grpo_run", "--ignored", "--nocapture"])
        .env(CHILD_ENV, &killed)
        .env(CHILD_SOURCE_ENV, dir.path())
        .env("PIXEL_PROGRESS", "0")
        .spawn()
        .expect("spawn the child run");
    let deadline = Instant::now() + Duration::from_secs(300);
    let target = killed.join(pixel_rl::checkpoint::checkpoint_name(2));
    while !target.exists() {
        assert!(
            Instant::now() < deadline,
            "the child wrote no second checkpoint"
        );
        assert!(
            child.try_wait().expect("poll").is_none(),
            "the child ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
    child.wait().expect("reap");
    let done = pixel_rl::checkpoint::list_checkpoints(&killed).expect("list");
    let last = done.last().expect("a checkpoint").0;
    assert!(last < 5, "killed mid-run, after checkpoint {last} of 5");

    run(dir.path(), &killed, false);
    let a = read_jsonl(&whole.join("metrics.jsonl")).expect("whole metrics");
    let b = read_jsonl(&killed.join("metrics.jsonl")).expect("resumed metrics");
    assert_eq!(a.len(), 10, "5 iterations x 2 updates");
    assert_eq!(
        a, b,
        "the resumed run's metrics equal the uninterrupted run's"
    );
    assert!(whole.join("plots/reward.png").is_file());
}

#[test]
fn the_k3_kl_against_the_frozen_reference_starts_at_zero_and_grows() {
    let dir = checkpoint();
    let processor = Processor::from_pretrained(dir.path()).expect("processor");
    let model = Qwen25Vl::<AB>::from_pretrained(dir.path(), &Default::default()).expect("model");
    let mut config = GrpoConfig::demo(6)
        .with_group_size(4)
        .with_queries_per_buffer(1)
        .with_updates_per_buffer(1)
        .with_max_draw_factor(4.0)
        .with_learning_rate(2e-3)
        .with_rollout(short_rollout(4));
    config.surrogate.kl_beta = 0.1;
    let row_zero = PerRollout(|_: &Task, t: &Trajectory| f64::from(u8::from(t.row == 0)));
    let mut trainer =
        GrpoTrainer::new(model, processor, text_tasks(2), row_zero, config).expect("trainer");
    let first = trainer.iterate().expect("iteration").remove(0);
    assert_eq!(
        first.get("kl"),
        Some(0.0),
        "the policy is the reference before any update"
    );
    let later = trainer.iterate().expect("iteration").remove(0);
    assert!(later.get("kl").is_some_and(|kl| kl > 0.0), "{later:?}");
}

#[test]
fn masked_truncated_rollouts_train_no_token() {
    let dir = checkpoint();
    let processor = Processor::from_pretrained(dir.path()).expect("processor");
    let model = Qwen25Vl::<AB>::from_pretrained(dir.path(), &Default::default()).expect("model");
    // One new token per turn: every rollout ends by running out of tokens.
    let config = one_token_config(1)
        .with_group_size(4)
        .with_mask_truncated(true);
    let mut trainer = GrpoTrainer::new(
        model,
        processor,
        text_tasks(2),
        parity_reward(),
        config.clone(),
    )
    .expect("trainer");
    let record = trainer.iterate().expect("iteration").remove(0);
    assert_eq!(record.get("truncated_share"), Some(1.0));
    assert_eq!(record.get("trained_tokens"), Some(0.0));
    assert_eq!(record.get("grad_norm"), Some(0.0));
}
