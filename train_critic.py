"""Stage A of Direct Advantage Policy Optimization: rollouts, Monte Carlo targets, the critic.

    python train_critic.py                   # round 1, after train_sft.py
    python train_critic.py --round 2         # after train_actor.py --round 1

1. Generate: n1 samples per training problem from pi_ref at temperature 1; keep n of them,
   balanced between correct and incorrect; every prefix state (the bare prompt included) joins
   the state set (PAPER.md §2.1).
2. Complete: K continuations per state from pi_ref (each state prefilled once and fanned out
   to its K samples); MC(s) = mean reward of the K (§2.2). Completion is saved chunk by chunk:
   an interrupted run, started again, resumes where it stopped and gives the same MC values.
3. Critic: the same GPT with a value head, initialised from pi_ref in round 1 and from the
   previous critic after that, trained with soft-target BCE on (state, MC) (eq. 14-15), and
   evaluated on the states of held-out problems. Beyond the paper (README "The critic"), by
   default its head also reads its own LM's surprisal at the tokens written so far (--head),
   and a next-token loss on the training text keeps that LM pi_ref's (--lm-coef);
   --head plain --lm-coef 0 --targets states is the paper's recipe exactly.

pi_ref of round R is RUN_DIR/sft.pt for R = 1 and RUN_DIR/actor_{R-1}.pt after. Writes
RUN_DIR/rollouts_R.pt, RUN_DIR/critic_R.pt and results.json["critic_R"].
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import time
from pathlib import Path

import torch
from tqdm import tqdm

from common import (UserError, add_round_args, args_dict, friendly_errors, load_model,
                    load_torch, log_metrics, positive, prepare_run_dir, read_results,
                    save_checkpoint, save_torch, update_results)
from dapo import (balanced_pick, complete, critic_loss, max_solution_tokens, mc_noise, mc_value,
                  prefix_states)
from data import EOT_ID, NL_ID, Problem, TaskConfig, TrainProblems, decode, encode, verify
from model import autocast, generate, pack, pick_device, state_values

ROLLOUT_OFFSET = 10_000_000  # DAPO's training problems: train indices from here, per round


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_round_args(p, "seed for rollouts and critic training")
    g = p.add_argument_group("rollouts (PAPER.md §2)")
    g.add_argument("--problems", type=int, default=1728,
                   help="problems to roll out (--heldout-frac of them for the critic's report)")
    g.add_argument("--n1", type=int, default=2, help="samples per problem (paper: 32)")
    g.add_argument("--n", type=int, default=1, help="samples kept per problem (paper: 6)")
    g.add_argument("--K", type=int, default=4, help="continuations per state (paper: 16)")
    g.add_argument("--sample-batch", type=int, default=512, help="rows per sampling batch")
    g.add_argument("--chunk", type=int, default=256, help="states per saved completion chunk")
    g = p.add_argument_group("critic")
    g.add_argument("--heldout-frac", type=float, default=0.2,
                   help="fraction of problems whose states are held out for evaluation")
    g.add_argument("--targets", choices=("continuations", "states"), default="continuations",
                   help="states: the paper's (s, MC(s)) pairs only; continuations: also every "
                   "later state inside each continuation, with its reward as target")
    g.add_argument("--head", choices=("surprisal", "plain"), default="surprisal",
                   help="plain: the paper's linear head on the last hidden state; surprisal: "
                   "it also reads the LM's own surprisal at the tokens written so far (README)")
    g.add_argument("--lm-coef", type=float, default=1.0,
                   help="weight of a next-token loss on the response tokens of the critic's "
                   "training text, which keeps its LM head pi_ref's (0: BCE only, the paper)")
    g.add_argument("--epochs", type=int, default=2, help="passes over the training examples")
    g.add_argument("--report-only", action="store_true",
                   help="train nothing: report on the saved critic_R.pt and its rollouts again "
                   "(updates results.json['critic_R']['heldout'])")
    g.add_argument("--batch-size", type=int, default=64, help="sequences per step")
    g.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    g.add_argument("--surprisal-lr", type=float, default=3e-2,
                   help="AdamW learning rate of the surprisal head's gate and weight")
    g.add_argument("--log-every", type=int, default=50, help="steps between log lines")
    args = p.parse_args(argv)
    for name in ("round", "problems", "n1", "n", "K", "sample_batch", "chunk", "epochs",
                 "batch_size", "log_every"):
        positive(name.replace("_", "-"), getattr(args, name))
    if args.n > args.n1:
        raise UserError(f"--n ({args.n}) cannot exceed --n1 ({args.n1}): keep at most what "
                        "you sample")
    if not 0 < args.heldout_frac < 1 or min(args.lr, args.surprisal_lr) <= 0 or args.lm_coef < 0:
        raise UserError("--heldout-frac must be in (0, 1), --lr and --surprisal-lr positive and "
                        "--lm-coef at least 0")
    return args


def policy_path(run_dir: Path, rnd: int) -> Path:
    """pi_ref of round rnd: the SFT model, then each round's actor."""
    return run_dir / ("sft.pt" if rnd == 1 else f"actor_{rnd - 1}.pt")


def policy_hint(rnd: int) -> str:
    return ("run train_sft.py first" if rnd == 1 else
            f"run train_actor.py --round {rnd - 1} first")


def task_from(ckpt: dict) -> TaskConfig:
    """The task the SFT run was trained on (stored in every policy checkpoint's args)."""
    return TaskConfig.from_args(ckpt.get("args", {}))


# ----------------------------------------------------------------------------- rollouts


def flat(seqs: list[list[int]]) -> dict:
    """Token lists as one flat int32 tensor + offsets (compact, and weights_only-loadable)."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    tokens = torch.tensor([t for s in seqs for t in s], dtype=torch.int32)
    return {"tokens": tokens, "offsets": torch.cat([torch.zeros(1, dtype=torch.long),
                                                    lengths.cumsum(0)])}


def unflat(d: dict) -> list[list[int]]:
    tok, off = d["tokens"].tolist(), d["offsets"].tolist()
    return [tok[off[i]:off[i + 1]] for i in range(len(off) - 1)]


def generate_states(model, problems: list[Problem], args, device) -> dict:
    """A.1: n1 samples per problem, n kept (balanced), and their prefix states (deduplicated)."""
    gen = torch.Generator(device=device).manual_seed(args.seed * 1000 + args.round)
    prompts = [encode(p.prompt) for p in problems]
    samples = []
    bar = tqdm(total=len(problems), desc="generate", unit="problem", dynamic_ncols=True)
    for i in range(0, len(problems), 64):
        samples += generate(model, prompts[i:i + 64], max_solution_tokens(problems), 1.0,
                            args.n1, gen, stop_id=EOT_ID, pad_id=EOT_ID,
                            batch_size=args.sample_batch)
        bar.update(len(prompts[i:i + 64]))
    bar.close()
    rng = random.Random(args.seed * 1000 + args.round)
    states, state_problem, index = [], [], {}
    responses, resp_states, resp_line_ok, resp_reward = [], [], [], []
    gen_rewards = []
    for pi, p in enumerate(problems):
        outs = samples[pi * args.n1:(pi + 1) * args.n1]
        verdicts = [verify(p, decode(o)) for o in outs]
        gen_rewards += [v.reward for v in verdicts]
        for k in balanced_pick([v.reward for v in verdicts], args.n, rng):
            ids = []
            for s in prefix_states(prompts[pi], outs[k]):
                key = tuple(s)
                if key not in index:
                    index[key] = len(states)
                    states.append(s)
                    state_problem.append(pi)
                ids.append(index[key])
            responses.append(outs[k])
            resp_states.append(ids)
            resp_line_ok.append([int(x) for x in verdicts[k].line_ok])
            resp_reward.append(verdicts[k].reward)
    return {"states": flat(states), "state_problem": torch.tensor(state_problem),
            "responses": flat(responses), "resp_states": flat(resp_states),
            "resp_line_ok": flat(resp_line_ok), "resp_reward": torch.tensor(resp_reward),
            "gen_accuracy": sum(gen_rewards) / len(gen_rewards),
            "generated_tokens": sum(len(o) for o in samples)}


def complete_chunk(model, states, problems, state_problem, args, device, chunk_id) -> dict:
    """A.2 for one chunk of states: K continuations each, their rewards. The generator is seeded
    by (seed, round, chunk), so a chunk gives the same result whenever it is computed."""
    gen = torch.Generator(device=device).manual_seed(
        (args.seed * 1000 + args.round) * 100_003 + chunk_id)
    probs = [problems[i] for i in state_problem]
    budget = max_solution_tokens(probs)

    def sample(states, K):  # pi_ref at temperature 1; a stop is kept as part of the action
        outs = generate(model, states, budget, 1.0, K, gen, stop_id=EOT_ID, pad_id=EOT_ID,
                        batch_size=args.sample_batch)
        return [o + [EOT_ID] if len(o) < budget and len(states[j // K]) + len(o) <
                model.config.block_size else o for j, o in enumerate(outs)]
    conts, rewards = complete(sample, states, probs, args.K)
    return {"continuations": flat(conts), "rewards": rewards}


def rollouts(model, problems, args, run_dir: Path, device, meta: dict) -> dict:
    """Generate + complete, resumable: parts are saved in RUN_DIR/rollouts_R.parts/ as they are
    finished, and assembled into RUN_DIR/rollouts_R.pt at the end."""
    final = run_dir / f"rollouts_{args.round}.pt"
    parts = run_dir / f"rollouts_{args.round}.parts"
    hint = f"delete {parts} and run train_critic.py --round {args.round} again"
    parts.mkdir(exist_ok=True)
    gen_file = parts / "generate.pt"
    if gen_file.exists():
        data = load_torch(gen_file, "rollout part", hint)
        if data.get("meta") != meta:
            raise UserError(f"{parts} was made with other settings; {hint}, or use the same "
                            "flags as before")
        print(f"resuming: {len(data['states']['offsets']) - 1} states loaded from {gen_file}")
    else:
        data = generate_states(model, problems, args, device)
        data["meta"] = meta
        save_torch(gen_file, data)
    states = unflat(data["states"])
    state_problem = data["state_problem"].tolist()
    print(f"generated {data['generated_tokens']:,} tokens; sampled accuracy "
          f"{data['gen_accuracy']:.1%}; {len(states)} states from "
          f"{len(data['resp_reward'])} kept responses")
    n_chunks = math.ceil(len(states) / args.chunk)
    chunks, t0, new_tokens = [], time.time(), 0
    bar = tqdm(range(n_chunks), desc="complete", unit="chunk", dynamic_ncols=True)
    for c in bar:
        f = parts / f"complete_{c:05d}.pt"
        if f.exists():
            part = load_torch(f, "rollout part", hint)
        else:
            sl = slice(c * args.chunk, (c + 1) * args.chunk)
            part = complete_chunk(model, states[sl], problems, state_problem[sl], args, device,
                                  c)
            save_torch(f, part)
            new_tokens += len(part["continuations"]["tokens"])
            bar.set_postfix(tok_s=f"{new_tokens / (time.time() - t0):,.0f}")
        chunks.append(part)
    conts = [c for part in chunks for c in unflat(part["continuations"])]
    rewards = torch.cat([part["rewards"] for part in chunks])
    data.update(continuations=flat(conts), rewards=rewards, mc=mc_value(rewards),
                completion_tokens=sum(len(c) for c in conts),
                problems=[p.prompt for p in problems])
    save_torch(final, data)
    shutil.rmtree(parts)
    dt = time.time() - t0
    print(f"completion: {len(conts):,} continuations, {data['completion_tokens']:,} tokens "
          f"({new_tokens / max(dt, 1e-9):,.0f} tok/s this run); mean MC {data['mc'].mean():.3f}")
    return data


def load_rollouts(run_dir: Path, rnd: int, meta: dict | None = None) -> dict:
    path = run_dir / f"rollouts_{rnd}.pt"
    hint = f"run train_critic.py --round {rnd}"
    data = load_torch(path, "rollout file", f"delete it if it exists and {hint}")
    need = ("states", "state_problem", "continuations", "rewards", "mc", "problems", "meta")
    if any(k not in data for k in need) or len(data["mc"]) != len(data["states"]["offsets"]) - 1:
        raise UserError(f"{path} is truncated or corrupt; delete it and {hint}")
    if meta is not None and data["meta"] != meta:
        raise UserError(f"{path} was made with other settings ({data['meta']}); delete it or "
                        "pass the same flags")
    return data


# ----------------------------------------------------------------------------- critic


def critic_examples(states, conts, mc, rewards, ids, mode: str) -> list[tuple]:
    """The critic's training examples: (tokens, [(position, target), ...]).

    mode "states" is the paper's plain (s, MC(s)) pairs, the target at the last token of s.
    mode "continuations" (default) also reads every continuation s∘c: besides MC(s) at the end
    of s, each later state inside c (each "\n" of c but a final one) gets c's own reward as a
    one-sample MC target, an unbiased estimate of that state's value under pi_ref. Same
    rollouts, no extra sampling, ~10x more (noisier) targets: with a few thousand states a
    small critic cannot learn to spot a wrong step from the plain pairs alone (README).
    """
    K = rewards.shape[1]
    out = []
    for i in ids:
        s = states[i]
        if mode == "states":
            out.append((s, [(len(s) - 1, float(mc[i]))]))
            continue
        for k in range(K):
            c = [t for t in conts[i * K + k] if t != EOT_ID]
            ends = [len(s) + j for j, t in enumerate(c) if t == NL_ID]
            if ends and ends[-1] == len(s) + len(c) - 1:
                ends = ends[:-1]  # the finished solution itself is terminal, not a state
            r = float(rewards[i, k])
            out.append((s + c, [(len(s) - 1, float(mc[i]))] + [(e, r) for e in ends]))
    return out


def critic_step_loss(critic, examples, device, lm_coef: float = 0.0) -> tuple:
    """(loss, bce, lm): bce is eq. 14-15 averaged over every target position of a batch of
    examples, lm the mean next-token loss over their response tokens (0 if lm_coef is 0), and
    loss = bce + lm_coef * lm."""
    idx, lengths = pack([e[0] for e in examples], EOT_ID, device)
    rows = torch.tensor([r for r, e in enumerate(examples) for _ in e[1]], device=device)
    cols = torch.tensor([p for e in examples for p, _ in e[1]], device=device)
    target = torch.tensor([t for e in examples for _, t in e[1]], device=device)
    with autocast(device):
        if not lm_coef:
            bce = critic_loss(critic.value_logits(idx)[rows, cols], target)
            return bce, bce, torch.zeros_like(bce)
        logits, s = critic.value_logits(idx, with_surprisal=True)  # (B, T), (B, T-1)
    real = torch.arange(1, idx.shape[1], device=device) < lengths[:, None]  # not padding
    m = (critic.after_prompt(idx) & real).float()
    bce, lm = critic_loss(logits[rows, cols], target), (s * m).sum() / m.sum().clamp(min=1)
    return bce + lm_coef * lm, bce, lm


def critic_batches(n: int, batch_size: int, gen: torch.Generator):
    perm = torch.randperm(n, generator=gen).tolist()
    return [perm[i:i + batch_size] for i in range(0, n, batch_size)]


def calibration(v: torch.Tensor, mc: torch.Tensor, bins: int = 10) -> list[dict]:
    """Held-out states binned by predicted V: mean prediction vs mean MC target per bin."""
    out = []
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        m = (v >= lo) & ((v < hi) if b < bins - 1 else (v <= hi))
        if m.any():
            out.append({"bin": f"{lo:.1f}-{hi:.1f}", "n": int(m.sum()),
                        "mean_v": float(v[m].mean()), "mean_mc": float(mc[m].mean())})
    return out


def ratio_interval(err: torch.Tensor, err_const: torch.Tensor, groups: list[int],
                   n_boot: int = 2000, level: float = 0.9, seed: int = 0) -> tuple[float, float]:
    """A bootstrap interval for sum(err) / sum(err_const), resampling whole groups (held-out
    problems: the states of one problem are not independent) with replacement."""
    ids = {g: i for i, g in enumerate(dict.fromkeys(groups))}
    gi = torch.tensor([ids[g] for g in groups])
    num = torch.zeros(len(ids), dtype=torch.float64).index_add_(0, gi, err.double())
    den = torch.zeros(len(ids), dtype=torch.float64).index_add_(0, gi, err_const.double())
    pick = torch.randint(len(ids), (n_boot, len(ids)),
                         generator=torch.Generator().manual_seed(seed))
    r = (num[pick].sum(1) / den[pick].sum(1).clamp(min=1e-12)).sort().values
    k = int(round((1 - level) / 2 * (n_boot - 1)))
    return float(r[k]), float(r[n_boot - 1 - k])


def first_error_signal(data: dict, values: torch.Tensor, heldout: torch.Tensor) -> dict:
    """How V changes across the first wrong step of held-out kept responses, against how it
    changes across correct steps: the drop DAPO's advantages are made of."""
    resp_states, line_ok = unflat(data["resp_states"]), unflat(data["resp_line_ok"])
    wrong, right = [], []
    for ids, ok in zip(resp_states, line_ok):
        if not ids or not heldout[ids[0]]:
            continue
        first = next((i for i, g in enumerate(ok) if not g), None)
        for t in range(len(ids) - 1):  # the step taken in state ids[t] leads to ids[t + 1]
            before, after = float(values[ids[t]]), float(values[ids[t + 1]])
            if first is not None and t == first:
                wrong.append((before, after))
            elif first is None or t < first:
                right.append((before, after))

    def mean(xs, i):
        return sum(x[i] for x in xs) / max(1, len(xs))
    return {"n_first_wrong": len(wrong), "v_before_first_wrong": mean(wrong, 0),
            "v_after_first_wrong": mean(wrong, 1), "n_correct_steps": len(right),
            "v_before_correct": mean(right, 0), "v_after_correct": mean(right, 1)}


def reference_predictors(data: dict, mc: torch.Tensor, tr_idx, ho_idx) -> dict:
    """Two yardsticks for the critic's held-out Brier score; neither is a critic.

    by_depth: predicts the mean MC of the training states that have taken as many steps.
    error_aware: also knows, from the verifier (privileged: a critic only sees text), whether
    an earlier line of the state is wrong, and predicts the mean MC of the training states with
    the same (steps, earlier line wrong). It shows how much of V is "has it already slipped",
    the judgement a critic must learn from the text alone to reach it. Both read the per-line
    verdicts the rollouts stored for their kept responses (state t of a response has taken t
    steps).
    """
    keys: dict[int, tuple] = {}
    for ids, ok in zip(unflat(data["resp_states"]), unflat(data["resp_line_ok"])):
        for t, s in enumerate(ids):
            keys[s] = (t, not all(ok[:t]))
    out = {}
    for name, key in (("by_depth", lambda k: k[0]), ("error_aware", lambda k: k)):
        sums: dict = {}
        for i in tr_idx:
            t = sums.setdefault(key(keys[i]), [0.0, 0])
            t[0], t[1] = t[0] + float(mc[i]), t[1] + 1
        fallback = float(mc[tr_idx].mean())
        pred = torch.tensor([sums[key(keys[i])][0] / sums[key(keys[i])][1]
                             if key(keys[i]) in sums else fallback for i in ho_idx])
        out[f"brier_{name}"] = float(((pred - mc[ho_idx]) ** 2).mean())
    return out


def fit_critic(critic, states, data, mc, tr_idx, const, args, run_dir, device) -> None:
    """Eq. 14-15 on the training states' targets, then save critic_R.pt (atomically)."""
    if args.round == 1:  # start the head at the constant predictor's log-odds
        with torch.no_grad():
            critic.value_head.bias.fill_(math.log(const / (1 - const)))
    # the surprisal gate and weight (two small tensors, 0 at the start) get their own, larger
    # learning rate: at the body's they barely move in a couple of epochs (README "The critic")
    surprisal = [p for n, p in critic.named_parameters() if n.startswith("value_head_")]
    rest = [p for n, p in critic.named_parameters() if not n.startswith("value_head_")]
    groups = [{"params": rest, "base_lr": args.lr}]
    if surprisal:
        groups.append({"params": surprisal, "base_lr": args.surprisal_lr})
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0,
                            fused=device.type == "cuda")
    gen = torch.Generator().manual_seed(args.seed)
    critic.train()
    examples = critic_examples(states, unflat(data["continuations"]), mc, data["rewards"],
                               tr_idx, args.targets)
    n_targets = sum(len(e[1]) for e in examples)
    print(f"critic: {len(examples)} training sequences, {n_targets} (state, target) pairs "
          f"(--targets {args.targets})")
    steps_per_epoch = math.ceil(len(examples) / args.batch_size)
    total, step, t0 = steps_per_epoch * args.epochs, 0, time.time()
    bar = tqdm(total=total, desc="critic", unit="step", dynamic_ncols=True)
    sums = torch.zeros(2, device=device)  # (bce, lm), read once per interval: no per-step sync
    for epoch in range(args.epochs):
        for b in critic_batches(len(examples), args.batch_size, gen):
            for g in opt.param_groups:  # cosine decay over all steps
                g["lr"] = g["base_lr"] * 0.5 * (1 + math.cos(math.pi * step / total))
            loss, bce, lm = critic_step_loss(critic, [examples[i] for i in b], device,
                                             args.lm_coef)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(critic.parameters(), 1.0)
            opt.step()
            sums += torch.stack([bce.detach(), lm.detach()])
            step += 1
            bar.update(1)
            if step % args.log_every == 0 or step == total:
                n = (step - 1) % args.log_every + 1
                avg_bce, avg_lm = (sums / n).tolist()
                bar.write(f"critic step {step}/{total} | epoch {epoch + 1} | avg bce "
                          f"{avg_bce:.4f} | avg lm {avg_lm:.4f} | {time.time() - t0:.0f} s")
                log_metrics(run_dir, {"stage": f"critic_{args.round}", "step": step,
                                      "bce": avg_bce, "lm": avg_lm})
                sums.zero_()
    bar.close()
    critic.eval()
    save_checkpoint(run_dir / f"critic_{args.round}.pt", critic, step=step,
                    stage=f"critic_{args.round}", args=args_dict(args))


def main(argv=None):
    args = get_args(argv)
    device = pick_device(args.device)
    run_dir = prepare_run_dir(args.run_dir, must_exist=True)
    t_start = time.time()
    src = policy_path(run_dir, args.round)
    policy, pckpt = load_model(src, device, "reference policy checkpoint",
                               policy_hint(args.round), value_head=False)
    policy.eval()
    cfg = task_from(pckpt)
    train = TrainProblems(pckpt.get("args", {}).get("seed", 0), cfg)
    problems = train.take(ROLLOUT_OFFSET + (args.round - 1) * args.problems, args.problems)
    meta = {"round": args.round, "seed": args.seed, "problems": args.problems, "n1": args.n1,
            "n": args.n, "K": args.K, "chunk": args.chunk, "policy": src.name,
            "policy_step": pckpt.get("step")}
    print(f"round {args.round}: pi_ref = {src}; {args.problems} problems, n1={args.n1}, "
          f"n={args.n}, K={args.K}")
    final = run_dir / f"rollouts_{args.round}.pt"
    if args.report_only and not (final.exists() and (run_dir / f"critic_{args.round}.pt").exists()):
        raise UserError(f"--report-only needs {final} and critic_{args.round}.pt in {run_dir}; "
                        f"run train_critic.py --round {args.round} first")
    # ---- the critic: same GPT, value head; round 1 from pi_ref, later from the last critic
    # (loaded before the rollouts, so that a missing or mismatched one fails at once)
    if args.report_only:
        critic, cckpt = load_model(run_dir / f"critic_{args.round}.pt", device,
                                   "critic checkpoint",
                                   f"run train_critic.py --round {args.round} first",
                                   value_head=True)
        trained = cckpt.get("args", {}).get("heldout_frac", args.heldout_frac)
        if trained != args.heldout_frac:  # another split would report on training states
            raise UserError(f"critic_{args.round}.pt held out --heldout-frac {trained}; "
                            "pass the same value to --report-only")
    elif args.round == 1:
        critic, _ = load_model(src, device, "reference policy checkpoint",
                               policy_hint(1), value_head=True,
                               value_surprisal=args.head == "surprisal")
    else:
        critic, _ = load_model(run_dir / f"critic_{args.round - 1}.pt", device,
                               "critic checkpoint",
                               f"run train_critic.py --round {args.round - 1} first",
                               value_head=True)
        head = "surprisal" if critic.config.value_surprisal else "plain"
        if head != args.head:  # each round refits the last critic, head and all
            raise UserError(f"critic_{args.round - 1}.pt has the {head} head; pass --head "
                            f"{head}, or start again from round 1 with --head {args.head}")
    if final.exists():
        data = load_rollouts(run_dir, args.round, meta)
        print(f"reusing {final}: {len(data['mc'])} states (delete it to regenerate)")
    else:
        data = rollouts(policy, problems, args, run_dir, device, meta)
    t_rollout = time.time() - t_start
    del policy

    states, mc = unflat(data["states"]), data["mc"]
    n_prob = args.problems
    held_prob = set(random.Random(args.seed).sample(range(n_prob),
                                                    max(1, int(n_prob * args.heldout_frac))))
    heldout = torch.tensor([p in held_prob for p in data["state_problem"].tolist()])
    tr_idx = (~heldout).nonzero().squeeze(1).tolist()
    ho_idx = heldout.nonzero().squeeze(1).tolist()
    const = float(mc[tr_idx].mean())  # the constant predictor: mean MC of training states
    const = min(max(const, 1e-4), 1 - 1e-4)  # finite log-odds even if every MC is 0 or 1
    if not args.report_only:
        fit_critic(critic, states, data, mc, tr_idx, const, args, run_dir, device)
    critic.eval()

    # ---- held-out report
    v_all = state_values(critic, states, EOT_ID)
    v_ho, mc_ho = v_all[ho_idx], mc[ho_idx]
    eps = 1e-6
    bce = float(critic_loss(torch.logit(v_ho.clamp(eps, 1 - eps)), mc_ho))
    bce_c = float(critic_loss(torch.full_like(mc_ho, math.log(const / (1 - const))), mc_ho))
    brier, brier_c = float(((v_ho - mc_ho) ** 2).mean()), float(((const - mc_ho) ** 2).mean())
    cal = calibration(v_ho, mc_ho)
    sig = first_error_signal(data, v_all, heldout)
    ref = reference_predictors(data, mc, tr_idx, ho_idx)
    print(f"\ncritic on {len(ho_idx)} held-out states ({len(held_prob)} held-out problems):")
    print(f"  BCE   {bce:.4f}  (constant predictor {bce_c:.4f})")
    lo, hi = ratio_interval((v_ho - mc_ho) ** 2, (const - mc_ho) ** 2,
                            data["state_problem"][ho_idx].tolist())
    print(f"  Brier {brier:.4f}  (constant predictor {brier_c:.4f}; ratio "
          f"{brier / max(brier_c, 1e-12):.2f}, 90 % bootstrap interval over the held-out "
          f"problems {lo:.2f}-{hi:.2f})")
    noise = mc_noise(mc_ho, data["rewards"].shape[1])
    if noise is not None and brier_c - noise > 1e-12:
        print(f"  of each Brier score about {noise:.4f} is the MC targets' own sampling noise "
              f"(K={data['rewards'].shape[1]}); without it (an estimate against the true V) "
              f"{brier - noise:.4f} vs {brier_c - noise:.4f}, ratio "
              f"{(brier - noise) / (brier_c - noise):.2f}")
    rd, re_ = (ref[k] / max(brier_c, 1e-12) for k in ("brier_by_depth", "brier_error_aware"))
    print(f"  yardsticks, not critics: the mean MC of training states with as many steps taken,"
          f" Brier {ref['brier_by_depth']:.4f} (ratio {rd:.2f}); the same when also told by the "
          f"verifier whether an earlier line is wrong, {ref['brier_error_aware']:.4f} (ratio "
          f"{re_:.2f})")
    print("  calibration:  bin       n   mean V  mean MC")
    for r in cal:
        print(f"               {r['bin']}  {r['n']:4d}   {r['mean_v']:.3f}   {r['mean_mc']:.3f}")
    print(f"  across the first wrong step ({sig['n_first_wrong']} held-out responses): V "
          f"{sig['v_before_first_wrong']:.3f} -> {sig['v_after_first_wrong']:.3f}; across "
          f"correct steps: {sig['v_before_correct']:.3f} -> {sig['v_after_correct']:.3f}")
    plot_calibration(cal, run_dir / f"critic_{args.round}_calibration.png")
    wall = time.time() - t_start
    record = {"heldout": {"bce": bce, "bce_const": bce_c, "brier": brier,
                          "brier_const": brier_c, "brier_ratio_interval": [lo, hi],
                          "brier_mc_noise": noise, **ref,
                          "n_states": len(ho_idx), "calibration": cal, **sig},
              "states": len(states), "train_states": len(tr_idx), "mean_mc": float(mc.mean()),
              "gen_accuracy": data["gen_accuracy"],
              "generated_tokens": data["generated_tokens"] + data["completion_tokens"],
              "rollout_time_s": t_rollout, "wall_time_s": wall}
    if args.report_only:  # keep what the training run measured about itself
        old = read_results(run_dir).get(f"critic_{args.round}", {})
        record = {**record, **{k: old[k] for k in ("rollout_time_s", "wall_time_s") if k in old}}
    update_results(run_dir, f"critic_{args.round}", record)
    print(f"critic stage done in {wall:.0f} s; results.json['critic_{args.round}'] written")
    return record


def plot_calibration(cal: list[dict], path: Path) -> None:
    """A reliability plot, when matplotlib is installed (it is optional)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect")
    ax.plot([r["mean_v"] for r in cal], [r["mean_mc"] for r in cal], "o-", label="critic")
    ax.set_xlabel("predicted V(s)")
    ax.set_ylabel("mean MC target")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    with friendly_errors():
        main()
