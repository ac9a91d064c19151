"""Stage 0: train the reference policy pi_ref by supervised learning on correct solutions.

    python train_sft.py                      # ~4 minutes on a 2-core CPU
    python train_sft.py --run-dir runs/a --seed 1

Reads nothing; writes RUN_DIR/sft.pt (+ sft.json, its config), RUN_DIR/results.json["sft"] and
RUN_DIR/metrics.jsonl. The loss is the mean cross-entropy over solution tokens only (the prompt
is given, not predicted), on a fresh stream of training problems (no epochs, no repeats).
"""

from __future__ import annotations

import argparse
import math
import random
import time
from pathlib import Path

import torch

from artifacts import load_policy_file, open_stage
from common import (adam_step, add_model_args, add_run_args, check_task_args, fraction,
                    friendly_errors, log_interval, model_from_args, parse_with_preset, positive,
                    progress)
from data import EOT_ID, TaskConfig, TrainProblems, encode
from evaluation import splits_table
from model import autocast
import parallel

TASK = TaskConfig()  # the defaults of the task flags
# The flags that change what sft.pt holds (its provenance, artifacts.made_by).
MADE_BY = ("seed", "min_steps", "max_steps", "ood_steps", "fuse_prob", "n_layer", "n_embd",
           "n_head", "steps", "batch_size", "lr", "warmup", "decay_frac", "weight_decay",
           "compile")


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    g = p.add_argument_group("run")
    g.add_argument("--run-dir", default="runs/default", help="folder for checkpoints and results")
    g.add_argument("--seed", type=int, default=0, help="one seed for data, init and sampling")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (GPU)")
    add_run_args(g)
    g = p.add_argument_group("task (data.TaskConfig)")
    g.add_argument("--min-steps", type=int, default=TASK.min_steps,
                   help=f"fewest operations per problem ({TASK.min_steps})")
    g.add_argument("--max-steps", type=int, default=TASK.max_steps,
                   help=f"most operations per problem ({TASK.max_steps})")
    g.add_argument("--ood-steps", type=int, default=TASK.ood_steps,
                   help=f"operations in the OOD split ({TASK.ood_steps})")
    g.add_argument("--fuse-prob", type=float, default=TASK.fuse_prob,
                   help="chance that a demonstration writes two additions in a row on one line "
                   f"({TASK.fuse_prob}; 0 gives the full solution every time)")
    add_model_args(p)
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, default=1200, help="optimizer steps (1200)")
    g.add_argument("--batch-size", type=int, default=64, help="problems per step (64)")
    g.add_argument("--lr", type=float, default=3e-3, help="peak AdamW learning rate (3e-3)")
    g.add_argument("--warmup", type=int, default=100, help="linear warm-up steps")
    g.add_argument("--decay-frac", type=float, default=0.25,
                   help="fraction of the steps spent decaying the learning rate")
    g.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay")
    g = p.add_argument_group("evaluation and logging")
    g.add_argument("--eval-n", type=int, default=500, help="problems per evaluation split")
    g.add_argument("--show-failures", type=int, default=3, help="wrong solutions to print")
    g.add_argument("--evaluate", metavar="CHECKPOINT", default=None,
                   help="train nothing: evaluate a saved policy (sft.pt or actor_R.pt) on its "
                   "run's splits and print the table; writes no file")
    g.add_argument("--log-every", type=int, default=100, help="steps between log lines")
    args = parse_with_preset(p, argv, "model", "sft")
    check_args(args)
    return args


def check_args(args) -> None:
    """Every numeric flag finite and in range, and the longest problem inside the model."""
    for name in ("steps", "batch_size", "eval_n", "n_layer", "n_embd", "n_head", "log_every",
                 "lr"):
        positive(name.replace("_", "-"), getattr(args, name))
    for name in ("warmup", "weight_decay", "show_failures"):
        positive(name.replace("_", "-"), getattr(args, name), allow_zero=True)
    fraction("decay-frac", args.decay_frac)
    check_task_args(args)


def batch(problems, device, rng: random.Random, fuse_prob: float):
    """(idx, targets, loss_mask), right-padded with <|endoftext|>; the mask is 1 on the tokens
    the model must predict: the solution (a demonstration, data.Problem.demonstration) and its
    closing <|endoftext|>, never the prompt."""
    rows = [(encode(p.prompt), encode(p.demonstration(rng, fuse_prob)) + [EOT_ID])
            for p in problems]
    T = max(len(a) + len(b) for a, b in rows)
    idx = torch.full((len(rows), T), EOT_ID, dtype=torch.long)
    mask = torch.zeros(len(rows), T)
    for i, (a, b) in enumerate(rows):
        idx[i, :len(a) + len(b)] = torch.tensor(a + b)
        mask[i, len(a) - 1:len(a) + len(b) - 1] = 1  # position t predicts token t + 1
    return idx[:, :-1].to(device), idx[:, 1:].to(device), mask[:, :-1].to(device)


def rank_loss(model, idx, targets, mask) -> torch.Tensor:
    """The mean cross-entropy over the masked tokens of a batch; under torchrun, over this
    rank's rows of it (parallel.batch_share), weighted for DDP by tokens (parallel.share)."""
    if parallel.world() == 1:
        return model(idx, targets, mask)[1]
    rows, n = parallel.batch_share(list(range(idx.shape[0])))
    _, loss = model(idx[rows], targets[rows], mask[rows])
    return parallel.share(loss, int(mask[rows].sum()) if n else 0, int(mask.sum()))


def lr_at(step: int, args) -> float:
    """Warm-up, stable, decay: linear warm-up, the peak rate held (a long phase at a high rate
    is what lets the small model "get" carrying), then a cosine decay to 10 % of the peak over
    the last --decay-frac of the steps."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    start = args.steps * (1 - args.decay_frac)
    if step < start:
        return args.lr
    frac = (step - start) / max(1, args.steps - start)
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def evaluate_all(model, cfg: TaskConfig, data_seed: int, args, device, label: str) -> dict:
    """Greedy and sampled (temperature 1) accuracy on val, test and OOD; prints the table."""
    gen = torch.Generator(device=device).manual_seed(data_seed + 1)
    return splits_table(model, cfg, args.eval_n, data_seed, gen, label, args.show_failures)


def evaluate_checkpoint(args, device) -> dict:
    """--evaluate: a saved policy on the splits of the run that trained it; writes nothing."""
    path = Path(args.evaluate)
    model, cfg, data_seed = load_policy_file(path, device)  # the run's task, not these flags
    return evaluate_all(model, cfg, data_seed, args, device, args.evaluate)


def train(model, args, cfg: TaskConfig, device, run_dir: Path) -> tuple[float, int]:
    """Supervised next-token training on a fresh stream of demonstrations; returns (seconds,
    tokens)."""
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95),
                            weight_decay=args.weight_decay, fused=device.type == "cuda")
    ddp = parallel.data_parallel(torch.compile(model) if args.compile else model)
    problems = TrainProblems(args.seed, cfg)
    t0, tokens, loss_sum = time.time(), 0, torch.zeros((), device=device)
    for step in progress(range(args.steps), desc="sft", unit="step"):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args)
        idx, targets, mask = batch(problems.take(step * args.batch_size, args.batch_size),
                                   device, random.Random(f"demo:{args.seed}:{step}"),
                                   cfg.fuse_prob)
        tokens += idx.numel()
        with autocast(device):
            loss = ddp(rank_loss, idx, targets, mask)
        adam_step(model, opt, loss)
        loss_sum += loss.detach()
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            n = (step % args.log_every) + 1
            avg = parallel.mean_of(loss_sum).item() / n  # one host sync per interval
            loss_sum.zero_()
            dt = time.time() - t0
            log_interval(run_dir, {"stage": "sft", "step": step + 1, "loss": avg,
                                   "lr": lr_at(step, args), "tok_s": tokens / dt}, avg,
                         "the SFT loss", "lower --lr",
                         f"step {step + 1}/{args.steps} | avg loss {avg:.4f} | lr "
                         f"{lr_at(step, args):.2e} | {dt:.0f} s | {tokens / dt:,.0f} tok/s")
    return time.time() - t0, tokens


def main(argv=None):
    args = get_args(argv)
    if args.evaluate:
        return evaluate_checkpoint(args, parallel.setup(args.device))
    stage = open_stage(args, "sft", Path(args.run_dir) / "sft.pt", must_exist=False)
    done = stage.reusable("policy checkpoint", MADE_BY, [], eval_n=args.eval_n)
    if done is not None:
        return done
    device = stage.device
    cfg = TaskConfig(min_steps=args.min_steps, max_steps=args.max_steps,
                     ood_steps=args.ood_steps, fuse_prob=args.fuse_prob)
    torch.manual_seed(args.seed)
    model = model_from_args(args, device)
    print(f"pi_ref: {model.num_params() / 1e6:.2f}M parameters on {device}; task {cfg}")
    train_time, tokens = train(model, args, cfg, device, stage.run_dir)
    stage.save(model, args.steps, cfg, args.seed)
    print(f"saved {stage.out} after {train_time:.0f} s of training")
    model.eval()
    record = evaluate_all(model, cfg, args.seed, args, device, "pi_ref (sft)")
    record.update(train_time_s=train_time, train_tokens=tokens, params=model.num_params())
    return stage.finish(record, eval_n=args.eval_n)


if __name__ == "__main__":
    with friendly_errors():
        main()
