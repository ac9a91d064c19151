"""Stage B of Direct Advantage Policy Optimization: advantages, the DAPO loss, the actor.

    python train_actor.py                    # round 1, after train_critic.py
    python train_actor.py --round 2          # after train_critic.py --round 2

Reads pi_ref (RUN_DIR/sft.pt in round 1, RUN_DIR/actor_{R-1}.pt after), RUN_DIR/rollouts_R.pt
and RUN_DIR/critic_R.pt. For every state s of the rollouts:
1. actions a_1..a_K: the first steps of its K continuations (docs/paper.md §3.1);
2. A(s, a_i) = V(s∘a_i) - mean_j V(s∘a_j) (eq. 13), with the verifier's reward for a finished
   s∘a; unique actions only; states with max A - min A < --adv-threshold are dropped (App. F.1);
3. log pi_ref(a|s), summed over the action's tokens, computed once with the frozen pi_ref;
4. the actor (initialised from pi_ref) minimises eq. 12 with all actions of a state in the
   same batch; then greedy accuracy on val/test/OOD goes to results.json["dapo_R"].
Writes RUN_DIR/actor_R.pt, which is pi_ref of round R + 1 (iterative DAPO, Alg. 1).
The same fit without DAPO's critic (the eq. 12 baselines): python -m baselines.train_eq12.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from artifacts import actor_path, load_critic, load_pi_ref, open_stage, round_inputs
from common import (UserError, add_round_args, add_tag_arg, friendly_errors, parse_with_preset,
                    tag_suffix)
from dapo import advantage_groups, attach_ref_logprobs, critic_values, sibling_actions
from training import add_fit_args, check_fit_args, fit_and_score, print_filter

# The flags that change what actor_R.pt holds (artifacts.made_by).
MADE_BY = ("seed", "beta", "adv_threshold", "lr", "epochs", "batch_pairs")


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_round_args(p, "seed for batching")
    add_fit_args(p)
    add_tag_arg(p.add_argument_group("sweeps"))
    args = parse_with_preset(p, argv, "actor")
    check_fit_args(args)
    tag_suffix(args.tag)
    return args


def main(argv=None):
    args = get_args(argv)
    suffix = tag_suffix(args.tag)
    stage = open_stage(args, f"dapo_{args.round}{suffix}",
                       actor_path(Path(args.run_dir), args.round, suffix))
    data, inputs = round_inputs(stage.run_dir, args.round, critic=True)
    done = stage.reusable("actor checkpoint", MADE_BY, inputs, eval_n=args.eval_n)
    if done is not None:
        return done
    ref, cfg, data_seed = load_pi_ref(stage.run_dir, args.round, stage.device)

    # ---- B.1-B.3: actions, their values and advantages (eq. 13), the filter, log pi_ref
    critic = load_critic(stage.run_dir, args.round, stage.device)[0].eval()
    sibs = sibling_actions(data)
    groups, stats = advantage_groups(sibs, critic_values(critic, sibs), args.adv_threshold)
    del critic
    if not groups:
        raise UserError("no state passed the advantage filter; lower --adv-threshold or roll "
                        "out more problems")
    attach_ref_logprobs(ref, groups)
    print_filter(stats, args)

    # ---- B.4: the actor, initialised from pi_ref (whose log-probs are cached), on eq. 12;
    # then its greedy accuracy next to pi_ref's
    record = fit_and_score(stage, ref, groups, stats, args, cfg, data_seed)
    return stage.finish(record, eval_n=args.eval_n)


if __name__ == "__main__":
    with friendly_errors():
        main()
