"""A baseline BEYOND THE PAPER: GRPO, online, at DAPO's budget of generated tokens.

    python train_grpo.py                     # after train_critic.py --round 1 (its budget)
    python train_grpo.py --lr 1e-5 --budget 500000

Starts from pi_ref (RUN_DIR/sft.pt) and loops over the round-1 training problems DAPO rolls
out (dapo.round_problems): G responses per problem from the current policy at temperature 1,
the verifier's rewards, a group-normalised advantage A_i = (r_i - mean r) / (std r + 1e-4),
then --updates AdamW steps on the clipped-ratio objective with a per-token KL penalty to the
frozen pi_ref (the paper's Table 12: G = 16, KL 0.01, temperature 1). It stops once it has
generated --budget tokens (by default what DAPO's round 1 generated: results.json
critic_1.generated_tokens), evaluating greedily every --eval-every tokens, so the curve of
accuracy against tokens is in results.json["grpo"]["curve"]. Writes RUN_DIR/actor_grpo.pt.
"""

from __future__ import annotations

import argparse
import copy
import math
import time

import torch

from artifacts import (finish_stage, load_policy, made_by, policy_path, read_results, reusable,
                       stamp, task_of, task_record)
from common import (UserError, add_round_args, args_dict, friendly_errors, log_metrics,
                    parse_with_preset, positive, prepare_run_dir, save_checkpoint)
from dapo import evaluate_splits, max_solution_tokens, round_problems
from data import EOT_ID, decode, encode, verify
from model import autocast, generate, pack_continuations, pick_device, token_logprobs
from report import accuracy_vs_pi_ref

# The flags that change what actor_grpo.pt holds (artifacts.made_by).
MADE_BY = ("seed", "lr", "G", "kl", "clip", "updates", "batch_problems", "budget", "problems")


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_round_args(p, "seed for sampling")
    g = p.add_argument_group("GRPO")
    g.add_argument("--G", type=int, default=16, help="responses per problem (paper: 16)")
    g.add_argument("--kl", type=float, default=0.01, help="KL weight to pi_ref (paper: 0.01)")
    g.add_argument("--clip", type=float, default=0.2, help="ratio clip epsilon")
    g.add_argument("--lr", type=float, default=3e-5, help="AdamW learning rate")
    g.add_argument("--updates", type=int, default=2, help="AdamW steps per batch of samples")
    g.add_argument("--batch-problems", type=int, default=16, help="problems per batch")
    g.add_argument("--problems", type=int, default=1728,
                   help="the round's training problems to cycle through (DAPO's --problems)")
    g.add_argument("--budget", type=int, default=0,
                   help="generated tokens to spend (0: what DAPO's round generated)")
    g = p.add_argument_group("evaluation and logging")
    g.add_argument("--eval-n", type=int, default=500, help="problems per evaluation split")
    g.add_argument("--eval-every", type=int, default=250_000,
                   help="generated tokens between evaluations (the curve)")
    args = parse_with_preset(p, argv, "grpo")
    for name in ("G", "updates", "batch_problems", "problems", "eval_n", "eval_every", "lr",
                 "clip"):
        positive(name.replace("_", "-"), getattr(args, name))
    positive("kl", args.kl, allow_zero=True)
    positive("budget", args.budget, allow_zero=True)
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


def sample_groups(policy, ref, problems, args, gen, device) -> dict:
    """G responses to each problem from the current policy at temperature 1 (a stop token
    kept as part of the response), their rewards and group advantages, and the per-token
    log-probs under the sampling policy and the frozen pi_ref."""
    prompts = [encode(p.prompt) for p in problems]
    budget = max_solution_tokens(problems)
    outs = generate(policy, prompts, budget, 1.0, args.G, gen, stop_id=EOT_ID, pad_id=EOT_ID,
                    batch_size=512)
    rewards = torch.tensor([verify(problems[j // args.G], decode(o)).reward
                            for j, o in enumerate(outs)]).view(len(problems), args.G)
    states = [prompts[j // args.G] for j in range(len(outs))]
    responses = [o + [EOT_ID] if len(o) < budget and len(s) + len(o) < policy.config.block_size
                 else o for s, o in zip(states, outs)]
    idx, mask = pack_continuations(states, responses, EOT_ID, device)
    with torch.no_grad(), autocast(device):
        old, ref_lp = token_logprobs(policy, idx, mask), token_logprobs(ref, idx, mask)
    return {"idx": idx, "mask": mask, "old": old.float(), "ref": ref_lp.float(),
            "adv": group_advantages(rewards).flatten().to(device), "rewards": rewards,
            "tokens": sum(len(o) for o in outs)}


def update(policy, opt, b: dict, args, device) -> float:
    """--updates AdamW steps on grpo_loss for one batch of samples; the last loss."""
    for _ in range(args.updates):
        with autocast(device):
            logp = token_logprobs(policy, b["idx"], b["mask"]).float()
        loss = grpo_loss(logp, b["old"], b["ref"], b["mask"][:, 1:].float(), b["adv"],
                         args.clip, args.kl)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
    return float(loss)


def train(policy, ref, problems, cfg, data_seed, args, run_dir, device) -> tuple[list, int]:
    """Sample and update until --budget generated tokens; returns (curve, tokens)."""
    opt = torch.optim.AdamW(policy.parameters(), lr=args.lr, betas=(0.9, 0.95),
                            weight_decay=0.0, fused=device.type == "cuda")
    gen = torch.Generator(device=device).manual_seed(args.seed * 1000 + 17)
    tokens, step, curve, next_eval, t0 = 0, 0, [], args.eval_every, time.time()
    while tokens < args.budget:
        start = step * args.batch_problems
        batch = [problems[(start + k) % len(problems)] for k in range(args.batch_problems)]
        b = sample_groups(policy, ref, batch, args, gen, device)
        tokens, step = tokens + b["tokens"], step + 1
        loss = update(policy, opt, b, args, device)
        if not math.isfinite(loss):
            raise UserError(f"the GRPO loss became {loss} at step {step}; nothing was saved: "
                            "lower --lr")
        reward = float(b["rewards"].mean())
        print(f"grpo step {step} | {tokens:,}/{args.budget:,} tokens | mean reward "
              f"{reward:.3f} | loss {loss:.4f} | {time.time() - t0:.0f} s")
        log_metrics(run_dir, {"stage": f"grpo_{args.round}", "step": step, "tokens": tokens,
                              "reward": reward, "loss": loss})
        if tokens >= next_eval and tokens < args.budget:
            rec, _ = evaluate_splits(policy, cfg, args.eval_n, data_seed)
            curve.append({"tokens": tokens, **{s: rec[s]["greedy_acc"] for s in rec}})
            print(f"  greedy at {tokens:,} tokens: val {curve[-1]['val']:.1%}, test "
                  f"{curve[-1]['test']:.1%}")
            next_eval += args.eval_every
    return curve, tokens


def budget_of(run_dir, args) -> int:
    """--budget, or the tokens DAPO's round generated (results.json critic_R)."""
    if args.budget:
        return args.budget
    tokens = read_results(run_dir).get(f"critic_{args.round}", {}).get("generated_tokens")
    if not isinstance(tokens, int) or tokens <= 0:
        raise UserError(f"no generated_tokens in results.json['critic_{args.round}'] to match; "
                        f"run train_critic.py --round {args.round} first, or pass --budget N")
    return tokens


def main(argv=None):
    args = get_args(argv)
    device = pick_device(args.device)
    run_dir = prepare_run_dir(args.run_dir, must_exist=True)
    args.budget = budget_of(run_dir, args)
    t_start, stage = time.time(), f"grpo_{args.round}"
    out, pi_ref = run_dir / f"actor_{args.round}_grpo.pt", policy_path(run_dir, args.round)
    want = made_by(stage, args, MADE_BY, {pi_ref.name: pi_ref})
    record = reusable(run_dir, out, stage, want, args.force, "GRPO checkpoint",
                      eval_n=args.eval_n)
    if record is not None:
        return record
    policy, pckpt = load_policy(run_dir, args.round, device)
    ref = copy.deepcopy(policy).eval().requires_grad_(False)  # pi_ref, frozen
    cfg, data_seed = task_of(pckpt, pi_ref)
    problems = round_problems(data_seed, cfg, args.round, args.problems)
    print(f"round {args.round}: GRPO from {pi_ref}, G={args.G}, kl={args.kl}, lr={args.lr}, "
          f"budget {args.budget:,} generated tokens")
    curve, tokens = train(policy, ref, problems, cfg, data_seed, args, run_dir, device)
    save_checkpoint(out, policy, step=len(curve), stage=stage, args=args_dict(args),
                    made_by=want, **task_record(cfg, data_seed))
    record = accuracy_vs_pi_ref(policy.eval(), run_dir, args.round, args.eval_n, cfg, data_seed,
                                device)
    curve.append({"tokens": tokens, **{s: r["greedy_acc"] for s, r in record.items()}})
    record.update(generated_tokens=tokens, curve=curve, lr=args.lr, kl=args.kl,
                  made_by=stamp(out, eval_n=args.eval_n))
    return finish_stage(run_dir, stage, record, t_start)


if __name__ == "__main__":
    with friendly_errors():
        main()
