import math

import torch

from dapo import action_advantages, advantages, dapo_loss, passes_gap_filter


def test_advantages_on_fresh_values(rng):
    for _ in range(20):
        xs = [rng.random() for _ in range(rng.randint(2, 9))]
        mean = sum(xs) / len(xs)
        got = advantages(torch.tensor(xs, dtype=torch.float64)).tolist()
        assert all(abs(g - (x - mean)) < 1e-9 for g, x in zip(got, xs))


def test_action_advantages_on_fresh_duplicates(rng):
    for _ in range(20):
        acts = [[rng.randint(0, 3)] for _ in range(rng.randint(2, 8))]
        vals = [rng.random() for _ in acts]
        mean = sum(vals) / len(vals)
        got = action_advantages(acts, vals)
        first = {}
        for a, v in zip(acts, vals):
            first.setdefault(tuple(a), v - mean)
        assert got.keys() == first.keys()
        assert all(abs(got[k] - first[k]) < 1e-5 for k in first)


def test_gap_filter_on_fresh_spreads(rng):
    for _ in range(50):
        adv = [rng.uniform(-1, 1) for _ in range(rng.randint(1, 6))]
        t = rng.uniform(0, 1.5)
        assert passes_gap_filter(adv, t) == (max(adv) - min(adv) >= t)


def test_dapo_loss_on_fresh_batches(rng):
    for _ in range(20):
        n, beta = rng.randint(1, 10), rng.uniform(0.01, 2)
        logp, ref, adv = ([rng.uniform(-5, 0) for _ in range(n)] for _ in range(3))
        want = sum((a / beta - (lp - r)) ** 2 for lp, r, a in zip(logp, ref, adv)) / (2 * n)
        got = float(dapo_loss(*(torch.tensor(x, dtype=torch.float64) for x in (logp, ref, adv)),
                              beta))
        assert math.isclose(got, want, rel_tol=1e-6)
