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
import math
import random
import time

import torch
from tqdm import tqdm

from artifacts import (actor_path, check_made_from, finish_stage, load_policy, load_rollouts,
                       made_by, policy_path, read_results, reusable, rollouts_path, stamp, task_of,
                       task_record)
from model import autocast, pack_continuations, unflat
from common import (UserError, adam_step, adamw, add_round_args, add_tag_arg, args_dict,
                    friendly_errors, log_metrics, parse_with_preset, positive, prepare_run_dir,
                    save_checkpoint, tag_suffix)
from data import EOT_ID, decode, encode, parse_prompt, verify
import parallel
from evaluation import accuracy_vs_pi_ref

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
    for step, b in enumerate(tqdm(batches, desc="rft", unit="step", dynamic_ncols=True), 1):
        loss, _ = rft_loss(model, [prompts[i] for i in b], [responses[i] for i in b], device)
        adam_step(model, opt, loss)
        total += loss.detach()
        if step % args.log_every == 0 or step == len(batches):
            avg = total.item() / ((step - 1) % args.log_every + 1)  # one sync per interval
            if not math.isfinite(avg):
                raise UserError(f"the RFT loss became {avg} by step {step}; nothing was "
                                "saved: lower --lr")
            print(f"rft step {step}/{len(batches)} | avg loss {avg:.4f} | "
                  f"{time.time() - t0:.0f} s")
            log_metrics(run_dir, {"stage": f"rft_{args.round}", "step": step, "loss": avg})
            total.zero_()
    model.eval()
    return len(batches), time.time() - t0


def main(argv=None):
    args = get_args(argv)
    device = parallel.setup(args.device)  # under torchrun: the same work on every rank
    run_dir = prepare_run_dir(args.run_dir, must_exist=True)
    read_results(run_dir)  # a malformed results.json stops here, not after training
    t_start, stage = time.time(), f"rft_{args.round}{tag_suffix(args.tag)}"
    out = actor_path(run_dir, args.round, f"_rft{tag_suffix(args.tag)}", args.as_pi_ref)
    pi_ref, rolls = policy_path(run_dir, args.round), rollouts_path(run_dir, args.round)
    data = load_rollouts(run_dir, args.round)
    check_made_from(data, rolls, [pi_ref], f"make it again with train_critic.py --round "
                    f"{args.round} --force")
    want = made_by(stage, args, MADE_BY, {pi_ref.name: pi_ref, rolls.name: rolls})
    record = reusable(run_dir, out, stage, want, args.force, "RFT checkpoint",
                      eval_n=args.eval_n)
    if record is not None:
        return record
    model, pckpt = load_policy(run_dir, args.round, device)
    cfg, data_seed = task_of(pckpt, pi_ref)
    prompts, responses, looked_at = correct_responses(data)
    if not responses:
        raise UserError(f"none of the {looked_at} responses in {rolls} is correct, so RFT has "
                        "nothing to train on; roll out more problems")
    print(f"round {args.round}: RFT on {len(responses)} distinct correct responses of "
          f"{looked_at} sampled ones; lr={args.lr}")
    steps, train_time = train(model, prompts, responses, args, run_dir, device)
    save_checkpoint(out, model, step=steps, stage=stage, args=args_dict(args), made_by=want,
                    **task_record(cfg, data_seed))
    record = accuracy_vs_pi_ref(model.eval(), run_dir, args.round, args.eval_n, cfg, data_seed,
                                device)
    record.update(responses=len(responses), candidates=looked_at, lr=args.lr,
                  train_time_s=train_time, made_by=stamp(out, eval_n=args.eval_n))
    return finish_stage(run_dir, stage, record, t_start)


if __name__ == "__main__":
    with friendly_errors():
        main()
