import math

import torch

from dapo import balanced_pick, critic_loss, mc_value


def test_critic_loss_on_fresh_targets(rng):
    for _ in range(20):
        n = rng.randint(1, 10)
        logits, mc = [rng.uniform(-4, 4) for _ in range(n)], [rng.random() for _ in range(n)]
        want = -sum(m * math.log(1 / (1 + math.exp(-z))) + (1 - m) * math.log(
            1 - 1 / (1 + math.exp(-z))) for z, m in zip(logits, mc)) / n
        assert math.isclose(float(critic_loss(torch.tensor(logits), torch.tensor(mc))), want,
                            rel_tol=1e-4)


def test_mc_value_on_fresh_rewards(rng):
    r = torch.tensor([[float(rng.random() < 0.5) for _ in range(7)] for _ in range(5)])
    assert torch.allclose(mc_value(r), r.sum(1) / 7)


def test_balanced_pick_on_fresh_rewards(rng):
    for _ in range(50):
        rewards = [float(rng.random() < rng.random()) for _ in range(rng.randint(1, 10))]
        n = rng.randint(1, 10)
        got = balanced_pick(rewards, n, rng)
        good = sum(rewards[i] > 0 for i in got)
        n_good = sum(r > 0 for r in rewards)
        assert len(got) == min(n, len(rewards)) and got == sorted(set(got))
        n_bad = len(rewards) - n_good
        assert min(n_good, n // 2) <= good <= min(n_good, max((n + 1) // 2, n - n_bad))
