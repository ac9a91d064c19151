"""The loops DAPO's stages share with the baselines built from them: the rollouts of stage A
(A.1-A.2: sampled from pi_ref, saved as they finish, shared out under torchrun) and the eq. 12
fit of stage B (state-wise batches, data-parallel under torchrun). The equations they run are
dapo.py's; train_critic.py and train_actor.py call them in the method's order.
"""

from __future__ import annotations

import math
import random
import shutil
import time
from pathlib import Path

import torch

from artifacts import checked_rollouts, difference, made_by, policy_path, rollouts_path, up_to_date
from common import (UserError, adam_step, adamw, load_torch, log_interval, positive,
                    progress, save_torch)
from dapo import (BATCH_SUMS, balanced_pick, batch_loss, complete, critic_loss, max_solution_tokens,
                  mc_value, prefix_states, state_batches)
from data import EOT_ID, NL_ID, Problem, decode, encode, round_problems, verify
from evaluation import accuracy_vs_pi_ref
from model import autocast, flat, generate, pack, unflat
import parallel


# ----------------------------------------------------------------------------- A.1-A.2: rollouts

# The flags that change what rollouts_R.pt holds (artifacts.made_by).
ROLLOUT_FLAGS = ("round", "seed", "problems", "n1", "n", "K", "sample_batch", "chunk")


def add_rollout_args(parser) -> None:
    g = parser.add_argument_group("rollouts (docs/paper.md §2)")
    g.add_argument("--problems", type=int, default=1728,
                   help="problems to roll out (--heldout-frac of them for the critic's report)")
    g.add_argument("--n1", type=int, default=2, help="samples per problem (paper: 32)")
    g.add_argument("--n", type=int, default=1, help="samples kept per problem (paper: 6)")
    g.add_argument("--K", type=int, default=4, help="continuations per state (paper: 16)")
    g.add_argument("--sample-batch", type=int, default=512, help="rows per sampling batch")
    g.add_argument("--chunk", type=int, default=256, help="states per saved completion chunk")


def check_rollout_args(args) -> None:
    for name in ("round", "problems", "n1", "n", "K", "sample_batch", "chunk"):
        positive(name.replace("_", "-"), getattr(args, name))
    if args.n > args.n1:
        raise UserError(f"--n ({args.n}) cannot exceed --n1 ({args.n1}): keep at most what "
                        "you sample")

def generate_states(model, problems: list[Problem], args, device) -> dict:
    """A.1: n1 samples per problem, n kept (balanced), and their prefix states (deduplicated).
    One random stream for all of it, so under torchrun every rank samples the whole (the same
    samples); the Monte Carlo completion after it is what ranks share out (rollouts)."""
    gen = torch.Generator(device=device).manual_seed(args.seed * 1000 + args.round)
    prompts = [encode(p.prompt) for p in problems]
    samples = []
    bar = progress(total=len(problems), desc="generate", unit="problem")
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
    bar = progress(total=n_chunks, initial=len(done), desc="complete", unit="chunk")
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


def make_rollouts(policy, args, run_dir: Path, device, cfg, data_seed: int) -> dict:
    """A.1-A.2 for round --round: its training problems (data.round_problems) rolled out from
    pi_ref into RUN_DIR/rollouts_R.pt (rollouts), resuming an interrupted run."""
    problems = round_problems(data_seed, cfg, args.round, args.problems)
    return rollouts(policy, problems, args, run_dir, device, rollouts_made_by(args, run_dir))


def rollouts_made_by(args, run_dir: Path) -> dict:
    """The fingerprint of this round's rollouts: their flags and pi_ref's content."""
    pi_ref = policy_path(run_dir, args.round)
    return made_by(f"rollouts_{args.round}", args, ROLLOUT_FLAGS, {pi_ref.name: pi_ref})


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


# ----------------------------------------------------------------------------- A.3: the critic


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


def critic_rank_loss(critic, batch, device, lm_coef: float) -> tuple:
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


def fit_critic(critic, data, tr_idx, const, args, run_dir, device) -> int:
    """A.3: eq. 14-15 on the targets of the training states tr_idx (critic_examples), AdamW
    with a cosine decay; const is the constant predictor the head starts at in round 1.
    Returns the number of steps."""
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
    examples = critic_examples(unflat(data["states"]), unflat(data["continuations"]),
                               data["mc"], data["rewards"], tr_idx, args.targets)
    n_targets = sum(len(e[1]) for e in examples)
    print(f"critic: {len(examples)} training sequences, {n_targets} (state, target) pairs "
          f"(--targets {args.targets})")
    ddp = parallel.data_parallel(critic)
    steps_per_epoch = math.ceil(len(examples) / args.batch_size)
    total, step, t0 = steps_per_epoch * args.epochs, 0, time.time()
    bar = progress(total=total, desc="critic", unit="step")
    sums = torch.zeros(2, device=device)  # (bce, lm), read once per interval: no per-step sync
    for epoch in range(args.epochs):
        for b in critic_batches(len(examples), args.batch_size, gen):
            for g in opt.param_groups:  # cosine decay over all steps
                g["lr"] = g["base_lr"] * 0.5 * (1 + math.cos(math.pi * step / total))
            loss, bce, lm = ddp(critic_rank_loss, [examples[i] for i in b], device, args.lm_coef)
            adam_step(critic, opt, loss)
            sums += torch.stack([bce.detach(), lm.detach()])
            step += 1
            bar.update(1)
            if step % args.log_every == 0 or step == total:
                n = (step - 1) % args.log_every + 1
                avg_bce, avg_lm = (parallel.mean_of(sums) / n).tolist()
                log_interval(run_dir, {"stage": f"critic_{args.round}", "step": step,
                                       "bce": avg_bce, "lm": avg_lm}, avg_bce + avg_lm,
                             "the critic's loss", "lower --lr or --surprisal-lr",
                             f"critic step {step}/{total} | epoch {epoch + 1} | avg bce "
                             f"{avg_bce:.4f} | avg lm {avg_lm:.4f} | {time.time() - t0:.0f} s")
                sums.zero_()
    bar.close()
    critic.eval()
    return step


# ----------------------------------------------------------------------------- B.4: the actor


def add_fit_args(parser) -> None:
    """The flags of the eq. 12 fit (fit_actor) and of the evaluation after it."""
    g = parser.add_argument_group("eq. 12 (docs/paper.md §3)")
    g.add_argument("--beta", type=float, default=0.1, help="KL weight beta of eq. 12")
    g.add_argument("--adv-threshold", type=float, default=0.1,
                   help="drop states whose max A - min A is below this (App. F.1)")
    g.add_argument("--lr", type=float, default=3e-5, help="actor AdamW learning rate")
    g.add_argument("--epochs", type=int, default=2, help="passes over the kept states")
    g.add_argument("--batch-pairs", type=int, default=128,
                   help="(state, action) pairs per step; whole states only")
    g = parser.add_argument_group("evaluation and logging")
    g.add_argument("--eval-n", type=int, default=500, help="problems per evaluation split")
    g.add_argument("--log-every", type=int, default=20, help="steps between log lines")


def check_fit_args(args) -> None:
    for name in ("round", "epochs", "batch_pairs", "eval_n", "log_every", "beta", "lr"):
        positive(name.replace("_", "-"), getattr(args, name))
    positive("adv-threshold", args.adv_threshold, allow_zero=True)


def print_filter(stats: dict, args) -> None:
    """What the advantage filter kept, and the advantages' diagnostic against the verifier."""
    print(f"round {args.round}: {stats['kept_states']}/{stats['states']} states kept "
          f"({stats['kept_state_frac']:.0%}) with {stats['pairs']} (state, action) pairs; "
          f"beta={args.beta}, lr={args.lr}")
    if stats["sibling_pairs"]:
        print(f"advantage check: over {stats['sibling_pairs']} (right, wrong) sibling steps "
              f"(the verifier's per-step truth), A ranks the right one higher "
              f"{stats['sibling_rank_acc']:.1%} of the time (50 % = no signal)")

def pairs_in(groups: list[dict], states: list[int]) -> int:
    return sum(len(groups[i]["actions"]) for i in states)


def fit_actor(actor, groups: list[dict], stats: dict, args, run_dir: Path,
              device) -> tuple[int, list]:
    """B.4: the actor, initialised from pi_ref, minimises eq. 12 (dapo.batch_loss) over
    --epochs passes of state-wise batches. Under torchrun each rank takes a share of every
    batch's states, its loss weighted by pairs (parallel.share). Returns (steps, log)."""
    actor.train()
    opt = adamw(actor, args.lr, device)
    rng = random.Random(args.seed)
    batches = [b for _ in range(args.epochs) for b in state_batches(groups, args.batch_pairs, rng)]
    ddp, log, t0 = parallel.data_parallel(actor), [], time.time()
    sums = torch.zeros(len(BATCH_SUMS), device=device)  # read once per interval (no syncs)
    for step, b in enumerate(progress(batches, desc="actor", unit="step"), 1):
        mine, n = parallel.batch_share(b)
        loss, batch_sums = ddp(batch_loss, groups, mine, args.beta, device)
        adam_step(actor, opt, parallel.share(loss, pairs_in(groups, mine) if n else 0,
                                             pairs_in(groups, b)))
        sums += batch_sums * (n > 0)
        if step % args.log_every == 0 or step == len(batches):
            log.append(actor_log(parallel.mean_of(sums), step, len(batches), stats, args,
                                 run_dir, time.time() - t0))
            sums.zero_()
    actor.eval()
    return len(batches), log


def actor_log(sums: torch.Tensor, step: int, total: int, stats: dict, args, run_dir: Path,
              seconds: float) -> dict:
    """One interval's record of the authors' diagnostics (docs/paper.md §3.7), from the sums
    dapo.batch_loss returns: printed, appended to metrics.jsonl and returned."""
    s = dict(zip(BATCH_SUMS, sums.tolist()))  # one host sync
    rec = {"stage": f"dapo_{args.round}", "step": step,
           "loss": s["loss"] / max(1.0, s["pairs"]),
           "sign_agree": s["agree"] / max(1.0, s["signed"]),
           "logratio_pos": s["logratio_pos"] / max(1.0, s["n_pos"]),
           "logratio_neg": s["logratio_neg"] / max(1.0, s["n_neg"]),
           "kept_state_frac": stats["kept_state_frac"]}
    log_interval(run_dir, rec, s["loss"], "the actor's loss", "lower --lr or raise --beta",
                 f"actor step {step}/{total} | avg loss {rec['loss']:.3f} | sign agree "
                 f"{rec['sign_agree']:.1%} | avg log-ratio A>0 {rec['logratio_pos']:+.3f}, "
                 f"A<0 {rec['logratio_neg']:+.3f} | kept {rec['kept_state_frac']:.0%} | "
                 f"{seconds:.0f} s")
    return rec


def fit_and_score(stage, actor, groups: list[dict], stats: dict, args, cfg,
                  data_seed: int) -> dict:
    """B.4 for DAPO's actor and the eq. 12 baselines alike: the actor (pi_ref's weights, its
    log-probs cached in groups) fitted on eq. 12, saved by the stage, and its greedy accuracy
    next to pi_ref's; returns the stage's record."""
    t0 = time.time()
    step, log = fit_actor(actor, groups, stats, args, stage.run_dir, stage.device)
    train_time = time.time() - t0
    stage.save(actor, step, cfg, data_seed)
    record = accuracy_vs_pi_ref(actor.eval(), stage.run_dir, args.round, args.eval_n, cfg,
                                data_seed, stage.device)
    record.update(filter=stats, train_time_s=train_time, beta=args.beta, lr=args.lr,
                  last_log=log[-1] if log else {})
    return record
