"""Stage A of Direct Advantage Policy Optimization: rollouts, Monte Carlo targets, the critic.

    python train_critic.py                   # round 1, after train_sft.py
    python train_critic.py --round 2         # after train_actor.py --round 1

1. Generate: n1 samples per training problem from pi_ref at temperature 1; keep n of them,
   balanced between correct and incorrect; every prefix state (the bare prompt included) joins
   the state set (docs/paper.md §2.1).
2. Complete: K continuations per state from pi_ref (each state prefilled once and fanned out
   to its K samples); MC(s) = mean reward of the K (docs/paper.md §2.2). Completion is saved
   chunk by chunk: an interrupted run, started again, resumes where it stopped and gives the
   same MC values.
3. Critic: the same GPT with a value head, initialised from pi_ref in round 1 and from the
   previous critic after that, trained with soft-target BCE on (state, MC) (eq. 14-15), and
   evaluated on the states of held-out problems (evaluation.critic_heldout). Beyond the paper
   (docs/critic.md), by default its head also reads its own LM's surprisal at the tokens
   written so far (--head), a next-token loss on the training text keeps that LM pi_ref's
   (--lm-coef), and the states inside each continuation are targets too (--targets).
   --paper is the paper's recipe exactly: --head plain --lm-coef 0 --targets states.

pi_ref of round R is RUN_DIR/sft.pt for R = 1 and RUN_DIR/actor_{R-1}.pt after. Writes
RUN_DIR/rollouts_R.pt, RUN_DIR/critic_R.pt and results.json["critic_R"].
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch

from artifacts import (critic_inputs, critic_path, load_pi_ref, open_stage, policy_path,
                       saved_critic, starting_critic)
from common import (UserError, add_round_args, fraction, friendly_errors, parse_with_preset,
                    positive)
from evaluation import evaluate_critic
from report import show_critic
from training import (add_rollout_args, check_rollout_args, existing_rollouts, fit_critic,
                      make_rollouts)

# The flags that change what critic_R.pt holds (artifacts.made_by).
CRITIC_FLAGS = ("seed", "heldout_frac", "targets", "head", "lm_coef", "epochs", "batch_size",
                "lr", "surprisal_lr")
# The critic the paper describes (docs/paper.md §2.3), as --paper sets it; the defaults go
# beyond it (docs/critic.md).
PAPER_CRITIC = {"head": "plain", "lm_coef": 0.0, "targets": "states"}
OURS_CRITIC = {"head": "surprisal", "lm_coef": 1.0, "targets": "continuations"}


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_round_args(p, "seed for rollouts and critic training")
    add_rollout_args(p)
    g = p.add_argument_group("critic")
    g.add_argument("--paper", action="store_true",
                   help="the paper's critic exactly: --head plain --lm-coef 0 --targets states")
    g.add_argument("--heldout-frac", type=float, default=0.2,
                   help="fraction of problems whose states are held out for evaluation")
    g.add_argument("--targets", choices=("continuations", "states"), default=None,
                   help="states: the paper's (s, MC(s)) pairs only; continuations (default): "
                   "also every later state inside each continuation, with its reward as target")
    g.add_argument("--head", choices=("surprisal", "plain"), default=None,
                   help="plain: the paper's linear head on the last hidden state; surprisal "
                   "(default): it also reads the LM's own surprisal at the tokens written so far")
    g.add_argument("--lm-coef", type=float, default=None,
                   help="weight of a next-token loss on the response tokens of the critic's "
                   "training text, which keeps its LM head pi_ref's (default 1; 0: the paper)")
    g.add_argument("--epochs", type=int, default=2, help="passes over the training examples")
    g.add_argument("--report-only", action="store_true",
                   help="train nothing: report on the saved critic_R.pt and its rollouts again "
                   "(updates results.json['critic_R']['heldout'])")
    g.add_argument("--batch-size", type=int, default=64, help="sequences per step")
    g.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    g.add_argument("--surprisal-lr", type=float, default=3e-2,
                   help="AdamW learning rate of the surprisal head's gate and weight")
    g.add_argument("--log-every", type=int, default=50, help="steps between log lines")
    args = parse_with_preset(p, argv, "critic")
    recipe(args)
    check_rollout_args(args)
    for name in ("epochs", "batch_size", "log_every", "lr", "surprisal_lr"):
        positive(name.replace("_", "-"), getattr(args, name))
    positive("lm-coef", args.lm_coef, allow_zero=True)
    fraction("heldout-frac", args.heldout_frac, low_open=True, high_open=True)
    n_held = max(1, int(args.problems * args.heldout_frac))
    if n_held >= args.problems:
        raise UserError(f"--problems {args.problems} with --heldout-frac {args.heldout_frac} "
                        "holds out every problem and leaves none to train the critic on; pass "
                        "--problems 2 or more")
    return args


def recipe(args) -> None:
    """Fill --head, --lm-coef and --targets: the paper's values with --paper (asking for
    another value as well is an error), else this project's defaults where not given."""
    base = PAPER_CRITIC if args.paper else OURS_CRITIC
    for key, value in base.items():
        given = getattr(args, key)
        if args.paper and given is not None and given != value:
            flag = "--" + key.replace("_", "-")
            raise UserError(f"--paper sets {flag} {value}; drop {flag} {given} or --paper")
        setattr(args, key, value if given is None else given)


def initial_critic(run_dir: Path, args, device):
    """The critic to train: the same GPT with a value head, in round 1 initialised from pi_ref,
    later the previous round's critic, head and all (Alg. 1). With --report-only, the saved
    critic of this round. Loaded before the rollouts, so that a missing or mismatched one fails
    at once."""
    if args.report_only:
        return saved_critic(run_dir, args.round, args.heldout_frac, device)
    return starting_critic(run_dir, args.round, args.head, device)


def heldout_split(data: dict, args) -> tuple[torch.Tensor, int]:
    """(heldout (S,) bool over the states, number of held-out problems): the states of a fixed
    random --heldout-frac of the problems are the critic's report, never trained on."""
    held = set(random.Random(args.seed).sample(
        range(args.problems), max(1, int(args.problems * args.heldout_frac))))
    heldout = torch.tensor([p in held for p in data["state_problem"].tolist()])
    if heldout.all() or not heldout.any():
        raise UserError("pi_ref answered every " + ("training" if heldout.all() else
                        "held-out") + " problem with nothing, so there is nothing to "
                        f"{'train' if heldout.all() else 'report'} on; roll out more problems")
    return heldout, len(held)


def report(critic, data, heldout, n_held: int, const: float, run_dir: Path, args) -> dict:
    """The critic's held-out report, printed and plotted; returns its record."""
    h = evaluate_critic(critic, data, heldout, const)
    show_critic(h, n_held, data["rewards"].shape[1],
                run_dir / f"critic_{args.round}_calibration.png")
    return {"heldout": h, "states": len(data["mc"]), "train_states": int((~heldout).sum()),
            "mean_mc": float(data["mc"].mean()), "gen_accuracy": data["gen_accuracy"],
            "generated_tokens": data["generated_tokens"] + data["completion_tokens"]}


def main(argv=None):
    args = get_args(argv)
    stage = open_stage(args, f"critic_{args.round}", critic_path(Path(args.run_dir), args.round))
    policy, cfg, data_seed = load_pi_ref(stage.run_dir, args.round, stage.device)
    print(f"round {args.round}: pi_ref = {policy_path(stage.run_dir, args.round)}; "
          f"{args.problems} problems, n1={args.n1}, n={args.n}, K={args.K}")
    data = existing_rollouts(args, stage.run_dir)
    if not args.report_only:  # rollouts to be made (again) cannot have made a critic yet
        inputs = critic_inputs(stage.run_dir, args.round)  # the rollouts, the start network
        done = stage.reusable("critic checkpoint", CRITIC_FLAGS, inputs,
                              remade=inputs[:1] if data is None else [])
        if done is not None:
            return done
    critic = initial_critic(stage.run_dir, args, stage.device)

    # ---- A.1-A.2: states and their Monte Carlo targets, sampled from pi_ref
    if data is None:
        data = make_rollouts(policy, args, stage.run_dir, stage.device, cfg, data_seed)
    t_rollout = time.time() - stage.t_start
    del policy

    # ---- A.3: the critic (eq. 14-15), fitted on the states of all but the held-out problems
    heldout, n_held = heldout_split(data, args)
    tr_idx = (~heldout).nonzero().squeeze(1).tolist()
    const = float(data["mc"][tr_idx].mean())  # the constant predictor: training states' mean MC
    const = min(max(const, 1e-4), 1 - 1e-4)  # finite log-odds even if every MC is 0 or 1
    if not args.report_only:
        step = fit_critic(critic, data, tr_idx, const, args, stage.run_dir, stage.device)
        stage.save(critic, step, cfg, data_seed)
    record = report(critic.eval(), data, heldout, n_held, const, stage.run_dir, args)
    record.update(rollout_time_s=t_rollout, **data.get("seconds", {}))
    if args.report_only:  # keep what the training run measured about itself
        old = stage.previous_record()
        record.update({k: old[k] for k in ("rollout_time_s", "generate_time_s", "complete_time_s",
                                           "wall_time_s") if k in old})
    return stage.finish(record)


if __name__ == "__main__":
    with friendly_errors():
        main()
