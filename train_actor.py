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
"""

from __future__ import annotations

import argparse
import math
import random
import time

import torch
from tqdm import tqdm

from artifacts import (actor_path, check_made_from, critic_path, finish_stage, load_critic,
                       load_policy, load_rollouts, made_by, policy_path, read_results, reusable,
                       rollouts_path, stamp, task_of, task_record)
from model import (autocast, continuation_logprob, pack_continuations, sequence_logprobs,
                   state_values, unflat)
from common import (UserError, adam_step, adamw, add_round_args, add_tag_arg, args_dict,
                    friendly_errors, load_torch, log_metrics, parse_with_preset, positive,
                    prepare_run_dir, save_checkpoint, tag_suffix)
from dapo import action_advantages, dapo_loss, first_step, is_terminal, passes_gap_filter
from data import EOT_ID, decode, encode, parse_prompt, split_lines, verify
from evaluation import accuracy_vs_pi_ref
import parallel

# The flags that change what actor_R.pt holds (artifacts.made_by).
MADE_BY = ("seed", "beta", "adv_threshold", "lr", "advantage", "epochs", "batch_pairs")
# --advantage: the name its actor checkpoint and results record get (the variants never
# replace DAPO's actor_R.pt, which is pi_ref of round R + 1)
SUFFIX = {"critic": "", "oracle": "_oracle", "step-mc": "_step_mc", "response": "_response"}


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_round_args(p, "seed for batching")
    g = p.add_argument_group("DAPO (docs/paper.md §3)")
    g.add_argument("--beta", type=float, default=0.1, help="KL weight beta of eq. 12")
    g.add_argument("--adv-threshold", type=float, default=0.1,
                   help="drop states whose max A - min A is below this (App. F.1)")
    g.add_argument("--lr", type=float, default=3e-5, help="actor AdamW learning rate")
    g.add_argument("--advantage", choices=tuple(SUFFIX), default="critic",
                   help="critic: eq. 13 with critic_R.pt (DAPO); oracle: an ablation whose "
                   "V(s∘a) is the verifier's per-step truth (privileged); step-mc: a baseline, "
                   "A = r_i - mean_j r_j from each continuation's own reward, no critic; "
                   "response: a baseline, the whole response one action, A = r - mean r of "
                   "the problem's K samples. Each but critic writes actor_R_<name>.pt")
    add_tag_arg(g, as_pi_ref=True)
    g.add_argument("--epochs", type=int, default=2, help="passes over the kept states")
    g.add_argument("--batch-pairs", type=int, default=128,
                   help="(state, action) pairs per step; whole states only")
    g = p.add_argument_group("evaluation and logging")
    g.add_argument("--eval-n", type=int, default=500, help="problems per evaluation split")
    g.add_argument("--log-every", type=int, default=20, help="steps between log lines")
    args = parse_with_preset(p, argv, "actor")
    for name in ("round", "epochs", "batch_pairs", "eval_n", "log_every", "beta", "lr"):
        positive(name.replace("_", "-"), getattr(args, name))
    positive("adv-threshold", args.adv_threshold, allow_zero=True)
    tag_suffix(args.tag)
    return args


def next_state_values(states, acts, critic) -> dict:
    """The learned critic's V(s∘a) of every distinct non-terminal next state, keyed by
    (state index, action tokens): one evaluation each."""
    nxt, keys = [], []
    for i, a_list in enumerate(acts):
        for a in dict.fromkeys(map(tuple, a_list)):
            if not is_terminal(list(a)):
                keys.append((i, a))
                nxt.append(states[i] + list(a))
    values = state_values(critic, nxt, EOT_ID).tolist() if nxt else []
    return dict(zip(keys, values))


def build_pairs(data: dict, threshold: float, advantage: str = "critic",
                critic=None) -> tuple[list[dict], dict]:
    """(state, action, advantage) groups, one per kept state, and filter statistics.

    advantage "critic" is DAPO: eq. 13 with the learned critic's V(s∘a). "oracle" (an
    ablation) puts in V(s∘a) = 1 if every line of s∘a is right by the verifier's per-step
    truth, else 0: privileged information DAPO does not have. "step-mc" (a baseline, no
    critic) puts in each continuation's own reward, a one-sample Monte Carlo value of its
    first step (identical first steps pool their rewards), so A(s, a_i) = r_i - mean_j r_j."""
    states, conts, rewards = unflat(data["states"]), unflat(data["continuations"]), \
        data["rewards"]
    K = rewards.shape[1]
    problems = [parse_prompt(p) for p in data["problems"]]
    sp = data["state_problem"].tolist()
    acts = [[first_step(conts[i * K + k]) for k in range(K)] for i in range(len(states))]
    v_next = next_state_values(states, acts, critic) if advantage == "critic" else {}
    groups, n_terminal, ranked, rank_ok = [], 0, 0, 0
    for i, a_list in enumerate(acts):
        p = problems[sp[i]]
        done = decode(states[i][len(encode(p.prompt)):])  # the response so far
        t = len(split_lines(done))  # index of the line the action writes
        verdicts = {tuple(a): verify(p, done + decode([x for x in a if x != EOT_ID]))
                    for a in a_list}  # the verifier on s∘a, once per distinct action
        vals = []
        for a in a_list:
            v, n_terminal = verdicts[tuple(a)], n_terminal + is_terminal(a)
            if is_terminal(a):  # WHERE THE PAPER IS SILENT (docs/paper.md §6): a finished
                vals.append(v.reward)  # solution's value is the verifier's exact reward
            elif advantage == "oracle":  # BEYOND THE PAPER: an ablation, all lines right
                vals.append(float(all(v.line_ok[:t + 1])))
            elif advantage == "critic":
                vals.append(v_next[(i, tuple(a))])
        if advantage == "step-mc":  # BEYOND THE PAPER: a baseline without a critic
            vals = pooled(a_list, rewards[i].tolist())
        uniq = action_advantages(a_list, vals)  # eq. 13, mean over all K samples
        # diagnostic only (never trained on): does A rank a right step above a wrong sibling?
        right = [t < len(verdicts[a].line_ok) and verdicts[a].line_ok[t] for a in uniq]
        for (A1, r1) in zip(uniq.values(), right):
            for (A2, r2) in zip(uniq.values(), right):
                if r1 and not r2:
                    ranked += 1
                    rank_ok += (A1 > A2) + 0.5 * (A1 == A2)
        if passes_gap_filter(list(uniq.values()), threshold):  # App. F.1
            groups.append({"state": states[i], "actions": [list(a) for a in uniq],
                           "adv": list(uniq.values())})
    return groups, pair_stats(groups, len(states), n_terminal / max(1, len(states) * K),
                              ranked, rank_ok)


def pooled(actions: list, rewards: list[float]) -> list[float]:
    """Each sample's reward replaced by the mean reward of the samples with the same action.

        >>> pooled([[1], [2], [1]], [1.0, 0.0, 0.0])
        [0.5, 0.0, 0.5]
    """
    by: dict = {}
    for a, r in zip(actions, rewards):
        by.setdefault(tuple(a), []).append(r)
    return [sum(by[tuple(a)]) / len(by[tuple(a)]) for a in actions]


def pair_stats(groups, n_states: int, terminal_frac: float, ranked: int, rank_ok) -> dict:
    return {"states": n_states, "kept_states": len(groups),
            "kept_state_frac": len(groups) / max(1, n_states),
            "pairs": sum(len(g["actions"]) for g in groups),
            "terminal_action_frac": terminal_frac, "sibling_pairs": ranked,
            "sibling_rank_acc": rank_ok / ranked if ranked else None}


def response_pairs(data: dict, threshold: float) -> tuple[list[dict], dict]:
    """Response-level eq. 12, a baseline BEYOND THE PAPER that isolates what steps buy: one
    state per problem, its bare prompt, whose actions are the K whole responses pi_ref
    sampled from it (the A.2 continuations of that state, <|endoftext|> included), with
    A = r - the mean reward of the K. No critic, no steps."""
    states, conts, rewards = unflat(data["states"]), unflat(data["continuations"]), \
        data["rewards"]
    K = rewards.shape[1]
    prompt_len = [len(encode(p)) for p in data["problems"]]
    sp = data["state_problem"].tolist()
    groups, n_prompts = [], 0
    for i, s in enumerate(states):
        if len(s) != prompt_len[sp[i]]:
            continue  # not a bare prompt
        n_prompts += 1
        a_list = conts[i * K:(i + 1) * K]
        uniq = action_advantages(a_list, pooled(a_list, rewards[i].tolist()))
        if passes_gap_filter(list(uniq.values()), threshold):
            groups.append({"state": s, "actions": [list(a) for a in uniq],
                           "adv": list(uniq.values())})
    return groups, pair_stats(groups, n_prompts, 1.0, 0, 0)


def state_batches(groups: list[dict], batch_pairs: int, rng: random.Random) -> list[list[int]]:
    """Shuffle states, then cut into batches of about batch_pairs pairs; all actions of a state
    stay in the same batch (state-wise batching, docs/paper.md §3.6)."""
    order = list(range(len(groups)))
    rng.shuffle(order)
    batches, cur, n = [], [], 0
    for i in order:
        if cur and n + len(groups[i]["actions"]) > batch_pairs:
            batches.append(cur)
            cur, n = [], 0
        cur.append(i)
        n += len(groups[i]["actions"])
    return batches + ([cur] if cur else [])


def attach_ref_logprobs(ref, groups: list[dict]) -> None:
    """log pi_ref(a|s) of every kept pair, summed over the action's tokens, computed once with
    the frozen pi_ref (docs/paper.md §3.4) and stored in each group as "ref_logp"."""
    flat_s = [g["state"] for g in groups for _ in g["actions"]]
    flat_a = [a for g in groups for a in g["actions"]]
    ref_logp = sequence_logprobs(ref, flat_s, flat_a, EOT_ID)
    start = 0
    for g in groups:
        g["ref_logp"] = ref_logp[start:start + len(g["actions"])]
        start += len(g["actions"])


def batch_loss(actor, groups: list[dict], b: list[int], beta: float, device) -> tuple:
    """Eq. 12 on the pairs of the states b, and the sums behind the authors' diagnostics
    (docs/paper.md §3.7): (loss, [loss * pairs, pairs, sign agreements, pairs with A != 0,
    sum of log-ratios where A > 0, count, the same where A < 0, count])."""
    # EXERCISE actor-step (eq. 12)
    s = [groups[i]["state"] for i in b for _ in groups[i]["actions"]]
    a = [x for i in b for x in groups[i]["actions"]]
    adv = torch.tensor([x for i in b for x in groups[i]["adv"]], device=device)
    ref_lp = torch.cat([groups[i]["ref_logp"] for i in b]).to(device)
    idx, mask = pack_continuations(s, a, EOT_ID, device)
    with autocast(device):
        logp = continuation_logprob(actor, idx, mask)  # log pi_theta(a|s), summed
    loss = dapo_loss(logp.float(), ref_lp, adv, beta)  # eq. 12
    with torch.no_grad():
        logratio = logp.detach().float() - ref_lp
        pos, neg = adv > 0, adv < 0
        agree = (torch.sign(logratio) == torch.sign(adv)) & (pos | neg)
        sums = torch.stack([loss.detach() * len(a), torch.tensor(len(a), device=device),
                            agree.sum(), (pos | neg).sum(), logratio[pos].sum(), pos.sum(),
                            logratio[neg].sum(), neg.sum()]).float()
    return loss, sums


def rank_loss(actor, groups: list[dict], b: list[int], beta: float, device) -> tuple:
    """batch_loss on the states b of a batch; under torchrun, on this rank's share of them
    (parallel.batch_share), weighted for DDP by pairs (parallel.share)."""
    if parallel.world() == 1:
        return batch_loss(actor, groups, b, beta, device)
    mine, n = parallel.batch_share(b)
    loss, sums = batch_loss(actor, groups, mine, beta, device)

    def pairs(states):
        return sum(len(groups[i]["actions"]) for i in states)
    return parallel.share(loss, pairs(mine) if n else 0, pairs(b)), sums * (n > 0)


def train(actor, groups: list[dict], stats: dict, args, run_dir, device) -> tuple[int, list]:
    """Minimise eq. 12 over --epochs passes of state-wise batches; returns (steps, log)."""
    actor.train()
    opt = adamw(actor, args.lr, device)
    rng = random.Random(args.seed)
    epochs = [state_batches(groups, args.batch_pairs, rng) for _ in range(args.epochs)]
    total, step, t0 = sum(len(e) for e in epochs), 0, time.time()
    acc = torch.zeros(8, device=device)  # running sums, read once per interval (no syncs)
    bar = tqdm(total=total, desc="actor", unit="step", dynamic_ncols=True)
    log = []
    ddp = parallel.data_parallel(actor)
    for b in [b for batches in epochs for b in batches]:
        loss, sums = ddp(rank_loss, groups, b, args.beta, device)
        adam_step(actor, opt, loss)
        acc += sums
        step += 1
        bar.update(1)
        if step % args.log_every == 0 or step == total:
            L, npairs, ag, nz, lp, npos, ln, nneg = parallel.mean_of(acc).tolist()  # 1 sync
            if not math.isfinite(L):
                raise UserError(f"the actor's loss became {L} by step {step}; nothing was "
                                "saved: lower --lr or raise --beta")
            rec = {"stage": f"dapo_{args.round}", "step": step,
                   "loss": L / max(1.0, npairs), "sign_agree": ag / max(1.0, nz),
                   "logratio_pos": lp / max(1.0, npos), "logratio_neg": ln / max(1.0, nneg),
                   "kept_state_frac": stats["kept_state_frac"]}
            bar.write(f"actor step {step}/{total} | avg loss {rec['loss']:.3f} | sign "
                      f"agree {rec['sign_agree']:.1%} | avg log-ratio A>0 "
                      f"{rec['logratio_pos']:+.3f}, A<0 {rec['logratio_neg']:+.3f} | "
                      f"kept {rec['kept_state_frac']:.0%} | {time.time() - t0:.0f} s")
            log_metrics(run_dir, rec)
            log.append(rec)
            acc.zero_()
    bar.close()
    actor.eval()
    return step, log


def inputs(args, run_dir) -> tuple[dict, list]:
    """This round's rollouts, checked to come from pi_ref's current file, and the critic's
    path (none for the oracle ablation), checked to come from those rollouts."""
    pi_ref, rolls = policy_path(run_dir, args.round), rollouts_path(run_dir, args.round)
    fix = f"make it again with train_critic.py --round {args.round} --force"
    data = load_rollouts(run_dir, args.round)
    check_made_from(data, rolls, [pi_ref], fix)
    files = [pi_ref, rolls]
    if args.advantage == "critic":
        crit = critic_path(run_dir, args.round)
        ckpt = load_torch(crit, "critic checkpoint",
                          f"run train_critic.py --round {args.round} first")
        check_made_from(ckpt, crit, [rolls], fix)
        files.append(crit)
    return data, files


def main(argv=None):
    args = get_args(argv)
    device = parallel.setup(args.device)
    run_dir = prepare_run_dir(args.run_dir, must_exist=True)
    read_results(run_dir)  # a malformed results.json stops here, not after training
    t_start = time.time()
    suffix = SUFFIX[args.advantage] + tag_suffix(args.tag)
    stage = f"dapo_{args.round}{suffix}"
    out = actor_path(run_dir, args.round, suffix, args.as_pi_ref)
    ref, pckpt = load_policy(run_dir, args.round, device)
    ref.eval()
    cfg, data_seed = task_of(pckpt, policy_path(run_dir, args.round))
    data, files = inputs(args, run_dir)
    want = made_by(stage, args, MADE_BY, {f.name: f for f in files})
    record = reusable(run_dir, out, stage, want, args.force, "actor checkpoint",
                      eval_n=args.eval_n)
    if record is not None:
        return record
    # ---- B.1-B.3: actions, advantages (eq. 13), filters, cached reference log-probs
    if args.advantage == "response":
        groups, stats = response_pairs(data, args.adv_threshold)
    else:
        critic = load_critic(run_dir, args.round, device)[0].eval() \
            if args.advantage == "critic" else None
        groups, stats = build_pairs(data, args.adv_threshold, args.advantage, critic)
        del critic
    if not groups:
        raise UserError("no state passed the advantage filter; lower --adv-threshold or roll "
                        "out more problems")
    attach_ref_logprobs(ref, groups)
    print(f"round {args.round}: {stats['kept_states']}/{stats['states']} states kept "
          f"({stats['kept_state_frac']:.0%}) with {stats['pairs']} (state, action) pairs; "
          f"beta={args.beta}, lr={args.lr}")
    if stats["sibling_pairs"]:
        print(f"advantage check: over {stats['sibling_pairs']} (right, wrong) sibling steps "
              f"(the verifier's per-step truth), A ranks the right one higher "
              f"{stats['sibling_rank_acc']:.1%} of the time (50 % = no signal)")

    # ---- B.4: the actor, initialised from pi_ref (whose log-probs are cached), on eq. 12
    t0 = time.time()
    step, log = train(ref, groups, stats, args, run_dir, device)
    actor, train_time = ref, time.time() - t0
    save_checkpoint(out, actor, step=step, stage=stage, args=args_dict(args), made_by=want,
                    **task_record(cfg, data_seed))

    # ---- evaluation: greedy accuracy before (pi_ref) and after (the actor)
    record = accuracy_vs_pi_ref(actor.eval(), run_dir, args.round, args.eval_n, cfg, data_seed,
                                device)
    record.update(filter=stats, train_time_s=train_time, beta=args.beta, lr=args.lr,
                  last_log=log[-1] if log else {}, advantage=args.advantage,
                  made_by=stamp(out, eval_n=args.eval_n))
    return finish_stage(run_dir, stage, record, t_start)


if __name__ == "__main__":
    with friendly_errors():
        main()
