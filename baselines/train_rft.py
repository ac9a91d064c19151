"""A baseline BEYOND THE PAPER: rejection-sampling fine-tuning (RFT, one step of expert
iteration) on the very samples DAPO's round is made from.

    python -m baselines.train_rft  # round 1, after train_critic.py (its rollouts)
    python -m baselines.train_rft --lr 1e-4

Reads pi_ref (RUN_DIR/sft.pt in round 1) and RUN_DIR/rollouts_R.pt. Its whole responses are
the kept samples of A.1 and the K continuations of every bare-prompt state (A.2); RFT keeps
the correct ones (each distinct response once per problem) and fine-tunes pi_ref on them by
next-token cross-entropy over the response tokens (the prompt is given, <|endoftext|>
included), then evaluates greedily as train_actor.py does. It samples nothing of its own, so
it uses no more generated tokens than DAPO's round, and it trains no critic. Writes
RUN_DIR/actor_R_rft.pt and results.json["rft_R"].
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch

from artifacts import actor_path, load_policy, open_stage, round_inputs, task_of
from common import (UserError, adam_step, adamw, add_round_args, add_tag_arg, friendly_errors,
                    log_interval, parse_with_preset, positive, progress, tag_suffix)
from data import EOT_ID, decode, encode, parse_prompt, verify
from evaluation import accuracy_vs_pi_ref
from model import autocast, pack_continuations, unflat

# The flags that change what actor_R_rft.pt holds (artifacts.made_by).
MADE_BY = ("seed", "lr", "epochs", "batch_size")


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_round_args(p, "seed for batching")
    g = p.add_argument_group("RFT")
    g.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate")
    g.add_argument("--epochs", type=int, default=2, help="passes over the correct responses")
    g.add_argument("--batch-size", type=int, default=64, help="responses per step")
    add_tag_arg(g, as_pi_ref=True)
    g = p.add_argument_group("evaluation and logging")
    g.add_argument("--eval-n", type=int, default=500, help="problems per evaluation split")
    g.add_argument("--log-every", type=int, default=20, help="steps between log lines")
    args = parse_with_preset(p, argv, "rft")
    for name in ("round", "epochs", "batch_size", "eval_n", "log_every", "lr"):
        positive(name.replace("_", "-"), getattr(args, name))
    tag_suffix(args.tag)
    return args


def correct_responses(data: dict) -> tuple[list[list[int]], list[list[int]], int]:
    """(prompts, responses, candidates looked at): every distinct correct whole response of a
    problem among its kept A.1 samples and its bare-prompt state's K continuations; each
    response ends with <|endoftext|>, the decision to stop."""
    states, conts = unflat(data["states"]), unflat(data["continuations"])
    K, sp = data["rewards"].shape[1], data["state_problem"].tolist()
    prompts = [encode(p) for p in data["problems"]]
    candidates = [(sp[ids[0]], r) for r, ids in zip(unflat(data["responses"]),
                                                    unflat(data["resp_states"])) if ids]
    for i, s in enumerate(states):
        if len(s) == len(prompts[sp[i]]):  # a bare prompt: its continuations are responses
            candidates += [(sp[i], [t for t in c if t != EOT_ID])
                           for c in conts[i * K:(i + 1) * K]]
    seen, out_p, out_r = set(), [], []
    for pi, r in candidates:
        if (pi, tuple(r)) in seen:
            continue
        seen.add((pi, tuple(r)))
        if verify(parse_prompt(data["problems"][pi]), decode(r)).reward > 0:
            out_p.append(prompts[pi])
            out_r.append(r + [EOT_ID])
    return out_p, out_r, len(candidates)


def rft_loss(model, prompts, responses, device) -> tuple[torch.Tensor, int]:
    """The mean next-token cross-entropy over the response tokens of a batch (the prompt is
    given, not predicted), and the number of those tokens."""
    idx, mask = pack_continuations(prompts, responses, EOT_ID, device)
    with autocast(device):
        _, loss = model(idx[:, :-1], idx[:, 1:], mask[:, 1:])  # position t predicts t + 1
    return loss.float(), int(mask.sum())


def train(model, prompts, responses, args, run_dir, device) -> tuple[int, float]:
    """--epochs shuffled passes of AdamW on rft_loss; returns (steps, seconds)."""
    model.train()
    opt = adamw(model, args.lr, device)
    rng = random.Random(args.seed)
    order = [rng.sample(range(len(prompts)), len(prompts)) for _ in range(args.epochs)]
    batches = [o[i:i + args.batch_size] for o in order
               for i in range(0, len(o), args.batch_size)]
    t0, total = time.time(), torch.zeros((), device=device)
    for step, b in enumerate(progress(batches, desc="rft", unit="step"), 1):
        loss, _ = rft_loss(model, [prompts[i] for i in b], [responses[i] for i in b], device)
        adam_step(model, opt, loss)
        total += loss.detach()
        if step % args.log_every == 0 or step == len(batches):
            avg = total.item() / ((step - 1) % args.log_every + 1)  # one sync per interval
            log_interval(run_dir, {"stage": f"rft_{args.round}", "step": step, "loss": avg}, avg,
                         "the RFT loss", "lower --lr", f"rft step {step}/{len(batches)} | avg "
                         f"loss {avg:.4f} | {time.time() - t0:.0f} s")
            total.zero_()
    model.eval()
    return len(batches), time.time() - t0


def main(argv=None):
    args = get_args(argv)
    suffix = tag_suffix(args.tag)  # under torchrun every rank does the same work
    stage = open_stage(args, f"rft_{args.round}{suffix}",
                       actor_path(Path(args.run_dir), args.round, f"_rft{suffix}", args.as_pi_ref))
    data, inputs = round_inputs(stage.run_dir, args.round, critic=False)
    done = stage.reusable("RFT checkpoint", MADE_BY, inputs, eval_n=args.eval_n)
    if done is not None:
        return done
    model, pckpt = load_policy(stage.run_dir, args.round, stage.device)
    cfg, data_seed = task_of(pckpt, inputs[0])
    prompts, responses, looked_at = correct_responses(data)
    if not responses:
        raise UserError(f"none of the {looked_at} responses in {inputs[1]} is correct, so RFT "
                        "has nothing to train on; roll out more problems")
    print(f"round {args.round}: RFT on {len(responses)} distinct correct responses of "
          f"{looked_at} sampled ones; lr={args.lr}")
    steps, train_time = train(model, prompts, responses, args, stage.run_dir, stage.device)
    stage.save(model, steps, cfg, data_seed)
    record = accuracy_vs_pi_ref(model.eval(), stage.run_dir, args.round, args.eval_n, cfg,
                                data_seed, stage.device)
    record.update(responses=len(responses), candidates=looked_at, lr=args.lr,
                  train_time_s=train_time)
    return stage.finish(record, eval_n=args.eval_n)


if __name__ == "__main__":
    with friendly_errors():
        main()
