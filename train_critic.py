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
import math
import random
import shutil
import time
from pathlib import Path

import torch
from tqdm import tqdm

from artifacts import (checked_rollouts, critic_path, current_record, difference, finish_stage,
                       load_critic, load_policy, made_by, policy_hint, policy_path, read_results,
                       reusable, rollouts_path, stamp, task_of, task_record, up_to_date)
from model import autocast, flat, generate, pack, state_values, unflat
from common import (UserError, add_round_args, args_dict, fraction, friendly_errors,
                    load_model, load_torch, log_metrics, parse_with_preset, positive,
                    prepare_run_dir, save_checkpoint, save_torch)
from dapo import balanced_pick, complete, critic_loss, max_solution_tokens, mc_value, prefix_states
from data import EOT_ID, NL_ID, Problem, decode, encode, round_problems, verify
import parallel
from report import critic_report, plot_calibration
from evaluation import critic_heldout

# The flags that change what rollouts_R.pt and critic_R.pt hold (artifacts.made_by).
ROLLOUT_FLAGS = ("round", "seed", "problems", "n1", "n", "K", "sample_batch", "chunk")
CRITIC_FLAGS = ("seed", "heldout_frac", "targets", "head", "lm_coef", "epochs", "batch_size",
                "lr", "surprisal_lr")
# The critic the paper describes (docs/paper.md §2.3), as --paper sets it; the defaults go
# beyond it (docs/critic.md).
PAPER_CRITIC = {"head": "plain", "lm_coef": 0.0, "targets": "states"}
OURS_CRITIC = {"head": "surprisal", "lm_coef": 1.0, "targets": "continuations"}


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_round_args(p, "seed for rollouts and critic training")
    g = p.add_argument_group("rollouts (docs/paper.md §2)")
    g.add_argument("--problems", type=int, default=1728,
                   help="problems to roll out (--heldout-frac of them for the critic's report)")
    g.add_argument("--n1", type=int, default=2, help="samples per problem (paper: 32)")
    g.add_argument("--n", type=int, default=1, help="samples kept per problem (paper: 6)")
    g.add_argument("--K", type=int, default=4, help="continuations per state (paper: 16)")
    g.add_argument("--sample-batch", type=int, default=512, help="rows per sampling batch")
    g.add_argument("--chunk", type=int, default=256, help="states per saved completion chunk")
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
    g.add_argument("--rollouts-only", action="store_true",
                   help="make this round's rollouts and MC targets and no critic (the samples "
                   "of a baseline's own rounds; results.json['rollouts_R'] records their cost)")
    g.add_argument("--batch-size", type=int, default=64, help="sequences per step")
    g.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    g.add_argument("--surprisal-lr", type=float, default=3e-2,
                   help="AdamW learning rate of the surprisal head's gate and weight")
    g.add_argument("--log-every", type=int, default=50, help="steps between log lines")
    args = parse_with_preset(p, argv, "critic")
    if args.rollouts_only and args.report_only:
        raise UserError("--rollouts-only makes no critic and --report-only reports on one: "
                        "pass one of them")
    recipe(args)
    for name in ("round", "problems", "n1", "n", "K", "sample_batch", "chunk", "epochs",
                 "batch_size", "log_every", "lr", "surprisal_lr"):
        positive(name.replace("_", "-"), getattr(args, name))
    positive("lm-coef", args.lm_coef, allow_zero=True)
    fraction("heldout-frac", args.heldout_frac, low_open=True, high_open=True)
    if args.n > args.n1:
        raise UserError(f"--n ({args.n}) cannot exceed --n1 ({args.n1}): keep at most what "
                        "you sample")
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


# ----------------------------------------------------------------------------- rollouts


def generate_states(model, problems: list[Problem], args, device) -> dict:
    """A.1: n1 samples per problem, n kept (balanced), and their prefix states (deduplicated).
    One random stream for all of it, so under torchrun every rank samples the whole (the same
    samples); the Monte Carlo completion after it is what ranks share out (rollouts)."""
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


def clear_stale_parts(parts: Path, want: dict, force: bool, hint: str) -> None:
    """Keep the parts of an interrupted run made by exactly want; parts made otherwise stop
    the resume with one sentence, or with --force are thrown away."""
    diffs = [(f, difference(load_torch(f, "rollout part", hint).get("made_by"), want))
             for f in sorted(parts.glob("*.pt"))]
    stale = [(f, d) for f, d in diffs if d]
    if stale and not force:
        raise UserError(f"{stale[0][0]} {stale[0][1]}: an interrupted run with other flags or "
                        "another pi_ref; resume it with its flags, or pass --force to start "
                        "the rollouts again")
    if stale:
        print(f"--force: {parts} was made differently; starting the rollouts again")
        shutil.rmtree(parts)
    parts.mkdir(exist_ok=True)


def rollouts(model, problems, args, run_dir: Path, device, want: dict) -> dict:
    """Generate + complete, resumable: parts are saved in RUN_DIR/rollouts_R.parts/ as they are
    finished, each with the fingerprint want of the rollouts it belongs to, and assembled into
    RUN_DIR/rollouts_R.pt at the end. Parts made differently stop the resume (or, with
    --force, are thrown away)."""
    final = rollouts_path(run_dir, args.round)
    parts = final.with_suffix(".parts")
    hint = f"run train_critic.py --round {args.round} --force to start it again"
    parallel.on_main(lambda: clear_stale_parts(parts, want, args.force, hint))
    gen_file = parts / "generate.pt"
    if gen_file.exists():
        data, t_gen = load_torch(gen_file, "rollout part", hint), None
        print(f"resuming: {len(data['states']['offsets']) - 1} states loaded from {gen_file}")
    else:
        t_gen = time.time()
        data = generate_states(model, problems, args, device)
        t_gen = time.time() - t_gen
        if len(data["states"]["offsets"]) == 1:
            raise UserError(f"{policy_path(run_dir, args.round)} answered every problem with "
                            "nothing, so there are no states to complete; train it longer")
        data["made_by"] = want
        save_torch(gen_file, data)
    states = unflat(data["states"])
    state_problem = data["state_problem"].tolist()
    print(f"generated {data['generated_tokens']:,} tokens; sampled accuracy "
          f"{data['gen_accuracy']:.1%}; {len(states)} states from "
          f"{len(data['resp_reward'])} kept responses")

    def part_file(c):
        return parts / f"complete_{c:05d}.pt"

    def compute(c):
        sl = slice(c * args.chunk, (c + 1) * args.chunk)
        part = complete_chunk(model, states[sl], problems, state_problem[sl], args, device, c)
        return {**part, "made_by": want}

    n_chunks = math.ceil(len(states) / args.chunk)
    done = {c: load_torch(part_file(c), "rollout part", hint) for c in range(n_chunks)
            if part_file(c).exists()}
    todo, t0, new_tokens = [c for c in range(n_chunks) if c not in done], time.time(), 0
    bar = tqdm(total=n_chunks, initial=len(done), desc="complete", unit="chunk",
               dynamic_ncols=True)
    for c, part in parallel.lockstep(todo, compute):  # chunks shared out under torchrun
        save_torch(part_file(c), part)
        done[c] = part
        new_tokens += len(part["continuations"]["tokens"])
        bar.update(1)
        bar.set_postfix(tok_s=f"{new_tokens / (time.time() - t0):,.0f}")
    bar.close()
    chunks = [done[c] for c in range(n_chunks)]
    conts = [c for part in chunks for c in unflat(part["continuations"])]
    rewards = torch.cat([part["rewards"] for part in chunks])
    data.update(continuations=flat(conts), rewards=rewards, mc=mc_value(rewards),
                completion_tokens=sum(len(c) for c in conts),
                problems=[p.prompt for p in problems])
    save_torch(final, data)
    parallel.on_main(lambda: shutil.rmtree(parts))
    dt = time.time() - t0
    print(f"completion: {len(conts):,} continuations, {data['completion_tokens']:,} tokens "
          f"({new_tokens / max(dt, 1e-9):,.0f} tok/s this run); mean MC {data['mc'].mean():.3f}")
    return {**data, "seconds": {"generate_time_s": t_gen, "complete_time_s": dt}}  # not saved


# ----------------------------------------------------------------------------- critic


def critic_examples(states, conts, mc, rewards, ids, mode: str) -> list[tuple]:
    """The critic's training examples: (tokens, [(position, target), ...]).

    mode "states" is the paper's plain (s, MC(s)) pairs, the target at the last token of s.
    mode "continuations" (default) also reads every continuation s∘c: besides MC(s) at the end
    of s, each later state inside c (each "\n" of c but a final one) gets c's own reward as a
    one-sample MC target, an unbiased estimate of that state's value under pi_ref. Same
    rollouts, no extra sampling, ~10x more (noisier) targets: with a few thousand states a
    small critic cannot learn to spot a wrong step from the plain pairs alone (docs/critic.md).
    """
    K = rewards.shape[1]
    out = []
    for i in ids:
        s = states[i]
        if mode == "states":  # the paper: eq. 14-15 on (s, MC(s))
            out.append((s, [(len(s) - 1, float(mc[i]))]))
            continue
        for k in range(K):  # BEYOND THE PAPER: every state inside the continuations too
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
        # BEYOND THE PAPER (--lm-coef): a next-token loss keeps the critic's LM pi_ref's
        logits, s = critic.value_logits(idx, with_surprisal=True)  # (B, T), (B, T-1)
    real = torch.arange(1, idx.shape[1], device=device) < lengths[:, None]  # not padding
    m = (critic.after_prompt(idx) & real).float()
    bce, lm = critic_loss(logits[rows, cols], target), (s * m).sum() / m.sum().clamp(min=1)
    return bce + lm_coef * lm, bce, lm


def shared_loss(critic, batch, device, lm_coef: float) -> tuple:
    """critic_step_loss on a batch of examples; under torchrun, on this rank's share of it
    (parallel.batch_share), its terms weighted for DDP: the BCE by targets, the LM term by
    the tokens after the prompt's end, which it averages over (parallel.share)."""
    if parallel.world() == 1:
        return critic_step_loss(critic, batch, device, lm_coef)
    mine, n = parallel.batch_share(batch)
    loss, bce, lm = critic_step_loss(critic, mine, device, lm_coef)
    end = critic.config.prompt_end_id

    def counts(exs):
        return (sum(len(e[1]) for e in exs),
                sum(len(e[0]) - 1 - e[0].index(end) for e in exs if end in e[0]))
    (t_all, l_all), (t_own, l_own) = counts(batch), counts(mine if n else [])
    return parallel.share(bce, t_own, t_all) + lm_coef * parallel.share(lm, l_own, l_all), bce, lm


def critic_batches(n: int, batch_size: int, gen: torch.Generator):
    perm = torch.randperm(n, generator=gen).tolist()
    return [perm[i:i + batch_size] for i in range(0, n, batch_size)]


def fit_critic(critic, states, data, mc, tr_idx, const, args, run_dir, device) -> int:
    """Eq. 14-15 on the training states' targets; returns the number of steps."""
    if args.round == 1:  # start the head at the constant predictor's log-odds
        with torch.no_grad():
            critic.value_head.bias.fill_(math.log(const / (1 - const)))
    # BEYOND THE PAPER: the surprisal gate and weight (two small tensors, 0 at the start) get
    # their own, larger learning rate: at the body's they barely move in a couple of epochs
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
    ddp = parallel.data_parallel(critic)
    steps_per_epoch = math.ceil(len(examples) / args.batch_size)
    total, step, t0 = steps_per_epoch * args.epochs, 0, time.time()
    bar = tqdm(total=total, desc="critic", unit="step", dynamic_ncols=True)
    sums = torch.zeros(2, device=device)  # (bce, lm), read once per interval: no per-step sync
    for epoch in range(args.epochs):
        for b in critic_batches(len(examples), args.batch_size, gen):
            for g in opt.param_groups:  # cosine decay over all steps
                g["lr"] = g["base_lr"] * 0.5 * (1 + math.cos(math.pi * step / total))
            loss, bce, lm = ddp(shared_loss, [examples[i] for i in b], device, args.lm_coef)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(critic.parameters(), 1.0)
            opt.step()
            sums += torch.stack([bce.detach(), lm.detach()])
            step += 1
            bar.update(1)
            if step % args.log_every == 0 or step == total:
                n = (step - 1) % args.log_every + 1
                avg_bce, avg_lm = (parallel.mean_of(sums) / n).tolist()
                if not math.isfinite(avg_bce + avg_lm):
                    raise UserError(f"the critic's loss became {avg_bce + avg_lm} by step "
                                    f"{step}; nothing was saved: lower --lr or --surprisal-lr")
                bar.write(f"critic step {step}/{total} | epoch {epoch + 1} | avg bce "
                          f"{avg_bce:.4f} | avg lm {avg_lm:.4f} | {time.time() - t0:.0f} s")
                log_metrics(run_dir, {"stage": f"critic_{args.round}", "step": step,
                                      "bce": avg_bce, "lm": avg_lm})
                sums.zero_()
    bar.close()
    critic.eval()
    return step


def initial_critic(run_dir: Path, args, device):
    """The critic to train: the same GPT with a value head, in round 1 initialised from pi_ref,
    later the previous round's critic, head and all (Alg. 1). With --report-only, the saved
    critic of this round. Loaded before the rollouts, so that a missing or mismatched one fails
    at once."""
    if args.report_only:
        if not (rollouts_path(run_dir, args.round).exists()
                and critic_path(run_dir, args.round).exists()):
            raise UserError(f"--report-only needs rollouts_{args.round}.pt and critic_"
                            f"{args.round}.pt in {run_dir}; run train_critic.py --round "
                            f"{args.round} first")
        critic, cckpt = load_critic(run_dir, args.round, device)
        have = cckpt.get("made_by") or {}
        if have.get("inputs") != critic_made_by(args, run_dir)["inputs"]:
            raise UserError(f"critic_{args.round}.pt was not made from the rollouts_"
                            f"{args.round}.pt and network now in {run_dir}, so it cannot be "
                            f"reported on them; train it again with train_critic.py --round "
                            f"{args.round} --force")
        trained = cckpt.get("args", {}).get("heldout_frac", args.heldout_frac)
        if trained != args.heldout_frac:  # another split would report on training states
            raise UserError(f"critic_{args.round}.pt held out --heldout-frac {trained}; "
                            "pass the same value to --report-only")
        return critic
    if args.round == 1:  # BEYOND THE PAPER (--head surprisal): the head's surprisal input
        return load_model(policy_path(run_dir, 1), device, "reference policy checkpoint",
                          policy_hint(1), value_head=True,
                          value_surprisal=args.head == "surprisal")[0]
    critic, _ = load_critic(run_dir, args.round - 1, device)
    head = "surprisal" if critic.config.value_surprisal else "plain"
    if head != args.head:  # each round refits the last critic, head and all
        raise UserError(f"critic_{args.round - 1}.pt has the {head} head; pass --head "
                        f"{head}, or start again from round 1 with --head {args.head}")
    return critic


def rollouts_made_by(args, run_dir: Path) -> dict:
    """The fingerprint of this round's rollouts: their flags and pi_ref's content."""
    pi_ref = policy_path(run_dir, args.round)
    return made_by(f"rollouts_{args.round}", args, ROLLOUT_FLAGS, {pi_ref.name: pi_ref})


def critic_made_by(args, run_dir: Path) -> dict:
    """The fingerprint of this round's critic: its flags, the rollouts and the network it
    starts from (pi_ref in round 1, the previous critic after)."""
    start = policy_path(run_dir, 1) if args.round == 1 else critic_path(run_dir, args.round - 1)
    rolls = rollouts_path(run_dir, args.round)
    return made_by(f"critic_{args.round}", args, CRITIC_FLAGS,
                   {rolls.name: rolls, start.name: start})


def existing_rollouts(args, run_dir: Path) -> dict | None:
    """rollouts_R.pt if it was made by these flags from this pi_ref (None if there is none, or
    --force replaces it); stops with one sentence if it was made otherwise."""
    path = rollouts_path(run_dir, args.round)
    data = up_to_date(path, rollouts_made_by(args, run_dir), args.force, "rollout file")
    if data is not None:  # read once: checked here, not loaded again
        data = checked_rollouts(data, path, args.round)
        print(f"reusing {path}: {len(data['mc'])} states, made by these flags from this "
              "pi_ref")
    return data


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
    states = unflat(data["states"])
    h = critic_heldout(state_values(critic, states, EOT_ID), data, heldout, const)
    print(critic_report(h, n_held, data["rewards"].shape[1]))
    plot_calibration(h["calibration"], run_dir / f"critic_{args.round}_calibration.png")
    return {"heldout": h, "states": len(states), "train_states": int((~heldout).sum()),
            "mean_mc": float(data["mc"].mean()), "gen_accuracy": data["gen_accuracy"],
            "generated_tokens": data["generated_tokens"] + data["completion_tokens"],
            "made_by": stamp(critic_path(run_dir, args.round))}


def rollouts_only(args, run_dir: Path, policy, cfg, data_seed: int, device,
                  t_start: float) -> dict:
    """--rollouts-only: round R's rollouts and MC targets without a critic; their record
    (generated tokens and seconds) is results.json["rollouts_R"]."""
    stage, path = f"rollouts_{args.round}", rollouts_path(run_dir, args.round)
    data = existing_rollouts(args, run_dir)
    if data is not None:
        record = current_record(run_dir, stage, stamp(path))
        if record is not None:
            print(f"{path} and its record are up to date with these flags: skipped")
            return record
        seconds = read_results(run_dir).get(f"critic_{args.round}", {}).get("rollout_time_s")
    else:
        problems = round_problems(data_seed, cfg, args.round, args.problems)
        data = rollouts(policy, problems, args, run_dir, device, rollouts_made_by(args, run_dir))
        seconds = time.time() - t_start
    record = {"generated_tokens": data["generated_tokens"] + data["completion_tokens"],
              "gen_accuracy": data["gen_accuracy"], "states": len(data["mc"]),
              "rollout_time_s": seconds, "made_by": stamp(path)}
    return finish_stage(run_dir, stage, record, t_start)


def main(argv=None):
    args = get_args(argv)
    device = parallel.setup(args.device)
    run_dir = prepare_run_dir(args.run_dir, must_exist=True)
    read_results(run_dir)  # a malformed results.json stops here, not after training
    t_start, out = time.time(), critic_path(run_dir, args.round)
    policy, pckpt = load_policy(run_dir, args.round, device)
    policy.eval()
    cfg, data_seed = task_of(pckpt, policy_path(run_dir, args.round))
    print(f"round {args.round}: pi_ref = {policy_path(run_dir, args.round)}; {args.problems} "
          f"problems, n1={args.n1}, n={args.n}, K={args.K}")
    if args.rollouts_only:
        return rollouts_only(args, run_dir, policy, cfg, data_seed, device, t_start)
    data = existing_rollouts(args, run_dir)
    want = critic_made_by(args, run_dir)
    if data is None:  # the rollouts are to be made (again): no critic can come from them yet
        want["inputs"][rollouts_path(run_dir, args.round).name] = None
    record = None if args.report_only else reusable(
        run_dir, out, f"critic_{args.round}", want, args.force, "critic checkpoint")
    if record is not None:
        return record
    critic = initial_critic(run_dir, args, device)
    if data is None:
        problems = round_problems(data_seed, cfg, args.round, args.problems)
        data = rollouts(policy, problems, args, run_dir, device, rollouts_made_by(args, run_dir))
    t_rollout = time.time() - t_start
    del policy

    # ---- the critic, fitted on the states of all but the held-out problems
    heldout, n_held = heldout_split(data, args)
    tr_idx = (~heldout).nonzero().squeeze(1).tolist()
    const = float(data["mc"][tr_idx].mean())  # the constant predictor: training states' mean MC
    const = min(max(const, 1e-4), 1 - 1e-4)  # finite log-odds even if every MC is 0 or 1
    if not args.report_only:
        step = fit_critic(critic, unflat(data["states"]), data, data["mc"], tr_idx, const, args,
                          run_dir, device)
        save_checkpoint(out, critic, step=step, stage=f"critic_{args.round}",
                        args=args_dict(args), made_by=critic_made_by(args, run_dir),
                        **task_record(cfg, data_seed))
    critic.eval()
    record = report(critic, data, heldout, n_held, const, run_dir, args)
    record.update(rollout_time_s=t_rollout, **data.get("seconds", {}))
    if args.report_only:  # keep what the training run measured about itself
        old = read_results(run_dir).get(f"critic_{args.round}", {})
        record.update({k: old[k] for k in ("rollout_time_s", "generate_time_s", "complete_time_s",
                                           "wall_time_s") if k in old})
    return finish_stage(run_dir, f"critic_{args.round}", record, t_start)


if __name__ == "__main__":
    with friendly_errors():
        main()
