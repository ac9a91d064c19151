"""A baseline BEYOND THE PAPER: PPO, online, with a learned value model, at DAPO's budget of
generated tokens.

    python -m baselines.train_ppo  # after pipeline.py (DAPO's two rounds: the budget)
    python -m baselines.train_ppo --lr 1e-5 --kl 0.01

Starts the policy from pi_ref (RUN_DIR/sft.pt) and a value model from the same network with a
fresh linear value head (the critic network of train_critic.py, the paper's plain head), and
loops over the round-1 training problems DAPO rolls out: --samples responses per problem from
the current policy at temperature 1, the verifier's reward at each response's last token and a
per-token KL penalty -kl * (log pi_old - log pi_ref) on every token, advantages by GAE
(the paper's Table 11: gamma 1, lambda 0.95, KL 0.01), whitened over the batch, then --updates
AdamW steps on the clipped policy loss and the clipped value loss. The value model is read at
every token: V(s_t) scores the prefix before response token t. It stops once it has generated
--budget tokens (by default what DAPO's rounds 1 and 2 generated), evaluating greedily every
--eval-every tokens (results.json["ppo_1"]["curve"]). Writes RUN_DIR/actor_1_ppo.pt.
"""

from __future__ import annotations

import argparse

import torch

from baselines import grpo_ppo_shared
from artifacts import policy_hint, policy_path
from common import (adam_step, adamw, add_round_args, fraction, friendly_errors, load_model,
                    parse_with_preset, positive)
from model import autocast, token_logprobs

# The flags that change what actor_R_ppo.pt holds (artifacts.made_by).
MADE_BY = grpo_ppo_shared.MADE_BY + ("samples", "gamma", "lam", "vf_lr", "vf_clip")


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_round_args(p, "seed for sampling")
    g = p.add_argument_group("PPO")
    g.add_argument("--samples", type=int, default=4, help="responses per problem")
    g.add_argument("--gamma", type=float, default=1.0, help="discount (paper: 1)")
    g.add_argument("--lam", type=float, default=0.95, help="GAE lambda (paper: 0.95)")
    g.add_argument("--vf-lr", type=float, default=1e-4, help="the value model's learning rate")
    g.add_argument("--vf-clip", type=float, default=0.2, help="value clip range")
    grpo_ppo_shared.add_online_args(p, lr=1e-5, batch_problems=64)
    args = parse_with_preset(p, argv, "ppo")
    grpo_ppo_shared.check_online_args(args)
    for name in ("samples", "vf_lr", "vf_clip"):
        positive(name.replace("_", "-"), getattr(args, name))
    fraction("gamma", args.gamma)
    fraction("lam", args.lam)
    return args


def gae(rewards, values, mask, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and returns (N, T) of per-token rewards and values
    (N, T) on the positions where mask is 1 (one contiguous response per row; the value after
    its last token is 0, the end of the episode): delta_t = r_t + gamma V_{t+1} - V_t,
    A_t = delta_t + gamma lam A_{t+1}, return_t = A_t + V_t. Zero where mask is 0.

        >>> a, ret = gae(torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.5, 0.5, 0.5]]),
        ...              torch.ones(1, 3), gamma=1.0, lam=0.5)
        >>> a.tolist(), ret.tolist()
        ([[0.125, 0.25, 0.5]], [[0.625, 0.75, 1.0]])
    """
    adv = torch.zeros_like(rewards)
    last = torch.zeros(len(rewards), dtype=rewards.dtype, device=rewards.device)
    T = rewards.size(1)
    for t in reversed(range(T)):
        live = mask[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        next_v = values[:, t + 1] * live if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        last = (delta + gamma * lam * last * live) * mask[:, t]
        adv[:, t] = last
    return adv, (adv + values) * mask


def shaped_rewards(rewards, old, ref, mask, kl: float) -> torch.Tensor:
    """Per-token rewards (N, T): -kl * (log pi_old - log pi_ref) on every response token, plus
    the verifier's reward (N,) on the last one."""
    out = -kl * (old - ref) * mask
    last = mask.cumsum(1).argmax(1)  # the index of each row's last response token
    out[torch.arange(len(out)), last] += rewards.to(out.dtype)
    return out


def whiten(x, mask) -> torch.Tensor:
    """x less its mean over the masked positions, over their std."""
    n = mask.sum()
    mean = (x * mask).sum() / n
    var = (((x - mean) * mask) ** 2).sum() / n
    return (x - mean) / (var.sqrt() + 1e-8) * mask


def ppo_losses(logp, old_logp, adv, v, old_v, ret, mask, clip: float, vf_clip: float):
    """(policy loss, value loss), each a mean over all response tokens of the batch.
    Policy: -min(rho A, clip(rho, 1 - clip, 1 + clip) A), rho = pi / pi_old. Value:
    1/2 max((v - R)^2, (old_v + clip(v - old_v, -vf_clip, vf_clip) - R)^2)."""
    n = mask.sum().clamp(min=1)
    rho = torch.exp(logp - old_logp)
    pg = -torch.minimum(rho * adv, rho.clamp(1 - clip, 1 + clip) * adv)
    v_clip = old_v + (v - old_v).clamp(-vf_clip, vf_clip)
    vf = 0.5 * torch.maximum((v - ret) ** 2, (v_clip - ret) ** 2)
    return (pg * mask).sum() / n, (vf * mask).sum() / n


def token_values(value_model, idx) -> torch.Tensor:
    """V(s_t) (B, T-1) aligned with token_logprobs: column j scores idx[:, :j+1], the prefix
    before token j + 1."""
    return value_model.value_logits(idx)[:, :-1].float()


def initial_value_model(run_dir, rnd: int, device):
    """pi_ref's network with a fresh plain value head (zero: V = 0 everywhere at first)."""
    return load_model(policy_path(run_dir, rnd), device, "reference policy",
                      policy_hint(rnd), value_head=True, value_surprisal=False)[0]


def ppo_step(policy, value_model, ref, opts, args, gen, device):
    """The step grpo_ppo_shared.train calls: sample, GAE, then --updates AdamW steps on the
    policy and the value model; (generated tokens, sampling seconds, mean reward, last policy
    loss)."""
    def step(problems):
        b = grpo_ppo_shared.sample_batch(policy, ref, problems, args.samples, gen, device)
        mask = b["mask"][:, 1:].float()
        with torch.no_grad(), autocast(device):
            old_v = token_values(value_model, b["idx"]) * mask
        r = shaped_rewards(b["rewards"].flatten().to(device), b["old"], b["ref"], mask, args.kl)
        adv, ret = gae(r, old_v, mask, args.gamma, args.lam)
        adv = whiten(adv, mask)
        for _ in range(args.updates):
            with autocast(device):
                logp = token_logprobs(policy, b["idx"], b["mask"]).float()
                v = token_values(value_model, b["idx"])
            pg, vf = ppo_losses(logp, b["old"], adv, v, old_v, ret, mask, args.clip,
                                args.vf_clip)
            adam_step(policy, opts[0], pg)
            adam_step(value_model, opts[1], vf)
        return b["tokens"], b["sample_s"], float(b["rewards"].mean()), float(pg)
    return step


def main(argv=None):
    args = get_args(argv)

    def make_step(policy, ref, run_dir, gen, device):
        value_model = initial_value_model(run_dir, args.round, device)
        print(f"  {args.samples} samples per problem, GAE gamma={args.gamma} "
              f"lambda={args.lam}, value lr {args.vf_lr}")
        opts = (adamw(policy, args.lr, device),
                adamw(value_model, args.vf_lr, device))
        return ppo_step(policy, value_model, ref, opts, args, gen, device)
    return grpo_ppo_shared.run(args, "ppo", MADE_BY, make_step, seed_offset=19)


if __name__ == "__main__":
    with friendly_errors():
        main()
