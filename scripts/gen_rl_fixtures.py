#!/usr/bin/env python3
"""Reference values for `pixel-rl`'s optimizer schedule and GRPO loss, recorded from transformers and TRL.

Regenerate (from the repository root; needs torch, transformers 5.24 and trl — `pip install trl`; recorded with
torch 2.15, transformers 5.24.0, trl 1.16.0):

    python scripts/gen_rl_fixtures.py

It writes two JSON files under `crates/pixel-rl/tests/fixtures/`:

- `optim.json`: for several (num_warmup_steps, num_training_steps, min_lr_rate) settings, the learning
  rate a torch optimizer actually uses at every optimizer step 0..num_training_steps+2 under transformers'
  `get_cosine_with_min_lr_schedule_with_warmup` (num_cycles 0.5, peak 1e-6; the LambdaLR's `get_last_lr()`
  before each `step()`), and the warmup step counts `TrainingArguments.get_warmup_steps` derives from a
  warmup ratio; three steps of `torch.optim.AdamW` (lr 1e-3, betas (0.9, 0.95), eps 1e-8, weight decay 0, and
  once more with weight decay 0.1) on a 4-element parameter from given gradients, some tiny (1e-5) so that
  eps matters; `torch.nn.utils.clip_grad_norm_` (max_norm 1.0, and 100.0) on two random gradients.
- `grpo_trl.json`: a small random batch (8 completions in 2 groups of 4, 12 completion tokens, right padding
  plus masked tool-observation spans, one fully masked row), its rewards (one drawn at random), the group advantages with and
  without the std scaling (TRL's formula with its `nanstd`, i.e. Bessel-corrected), and for several cases
  (loss_type "dapo"/"grpo", beta 0/0.04, one or two micro-batches) the loss TRL's `GRPOTrainer._compute_loss`
  returns per micro-batch, the clip-ratio and KL metrics it logs per micro-batch, and the gradient of the
  summed micro-batch losses with respect to the per-token log-probs. `_compute_loss` is called unbound on a
  stand-in object holding the attributes it reads, with `_get_per_token_logps_and_entropies` returning the
  recorded log-probs (epsilon_low 0.2, epsilon_high 0.35, token-level importance sampling, single process).
"""

import json
import os
import tempfile
from collections import defaultdict
from types import SimpleNamespace

import torch
import transformers
import trl
from transformers import TrainingArguments, get_cosine_with_min_lr_schedule_with_warmup
from trl import GRPOTrainer
from trl.trainer.utils import nanstd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "crates/pixel-rl/tests/fixtures")

PEAK = 1e-6
SCHEDULES = [(3, 100, 0.5), (10, 100, 0.0), (0, 20, 0.5), (5, 5, 0.5), (2, 7, 0.25), (1, 1, 0.0), (4, 30, 0.1)]
WARMUP_RATIOS = [(0.03, 100), (0.03, 50), (0.1, 30), (0.1, 7), (0.03, 1000), (0.1, 100), (0.03, 1), (0.07, 100)]

EPS_LOW, EPS_HIGH = 0.2, 0.35
B, S, GROUP = 8, 12, 4


def schedules():
    out = []
    for warmup, total, min_rate in SCHEDULES:
        param = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([param], lr=PEAK)
        sched = get_cosine_with_min_lr_schedule_with_warmup(
            opt, num_warmup_steps=warmup, num_training_steps=total, num_cycles=0.5, min_lr_rate=min_rate
        )
        lrs = []
        for _ in range(total + 3):
            lrs.append(sched.get_last_lr()[0])
            opt.step()
            sched.step()
        out.append({"warmup": warmup, "total": total, "min_lr_rate": min_rate, "peak": PEAK, "lrs": lrs})
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for ratio, total in WARMUP_RATIOS:
            args = TrainingArguments(output_dir=tmp, warmup_steps=ratio, report_to=[])
            ratios.append({"ratio": ratio, "total": total, "warmup": args.get_warmup_steps(total)})
    return {"schedules": out, "warmup_from_ratio": ratios, "adamw": adamw(), "clip": clip()}


ADAMW_START = [0.5, -1.0, 0.25, 2.0]
ADAMW_GRADS = [[1.0, -2.0, 1e-5, 0.0], [0.5, 3.0, -1e-5, 1e-5], [-1.0, 0.1, 2e-5, -0.3]]


def adamw():
    out = []
    for wd in [0.0, 0.1]:
        param = torch.nn.Parameter(torch.tensor(ADAMW_START))
        opt = torch.optim.AdamW([param], lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=wd)
        params = []
        for g in ADAMW_GRADS:
            param.grad = torch.tensor(g)
            opt.step()
            params.append(param.detach().tolist())
        out.append({"lr": 1e-3, "weight_decay": wd, "start": ADAMW_START, "grads": ADAMW_GRADS, "params": params})
    return out


def clip():
    g = torch.Generator().manual_seed(3)
    out = []
    for max_norm in [1.0, 100.0]:
        a = torch.nn.Parameter(torch.zeros(3))
        b = torch.nn.Parameter(torch.zeros(2, 5))
        a.grad = torch.randn(3, generator=g)
        b.grad = torch.randn(2, 5, generator=g)
        before = {"a": a.grad.tolist(), "b": b.grad.tolist()}
        norm = torch.nn.utils.clip_grad_norm_([a, b], max_norm)
        out.append({"max_norm": max_norm, "grads": before, "norm": norm.item(),
                    "clipped": {"a": a.grad.tolist(), "b": b.grad.tolist()}})
    return out


class Accelerator:
    num_processes = 1

    def gather(self, x):
        return x

    def gather_for_metrics(self, x):
        return x

    def reduce(self, x, reduction="sum"):
        return x


def trl_loss(loss_type, beta, ga, logp, old, ref, mask, adv, num_items):
    """One call of TRL's `_compute_loss` on a micro-batch; returns (loss, metrics)."""
    b, s = logp.shape
    metrics = {"train": defaultdict(list)}
    fake = SimpleNamespace(
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level="token",
        beta=beta,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=ga),
        loss_type=loss_type,
        epsilon_low=EPS_LOW,
        epsilon_high=EPS_HIGH,
        use_vllm=False,
        vllm_importance_sampling_correction=False,
        model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=ga,
        accelerator=Accelerator(),
        _entropy_bonus_enabled=False,
        aux_loss_enabled=False,
        _metrics=metrics,
        max_completion_length=s,
    )
    fake._get_per_token_logps_and_entropies = lambda *a, **k: (logp, torch.zeros_like(logp), None)
    inputs = {
        "prompt_ids": torch.zeros(b, 1, dtype=torch.long),
        "prompt_mask": torch.ones(b, 1, dtype=torch.long),
        "completion_ids": torch.zeros(b, s, dtype=torch.long),
        "completion_mask": mask,
        "advantages": adv,
        "old_per_token_logps": old,
        "num_items_in_batch": num_items,
    }
    if beta != 0.0:
        inputs["ref_per_token_logps"] = ref
    loss = GRPOTrainer._compute_loss(fake, None, inputs)
    m = metrics["train"]
    return loss, {
        "clip_low": m["clip_ratio/low_mean"][0],
        "clip_high": m["clip_ratio/high_mean"][0],
        "kl": m["kl"][0] if "kl" in m else None,
    }


def grpo():
    g = torch.Generator().manual_seed(7)
    rewards = torch.tensor([1.0, 0.0, 1.05, 0.0, 0.3, 0.3, 1.3, 0.0], dtype=torch.float32)
    rewards[3] = torch.rand(1, generator=g).item()
    grouped = rewards.view(-1, GROUP)
    mean = grouped.mean(dim=1).repeat_interleave(GROUP)
    std = nanstd(grouped, dim=1).repeat_interleave(GROUP)
    adv_plain = rewards - mean
    adv_std = adv_plain / (std + 1e-4)

    logp = -3.0 * torch.rand(B, S, generator=g)
    old = logp + 0.35 * torch.randn(B, S, generator=g)
    ref = logp + 0.2 * torch.randn(B, S, generator=g)
    lengths = [12, 9, 5, 12, 7, 1, 10, 0]
    mask = torch.zeros(B, S, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    mask[0, 3:6] = 0  # a tool observation inside the completion
    mask[6, 2:4] = 0

    cases = []
    for loss_type, beta, micro in [("dapo", 0.0, 1), ("dapo", 0.04, 2), ("grpo", 0.04, 2), ("grpo", 0.0, 1)]:
        leaf = logp.clone().requires_grad_(True)
        rows = B // micro
        num_items = mask.sum()
        losses, stats = [], []
        total = None
        for k in range(micro):
            sl = slice(k * rows, (k + 1) * rows)
            loss, m = trl_loss(loss_type, beta, micro, leaf[sl], old[sl], ref[sl], mask[sl], adv_std[sl], num_items)
            losses.append(loss.item())
            stats.append(m)
            total = loss if total is None else total + loss
        total.backward()
        cases.append(
            {
                "loss_type": loss_type,
                "beta": beta,
                "micro_batches": micro,
                "losses": losses,
                "metrics": stats,
                "grad": leaf.grad.tolist(),
            }
        )
    return {
        "epsilon_low": EPS_LOW,
        "epsilon_high": EPS_HIGH,
        "group_size": GROUP,
        "rewards": rewards.tolist(),
        "advantages_std": adv_std.tolist(),
        "advantages_plain": adv_plain.tolist(),
        "logp": logp.tolist(),
        "old_logp": old.tolist(),
        "ref_logp": ref.tolist(),
        "mask": mask.tolist(),
        "cases": cases,
    }


def main():
    os.makedirs(OUT, exist_ok=True)
    versions = {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__}
    for name, data in [("optim.json", schedules()), ("grpo_trl.json", grpo())]:
        data["generated_by"] = "scripts/gen_rl_fixtures.py"
        data["versions"] = versions
        with open(os.path.join(OUT, name), "w") as f:
            json.dump(data, f, separators=(",", ":"))
            f.write("\n")
        print("wrote", name)


if __name__ == "__main__":
    main()
