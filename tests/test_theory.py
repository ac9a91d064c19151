"""Theory checks for DAPO (Direct Advantage Policy Optimization, Liu et al., arXiv 2412.18279;
not ByteDance's 2025 "DAPO"). docs/paper.md §3-§4.

The functions under test are dapo.dapo_loss (eq. 12) and dapo.advantages (eq. 13). Everything
runs on the CPU in float64 with fixed seeds. Notation: pi_ref is the reference policy at one
state, u = log(pi / pi_ref) the log-ratio, c = A / beta the regression target, nu the sampling
distribution of actions, r = c - u the residual, and

    I_s(pi, pi_ref) = E_{a~pi}[A(a) - beta * u(a)]      (the per-state improvement term).

Two facts used below, derived from the loss (they are what the tests check numerically):

* Stationarity over a softmax policy of F(pi) = sum_a nu(a) * r(a)^2 / 2 is
  nu(a) * r(a) = lambda * pi(a) with lambda = sum_a nu(a) * r(a) (docs/paper.md §4). As nu, pi > 0,
  every r(a) has the sign of lambda. lambda < 0 would mean pi(a) > pi_ref(a) e^{c(a)} for all a,
  so 1 > E_ref[e^{A/beta}] >= e^{E_ref[A]/beta}, impossible when E_ref[A] = 0 (Jensen). So with
  a centred advantage lambda > 0, every r(a) > 0 and I_s(pi+) = beta * E_{pi+}[r] > 0, unless
  A == 0 (pi_ref already optimal), where pi+ = pi_ref. That is Theorem 3.2's per-state step.
* For lambda > 0 the stationary point is unique: for each a, w = r(a) solves w e^w = k(a) with
  k(a) = lambda * pi_ref(a) e^{c(a)} / nu(a), and sum_a pi_ref(a) e^{c(a) - w(a)} = 1 fixes
  lambda (the sum falls strictly in lambda). kkt_minimiser() solves this by Newton + bisection
  without autograd or dapo_loss, as an independent reference.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import dapo

DT = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The tensors here are tiny; intra-op threads only add contention (several-fold slower on a
    busy machine). The previous setting is restored for other test modules."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape, g):
    return torch.randn(*shape, generator=g, dtype=DT)


def rand(*shape, g):
    return torch.rand(*shape, generator=g, dtype=DT)


def dirichlet1(*shape, g):
    """Flat Dirichlet(1, ..., 1) samples along the last axis (normalised exponentials)."""
    e = -torch.log(rand(*shape, g=g))
    return e / e.sum(-1, keepdim=True)


def weighted_dapo_loss(logp, ref_logp, adv, beta, w):
    """sum_i w_i * 1/2 * (adv_i/beta - (logp_i - ref_logp_i))^2, computed by dapo.dapo_loss.

    dapo_loss averages over its N pairs. The residual is linear in (adv, logp, ref_logp), so
    scaling all three inputs of pair i by sqrt(N * w_i) scales its squared residual by N * w_i
    and the mean becomes the w-weighted sum. Any shape: all pairs are flattened together.
    """
    logp, ref_logp, adv, w = (t.reshape(-1) for t in (logp, ref_logp, adv, w))
    s = torch.sqrt(w * w.numel())
    return dapo.dapo_loss(s * logp, s * ref_logp, s * adv, beta)


def improvement(pi, ref_logp, adv, beta):
    """I_s(pi, pi_ref) = E_{a~pi}[A - beta * log(pi/pi_ref)] along the last axis."""
    return (pi * (adv - beta * (torch.log(pi) - ref_logp))).sum(-1)


def minimise(nu, adv, ref_logp, beta):
    """pi+ = argmin of the nu-weighted DAPO loss over softmax policies (last axis = actions),
    in float64 on the logits (the last one pinned at 0), by Newton's method from pi_ref with the
    Hessian's eigenvalues floored (so every step descends) and a backtracking line search, to
    machine precision. Several states at once are fine: the loss is a sum of per-state terms,
    so the joint minimiser is the per-state ones."""
    batch, m = ref_logp.shape[:-1], ref_logp.shape[-1]

    def objective(z):
        theta = torch.cat([z.view(*batch, m - 1), torch.zeros(*batch, 1, dtype=DT)], -1)
        return weighted_dapo_loss(torch.log_softmax(theta, -1), ref_logp, adv, beta, nu)

    z = (ref_logp[..., :-1] - ref_logp[..., -1:]).reshape(-1).clone()
    for _ in range(200):
        g = torch.func.grad(objective)(z)
        if g.abs().max() < 1e-13:
            break
        evals, evecs = torch.linalg.eigh(torch.func.jacrev(torch.func.grad(objective))(z))
        evals = evals.abs().clamp_min(1e-8 + 1e-6 * evals.abs().max())
        step = -evecs @ ((evecs.T @ g) / evals)
        f0, slope, t = objective(z).item(), (step @ g).item(), 1.0
        if -slope > 1e-13 * max(1.0, abs(f0)):  # else the decrease is below round-off: full step
            while objective(z + t * step).item() > f0 + 1e-4 * t * slope and t > 1e-12:
                t /= 2
        z = z + t * step
    assert torch.func.grad(objective)(z).abs().max() < 1e-10, "the minimisation did not converge"
    theta = torch.cat([z.view(*batch, m - 1), torch.zeros(*batch, 1, dtype=DT)], -1)
    return torch.softmax(theta, -1)


def kkt_minimiser(nu, adv, ref_logp, beta):
    """The unique stationary point for a centred, non-zero advantage, found from the KKT
    equations (module docstring) with numpy only. Returns (pi+, lambda)."""
    nu, adv, ref_logp = (t.numpy() for t in (nu, adv, ref_logp))
    c = adv / beta
    logk0 = ref_logp + c - np.log(nu)

    def u_of(loglam):
        big_l = loglam + logk0  # log k; solve e^t + t = log k for t = log w (Newton from above)
        t = np.where(big_l > 1, np.log(np.maximum(big_l, 1.0)), big_l)
        for _ in range(60):
            t = t - (np.exp(t) + t - big_l) / (np.exp(t) + 1)
        return c - np.exp(t)

    def mass(loglam):
        return float(np.sum(np.exp(ref_logp + u_of(loglam))))

    lo, hi = -60.0, 60.0
    assert mass(lo) > 1 > mass(hi)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if mass(mid) > 1 else (lo, mid)
    u = u_of(lo)
    return torch.tensor(np.exp(ref_logp + u), dtype=DT), math.exp(lo)


def random_state(seed, m, spread=1.0):
    """A random full-support pi_ref (as log-probs) and an advantage centred under it."""
    g = gen(seed)
    ref_logp = torch.log_softmax(spread * randn(m, g=g), -1)
    q = rand(m, g=g)
    adv = q - (ref_logp.exp() * q).sum()
    return ref_logp, adv, g


# ----------------------------------------------------------------------------- 1. the loss


def test_dapo_loss_hand_example():
    """Guards against a wrong eq. 12: adv*beta instead of adv/beta, the log-ratio's sign
    flipped (ref - logp), a missing 1/2, a sum instead of a mean, or a non-scalar result.

    logp = [-1.0, -2.0, -0.5], ref_logp = [-1.5, -1.0, -0.5], adv = [0.2, -0.1, 0.0], beta 0.5
      adv/beta         = [ 0.4, -0.2, 0.0]
      logp - ref_logp  = [ 0.5, -1.0, 0.0]
      residual         = [-0.1,  0.8, 0.0],  squares [0.01, 0.64, 0]
      L = 1/2 * (0.65 / 3) = 13/120 = 0.108333...
      dL/dlogp_i = -(residual_i)/3 = [1/30, -8/30, 0]
    (adv*beta would give 0.1771, a flipped log-ratio 0.375, no 1/2 0.2167, a sum 0.325.)
    """
    logp = torch.tensor([-1.0, -2.0, -0.5], dtype=DT, requires_grad=True)
    ref_logp = torch.tensor([-1.5, -1.0, -0.5], dtype=DT)
    adv = torch.tensor([0.2, -0.1, 0.0], dtype=DT)
    loss = dapo.dapo_loss(logp, ref_logp, adv, 0.5)
    assert loss.dim() == 0
    assert loss.item() == pytest.approx(13 / 120, rel=1e-12)
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([1 / 30, -8 / 30, 0.0], dtype=DT),
                               rtol=1e-12, atol=1e-15)
    # A mean, not a sum: repeating the batch leaves the loss unchanged.
    twice = dapo.dapo_loss(logp.detach().repeat(2), ref_logp.repeat(2), adv.repeat(2), 0.5)
    assert twice.item() == pytest.approx(13 / 120, rel=1e-12)


@pytest.mark.parametrize("beta", [0.0, -0.01, -1.0])
def test_dapo_loss_rejects_nonpositive_beta(beta):
    """Guards against silently dividing by zero or by a negative beta (a sign-flipped loss that
    would push bad steps up): beta <= 0 must raise ValueError."""
    x = torch.zeros(3, dtype=DT)
    with pytest.raises(ValueError):
        dapo.dapo_loss(x, x, x, beta)


# ----------------------------------------------------------------------------- 2. Lemma 3.1


@pytest.mark.parametrize("centred", [True, False], ids=["centred", "uncentred"])
@pytest.mark.parametrize("param", ["tabular", "features"])
def test_lemma_3_1_exact_gradient(centred, param):
    """Lemma 3.1 with autograd: at theta = theta_ref, the gradient of the expected squared loss
    sum_a pi_ref(a) * dapo_loss(pair a) (weights pi_ref held fixed) equals -1/beta times the
    gradient of I_s(pi_theta, pi_ref) (whose weights pi_theta do depend on theta).

    Derivation: at u = 0, grad L = -1/beta sum_a pi_ref(a) A(a) grad log pi(a), and
    grad I_s = sum_a grad pi(a) (A - beta u) - beta sum_a pi grad u = sum_a pi_ref A grad log pi,
    because sum_a pi grad log pi = grad sum_a pi = 0. So the identity holds for ANY advantage,
    centred under pi_ref or not (both are tested), and for any parametrisation (tabular logits
    and logits = Phi @ w with 3 features for 5 actions). Centring matters for Theorem 3.2, not
    here. Guards against a wrong sign of the log-ratio (gradient flips), adv*beta for adv/beta,
    or a missing 1/2 in dapo_loss (gradient off by beta^2 or 2). Also checks that away from
    theta_ref the identity fails, so the comparison is not vacuous.
    """
    g = gen(11)
    m, beta = 5, 0.3
    if param == "tabular":
        phi, w_ref = torch.eye(m, dtype=DT), randn(m, g=g)
    else:
        phi, w_ref = randn(m, 3, g=g), randn(3, g=g)
    ref_logp = torch.log_softmax(phi @ w_ref, -1)
    pr = ref_logp.exp()
    adv = rand(m, g=g)  # Q-values in [0, 1]: uncentred
    if centred:
        adv = adv - (pr * adv).sum()
    assert abs((pr * adv).sum().item()) < 1e-12 if centred else (pr * adv).sum().item() > 0.1

    def grads(w0):
        w = w0.clone().requires_grad_(True)
        logp = torch.log_softmax(phi @ w, -1)
        loss = sum(pr[a] * dapo.dapo_loss(logp[a:a + 1], ref_logp[a:a + 1], adv[a:a + 1], beta)
                   for a in range(m))
        (g_loss,) = torch.autograd.grad(loss, w)
        w = w0.clone().requires_grad_(True)
        logp = torch.log_softmax(phi @ w, -1)
        (g_imp,) = torch.autograd.grad(improvement(logp.exp(), ref_logp, adv, beta), w)
        return g_loss, g_imp

    g_loss, g_imp = grads(w_ref)
    assert g_imp.norm() > 0.05
    torch.testing.assert_close(g_loss, -g_imp / beta, rtol=1e-10, atol=1e-12)
    if param == "tabular":  # closed form: grad_theta_b I_s = pi_ref(b) (A(b) - E_ref[A])
        torch.testing.assert_close(g_imp, pr * (adv - (pr * adv).sum()), rtol=1e-10, atol=1e-12)
    g_loss2, g_imp2 = grads(w_ref + 0.5 * randn(*w_ref.shape, g=g))
    assert (g_loss2 + g_imp2 / beta).norm() > 1e-2


def test_lemma_3_1_monte_carlo():
    """Lemma 3.1 from samples: dapo_loss on N = 200,000 actions drawn from pi_ref (duplicates
    kept) is the sample mean of per-pair losses, so its gradient at theta_ref is the average of
    per-sample gradients and must match the exact -1/beta * grad I_s within 5 standard errors.

    The per-sample gradient of 1/2 (A/beta - u)^2 at u = 0 w.r.t. the logits is
    -(A(a)/beta) (e_a - pi_ref); its exact mean and variance under pi_ref give the tolerance,
    which is asserted to be under 10% of the gradient's size so that the test has teeth. Guards
    against dapo_loss summing or weighting pairs wrongly in a batch, or the errors above.
    """
    m, beta, n = 5, 0.5, 200_000
    ref_logp, adv, g = random_state(5, m)
    pr = ref_logp.exp()
    theta = ref_logp.clone().requires_grad_(True)
    (g_imp,) = torch.autograd.grad(improvement(torch.softmax(theta, -1), ref_logp, adv, beta),
                                   theta)
    exact = -g_imp / beta

    per_sample = -(adv / beta)[:, None] * (torch.eye(m, dtype=DT) - pr[None, :])
    mean = pr @ per_sample
    torch.testing.assert_close(mean, exact, rtol=1e-10, atol=1e-12)
    stderr = torch.sqrt(pr @ (per_sample - mean) ** 2 / n)
    assert 5 * stderr.max() < 0.1 * exact.abs().max()

    idx = torch.multinomial(pr, n, replacement=True, generator=g)
    theta = ref_logp.clone().requires_grad_(True)
    logp = torch.log_softmax(theta, -1)
    loss = dapo.dapo_loss(logp[idx], ref_logp[idx], adv[idx], beta)
    (g_mc,) = torch.autograd.grad(loss, theta)
    assert torch.all((g_mc - exact).abs() <= 5 * stderr + 1e-12), (g_mc, exact, stderr)


# ----------------------------------------------------------------------------- 3. stationarity


@pytest.mark.parametrize("seed,m,beta", [(0, 3, 0.5), (1, 4, 0.1), (2, 6, 1.0), (3, 5, 0.05)])
def test_kkt_stationarity(seed, m, beta):
    """The minimiser pi+ of sum_a nu(a) 1/2 (A/beta - u)^2 over a softmax policy, found by
    Newton on the dapo_loss-built objective, satisfies nu(a) (A(a)/beta - u(a)) = lambda pi+(a)
    with lambda = sum_a nu(a) (A(a)/beta - u(a)) (docs/paper.md §4); lambda > 0 and every residual
    is positive (centred A); and pi+ matches the independent KKT solution (Newton + bisection,
    no autograd). Guards against a dapo_loss whose minimiser is wrong (adv*beta, a flipped
    log-ratio, a squared error on something other than the log-ratio).
    """
    ref_logp, adv, g = random_state(100 + seed, m)
    nu = dirichlet1(m, g=g)
    pi = minimise(nu, adv, ref_logp, beta)
    r = adv / beta - (torch.log(pi) - ref_logp)
    lam = (nu * r).sum()
    assert lam > 1e-3
    assert torch.all(r > 0)
    torch.testing.assert_close(nu * r, lam * pi, rtol=1e-7, atol=1e-10)
    pi_kkt, lam_kkt = kkt_minimiser(nu, adv, ref_logp, beta)
    torch.testing.assert_close(pi, pi_kkt, rtol=1e-7, atol=1e-10)
    assert lam.item() == pytest.approx(lam_kkt, rel=1e-7)


# ----------------------------------------------------------------------------- 4. which pi+


def test_minimiser_is_tilted_policy_when_nu_is_tilted():
    """With nu = pi* = pi_ref exp(A/beta) / Z, the loss minimiser is exactly pi* (there
    u = A/beta - log Z, every residual is log Z, and nu * log Z = lambda * pi* with
    lambda = log Z). Guards against a dapo_loss whose target is not A/beta (e.g. adv*beta, or
    adv without the 1/beta), which would move the minimiser away from pi*.
    """
    for seed, beta in [(7, 0.5), (8, 0.2)]:
        ref_logp, adv, _ = random_state(seed, 4)
        tilted = torch.softmax(ref_logp + adv / beta, -1)
        pi = minimise(tilted, adv, ref_logp, beta)
        torch.testing.assert_close(pi, tilted, rtol=1e-8, atol=1e-11)
        assert (pi - ref_logp.exp()).abs().max() > 0.05  # and pi* is not pi_ref


def test_minimiser_for_other_nu_differs_but_improves():
    """For full-support nu other than pi* (uniform, pi_ref, three flat-Dirichlet draws) the
    minimiser pi+ is NOT pi_ref exp(A/beta)/Z: pi+ = pi* would need nu = pi* (docs/paper.md §4, do
    not test the false statement). Yet I_s(pi+, pi_ref) > 0 = I_s(pi_ref, pi_ref) (A centred),
    and I_s(pi+) <= I_s(pi*) = beta log Z, the maximum of I_s. Also, with A = 0 (pi_ref already
    optimal) the minimiser is pi_ref itself for every nu. Guards against a loss whose minimiser
    does not improve (e.g. flipped log-ratio sign: pi+ would move against A).
    """
    m, beta = 4, 0.5
    ref_logp, adv, g = random_state(21, m)
    pr = ref_logp.exp()
    tilted = torch.softmax(ref_logp + adv / beta, -1)
    i_max = beta * torch.logsumexp(ref_logp + adv / beta, -1)
    assert improvement(tilted, ref_logp, adv, beta).item() == pytest.approx(i_max.item())
    nus = [torch.full((m,), 1 / m, dtype=DT), pr] + [dirichlet1(m, g=g) for _ in range(3)]
    assert improvement(pr, ref_logp, adv, beta).abs().item() < 1e-12
    gaps = []
    for nu in nus:
        pi = minimise(nu, adv, ref_logp, beta)
        gaps.append((pi - tilted).abs().max().item())
        i_plus = improvement(pi, ref_logp, adv, beta).item()
        assert 1e-4 < i_plus <= i_max.item() + 1e-12
        still = minimise(nu, torch.zeros(m, dtype=DT), ref_logp, beta)
        torch.testing.assert_close(still, pr, rtol=1e-9, atol=1e-12)
    assert max(gaps) > 1e-2, gaps
    assert min(gaps) > 1e-3, gaps


def test_improvement_needs_centred_advantage():
    """Theorem 3.2's per-state step needs an advantage centred under pi_ref (a baseline; eq. 13
    provides one). A constant shift of A leaves Lemma 3.1 intact but not the improvement: here
    pi_ref = [0.9, 0.05, 0.05], next-state values Q = [1, 0, 0.2], beta = 0.1, nu uniform.
    With A = Q - V (centred) the minimiser improves, I_s > 0. Regressing on the raw values Q
    (no baseline) or on A + 1 lowers the best action's probability and the true I_s (centred A)
    turns negative. The centred A comes from advantages() on M = 20 samples whose counts
    [18, 1, 1] match pi_ref exactly, so its sibling mean is V = 0.91. Guards against the claim
    that any baseline works, and against an advantages() that drops the centring."""
    beta = 0.1
    ref_logp = torch.log(torch.tensor([0.9, 0.05, 0.05], dtype=DT))
    q = torch.tensor([1.0, 0.0, 0.2], dtype=DT)
    samples = torch.tensor([0] * 18 + [1, 2])
    adv = dapo.advantages(q[samples])[torch.tensor([0, 18, 19])]
    torch.testing.assert_close(adv, q - 0.91, rtol=0, atol=1e-12)
    nu = torch.full((3,), 1 / 3, dtype=DT)
    pi = minimise(nu, adv, ref_logp, beta)
    assert improvement(pi, ref_logp, adv, beta) > 0.05
    assert pi[0] > 0.9
    for target in (q, adv + 1.0):
        pi = minimise(nu, target, ref_logp, beta)
        assert improvement(pi, ref_logp, adv, beta) < -0.02
        assert pi[0] < 0.9


# ----------------------------------------------------------------------------- 5. Theorem 3.2


def tree_mdp(seed, branching, depth, binary):
    """A deterministic tree MDP: states at depth k are indexed 0..b^k-1, action a from state i
    leads to state i*b + a at depth k+1; rewards sit on the b^depth leaves. Returns per-depth
    pi_ref log-probs [(b^k, b)] and the leaf rewards (b^depth,)."""
    g = gen(seed)
    ref = [torch.log_softmax(1.5 * randn(branching ** k, branching, g=g), -1)
           for k in range(depth)]
    n_leaves = branching ** depth
    rewards = (rand(n_leaves, g=g) < 0.5).to(DT) if binary else rand(n_leaves, g=g)
    return ref, rewards


def values(pis, ref, rewards, beta):
    """V_beta(pi) at every depth by backward recursion:
    V(s) = sum_a pi(a|s) [V(s∘a) - beta log(pi(a|s)/pi_ref(a|s))], V(leaf) = reward."""
    vs = [rewards]
    for pi, ref_logp in zip(reversed(pis), reversed(ref)):
        nxt = vs[0].view(pi.shape)
        vs.insert(0, (pi * (nxt - beta * (torch.log(pi) - ref_logp))).sum(-1))
    return vs


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
@pytest.mark.parametrize("seed,branching,binary", [(0, 2, True), (1, 3, True), (2, 2, True),
                                                   (3, 3, False), (4, 2, False)])
def test_theorem_3_2_monotonic_improvement(seed, branching, binary, beta):
    """Theorem 3.2 on a depth-3 tree MDP with 2-3 actions per state, {0,1} or [0,1] terminal
    rewards and a random full-support pi_ref: with exact advantages of pi_ref
    A(s,a) = V_ref(s∘a) - V_ref(s) (V_ref is pi_ref's success probability; its KL to itself is
    0), the per-state minimiser pi+ of the nu-weighted DAPO loss satisfies
    V_beta(pi+) >= V_beta(pi_ref) at every state, for nu uniform, pi_ref, random Dirichlet and
    pi_ref exp(A/beta)/Z. Improvement is strict exactly where pi_ref is not optimal in the
    subtree (leaf rewards not all equal) and zero elsewhere (pi+ = pi_ref there). Also checks the
    harness: V_beta(pi+) - V_beta(pi_ref) at the root equals the visitation-weighted sum of
    I_s(pi+, pi_ref) (performance-difference lemma), and stays below the optimal soft value.
    Guards against a dapo_loss whose minimiser does not improve the regularised objective.
    """
    depth = 3
    ref, rewards = tree_mdp(seed, branching, depth, binary)
    v_ref = values([r.exp() for r in ref], ref, rewards, beta)
    advs = [v_ref[k + 1].view(branching ** k, branching) - v_ref[k][:, None]
            for k in range(depth)]
    for k in range(depth):  # exact advantages are centred under pi_ref
        assert (ref[k].exp() * advs[k]).sum(-1).abs().max() < 1e-12
    v_star = [rewards]
    for k in reversed(range(depth)):
        nxt = v_star[0].view(branching ** k, branching)
        v_star.insert(0, beta * torch.logsumexp(ref[k] + nxt / beta, -1))
    leaves = rewards.view(1, -1)
    nonconst = [(lv.max(-1).values > lv.min(-1).values)
                for lv in (leaves.view(branching ** k, -1) for k in range(depth))]
    assert nonconst[0].item(), "the root must not be optimal already"

    all_ref, all_adv = torch.cat(ref), torch.cat(advs)
    g = gen(1000 + seed)
    sizes = [branching ** k for k in range(depth)]
    nus = {
        "uniform": torch.full_like(all_adv, 1 / branching),
        "ref": all_ref.exp(),
        "dirichlet": dirichlet1(*all_adv.shape, g=g),
        "tilted": torch.softmax(all_ref + all_adv / beta, -1),
    }
    for name, nu in nus.items():
        pis = list(torch.split(minimise(nu, all_adv, all_ref, beta), sizes))
        v_plus = values(pis, ref, rewards, beta)
        for k in range(depth):
            gain = v_plus[k] - v_ref[k]
            assert torch.all(gain[nonconst[k]] > 1e-6), (name, k, gain)
            assert torch.all(gain[~nonconst[k]].abs() < 1e-10), (name, k, gain)
            assert torch.all(v_plus[k] <= v_star[k] + 1e-10), (name, k)
        occupancy, pdl = torch.ones(1, dtype=DT), torch.zeros((), dtype=DT)
        for k in range(depth):
            pdl = pdl + (occupancy * improvement(pis[k], ref[k], advs[k], beta)).sum()
            occupancy = (occupancy[:, None] * pis[k]).reshape(-1)
        assert (v_plus[0] - v_ref[0]).item() == pytest.approx(pdl.item(), rel=1e-9, abs=1e-12)


# ----------------------------------------------------------------------------- 6. baseline


def test_advantages_hand_example_with_duplicates():
    """Eq. 13 on values [0.2, 0.2, 0.8, 0.0] (the action with value 0.2 sampled twice): the
    baseline is the mean over all M = 4 samples, 1.2 / 4 = 0.3, so A = [-0.1, -0.1, 0.5, -0.3],
    summing to zero. Guards against de-duplicating before the mean (baseline 1/3, giving
    [-0.133, -0.133, 0.467, -0.333]), std normalisation, clipping, or a baseline that is not
    the sibling mean."""
    v = torch.tensor([0.2, 0.2, 0.8, 0.0], dtype=DT)
    a = dapo.advantages(v)
    assert a.shape == v.shape
    torch.testing.assert_close(a, torch.tensor([-0.1, -0.1, 0.5, -0.3], dtype=DT),
                               rtol=0, atol=1e-12)
    assert abs(a.sum().item()) < 1e-12


def test_advantages_random_properties():
    """On random values: A sums to zero, equals V - mean(V) elementwise, is unchanged by adding a
    constant to every V (a pure baseline), and scales linearly (no normalisation). Guards
    against std normalisation, clipping or a baseline other than the sample mean."""
    g = gen(3)
    v = rand(17, g=g)
    a = dapo.advantages(v)
    assert abs(a.sum().item()) < 1e-12
    torch.testing.assert_close(a, v - v.sum() / 17, rtol=0, atol=1e-12)
    torch.testing.assert_close(dapo.advantages(v + 5.0), a, rtol=0, atol=1e-12)
    torch.testing.assert_close(dapo.advantages(0.1 * v), 0.1 * a, rtol=0, atol=1e-12)
