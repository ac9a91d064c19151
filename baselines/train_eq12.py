"""DAPO's actor loss (eq. 12) with advantages that need no critic: two baselines and an ablation,
trained exactly as train_actor.py trains DAPO's actor (training.fit_actor).

    python -m baselines.train_eq12 --advantage step-mc     # round 1, after train_critic.py
    python -m baselines.train_eq12 --advantage response
    python -m baselines.train_eq12 --advantage oracle

On round R's rollouts (RUN_DIR/rollouts_R.pt) and pi_ref, each BEYOND THE PAPER:
- step-mc, a baseline: DAPO's steps, A(s, a_i) = r_i - mean_j r_j from each continuation's own
  reward (a one-sample Monte Carlo value of its first step; identical first steps pool theirs);
- response, a baseline that isolates what steps buy: one state per problem, its bare prompt,
  whose actions are the K whole responses pi_ref sampled from it, A = r - the mean of the K;
- oracle, an ablation: DAPO's steps with V(s∘a) = 1 if every line of s∘a is right by the
  verifier's per-step truth, else 0 (privileged information DAPO does not have).
Writes RUN_DIR/actor_R_<name>.pt (with --as-pi-ref actor_R.pt, in a folder of the baseline's own
rounds) and results.json["dapo_R_<name>"].
"""

from __future__ import annotations

import argparse
from pathlib import Path

from artifacts import actor_path, load_pi_ref, open_stage, round_inputs
from common import (UserError, add_round_args, add_tag_arg, friendly_errors, parse_with_preset,
                    tag_suffix)
from dapo import (action_advantages, advantage_groups, attach_ref_logprobs, is_terminal,
                  pair_stats, passes_gap_filter, pooled, sibling_actions)
from data import encode
from model import unflat
from training import add_fit_args, check_fit_args, fit_and_score, print_filter

# The flags that change what actor_R_<name>.pt holds (artifacts.made_by).
MADE_BY = ("seed", "beta", "adv_threshold", "lr", "advantage", "epochs", "batch_pairs")
# --advantage: the name its checkpoint and results record get
SUFFIX = {"oracle": "_oracle", "step-mc": "_step_mc", "response": "_response"}


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_round_args(p, "seed for batching")
    add_fit_args(p)
    g = p.add_argument_group("advantages")
    g.add_argument("--advantage", choices=tuple(SUFFIX), required=True,
                   help="step-mc, response (baselines) or oracle (an ablation); see above")
    add_tag_arg(g, as_pi_ref=True)
    args = parse_with_preset(p, argv, "actor")
    check_fit_args(args)
    tag_suffix(args.tag)
    return args


def oracle_values(sibs: list[dict]) -> list[list[float]]:
    """V(s∘a) = 1 if every line of s∘a is right (the verifier's per-step truth), else 0; a
    finished solution's value is its reward, as in DAPO."""
    return [[sib["verdicts"][tuple(a)].reward if is_terminal(a) else
             float(all(sib["verdicts"][tuple(a)].line_ok[:sib["line"] + 1]))
             for a in sib["actions"]] for sib in sibs]


def response_pairs(data: dict, threshold: float) -> tuple[list[dict], dict]:
    """Response-level eq. 12: one group per problem, its bare prompt with the K whole responses
    pi_ref sampled from it (the A.2 continuations of that state, <|endoftext|> included) as
    actions, A = r - the mean reward of the K. No critic, no steps."""
    states, conts, rewards = unflat(data["states"]), unflat(data["continuations"]), \
        data["rewards"]
    K = rewards.shape[1]
    prompt_len = [len(encode(p)) for p in data["problems"]]
    problem_of = data["state_problem"].tolist()
    groups, n_prompts = [], 0
    for i, s in enumerate(states):
        if len(s) != prompt_len[problem_of[i]]:
            continue  # not a bare prompt
        n_prompts += 1
        responses = conts[i * K:(i + 1) * K]
        uniq = action_advantages(responses, pooled(responses, rewards[i].tolist()))
        if passes_gap_filter(list(uniq.values()), threshold):
            groups.append({"state": s, "actions": [list(a) for a in uniq],
                           "adv": list(uniq.values())})
    return groups, pair_stats(groups, n_prompts, 1.0, 0, 0)


def pairs(data: dict, args) -> tuple[list[dict], dict]:
    """The (state, action, advantage) groups of --advantage, and the filter's statistics."""
    if args.advantage == "response":
        return response_pairs(data, args.adv_threshold)
    sibs = sibling_actions(data)
    values = oracle_values(sibs) if args.advantage == "oracle" else \
        [pooled(sib["actions"], sib["rewards"]) for sib in sibs]  # step-mc
    return advantage_groups(sibs, values, args.adv_threshold)


def main(argv=None):
    args = get_args(argv)
    suffix = SUFFIX[args.advantage] + tag_suffix(args.tag)
    stage = open_stage(args, f"dapo_{args.round}{suffix}",
                       actor_path(Path(args.run_dir), args.round, suffix, args.as_pi_ref))
    data, inputs = round_inputs(stage.run_dir, args.round, critic=False)
    done = stage.reusable("actor checkpoint", MADE_BY, inputs, eval_n=args.eval_n)
    if done is not None:
        return done
    ref, cfg, data_seed = load_pi_ref(stage.run_dir, args.round, stage.device)
    groups, stats = pairs(data, args)
    if not groups:
        raise UserError("no state passed the advantage filter; lower --adv-threshold or roll "
                        "out more problems")
    attach_ref_logprobs(ref, groups)
    print_filter(stats, args)
    record = fit_and_score(stage, ref, groups, stats, args, cfg, data_seed)
    record["advantage"] = args.advantage
    return stage.finish(record, eval_n=args.eval_n)


if __name__ == "__main__":
    with friendly_errors():
        main()
