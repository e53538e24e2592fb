#!/usr/bin/env python3
"""TRL's SFTTrainer and GRPOTrainer on CPU, on the checkpoint folder and token ids that the Rust trainer benchmark
(`crates/pixel-rl/benches/trainers.rs`) wrote: the reference half of `scripts/bench_trainers.sh`.

A benchmark, not a test (CI never runs it). Usually run through the driver, which prepares the folder, alternates
burn and TRL runs and prints the ratios:

    scripts/bench_trainers.sh                      # see its header

By hand (after `cargo bench -p pixel-rl --bench trainers -- --config a --prepare`, which writes
target/bench-trainers/a):

    python scripts/bench_trainers_reference.py --dir target/bench-trainers/a --config a --what sft
    python scripts/bench_trainers_reference.py --dir target/bench-trainers/a --config a --what grpo
    python scripts/bench_trainers_reference.py --summarize results.jsonl     # the ratio table of a driver run

Needs torch 2.15, transformers 5.24, trl 1.16, datasets (the versions measured; others may differ in defaults).
Prints one JSON line per measurement on stdout, in the Rust benchmark's format; progress on stderr.

Model: `Qwen2_5_VLForConditionalGeneration.from_pretrained(DIR/model)`, f32, sdpa attention, the same weights the
Rust side loads; tokenizer: `AutoTokenizer` of the same folder. Threads: `torch.set_num_threads(--threads)`.

SFT (`--what sft`): `SFTTrainer` on a pre-tokenized dataset: `input_ids` and `assistant_masks` = the Rust
examples' ids and loss masks (`sft_data.json`, the first --sft-batch of them), so TRL trains exactly the same
tokens; `per_device_train_batch_size` = --sft-micro (1: no padding) and `gradient_accumulation_steps` =
batch / micro, so one optimizer step sees every example once, as the Rust side. Settings as `SftConfig::demo()`
where they exist in TRL: AdamW betas (0.9, 0.95), eps 1e-8, weight decay 0, lr 3e-4 with 5 % warmup and cosine,
global clipping at 1.0; vision tower frozen. TRL defaults turned off for a like-for-like f32 run:
`gradient_checkpointing` (TRL's default True recomputes activations), `bf16` (TRL's default on CPU), truncation
(`max_length=None`). Step time: between consecutive `on_step_end` callbacks (data collation, forward/backward of
each micro-batch, clipping, AdamW, scheduler, TRL's per-step metrics).

GRPO (`--what grpo`): `GRPOTrainer` with `use_vllm=False` (transformers `generate` with its KV cache), the prompt
of `grpo_prompt.json` given as text (decoded from the Rust prompt's ids; the script checks that TRL's
tokenization gives the same ids), `num_generations` = `per_device_train_batch_size` = --group,
`gradient_accumulation_steps` 1, `num_iterations` 1 (on-policy: no old-log-prob pass), `beta` 0 (no reference
model), `max_completion_length` --new-tokens, temperature 1, top-p 1, top-k 0, epsilon 0.2 / epsilon_high 0.35,
`loss_type="dapo"` (token mean over the batch), `scale_rewards="none"`, constant lr 1e-4, AdamW betas
(0.9, 0.95), clipping 1.0, `gradient_checkpointing` and `bf16` off. Reward: `(characters of the completion mod 7)
/ 7`, the Rust side's formula. Rollout time: `_generate_and_score_completions` (tokenize, generate, decode,
reward, advantages); update: the rest of the step.
"""

import argparse
import json
import os
import sys
import tempfile
import time


def median(v):
    s = sorted(v)
    n = len(s)
    if n == 0:
        return float("nan")
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def r4(v):
    return [round(x, 4) for x in v]


def load(args, freeze_vision):
    import torch
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model_dir = os.path.join(args.dir, "model")
    t = time.perf_counter()
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32,
                                                               attn_implementation="sdpa")
    if freeze_vision:
        model.model.visual.requires_grad_(False)
    tok = AutoTokenizer.from_pretrained(model_dir)
    params = sum(p.numel() for p in model.parameters())
    print(f"loaded {params} parameters in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    return model, tok, params


def step_timer(warmup):
    """A TrainerCallback recording the time between consecutive optimizer steps (and the losses logged)."""
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def __init__(self):
            self.times, self.cpu, self.losses, self.last, self.last_cpu = [], [], [], None, None

        def on_train_begin(self, args, state, control, **kw):
            self.last, self.last_cpu = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kw):
            now, cpu = time.perf_counter(), time.process_time()
            self.times.append(now - self.last)
            self.cpu.append(cpu - self.last_cpu)
            self.last, self.last_cpu = now, cpu
            print(f"TRL step {len(self.times) - 1}: {self.times[-1]:.3f} s (cpu {self.cpu[-1]:.2f} s)", file=sys.stderr)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.losses.append(logs["loss"])

        def timed(self):
            return self.times[warmup:]

        def timed_cpu(self):
            return self.cpu[warmup:]

    return Timer()


def common_args(out, steps):
    return dict(output_dir=out, max_steps=steps, logging_steps=1, save_strategy="no", report_to="none",
                use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False, dataloader_num_workers=0,
                seed=0, disable_tqdm=True, adam_beta1=0.9, adam_beta2=0.95, adam_epsilon=1e-8, weight_decay=0.0,
                max_grad_norm=1.0)


def bench_sft(args):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    with open(os.path.join(args.dir, "sft_data.json")) as f:
        examples = json.load(f)["examples"][: args.sft_batch]
    batch = len(examples)
    if batch % args.sft_micro:
        sys.exit(f"--sft-batch {batch} is not a multiple of --sft-micro {args.sft_micro}")
    tokens = sum(len(e["input_ids"]) for e in examples)
    trained = sum(sum(e["loss_mask"]) for e in examples)
    model, tok, params = load(args, freeze_vision=True)
    ds = Dataset.from_list([{"input_ids": e["input_ids"], "assistant_masks": e["loss_mask"]} for e in examples])
    steps = args.warmup + args.steps
    with tempfile.TemporaryDirectory() as out:
        cfg = SFTConfig(per_device_train_batch_size=args.sft_micro, gradient_accumulation_steps=batch // args.sft_micro,
                        learning_rate=3e-4, lr_scheduler_type="cosine", warmup_steps=0.05, max_length=None,
                        packing=False, padding_free=False, **common_args(out, steps))
        trainer = SFTTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok)
        # The labels TRL built must train exactly the Rust side's tokens.
        built = sum(sum(1 for x in row["labels"][1:] if x != -100) for row in trainer.train_dataset)
        timer = step_timer(args.warmup)
        trainer.add_callback(timer)
        trainer.train()
    times = timer.timed()
    step = median(times)
    print(json.dumps(dict(impl="trl", what="sft", config=args.config, params=params, batch=batch,
                          micro_batch=args.sft_micro, tokens_per_step=tokens, trained_tokens_per_step=trained,
                          trl_trained_tokens_per_step=built, step_s=round(step, 4), steps_s=r4(times),
                          cpu_s=r4(timer.timed_cpu()),
                          tokens_per_s=round(tokens / step, 1), trained_tokens_per_s=round(trained / step, 1),
                          loss=r4(timer.losses[args.warmup:]))), flush=True)


def bench_grpo(args):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    with open(os.path.join(args.dir, "grpo_prompt.json")) as f:
        prompt_ids = json.load(f)["prompt_ids"]
    model, tok, params = load(args, freeze_vision=False)
    text = tok.decode(prompt_ids, skip_special_tokens=False)
    same_ids = tok(text)["input_ids"] == prompt_ids
    if not same_ids:
        print("warning: TRL's tokenization of the prompt differs from the Rust prompt ids", file=sys.stderr)
    steps = args.warmup + args.steps
    ds = Dataset.from_list([{"prompt": text}] * steps)

    def reward(completions, **kw):
        return [(len(c) % 7) / 7.0 for c in completions]

    rollout_times, lengths = [], []
    with tempfile.TemporaryDirectory() as out:
        cfg = GRPOConfig(per_device_train_batch_size=args.group, num_generations=args.group,
                         gradient_accumulation_steps=1, num_iterations=1, beta=0.0,
                         max_completion_length=args.new_tokens, temperature=1.0, top_p=1.0, top_k=0,
                         epsilon=0.2, epsilon_high=0.35, loss_type="dapo", scale_rewards="none",
                         learning_rate=1e-4, lr_scheduler_type="constant", use_vllm=False, log_completions=False,
                         shuffle_dataset=False, **common_args(out, steps))
        trainer = GRPOTrainer(model=model, reward_funcs=reward, args=cfg, train_dataset=ds, processing_class=tok)
        original = trainer._generate_and_score_completions

        def timed(*a, **kw):
            t = time.perf_counter()
            res = original(*a, **kw)
            rollout_times.append(time.perf_counter() - t)
            lengths.append(float(res["completion_mask"].sum(dim=1).float().mean()))
            print(f"TRL rollout {len(rollout_times) - 1}: {rollout_times[-1]:.3f} s, "
                  f"mean completion {lengths[-1]:.1f} tokens, prompt {res['prompt_ids'].shape[1]} tokens",
                  file=sys.stderr)
            return res

        trainer._generate_and_score_completions = timed
        timer = step_timer(args.warmup)
        trainer.add_callback(timer)
        trainer.train()
    total = timer.timed()
    rollout = rollout_times[args.warmup:]
    update = [a - b for a, b in zip(total, rollout)]
    print(json.dumps(dict(impl="trl", what="grpo", config=args.config, params=params, group=args.group,
                          max_new_tokens=args.new_tokens, prompt_tokens=len(prompt_ids), prompt_ids_match=same_ids,
                          step_s=round(median(total), 4), rollout_s=round(median(rollout), 4),
                          update_s=round(median(update), 4), steps_s=r4(total), cpu_s=r4(timer.timed_cpu()),
                          rollouts_s=r4(rollout),
                          updates_s=r4(update), mean_completion_tokens=r4(lengths[args.warmup:]))), flush=True)


def summarize(path):
    """The ratio table of a driver run: TRL time / burn time per config, measurement and round (> 1: burn faster)."""
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith('{"'):
                rows.append(json.loads(line))
    keys = sorted({(r["config"], r["what"]) for r in rows}, key=lambda k: (k[0], k[1] != "sft"))
    print("| config | what | impl | round | step (s) | CPU s/step | rollout (s) | update (s) | tokens/s (trained) | "
          "load 1-min before-after |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    summary = []
    for config, what in keys:
        sel = [r for r in rows if r["config"] == config and r["what"] == what]
        for r in sel:
            rate = (f"{r['tokens_per_s']:.0f} ({r['trained_tokens_per_s']:.0f})" if what == "sft" else "-")
            ro = f"{r['rollout_s']:.3f}" if "rollout_s" in r else "-"
            up = f"{r['update_s']:.3f}" if "update_s" in r else "-"
            load = f"{r.get('load_before', float('nan')):.2f}-{r.get('load_after', float('nan')):.2f}"
            cpu = f"{median(r['cpu_s']):.2f}" if r.get("cpu_s") else "-"
            print(f"| {config} | {what} | {r['impl']} | {r.get('round', '-')} | {r['step_s']:.3f} | {cpu} | {ro} | "
                  f"{up} | {rate} | {load} |")
        burn = [r["step_s"] for r in sel if r["impl"].startswith("burn")]
        trl = [r["step_s"] for r in sel if r["impl"] == "trl"]
        if burn and trl:
            line = (f"{config} {what}: TRL {median(trl):.3f} s / burn {median(burn):.3f} s per step = "
                    f"{median(trl) / median(burn):.2f}x TRL (median over rounds; per round: "
                    + ", ".join(f"{t / b:.2f}x" for t, b in zip(trl, burn)) + ")")
            if what == "grpo":
                bro = median([r["rollout_s"] for r in sel if r["impl"].startswith("burn")])
                tro = median([r["rollout_s"] for r in sel if r["impl"] == "trl"])
                bup = median([r["update_s"] for r in sel if r["impl"].startswith("burn")])
                tup = median([r["update_s"] for r in sel if r["impl"] == "trl"])
                line += f"; rollout {tro / bro:.2f}x, update {tup / bup:.2f}x"
            summary.append(line)
    print()
    for line in summary:
        print(line)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", help="the prepared folder of one config (DIR/<config>)")
    ap.add_argument("--config", default="a")
    ap.add_argument("--what", default="sft", choices=["sft", "grpo"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sft-batch", type=int, default=None, help="examples per step (default 8 for a, 1 for b)")
    ap.add_argument("--sft-micro", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 5 for a, 1 for b)")
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--summarize", metavar="JSONL", help="print the ratio table of a driver run and exit")
    args = ap.parse_args()
    if args.summarize:
        summarize(args.summarize)
        return
    if not args.dir:
        ap.error("--dir is required")
    if args.sft_batch is None:
        args.sft_batch = 8 if args.config == "a" else 1
    if args.steps is None:
        args.steps = 5 if args.config == "a" else 1
    if args.what == "sft":
        bench_sft(args)
    else:
        bench_grpo(args)


if __name__ == "__main__":
    main()
