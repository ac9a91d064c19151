"""A baseline BEYOND THE PAPER: GRPO, online, at DAPO's budget of generated tokens.

    python -m baselines.train_grpo  # after pipeline.py (DAPO's two rounds: the budget)
    python -m baselines.train_grpo --lr 1e-5 --budget 500000

Starts from pi_ref (RUN_DIR/sft.pt) and loops over the round-1 training problems DAPO rolls
out (data.round_problems): G responses per problem from the current policy at temperature 1,
the verifier's rewards, a group-normalised advantage A_i = (r_i - mean r) / (std r + 1e-4),
then --updates AdamW steps on the clipped-ratio objective with a per-token KL penalty to the
frozen pi_ref (the paper's Table 12: G = 16, KL 0.01, temperature 1). It stops once it has
generated --budget tokens (by default what DAPO's rounds 1 and 2 generated: results.json
critic_1 and critic_2 generated_tokens), evaluating greedily every --eval-every tokens, so the
curve of accuracy against tokens is in results.json["grpo_1"]["curve"]. Writes
RUN_DIR/actor_1_grpo.pt.
"""

from __future__ import annotations

import argparse

import torch

from baselines import grpo_ppo_shared
from common import (UserError, adam_step, adamw, add_round_args, friendly_errors,
                    parse_with_preset, positive)
from model import autocast, token_logprobs

# The flags that change what actor_R_grpo.pt holds (artifacts.made_by).
MADE_BY = grpo_ppo_shared.MADE_BY + ("G",)


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_round_args(p, "seed for sampling")
    p.add_argument_group("GRPO").add_argument(
        "--G", type=int, default=16, help="responses per problem (paper: 16)")
    grpo_ppo_shared.add_online_args(p, lr=1e-5, batch_problems=16)
    args = parse_with_preset(p, argv, "grpo")
    grpo_ppo_shared.check_online_args(args)
    positive("G", args.G)
    if args.G < 2:
        raise UserError(f"--G must be at least 2 (a group needs a mean), got {args.G}")
    return args


def group_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """GRPO's advantage: each reward less its group's mean, over the group's std (+ 1e-4).
    rewards (P, G) -> (P, G); a group whose rewards are all equal gets 0 everywhere.

        >>> group_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0]])).round(decimals=3).tolist()
        [[1.5, -0.5, -0.5, -0.5]]
    """
    mean, std = rewards.mean(dim=1, keepdim=True), rewards.std(dim=1, keepdim=True)
    return (rewards - mean) / (std + 1e-4)


def grpo_loss(logp, old_logp, ref_logp, mask, adv, clip: float, kl: float) -> torch.Tensor:
    """The clipped-ratio objective with a per-token KL penalty, as a loss to minimise.

    logp, old_logp, ref_logp, mask (N, T): per-token log-probs under the policy being trained,
    the policy that sampled, and the frozen pi_ref; mask 1 on response tokens. adv (N,).
    Per token: -(min(rho A, clip(rho, 1 - clip, 1 + clip) A) - kl * k3), rho = pi/pi_old,
    k3 = pi_ref/pi - log(pi_ref/pi) - 1 (an unbiased, positive KL estimate); the mean over
    each response's tokens, then over responses."""
    rho = torch.exp(logp - old_logp)
    a = adv[:, None]
    surrogate = torch.minimum(rho * a, rho.clamp(1 - clip, 1 + clip) * a)
    k3 = torch.exp(ref_logp - logp) - (ref_logp - logp) - 1
    per_token = -(surrogate - kl * k3) * mask
    return (per_token.sum(1) / mask.sum(1).clamp(min=1)).mean()


def grpo_step(policy, ref, opt, args, gen, device):
    """The step grpo_ppo_shared.train calls: sample G responses per problem, then --updates
    AdamW steps on grpo_loss; (generated tokens, sampling seconds, mean reward, last loss)."""
    def step(problems):
        b = grpo_ppo_shared.sample_batch(policy, ref, problems, args.G, gen, device)
        adv = group_advantages(b["rewards"]).flatten().to(device)
        for _ in range(args.updates):
            with autocast(device):
                logp = token_logprobs(policy, b["idx"], b["mask"]).float()
            loss = grpo_loss(logp, b["old"], b["ref"], b["mask"][:, 1:].float(), adv,
                             args.clip, args.kl)
            adam_step(policy, opt, loss)
        return b["tokens"], b["sample_s"], float(b["rewards"].mean()), float(loss)
    return step


def main(argv=None):
    args = get_args(argv)

    def make_step(policy, ref, run_dir, gen, device):
        print(f"  G={args.G}, clip={args.clip}, {args.updates} updates per batch")
        return grpo_step(policy, ref, adamw(policy, args.lr, device), args, gen, device)
    return grpo_ppo_shared.run(args, "grpo", MADE_BY, make_step, seed_offset=17)


if __name__ == "__main__":
    with friendly_errors():
        main()
