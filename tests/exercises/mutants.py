"""The instructors' key (never part of a student copy): mistakes students make, each a small
patch of the reference that its set's tests must catch with the hint it names.
python -m course.exercise mutants applies each in a scratch copy and checks; docs/handout.md lists
them as a marking guide.

Each entry: (name, set, file, the reference's text, the mistaken text, a phrase of the hint
the failing test must print).
"""

MUTANTS = [
    # ---- advantages: eq. 13, App. F.1, eq. 12
    ("no baseline", "advantages", "dapo.py",
     "    return values - values.mean()", "    return values",
     "less the plain mean over the sampled siblings"),
    ("std-normalised advantages", "advantages", "dapo.py",
     "    return values - values.mean()",
     "    return (values - values.mean()) / (values.std() + 1e-8)",
     "no division by their std"),
    ("de-duplicated before the mean", "advantages", "dapo.py",
     "    adv = advantages(torch.tensor(values, dtype=torch.float32)).tolist()\n"
     "    out: dict[tuple, float] = {}\n"
     "    for a, A in zip(actions, adv):\n"
     "        out.setdefault(tuple(a), A)\n"
     "    return out",
     "    first: dict[tuple, float] = {}\n"
     "    for a, v in zip(actions, values):\n"
     "        first.setdefault(tuple(a), v)\n"
     "    adv = advantages(torch.tensor(list(first.values()))).tolist()\n"
     "    return dict(zip(first, adv))",
     "de-duplicating actions before the mean"),
    ("gap filter on the largest |A|", "advantages", "dapo.py",
     "    return max(adv) - min(adv) >= threshold",
     "    return max(abs(a) for a in adv) >= threshold", "not the largest |A|"),
    ("gap filter exclusive", "advantages", "dapo.py",
     "    return max(adv) - min(adv) >= threshold",
     "    return max(adv) - min(adv) > threshold", "inclusive (>=)"),
    ("flipped log-ratio", "advantages", "dapo.py",
     "    logratio = logp - ref_logp", "    logratio = ref_logp - logp",
     "check the sign of the log-ratio"),
    ("A times beta", "advantages", "dapo.py",
     "((adv / beta - logratio) ** 2)", "((adv * beta - logratio) ** 2)",
     "A divided (not multiplied) by beta"),
    ("summed over pairs", "advantages", "dapo.py",
     "((adv / beta - logratio) ** 2).mean()", "((adv / beta - logratio) ** 2).sum()",
     "the mean (not the sum) over pairs"),
    # ---- critic: MC targets, eq. 14-15, the balanced pick
    ("MSE instead of BCE", "critic", "dapo.py",
     "    return torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), "
     "mc.float())",
     "    return ((torch.sigmoid(logits.float()) - mc.float()) ** 2).mean()", "not MSE"),
    ("hard targets", "critic", "dapo.py",
     "binary_cross_entropy_with_logits(logits.float(), mc.float())",
     "binary_cross_entropy_with_logits(logits.float(), (mc > 0.5).float())",
     "a rounded target"),
    ("MC as a sum", "critic", "dapo.py",
     "    return rewards.float().mean(dim=-1)", "    return rewards.float().sum(dim=-1)",
     "not their sum or their best"),
    ("balanced pick without fill-up", "critic", "dapo.py",
     "    take_good = min(len(good), max(want_good, n - len(bad)))",
     "    take_good = min(len(good), want_good)", "fill up with the other kind"),
    ("balanced pick without shuffling", "critic", "dapo.py",
     "    rng.shuffle(good)\n    rng.shuffle(bad)\n", "", "shuffle each kind"),
    # ---- steps: spans, states, actions, completion
    ("newline dropped from the step", "steps", "dapo.py",
     "            spans.append((start, i + 1))", "            spans.append((start, i))",
     "a step is a line with its"),
    ("off-by-one step start", "steps", "dapo.py",
     "            start = i + 1", "            start = i",
     "each starts where the last ended"),
    ("bare prompt missing from the states", "steps", "dapo.py",
     "for t in range(len(spans))]", "for t in range(1, len(spans))]",
     "the states are the bare prompt"),
    ("finished response kept as a state", "steps", "dapo.py",
     "    return [prompt + response[:spans[t][0]] for t",
     "    return [prompt + response[:spans[t][1]] for t", "the states are the bare prompt"),
    ("newline dropped from the action", "steps", "dapo.py",
     "            return continuation[:i + 1]", "            return continuation[:i]",
     "up to and including its first"),
    ("continuation scored alone", "steps", "dapo.py",
     "        text = decode(states[i][prompt_len:] + [t for t in c if t != EOT_ID])",
     "        text = decode([t for t in c if t != EOT_ID])",
     "the state's steps followed by the continuation"),
    # ---- sampler: the KV cache
    ("KV cache position off by one", "sampler", "model.py",
     "    next_pos = lengths.repeat_interleave(n)  #",
     "    next_pos = lengths.repeat_interleave(n) + 1  #", "the position after its row"),
    ("first-token logits after prefill", "sampler", "model.py",
     "    logits = model.lm_head(h[:, -1]).float().repeat_interleave(n, dim=0)",
     "    logits = model.lm_head(h[:, 0]).float().repeat_interleave(n, dim=0)",
     "read the logits at the last"),
    ("padding keys visible", "sampler", "model.py",
     "        m = cache.key_valid[:, :cache.len + 1]  #",
     "        m = torch.ones_like(cache.key_valid[:, :cache.len + 1])  #", "its row's real keys"),
    # ---- actor-step: one step of eq. 12
    ("pi_ref recomputed from the moving actor", "actor-step", "dapo.py",
     "    loss = dapo_loss(logp.float(), ref_lp, adv, beta)",
     "    loss = dapo_loss(logp.float(), logp.detach().float(), adv, beta)",
     "never recomputed from the actor"),
    ("token-mean log-probs", "actor-step", "dapo.py",
     "        logp = continuation_logprob(actor, idx, mask)  #",
     "        logp = continuation_logprob(actor, idx, mask) / mask.sum(1)  #",
     "the sum (not the mean)"),
    ("log-probs detached", "actor-step", "dapo.py",
     "    loss = dapo_loss(logp.float(), ref_lp, adv, beta)",
     "    loss = dapo_loss(logp.detach().float(), ref_lp, adv, beta)",
     "must be differentiable"),
    ("last action token dropped", "actor-step", "dapo.py",
     "    idx, mask = pack_continuations(s, a, EOT_ID, device)",
     "    idx, mask = pack_continuations(s, [x[:-1] for x in a], EOT_ID, device)",
     "every action token included"),
]
