"""What the online baselines GRPO and PPO share (train_grpo.py, train_ppo.py): their
flags, their budget of generated tokens, sampling a batch from the current policy, and the
loop that samples, updates and evaluates until the budget is spent. BEYOND THE PAPER: the
paper's DAPO is offline; these are the methods its Table 3 compares it with (docs/paper.md §5).

The budget's unit is the number of tokens the policy generates, counted the same way as
DAPO's rollouts count theirs (results.json critic_R.generated_tokens): sampled tokens, the stop
token not included. By default an online baseline spends what DAPO's --budget-rounds rounds
generated, so the comparison is at an equal budget.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch

from artifacts import load_policy, open_stage, policy_path, read_results, task_of
from common import UserError, add_tag_arg, log_interval, positive, tag_suffix
from dapo import max_solution_tokens
from evaluation import accuracy_vs_pi_ref, evaluate_splits
from data import EOT_ID, decode, encode, round_problems, verify
from model import autocast, generate, pack_continuations, token_logprobs

# The flags of every online baseline that change what its checkpoint holds (artifacts.made_by).
MADE_BY = ("seed", "lr", "kl", "clip", "updates", "batch_problems", "budget", "problems")


def add_online_args(p, lr: float, batch_problems: int) -> None:
    """The flags GRPO and PPO share (their defaults differ only in lr and batch size)."""
    g = p.add_argument_group("online training")
    g.add_argument("--lr", type=float, default=lr, help="the policy's AdamW learning rate")
    g.add_argument("--kl", type=float, default=0.01, help="KL weight to pi_ref (paper: 0.01)")
    g.add_argument("--clip", type=float, default=0.2, help="ratio clip epsilon")
    g.add_argument("--updates", type=int, default=2, help="AdamW steps per batch of samples")
    g.add_argument("--batch-problems", type=int, default=batch_problems,
                   help="problems per batch of samples")
    g.add_argument("--problems", type=int, default=1728,
                   help="the round's training problems to cycle through (DAPO's --problems)")
    g.add_argument("--budget", type=int, default=0,
                   help="generated tokens to spend (0: what DAPO's --budget-rounds generated)")
    add_tag_arg(g)
    g.add_argument("--budget-rounds", type=int, default=2,
                   help="with --budget 0, match the tokens of DAPO's rounds R .. R + this - 1 "
                   "(results.json critic_R.generated_tokens)")
    g = p.add_argument_group("evaluation and logging")
    g.add_argument("--eval-n", type=int, default=500, help="problems per evaluation split")
    g.add_argument("--eval-every", type=int, default=250_000,
                   help="generated tokens between evaluations (the curve)")


def check_online_args(args) -> None:
    for name in ("updates", "batch_problems", "problems", "eval_n", "eval_every", "lr", "clip",
                 "budget_rounds"):
        positive(name.replace("_", "-"), getattr(args, name))
    positive("kl", args.kl, allow_zero=True)
    positive("budget", args.budget, allow_zero=True)
    tag_suffix(args.tag)


def budget_of(run_dir: Path, args) -> int:
    """--budget, or the tokens DAPO's rounds R .. R + --budget-rounds - 1 generated."""
    if args.budget:
        return args.budget
    rounds = range(args.round, args.round + args.budget_rounds)
    results = read_results(run_dir)
    total = 0
    for r in rounds:
        tokens = results.get(f"critic_{r}", {}).get("generated_tokens")
        if not isinstance(tokens, int) or tokens <= 0:
            raise UserError(f"no generated_tokens in results.json['critic_{r}'] to match "
                            f"--budget-rounds {args.budget_rounds}; run DAPO's round {r} "
                            "first (pipeline.py), pass a smaller --budget-rounds, or --budget N")
        total += tokens
    return total


def sample_batch(policy, ref, problems, n: int, gen, device) -> dict:
    """n responses to each problem from the current policy at temperature 1, their rewards
    (P, n), and everything an update needs: the packed sequences (a stop token kept as part of
    the response), the response mask and the per-token log-probs under the sampling policy
    ("old") and the frozen pi_ref ("ref"), rows in problem-major order."""
    prompts = [encode(p.prompt) for p in problems]
    budget = max_solution_tokens(problems)
    t0 = time.time()
    outs = generate(policy, prompts, budget, 1.0, n, gen, stop_id=EOT_ID, pad_id=EOT_ID,
                    batch_size=512)
    sample_s = time.time() - t0
    rewards = torch.tensor([verify(problems[j // n], decode(o)).reward
                            for j, o in enumerate(outs)]).view(len(problems), n)
    states = [prompts[j // n] for j in range(len(outs))]
    responses = [o + [EOT_ID] if len(o) < budget and len(s) + len(o) < policy.config.block_size
                 else o for s, o in zip(states, outs)]
    idx, mask = pack_continuations(states, responses, EOT_ID, device)
    with torch.no_grad(), autocast(device):
        old, ref_lp = token_logprobs(policy, idx, mask), token_logprobs(ref, idx, mask)
    return {"idx": idx, "mask": mask, "old": old.float(), "ref": ref_lp.float(),
            "rewards": rewards, "tokens": sum(len(o) for o in outs), "sample_s": sample_s}


def train(policy, problems, step, ctx: dict, args, device) -> tuple[list, int]:
    """Call step(batch of problems) -> (generated tokens, seconds spent sampling them, mean
    reward, loss) until --budget generated tokens, evaluating greedily every --eval-every
    tokens; returns (curve, tokens). ctx holds the stage name, the run folder, the task and
    its data seed."""
    tokens, n, curve, next_eval, t0, sampling = 0, 0, [], args.eval_every, time.time(), 0.0
    while tokens < args.budget:
        start = n * args.batch_problems
        batch = [problems[(start + k) % len(problems)] for k in range(args.batch_problems)]
        used, sample_s, reward, loss = step(batch)
        tokens, n, sampling = tokens + used, n + 1, sampling + sample_s
        log_interval(ctx["run_dir"], {"stage": ctx["stage"], "step": n, "tokens": tokens,
                                      "reward": reward, "loss": loss,
                                      "sample_tok_s": tokens / sampling}, loss,
                     f"the {ctx['stage']} loss", "lower --lr",
                     f"{ctx['stage']} step {n} | {tokens:,}/{args.budget:,} tokens | mean "
                     f"reward {reward:.3f} | loss {loss:.4f} | sampling "
                     f"{tokens / sampling:,.0f} tok/s | {time.time() - t0:.0f} s")
        if tokens >= next_eval and tokens < args.budget:
            rec, _ = evaluate_splits(policy, ctx["cfg"], args.eval_n, ctx["data_seed"])
            curve.append({"tokens": tokens, **{s: rec[s]["greedy_acc"] for s in rec}})
            print(f"  greedy at {tokens:,} tokens: val {curve[-1]['val']:.1%}, test "
                  f"{curve[-1]['test']:.1%}")
            next_eval += args.eval_every
    return curve, tokens


def start(stage, args, name: str, made_by_keys: tuple):
    """Either the stage's up-to-date record (nothing to do) or (policy, frozen pi_ref, context,
    problems) to train from."""
    args.budget = budget_of(stage.run_dir, args)
    pi_ref = policy_path(stage.run_dir, args.round)
    record = stage.reusable(f"{name.upper()} checkpoint", made_by_keys, [pi_ref],
                            eval_n=args.eval_n)
    if record is not None:
        return record, None
    policy, pckpt = load_policy(stage.run_dir, args.round, stage.device)
    cfg, data_seed = task_of(pckpt, pi_ref)
    ref = copy.deepcopy(policy).eval().requires_grad_(False)  # pi_ref, frozen
    ctx = {"stage": stage.name, "run_dir": stage.run_dir, "cfg": cfg, "data_seed": data_seed}
    problems = round_problems(data_seed, cfg, args.round, args.problems)
    print(f"round {args.round}: {name.upper()} from {pi_ref}, kl={args.kl}, lr={args.lr}, "
          f"budget {args.budget:,} generated tokens")
    return None, (policy, ref, ctx, problems)


def run(args, name: str, made_by_keys: tuple, make_step, seed_offset: int) -> dict:
    """A whole online stage: the run folder, reuse or training, saving and evaluation.
    make_step(policy, frozen pi_ref, run folder, generator, device) returns the step that
    train calls; the generator draws every sample, seeded by --seed and seed_offset. Under
    torchrun every rank does the same work."""
    suffix = tag_suffix(args.tag)
    stage = open_stage(args, f"{name}_{args.round}{suffix}",
                       Path(args.run_dir) / f"actor_{args.round}_{name}{suffix}.pt")
    record, todo = start(stage, args, name, made_by_keys)
    if record is not None:
        return record
    policy, ref, ctx, problems = todo
    gen = torch.Generator(device=stage.device).manual_seed(args.seed * 1000 + seed_offset)
    step = make_step(policy, ref, stage.run_dir, gen, stage.device)
    curve, tokens = train(policy, problems, step, ctx, args, stage.device)
    stage.save(policy, len(curve), ctx["cfg"], ctx["data_seed"])
    record = accuracy_vs_pi_ref(policy.eval(), stage.run_dir, args.round, args.eval_n,
                                ctx["cfg"], ctx["data_seed"], stage.device)
    curve.append({"tokens": tokens, **{s: r["greedy_acc"] for s, r in record.items()}})
    record.update(generated_tokens=tokens, curve=curve, lr=args.lr, kl=args.kl)
    return stage.finish(record, eval_n=args.eval_n)
