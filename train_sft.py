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
from tqdm import tqdm

from common import (UserError, args_dict, friendly_errors, load_model, log_metrics,
                    positive, prepare_run_dir, save_checkpoint, update_results)
from dapo import evaluate, show_failure
from data import EOT_ID, TaskConfig, TrainProblems, encode, eval_split
from model import GPT, GPTConfig, autocast, pick_device

PRESETS = {  # --preset gpu: a bigger model, a harder task and a bigger budget for one GPU
    "cpu": dict(),
    "gpu": dict(n_layer=8, n_embd=512, n_head=8, batch_size=256, steps=6000, lr=1e-3,
                max_steps=8, ood_steps=9),
}


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    g = p.add_argument_group("run")
    g.add_argument("--run-dir", default="runs/default", help="folder for checkpoints and results")
    g.add_argument("--seed", type=int, default=0, help="one seed for data, init and sampling")
    g.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda or mps")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (GPU)")
    g.add_argument("--preset", choices=PRESETS, default="cpu",
                   help="cpu: the defaults below; gpu: larger model, task and budget")
    g = p.add_argument_group("task (data.TaskConfig)")
    g.add_argument("--min-steps", type=int, default=None, help="fewest operations per problem")
    g.add_argument("--max-steps", type=int, default=None, help="most operations per problem")
    g.add_argument("--ood-steps", type=int, default=None, help="operations in the OOD split")
    g.add_argument("--fuse-prob", type=float, default=None,
                   help="chance that a demonstration writes two additions in a row on one line "
                   "(default 0.75; 0 gives the full solution every time)")
    g = p.add_argument_group("model (model.GPTConfig)")
    g.add_argument("--n-layer", type=int, default=None, help="transformer blocks (default 4)")
    g.add_argument("--n-embd", type=int, default=None, help="residual width (default 128)")
    g.add_argument("--n-head", type=int, default=None, help="attention heads (default 4)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, default=None, help="optimizer steps (default 1200)")
    g.add_argument("--batch-size", type=int, default=None, help="problems per step (default 64)")
    g.add_argument("--lr", type=float, default=None, help="peak AdamW learning rate (3e-3)")
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
    args = p.parse_args(argv)
    base = dict(n_layer=4, n_embd=128, n_head=4, batch_size=64, steps=1200, lr=3e-3,
                min_steps=None, max_steps=None, ood_steps=None, fuse_prob=None)
    base.update(PRESETS[args.preset])
    for k, v in base.items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    for name in ("steps", "batch_size", "eval_n", "n_layer", "n_embd", "n_head", "log_every"):
        positive(name.replace("_", "-"), getattr(args, name))
    positive("warmup", args.warmup, allow_zero=True)
    if args.lr <= 0:
        raise UserError(f"--lr must be positive, got {args.lr}")
    if not 0.0 <= args.decay_frac <= 1.0:
        raise UserError(f"--decay-frac must be between 0 and 1, got {args.decay_frac}")
    if args.fuse_prob is not None and not 0.0 <= args.fuse_prob <= 1.0:
        raise UserError(f"--fuse-prob must be between 0 and 1, got {args.fuse_prob}")
    return args


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


def evaluate_all(model, args, cfg, device, label: str) -> dict:
    """Greedy and sampled (temperature 1) accuracy on val, test and OOD; prints a table."""
    gen = torch.Generator(device=device).manual_seed(args.seed + 1)
    record, shown = {}, []
    for split in ("val", "test", "ood"):
        problems = eval_split(split, args.eval_n, args.seed, cfg)
        greedy, fails = evaluate(model, problems, 0.0, keep_failures=args.show_failures)
        sampled, _ = evaluate(model, problems, 1.0, gen)
        record[split] = {"greedy_acc": greedy["acc"], "sampled_acc": sampled["acc"],
                         "n": greedy["n"], "fail_1_wrong": greedy["fail_1_wrong"],
                         "fail_2_wrong": greedy["fail_2_wrong"],
                         "fail_more_wrong": greedy["fail_more_wrong"],
                         "two_op_lines": greedy["two_op_lines"],
                         "two_op_acc": greedy["two_op_acc"]}
        if split == "test":
            shown = fails
    print(f"\n{label}: accuracy on {args.eval_n} problems per split")
    print(f"{'split':6s} {'greedy':>8s} {'sampled':>8s}   greedy failures with 1 / 2 / >2 "
          "wrong lines   greedy two-op lines (right)")
    for split, r in record.items():
        right = "-" if r["two_op_acc"] is None else f"{r['two_op_acc']:.0%}"
        print(f"{split:6s} {r['greedy_acc']:8.1%} {r['sampled_acc']:8.1%}   "
              f"{r['fail_1_wrong']:13.0%} / {r['fail_2_wrong']:.0%} / {r['fail_more_wrong']:.0%}"
              f"   {r['two_op_lines']:13.1%} ({right})")
    if shown:
        print("\nsome wrong greedy test solutions (the verifier marks the wrong lines):")
        for f in shown:
            print(show_failure(*f))
    return record


def evaluate_checkpoint(args, device) -> dict:
    """--evaluate: a saved policy on the splits of the run that trained it; writes nothing."""
    model, ckpt = load_model(Path(args.evaluate), device, "policy checkpoint",
                             "give the path of an sft.pt or actor_R.pt", value_head=False)
    run_args = ckpt.get("args", {})
    args.seed = run_args.get("seed", 0)  # the run's splits, not this flag's
    return evaluate_all(model.eval(), args, TaskConfig.from_args(run_args), device,
                        args.evaluate)


def main(argv=None):
    args = get_args(argv)
    device = pick_device(args.device)
    if args.evaluate:
        return evaluate_checkpoint(args, device)
    run_dir = prepare_run_dir(args.run_dir)
    cfg = TaskConfig.from_args(vars(args))
    torch.manual_seed(args.seed)
    model = GPT(GPTConfig(n_layer=args.n_layer, n_embd=args.n_embd, n_head=args.n_head))
    model.to(device)
    print(f"pi_ref: {model.num_params() / 1e6:.2f}M parameters on {device}; task {cfg}")
    fused = device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95),
                            weight_decay=args.weight_decay, fused=fused)
    fwd = torch.compile(model) if args.compile else model
    train = TrainProblems(args.seed, cfg)
    t0, tokens, loss_sum = time.time(), 0, torch.zeros((), device=device)
    bar = tqdm(range(args.steps), desc="sft", unit="step", dynamic_ncols=True)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args)
        idx, targets, mask = batch(train.take(step * args.batch_size, args.batch_size), device,
                                   random.Random(f"demo:{args.seed}:{step}"), cfg.fuse_prob)
        with autocast(device):
            _, loss = fwd(idx, targets, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        tokens += idx.numel()
        loss_sum += loss.detach()
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            n = (step % args.log_every) + 1
            avg = loss_sum.item() / n  # one host sync per interval
            loss_sum.zero_()
            dt = time.time() - t0
            bar.write(f"step {step + 1}/{args.steps} | avg loss {avg:.4f} | "
                      f"lr {lr_at(step, args):.2e} | {dt:.0f} s | {tokens / dt:,.0f} tok/s")
            log_metrics(run_dir, {"stage": "sft", "step": step + 1, "loss": avg,
                                  "lr": lr_at(step, args), "tok_s": tokens / dt})
    train_time = time.time() - t0
    save_checkpoint(run_dir / "sft.pt", model, step=args.steps, stage="sft",
                    args=args_dict(args))
    print(f"saved {run_dir / 'sft.pt'} after {train_time:.0f} s of training")
    model.eval()
    record = evaluate_all(model, args, cfg, device, "pi_ref (sft)")
    record.update(train_time_s=train_time, train_tokens=tokens, params=model.num_params())
    update_results(run_dir, "sft", record)
    print(f"results in {run_dir / 'results.json'} under 'sft'")
    return record


if __name__ == "__main__":
    with friendly_errors():
        main()
