"""Tests of dapo.py's building blocks on hand-sized examples: steps, states, MC targets, the
critic loss, advantages, the terminal rule and the filters."""

import math
import random

import pytest
import torch

from dapo import (advantages, balanced_pick, complete, critic_loss, first_step, is_terminal,
                  mc_noise, mc_value, prefix_states, scripted_policy, step_spans)
from data import EOT_ID, NL_ID, Problem, decode, encode, verify

PROB = Problem(47, (("+", 38), ("-", 19), ("*", 3)))


def steps_of(tokens):
    """The steps (actions) of a response as token lists, cut at step_spans."""
    return [tokens[a:b] for a, b in step_spans(tokens)]


def test_step_spans_are_token_exact():
    """Guards against off-by-one spans: every step ends with its own "\\n" token and the steps
    concatenate back to the response exactly."""
    resp = encode(PROB.solution)
    spans = step_spans(resp)
    assert spans == [(0, 9), (9, 18), (18, 30)]
    steps = steps_of(resp)
    assert [decode(s) for s in steps] == ["47+38=85\n", "85-19=66\n", "A: 66*3=198\n"]
    assert all(s[-1] == NL_ID and s.count(NL_ID) == 1 for s in steps)
    assert sum(steps, []) == resp


def test_unfinished_last_step_is_kept():
    """Guards against dropping a truncated last line (an action with no closing "\\n")."""
    assert [decode(s) for s in steps_of(encode("1+2=3\nA: 3*"))] == ["1+2=3\n", "A: 3*"]
    assert steps_of([]) == []


def test_prefix_states_include_bare_prompt_and_exclude_terminal():
    """Guards against losing the bare prompt (a state, docs/paper.md §6) or adding the finished
    solution (terminal, nothing left to act on) to the state set."""
    prompt, resp = encode(PROB.prompt), encode(PROB.solution)
    states = prefix_states(prompt, resp)
    assert len(states) == 3
    assert states[0] == prompt
    assert decode(states[2]) == PROB.prompt + "47+38=85\n85-19=66\n"
    for t, s in enumerate(states):  # s_t = x + a_0 + ... + a_{t-1}, token for token
        assert s == prompt + sum(steps_of(resp)[:t], [])


def test_first_step_and_terminal_rule():
    """Guards against a wrong action boundary or a wrong terminal test: the action ends at the
    first "\\n"; the answer step and a line that never ends are terminal, a step is not."""
    assert decode(first_step(encode("85-19=66\n66*3=198\n"))) == "85-19=66\n"
    assert first_step(encode("12")) == encode("12")
    assert not is_terminal(encode("85-19=66\n"))
    assert is_terminal(encode("A: 66*3=198\n"))
    assert is_terminal(encode("85-1") + [EOT_ID])
    assert is_terminal([])


def test_balanced_pick():
    """Guards against unbalanced selection: half correct and half incorrect where possible,
    filled up from the other kind otherwise, never more than n."""
    rng = random.Random(0)
    r = [1, 1, 1, 1, 1, 0, 0, 0]
    pick = balanced_pick(r, 4, rng)
    assert len(pick) == 4 and sum(r[i] for i in pick) == 2
    pick = balanced_pick([1, 0, 0, 0, 0, 0], 4, rng)  # only one correct: take it, fill with bad
    assert len(pick) == 4 and 0 in pick
    assert sorted(balanced_pick([0, 0], 4, rng)) == [0, 1]


def test_critic_bce_by_hand():
    """Guards against a hard-label or mis-signed BCE: eq. 14-15 on soft targets.
    V = sigmoid(0) = 0.5, MC = 0.25: -(0.25 ln 0.5 + 0.75 ln 0.5) = ln 2.
    V = sigmoid(ln 3) = 0.75, MC = 1: -ln 0.75.  Mean of the two."""
    logits = torch.tensor([0.0, math.log(3.0)])
    mc = torch.tensor([0.25, 1.0])
    want = (math.log(2.0) - math.log(0.75)) / 2
    assert critic_loss(logits, mc).item() == pytest.approx(want, rel=1e-6)
    # the minimiser of soft BCE over a constant is the mean target
    c = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([c], lr=2.0)
    for _ in range(300):
        opt.zero_grad()
        critic_loss(c.expand(4), torch.tensor([0.0, 0.25, 0.5, 1.0])).backward()
        opt.step()
    assert torch.sigmoid(c).item() == pytest.approx(0.4375, abs=1e-4)


def test_advantage_baseline_terminal_rule_and_filters_by_hand():
    """Guards against a V(s) baseline, a mean over unique actions, or ignoring the verifier at
    terminal next states. Hand example: M = 4 sampled actions a, a, b, c with critic values
    V(s∘a) = 0.8, V(s∘b) = 0.2, and c a finished solution the verifier scores 1 (the critic's
    0.3 guess must not be used). Mean = (0.8 + 0.8 + 0.2 + 1) / 4 = 0.7, so
    A = 0.1, 0.1, -0.5, 0.3; unique actions keep a (0.1), b (-0.5), c (0.3); gap 0.8 >= 0.1."""
    critic_guess = {"a": 0.8, "b": 0.2, "c": 0.3}
    verifier = {"c": 1.0}
    sampled = ["a", "a", "b", "c"]
    vals = torch.tensor([verifier.get(x, critic_guess[x]) for x in sampled])
    adv = advantages(vals)
    assert adv.tolist() == pytest.approx([0.1, 0.1, -0.5, 0.3])
    uniq = dict(zip(sampled, adv.tolist()))
    assert uniq == pytest.approx({"a": 0.1, "b": -0.5, "c": 0.3})
    assert max(uniq.values()) - min(uniq.values()) >= 0.1
    # a state whose actions all look alike is dropped by the 0.1 gap filter
    flat = advantages(torch.tensor([0.50, 0.52, 0.55, 0.5]))
    assert float(flat.max() - flat.min()) < 0.1


def test_advantage_groups_apply_terminal_rule_and_filters():
    """Guards against the actor's data builder diverging from the hand rules above: the same
    numbers must come out of dapo.sibling_actions -> critic_values -> advantage_groups on a
    real (tiny) rollout structure, and out of the eq. 12 baselines' values."""
    from baselines.train_eq12 import get_args, oracle_values, pairs, response_pairs
    from dapo import advantage_groups, critic_values, sibling_actions
    from model import flat

    def build_pairs(data, threshold, advantage, critic=None):
        if advantage != "critic":
            return pairs(data, get_args(["--advantage", advantage,
                                         "--adv-threshold", str(threshold)]))
        sibs = sibling_actions(data)
        return advantage_groups(sibs, critic_values(critic, sibs), threshold)

    p = Problem(5, (("+", 3), ("*", 2)))  # "Q: 5+3*2\n", solution "5+3=8\nA: 8*2=16\n"
    s0 = encode(p.prompt)
    s1 = s0 + encode("5+3=8\n")
    conts = [encode("5+3=8\nA: 8*2=16\n") + [EOT_ID], encode("5+3=9\nA: 9*2=18\n") + [EOT_ID],
             encode("A: 8*2=16\n") + [EOT_ID], encode("A: 8*2=17\n") + [EOT_ID]]

    class FakeCritic(torch.nn.Module):  # V(s∘a) = 0.9 if the step is right, else 0.1
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def value_logits(self, idx):
            out = torch.full(idx.shape, -2.1972)  # logit(0.1)
            for r in range(idx.size(0)):
                if "5+3=8\n" in decode([t for t in idx[r].tolist() if t != EOT_ID]):
                    out[r] = 2.1972  # logit(0.9)
            return out

    data = {"states": flat([s0, s1]), "continuations": flat(conts),
            "rewards": torch.tensor([[1.0, 0.0], [1.0, 0.0]]), "problems": [p.prompt],
            "state_problem": torch.tensor([0, 0])}
    groups, stats = build_pairs(data, 0.1, "critic", FakeCritic())
    assert stats["kept_states"] == 2 and stats["pairs"] == 4
    g0, g1 = groups
    assert g0["adv"] == pytest.approx([0.4, -0.4], abs=1e-3)  # 0.9 / 0.1 around mean 0.5
    assert g1["adv"] == pytest.approx([0.5, -0.5])  # terminal: verifier rewards 1 and 0
    assert decode(g1["actions"][0]) == "A: 8*2=16\n"
    assert stats["sibling_pairs"] == 2 and stats["sibling_rank_acc"] == 1.0
    _, stats = build_pairs(data, 0.95, "critic", FakeCritic())
    assert stats["kept_states"] == 1  # only the exact terminal gap (1.0) survives
    groups, _ = build_pairs(data, 0.1, "oracle")  # oracle ablation: per-step truth
    assert groups[0]["adv"] == pytest.approx([0.5, -0.5])
    assert oracle_values(sibling_actions(data))[0] == [1.0, 0.0]
    # the critic-less baselines: each continuation's own reward, then whole responses
    data["rewards"] = torch.tensor([[0.0, 0.0], [1.0, 0.0]])  # 5+3=8, yet the answer slipped
    groups, stats = build_pairs(data, 0.0, "step-mc")
    assert groups[0]["adv"] == [0.0, 0.0] and groups[1]["adv"] == pytest.approx([0.5, -0.5])
    assert stats["sibling_rank_acc"] == 0.75  # a right step tied with its wrong sibling
    groups, stats = response_pairs(data, 0.0)
    assert stats["states"] == 1 and [decode(a) for a in groups[0]["actions"]] == [
        decode(c) for c in conts[:2]]  # whole responses, <|endoftext|> included
    assert groups[0]["adv"] == [0.0, 0.0]
    data["rewards"][0] = torch.tensor([1.0, 0.0])
    assert response_pairs(data, 0.0)[0][0]["adv"] == pytest.approx([0.5, -0.5])
    assert response_pairs(data, 1.5)[0] == []  # the gap filter applies too


def test_mc_estimate_matches_closed_form_within_binomial_ci():
    """Guards against a biased MC estimator (wrong reward assembly, off-by-one in the state's
    remaining steps, dropped continuations). With per-step error eps, V(s_t) = (1-eps)^(n-t) on a
    correct prefix and 0 after a slip; the estimate from K samples must fall inside a 4-sigma
    binomial interval around the closed form."""
    eps, K = 0.2, 400
    p = Problem(31, (("+", 12), ("*", 3), ("-", 40), ("+", 7)))
    resp = encode(p.solution)
    states = prefix_states(encode(p.prompt), resp)  # t = 0 .. 3 steps done
    slipped = encode(p.prompt + "31+12=44\n")  # a wrong first step: V = 0
    conts, rewards = complete(scripted_policy(eps, random.Random(0)), states + [slipped],
                              [p] * 5, K)
    mc = mc_value(rewards)
    assert rewards.shape == (5, K) and len(conts) == 5 * K
    for t in range(4):
        v = (1 - eps) ** (4 - t)
        half = 4 * math.sqrt(max(v * (1 - v), 1e-12) / K)
        assert abs(mc[t].item() - v) <= half + 1e-9, (t, mc[t].item(), v)
    assert mc[4].item() == 0.0


def test_verify_scores_the_state_plus_continuation():
    """Guards against scoring the continuation alone: the reward is of the whole response."""
    prefix = encode(PROB.prompt + "47+38=85\n")
    _, r = complete(lambda st, K: [encode("85-19=66\nA: 66*3=198\n")] * K, [prefix],
                    [PROB], 2)
    assert r.tolist() == [[1.0, 1.0]]
    assert verify(PROB, "85-19=66\nA: 66*3=198\n").reward == 0.0


def test_critic_examples_targets_by_hand():
    """Guards against misplaced critic targets: MC(s) at the last token of s, each later
    non-terminal state inside a continuation at its "\\n" with that continuation's reward, and
    no target on the finished solution (terminal) or on the stop token."""
    from training import critic_examples

    s0 = encode("Q: 5+3\n")  # 7 tokens, last index 6
    conts = [encode("5+3=8\nA: 8\n") + [EOT_ID], encode("5+3=9\nA: 9\n") + [EOT_ID]]
    # (critic_examples reads only token positions and rewards, so any two-line text will do)
    mc, rewards = torch.tensor([0.5]), torch.tensor([[1.0, 0.0]])
    ex = critic_examples([s0], conts, mc, rewards, [0], "continuations")
    assert [e[1] for e in ex] == [[(6, 0.5), (12, 1.0)], [(6, 0.5), (12, 0.0)]]
    assert ex[0][0] == s0 + encode("5+3=8\nA: 8\n")  # the stop token is not part of the input
    assert ex[0][0][12] == NL_ID
    assert critic_examples([s0], conts, mc, rewards, [0], "states") == [(s0, [(6, 0.5)])]


def test_evaluate_counts_on_hand_responses(monkeypatch):
    """Guards against wrong evaluation statistics: on four hand-written responses (right in
    full, right with a two-addition line, a wrong two-addition line, two slips) evaluate gives
    accuracy 2/4, one failure with 1 and one with 2 wrong lines, and 2 two-operation lines out
    of the 10 written, one of them right."""
    import evaluation
    p = Problem(47, (("+", 38), ("+", 19), ("*", 3)))
    responses = ["47+38=85\n85+19=104\nA: 104*3=312\n",
                 "47+38+19=104\nA: 104*3=312\n",
                 "47+38+19=94\nA: 94*3=282\n",
                 "47+38=86\n86+19=106\nA: 106*3=318\n"]
    monkeypatch.setattr(evaluation, "solve", lambda model, problems, *a, **k: responses)
    stats, fails = evaluation.evaluate(None, [p] * 4, keep_failures=5)
    assert stats["acc"] == 0.5 and stats["n"] == 4
    assert stats["fail_1_wrong"] == 0.5 and stats["fail_2_wrong"] == 0.5
    assert stats["two_op_lines"] == pytest.approx(2 / 10) and stats["two_op_acc"] == 0.5
    assert [f[1] for f in fails] == responses[2:]


def test_mc_noise_by_hand_and_against_the_true_values():
    """Guards against a wrong noise correction: by hand, MC = 0.25 and 1.0 with K = 4 give
    (0.25 * 0.75 / 3 + 0) / 2; on simulated targets (true V known) the estimate matches the
    targets' actual variance around V, and Brier against MC minus it matches Brier against V
    for a predictor that never saw the targets; K = 1 gives None."""
    assert mc_noise(torch.tensor([0.25, 1.0]), 4) == pytest.approx(0.25 * 0.75 / 3 / 2)
    assert mc_noise(torch.tensor([0.0, 1.0]), 1) is None
    gen = torch.Generator().manual_seed(0)
    K, n = 4, 200_000
    v = torch.rand(n, generator=gen)
    mc = (torch.rand(n, K, generator=gen) < v[:, None]).float().mean(1)
    pred = (v + 0.2 * torch.randn(n, generator=gen)).clamp(0, 1)  # some imperfect predictor
    noise = mc_noise(mc, K)
    assert noise == pytest.approx(float(((mc - v) ** 2).mean()), rel=0.02)
    assert noise == pytest.approx(float((v * (1 - v)).mean()) / K, rel=0.02)
    brier_v = float(((pred - v) ** 2).mean())
    assert float(((pred - mc) ** 2).mean()) - noise == pytest.approx(brier_v, rel=0.02)
