"""Tests of model.py: config checks, devices, KV-cache sampling, log-probs, the value head."""

import doctest

import pytest
import torch
import torch.nn.functional as F

import model as M
from model import (GPT, GPTConfig, KVCache, autocast, continuation_logprob, generate, pack,
                   pack_continuations, pick_device, sequence_logprobs, state_values)

PAD = 0  # a real token id on purpose: padding must be masked, not merely unlikely
PROMPT_LENS = [5, 1, 9, 3, 12, 7]


def tiny_model(seed: int = 0, value_head: bool = False, std: float = 0.3,
               block_size: int = 64, value_surprisal: bool = False) -> GPT:
    """A 2-layer, 32-wide GPT with weights drawn at std (much larger than GPT-2's 0.02) so its
    outputs depend strongly on the context: a bug that leaks padding or mixes up positions
    then changes the sampled tokens instead of hiding in near-uniform logits."""
    torch.manual_seed(seed)
    cfg = GPTConfig(block_size=block_size, n_layer=2, n_head=2, n_embd=32, value_head=value_head,
                    value_surprisal=value_surprisal)
    model = GPT(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2 or name.startswith("value_head"):
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model.eval()


def prompts(seed: int = 0, lens=PROMPT_LENS) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1, 256, (n,), generator=g).tolist() for n in lens]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models are dominated by per-op overhead; one intra-op thread avoids spin-waiting
    when the 2-core CPU is shared. Restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def model():
    return tiny_model(0)


# ----------------------------------------------------------------------------- config, devices


@pytest.mark.parametrize("field", ["vocab_size", "block_size", "n_layer", "n_head", "n_embd"])
@pytest.mark.parametrize("value", [0, -1, -64])
def test_config_rejects_non_positive_sizes(field, value):
    """Guards against building a broken model (or a ZeroDivisionError) from a zero or negative
    size: GPTConfig raises ValueError naming the field."""
    with pytest.raises(ValueError, match=field):
        GPTConfig(**{field: value})


@pytest.mark.parametrize("n_embd,n_head", [(30, 4), (36, 4), (32, 3)])
def test_config_rejects_bad_head_split(n_embd, n_head):
    """Guards against head sizes that do not divide n_embd or are odd (rotary needs pairs)."""
    with pytest.raises(ValueError):
        GPTConfig(n_embd=n_embd, n_head=n_head)


def test_pick_device_auto_and_cpu():
    """Guards against 'auto' failing on a CPU-only machine or 'cpu' being rejected."""
    dev = pick_device("auto")
    assert isinstance(dev, torch.device)
    mps = getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    assert dev.type == ("cuda" if torch.cuda.is_available() else "mps" if mps else "cpu")
    assert pick_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name", ["nonsense", "", "gpu", "meta"])
def test_pick_device_rejects_unknown(name):
    """Guards against a traceback (RuntimeError) on a typo in --device: a ValueError with a
    message that lists the valid choices."""
    with pytest.raises(ValueError, match="use auto"):
        pick_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_pick_device_cuda_without_cuda():
    """Guards against --device cuda on a CPU-only machine failing later with a CUDA traceback:
    it must be refused up front with a message that says what to use instead."""
    with pytest.raises(ValueError, match="CUDA is not available"):
        pick_device("cuda")


# ----------------------------------------------------------------------------- batching helpers


def test_pack_and_pack_continuations_docstring_examples():
    """Guards against right/left padding mix-ups and continuation masks off by one (the
    docstring examples, checked both directly and as doctests)."""
    idx, lengths = pack([[5, 6, 7], [8]], pad_id=0)
    assert idx.tolist() == [[5, 6, 7], [8, 0, 0]] and lengths.tolist() == [3, 1]
    idx, lengths = pack([[5, 6, 7], [8]], pad_id=0, left=True)
    assert idx.tolist() == [[5, 6, 7], [0, 0, 8]] and lengths.tolist() == [3, 1]
    idx, m = pack_continuations([[1, 2], [3]], [[4], [5, 6]], pad_id=0)
    assert idx.tolist() == [[1, 2, 4], [3, 5, 6]]
    assert m.tolist() == [[0, 0, 1], [0, 1, 1]]
    idx, m = pack_continuations([[1, 2, 3], [4]], [[5], [6]], pad_id=9)
    assert idx.tolist() == [[1, 2, 3, 5], [4, 6, 9, 9]]
    assert m.tolist() == [[0, 0, 0, 1], [0, 1, 0, 0]]
    res = doctest.testmod(M, verbose=False)
    assert res.attempted >= 3 and res.failed == 0


def test_num_params_counts_tied_embedding_once():
    """Guards against counting the tied wte/lm_head matrix twice (a wrong N for 6N FLOPs)."""
    V, C, L = 257, 32, 2
    m = GPT(GPTConfig(n_layer=L, n_head=2, n_embd=C))
    assert m.lm_head.weight is m.wte.weight
    per_block = 12 * C * C + 4 * C  # qkv 3C^2, proj C^2, fc 4C^2, fc_proj 4C^2, two LayerNorms
    expected = V * C + L * per_block + 2 * C  # + ln_f
    assert m.num_params() == expected
    mv = GPT(GPTConfig(n_layer=L, n_head=2, n_embd=C, value_head=True))
    assert mv.num_params() == expected + C + 1


# ----------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("num_samples,batch_size", [(1, 256), (3, 256), (3, 4), (2, 1)])
def test_cached_equals_uncached_greedy(model, num_samples, batch_size):
    """Guards against KV-cache bugs (wrong positions, pad keys visible, cache not fanned out in
    order): greedy decoding with and without the cache is token-identical, for prompts of
    different lengths in one batch, num_samples > 1 and several batch splits."""
    ps = prompts(0)
    kw = dict(max_new_tokens=20, temperature=0.0, num_samples=num_samples, pad_id=PAD,
              batch_size=batch_size)
    cached = generate(model, ps, use_cache=True, **kw)
    uncached = generate(model, ps, use_cache=False, **kw)
    assert cached == uncached
    assert len(cached) == len(ps) * num_samples and all(len(r) == 20 for r in cached)
    assert len({tuple(r) for r in cached}) == len(ps)  # the prompts lead to different outputs


@pytest.mark.parametrize("num_samples", [1, 4])
def test_cached_equals_uncached_sampled(model, num_samples):
    """Guards against the cache path drawing random numbers in another order or from other
    probabilities: temperature-1 samples with the same generator seed are identical with and
    without the cache (prefix fan-out included)."""
    ps = prompts(1)
    kw = dict(max_new_tokens=16, temperature=1.0, num_samples=num_samples, pad_id=PAD)
    cached = generate(model, ps, generator=torch.Generator().manual_seed(5), **kw)
    uncached = generate(model, ps, generator=torch.Generator().manual_seed(5), use_cache=False,
                        **kw)
    assert cached == uncached
    assert len({tuple(r) for r in cached}) == len(cached)  # samples of one prompt differ


def test_sample_order_convention(model):
    """Guards against scrambling which sample belongs to which prompt: sample k of prompt i is
    at i * num_samples + k, so greedy with num_samples=3 is 3 copies of greedy with 1."""
    ps = prompts(2)
    one = generate(model, ps, 12, temperature=0.0, pad_id=PAD)
    three = generate(model, ps, 12, temperature=0.0, num_samples=3, pad_id=PAD)
    assert three == [r for r in one for _ in range(3)]
    assert len(set(map(tuple, one))) == len(ps)


def test_sampled_rows_belong_to_their_prompt(model):
    """Guards against fanning out the wrong prompt's cache: every sample's first token must be
    likely under its own prompt (the single-prompt next-token distribution)."""
    ps = prompts(3)
    outs = generate(model, ps, 1, temperature=1.0, num_samples=8, pad_id=PAD,
                    generator=torch.Generator().manual_seed(0))
    for i, p in enumerate(ps):
        probs = torch.softmax(model(torch.tensor([p]))[0][0, -1], dim=-1)
        for k in range(8):
            tok = outs[i * 8 + k][0]
            assert probs[tok] > 1e-4, (i, k, tok, probs[tok].item())


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_temperature_scales_the_distribution(model, temperature):
    """Guards against temperature applied the wrong way (logits * T) or ignored: 4000
    first-token samples, grouped by the tokens' logit rank (1, 2-4, 5-16, 17-64, rest), match
    softmax(logits / T) within total variation 0.04 (sampling noise is ~0.01), and are far
    from the wrong scaling."""
    p = prompts(12, lens=[6])[0]
    logits = model(torch.tensor([p]))[0][0, -1].detach()
    rank = torch.empty(257, dtype=torch.long)
    rank[logits.argsort(descending=True)] = torch.arange(257)
    group = torch.bucketize(rank, torch.tensor([1, 4, 16, 64]), right=True)  # 5 groups

    def grouped(probs):
        return torch.zeros(5).index_add_(0, group, probs)

    outs = generate(model, [p], 1, temperature=temperature, num_samples=4000, pad_id=PAD,
                    batch_size=4000, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(torch.tensor([r[0] for r in outs]), minlength=257).float()
    empirical = grouped(counts / counts.sum())
    expected = grouped(torch.softmax(logits / temperature, -1))
    wrong = grouped(torch.softmax(logits * temperature, -1))
    assert 0.5 * (empirical - expected).abs().sum() < 0.04
    assert 0.5 * (empirical - wrong).abs().sum() > 0.3


def test_left_padding_changes_nothing(model):
    """Guards against left padding leaking into attention or shifting rotary positions: each
    prompt decoded alone gives the same greedy output as inside a mixed-length batch."""
    ps = prompts(4)
    batch = generate(model, ps, 16, temperature=0.0, pad_id=PAD)
    for p, out in zip(ps, batch):
        assert generate(model, [p], 16, temperature=0.0, pad_id=PAD) == [out]
        assert generate(model, [p], 16, temperature=0.0, pad_id=PAD, use_cache=False) == [out]


def test_greedy_matches_full_forward_argmax(model):
    """Guards against a sampler that is not greedy at temperature 0: each generated token is the
    argmax of a plain (unpadded, uncached) forward over prompt + tokens so far."""
    for p in prompts(5, lens=[4, 10]):
        out = generate(model, [p], 8, temperature=0.0, pad_id=PAD)[0]
        seq = p + out
        logits = model(torch.tensor([seq[:-1]]))[0][0]
        assert logits[len(p) - 1:].argmax(-1).tolist() == out


def test_stop_id_truncation(model):
    """Guards against keeping the stop token or text after it: each row ends just before its
    first stop_id; rows that never emit it keep max_new_tokens tokens."""
    ps = prompts(6)
    full = generate(model, ps, 24, temperature=0.0, pad_id=PAD)
    stop = next(r[3] for r in full if len(set(r)) > 3)  # a token some row emits mid-way
    assert any(stop in r[1:] for r in full) and any(stop not in r for r in full)
    for sync_every in (1, 16):
        outs = generate(model, ps, 24, temperature=0.0, pad_id=PAD, stop_id=stop,
                        sync_every=sync_every)
        for r_full, r in zip(full, outs):
            expected = r_full[:r_full.index(stop)] if stop in r_full else r_full
            assert r == expected and stop not in r
    assert min(len(r) for r in outs) <= 3 and max(len(r) for r in outs) == 24


@pytest.mark.parametrize("sync_every", [1, 4])
def test_dropping_finished_rows_changes_no_sample(model, monkeypatch, sync_every):
    """Guards against the cached sampler's row dropping (finished rows leave the batch) moving
    another row's keys, positions or random draws: with a stop token that ends about half of
    the 24 rows early, temperature-1 samples equal the same seed's samples without a stop,
    each cut before its first stop token, and equal the uncached reference; and rows really
    were dropped."""
    ps = prompts(8)
    kw = dict(max_new_tokens=24, temperature=1.0, num_samples=4, pad_id=PAD)
    free = generate(model, ps, generator=torch.Generator().manual_seed(5), **kw)
    counts = torch.bincount(torch.tensor([t for r in free for t in set(r[:16])]), minlength=257)
    stop = int((counts - len(free) // 2).abs().argmin())  # in about half the rows' first 16
    assert len(free) // 4 <= counts[stop] <= 3 * len(free) // 4
    kept = []
    keep = M.KVCache.keep
    monkeypatch.setattr(M.KVCache, "keep", lambda self, rows: (kept.append(len(rows)),
                                                                 keep(self, rows)))
    outs = generate(model, ps, generator=torch.Generator().manual_seed(5), stop_id=stop,
                    sync_every=sync_every, **kw)
    assert kept and max(kept) < len(free)  # some finished rows left the batch
    assert outs == [r[:r.index(stop)] if stop in r else r for r in free]
    kept.clear()
    uncached = generate(model, ps, generator=torch.Generator().manual_seed(5), stop_id=stop,
                        sync_every=sync_every, use_cache=False, **kw)
    assert uncached == outs and not kept  # the reference never drops rows
    undropped = generate(model, ps, generator=torch.Generator().manual_seed(5), stop_id=stop,
                         sync_every=sync_every, drop_finished=False, **kw)
    assert undropped == outs and not kept


def test_generator_seed_reproducible(model):
    """Guards against sampling that ignores the explicit generator (global RNG use): the same
    seed gives the same samples, a different seed gives different ones."""
    ps = prompts(7)

    def run(seed):
        torch.manual_seed(1000 + seed)  # perturb the global RNG: it must not matter
        return generate(model, ps, 16, temperature=1.0, num_samples=2, pad_id=PAD,
                        generator=torch.Generator().manual_seed(seed))

    a, b, c = run(11), run(11), run(12)
    assert a == b
    assert sum(x != y for x, y in zip(a, c)) >= len(a) - 1


@pytest.mark.parametrize("kwargs", [
    {"max_new_tokens": 0}, {"num_samples": 0}, {"batch_size": 0}, {"temperature": -0.5},
])
def test_generate_rejects_bad_arguments(model, kwargs):
    """Guards against silently returning nothing (or garbage) for impossible sampling knobs."""
    args = dict(max_new_tokens=4, temperature=1.0, num_samples=1, batch_size=8)
    args.update(kwargs)
    with pytest.raises(ValueError):
        generate(model, prompts(0), **args)


def test_generate_respects_block_size():
    """Guards against rotary positions past the table: generation stops at block_size, and a
    prompt that already fills the block is refused with ValueError."""
    m = tiny_model(1, block_size=16)
    outs = generate(m, [[1] * 10, [2] * 3], 50, temperature=0.0, pad_id=PAD)
    assert [len(r) for r in outs] == [6, 6]
    with pytest.raises(ValueError, match="block_size"):
        generate(m, [[1] * 16], 4)


def _incremental_logits(m, seq, T0, explicit_mask):
    """Logits of seq (1, T): prefill seq[:, :T0] into a KV cache, then one token at a time."""
    cache = KVCache(m.config, 1, seq.size(1), "cpu", torch.float32)
    steps = [m.lm_head(m.hidden(seq[:, :T0], cache=cache))[0]]
    for t in range(T0, seq.size(1)):
        mask = torch.ones(1, 1, 1, t + 1, dtype=torch.bool) if explicit_mask else None
        steps.append(m.lm_head(m.hidden(seq[:, t:t + 1], mask=mask, cache=cache))[0])
    return torch.cat(steps)


def test_hidden_with_cache_and_explicit_mask_matches_full_forward(model):
    """Guards against a KV cache that stores or returns the wrong keys/values: prefill + one
    token at a time (with a see-everything mask) equals one full forward (atol 1e-4)."""
    seq = torch.tensor([prompts(13, lens=[20])[0]])
    with torch.no_grad():
        full = model.lm_head(model.hidden(seq))[0]
        inc = _incremental_logits(model, seq, 6, explicit_mask=True)
    torch.testing.assert_close(inc, full, atol=1e-4, rtol=0)


def test_kv_cache_grows_in_steps_and_keeps_what_it_holds():
    """Guards against the cache's growth losing or moving filled keys and values, leaving
    garbage in the columns attention reads but masks (a NaN there times a zero weight is NaN),
    or growing past max_len: capacity goes up in steps of KVCache.GROW, up to max_len."""
    cfg = GPTConfig(n_layer=2, n_head=2, n_embd=8)
    cache = KVCache(cfg, 3, 40, "cpu", torch.float32)
    assert KVCache.GROW == 16 and cache.reserve(5) == 16
    k, v = torch.randn(3, 2, 5, 4), torch.randn(3, 2, 5, 4)
    for layer in range(2):
        kk, vv = cache.update(layer, k + layer, v - layer)
        assert kk.shape == vv.shape == (3, 2, 16, 4)  # the whole capacity
    cache.len = 5  # what hidden() does after its layers
    assert cache.reserve(11) == 16 and cache.reserve(12) == 32  # 5 + 12 = 17 columns
    for layer in range(2):
        assert torch.equal(cache.k[layer, :, :, :5], k + layer)
        assert torch.equal(cache.v[layer, :, :, :5], v - layer)
    assert not cache.k[:, :, :, 5:].any() and not cache.v[:, :, :, 5:].any()
    cache.len = 30
    assert cache.reserve(10) == 40  # capped at max_len
    with pytest.raises(ValueError, match="40 columns"):
        cache.reserve(11)


def test_hidden_with_cache_default_mask_matches_full_forward(model):
    """Guards against hidden(idx, cache=cache) with its documented defaults (positions from
    cache.len, mask None = "plain causal attention") silently giving wrong logits once the
    cache holds keys: incremental decoding must equal a full forward (atol 1e-4)."""
    seq = torch.tensor([prompts(13, lens=[20])[0]])
    with torch.no_grad():
        full = model.lm_head(model.hidden(seq))[0]
        inc = _incremental_logits(model, seq, 6, explicit_mask=False)
    torch.testing.assert_close(inc, full, atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------- log-probs


def slow_logprob(model, prefix, cont):
    """Reference: sum over continuation tokens of log_softmax of a full forward, one token at a
    time, no batching or masking."""
    total = 0.0
    for j, tok in enumerate(cont):
        ctx = torch.tensor([prefix + cont[:j]])
        logits = model(ctx)[0][0, -1].double()
        total += torch.log_softmax(logits, -1)[tok].item()
    return total


def _pairs(seed=0):
    g = torch.Generator().manual_seed(seed)
    pre = [torch.randint(1, 256, (n,), generator=g).tolist() for n in (3, 8, 1, 5, 11)]
    cont = [torch.randint(1, 256, (n,), generator=g).tolist() for n in (4, 1, 7, 2, 5)]
    return pre, cont


def test_sequence_logprobs_batched_equals_single_and_reference(model):
    """Guards against padding or batching changing log-probs, and against off-by-one target
    alignment: batched == one at a time (atol 1e-5) == a slow per-token reference."""
    pre, cont = _pairs(0)
    batched = sequence_logprobs(model, pre, cont, pad_id=PAD)
    small = sequence_logprobs(model, pre, cont, pad_id=PAD, batch_size=2)
    single = torch.cat([sequence_logprobs(model, [p], [c], pad_id=PAD)
                        for p, c in zip(pre, cont)])
    ref = torch.tensor([slow_logprob(model, p, c) for p, c in zip(pre, cont)], dtype=torch.float)
    assert batched.shape == (5,) and batched.dtype == torch.float32
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)
    torch.testing.assert_close(small, single, atol=1e-5, rtol=0)
    torch.testing.assert_close(batched, ref, atol=1e-4, rtol=1e-5)
    assert (batched < 0).all()


def test_sequence_logprobs_pad_id_irrelevant(model):
    """Guards against right padding leaking into the scores: a different pad_id gives the same
    log-probs."""
    pre, cont = _pairs(1)
    a = sequence_logprobs(model, pre, cont, pad_id=0)
    b = sequence_logprobs(model, pre, cont, pad_id=200)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_sequence_logprobs_empty():
    """Guards against a crash on an empty list (no states left after filtering)."""
    assert sequence_logprobs(tiny_model(0), [], [], pad_id=PAD).shape == (0,)


def test_continuation_logprob_is_differentiable():
    """Guards against a log-prob computed under no_grad or detached (the DAPO loss would not
    train): gradients flow to the weights and match a finite difference along a direction."""
    m = tiny_model(2)
    m.train()
    pre, cont = _pairs(2)
    idx, mask = pack_continuations(pre, cont, pad_id=PAD)
    lp = continuation_logprob(m, idx, mask)
    assert lp.requires_grad and lp.shape == (5,)
    lp.sum().backward()
    w = m.blocks[0].fc.weight
    assert w.grad is not None and torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0
    g = torch.Generator().manual_seed(0)
    d = torch.randn(w.shape, generator=g)
    eps = 1e-3
    with torch.no_grad():
        w += eps * d
        up = continuation_logprob(m, idx, mask).sum().double()
        w -= 2 * eps * d
        down = continuation_logprob(m, idx, mask).sum().double()
        w += eps * d
    fd = (up - down) / (2 * eps)
    analytic = (w.grad * d).sum().double()
    assert abs(fd - analytic) <= 2e-2 * max(1.0, abs(analytic.item()))


def test_forward_loss_mask():
    """Guards against a training loss that averages over padding: forward's loss is the mean
    cross-entropy over the positions where loss_mask is 1 only."""
    m = tiny_model(3)
    g = torch.Generator().manual_seed(3)
    idx = torch.randint(0, 257, (3, 10), generator=g)
    tgt = torch.randint(0, 257, (3, 10), generator=g)
    lmask = (torch.rand(3, 10, generator=g) > 0.5).long()
    logits, loss = m(idx, tgt, lmask)
    nll = F.cross_entropy(logits.flatten(0, 1), tgt.flatten(), reduction="none")
    expected = nll[lmask.flatten().bool()].mean()
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- value head


def test_state_values_in_unit_interval_and_batch_invariant():
    """Guards against reading the value at a pad position or padding changing V(s): values are
    in (0, 1), equal batched and one at a time, and equal sigmoid(value_logits) at the state's
    last token."""
    m = tiny_model(4, value_head=True, std=0.1)
    states = prompts(8)
    batched = state_values(m, states, pad_id=PAD)
    small = state_values(m, states, pad_id=PAD, batch_size=2)
    single = torch.cat([state_values(m, [s], pad_id=PAD) for s in states])
    ref = torch.stack([torch.sigmoid(m.value_logits(torch.tensor([s]))[0, -1]) for s in states])
    assert batched.shape == (len(states),)
    assert ((batched > 0) & (batched < 1)).all()
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)
    torch.testing.assert_close(small, single, atol=1e-5, rtol=0)
    torch.testing.assert_close(batched, ref.detach(), atol=1e-5, rtol=0)
    assert batched.std() > 1e-3  # the states get different values: the test has teeth


def test_fresh_value_head_is_one_half():
    """Guards against a random initial critic: a freshly built value head is zero, V = 0.5."""
    m = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, value_head=True))
    v = state_values(m, prompts(9), pad_id=PAD)
    torch.testing.assert_close(v, torch.full_like(v, 0.5))


def test_value_logits_without_value_head_raises(model):
    """Guards against silently using the LM head as a critic: ValueError on a policy model."""
    with pytest.raises(ValueError, match="no value head"):
        model.value_logits(torch.tensor([[1, 2, 3]]))
    with pytest.raises(ValueError):
        state_values(model, [[1, 2, 3]], pad_id=PAD)


NL = GPTConfig().prompt_end_id  # the "\n" that ends the prompt


def test_surprisal_head_by_hand():
    """Guards against a wrong surprisal input to the critic: with the linear head zeroed, the
    gate open and u = 1, logit_t is the running max over response tokens j <= t of
    -log p_LM(idx_j | idx_<j), computed here from the plain LM forward; tokens up to and
    including the first "\n" (the prompt) count nothing."""
    m = tiny_model(5, value_head=True, value_surprisal=True)
    with torch.no_grad():
        m.value_head.weight.zero_()
        m.value_head.bias.zero_()
        m.value_head_gate.weight.zero_()
        m.value_head_gate.bias.fill_(50.0)  # sigmoid(50) = 1 in fp32
        m.value_head_surprisal.fill_(1.0)
    seq = [7, 200, 31, NL, 44, 9, 120, NL, 3, 250, 61]
    idx = torch.tensor([seq])
    with torch.no_grad():
        got = m.value_logits(idx)[0]
        logp = F.log_softmax(m(idx)[0][0].float(), dim=-1)
    s = [-float(logp[j - 1, seq[j]]) for j in range(1, len(seq))]
    first_response = seq.index(NL) + 1
    want, run = [], 0.0
    for t in range(len(seq)):
        if t >= first_response:
            run = max(run, s[t - 1])
        want.append(run)
    torch.testing.assert_close(got, torch.tensor(want), atol=1e-5, rtol=1e-5)
    assert got[first_response - 1] == 0 and got[-1] > 0.5  # prompt silent; the rest is not


def test_surprisal_head_starts_as_the_plain_head_and_is_causal():
    """Guards against the added input changing an untrained critic or peeking ahead: with
    u = 0 (its initial value) the logits equal the plain head's on the same weights; with u != 0
    the logit at t depends only on tokens <= t."""
    plain = tiny_model(6, value_head=True, std=0.2)
    surp = GPT(GPTConfig(**{**M.config_dict(plain), "value_surprisal": True})).eval()
    surp.load_state_dict(plain.state_dict(), strict=False)
    assert float(surp.value_head_surprisal) == 0.0
    idx = torch.tensor([[5, 80, NL, 17, 230, 4, NL, 66]])
    with torch.no_grad():
        torch.testing.assert_close(surp.value_logits(idx), plain.value_logits(idx))
        surp.value_head_surprisal.fill_(2.0)
        surp.value_head_gate.bias.fill_(1.0)
        full = surp.value_logits(idx)[0]
        prefix = torch.stack([surp.value_logits(idx[:, :t + 1])[0, -1] for t in range(8)])
        assert not torch.allclose(full, plain.value_logits(idx)[0])  # the input is live
    torch.testing.assert_close(full, prefix, atol=1e-5, rtol=1e-5)


def test_surprisal_head_trains():
    """Guards against a surprisal path cut off from the gradient: one BCE backward reaches the
    gate, the weight u and (through s_j) the language-model head."""
    m = tiny_model(7, value_head=True, value_surprisal=True, std=0.1)
    idx = torch.tensor([[5, 80, NL, 17, 230, 4, NL, 66]])
    logits = m.value_logits(idx)
    F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, 0.2)).backward()
    for p in (m.value_head_gate.weight, m.value_head_surprisal, m.lm_head.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- CUDA only

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@cuda
class TestCUDA:
    def test_kv_cache_logits_match_full_forward_bf16(self):
        """Guards against a KV cache that drifts under bf16 autocast (cache stored in the wrong
        dtype, positions off by one): teacher-forced decoding logits through the cache match a
        full forward under the same autocast within atol 5e-2 (logits have std ~0.6; bf16
        rounding alone gives ~0.016 in a CPU emulation, while a real bug moves them by ~1)."""
        dev = torch.device("cuda")
        m = tiny_model(0, std=0.1).to(dev)
        seq = torch.tensor([prompts(10, lens=[24])[0]], device=dev)
        T0 = 8
        use_bf16 = isinstance(autocast(dev), torch.autocast)
        dtype = torch.bfloat16 if use_bf16 else torch.float32
        with torch.no_grad(), autocast(dev):
            full = m.lm_head(m.hidden(seq)).float()[0]  # (T, V)
            cache = KVCache(m.config, 1, seq.size(1), dev, dtype)
            steps = [m.lm_head(m.hidden(seq[:, :T0], cache=cache)).float()[0]]
            for t in range(T0, seq.size(1)):
                mask = torch.ones(1, 1, 1, t + 1, dtype=torch.bool, device=dev)  # see all keys
                h = m.hidden(seq[:, t:t + 1], mask=mask, cache=cache)
                steps.append(m.lm_head(h).float()[0])
        cached = torch.cat(steps)
        assert cached.shape == full.shape
        assert (cached - full).abs().max().item() < 5e-2

    def test_generate_cached_vs_uncached_greedy_bf16(self):
        """Guards against the cached sampler diverging from the uncached reference on the GPU.
        Tolerance: under bf16 the two paths round differently, so they must agree token for
        token except where greedy is ambiguous: at the first position where they differ, the
        two chosen tokens' fp32 logits (full forward of the shared prefix) are within 0.1.
        Also at least a quarter of all tokens lie in the agreeing prefixes (not vacuous)."""
        dev = torch.device("cuda")
        m = tiny_model(0, std=0.1).to(dev)
        ps = prompts(11)
        kw = dict(max_new_tokens=16, temperature=0.0, num_samples=2, pad_id=PAD)
        cached = generate(m, ps, **kw)
        uncached = generate(m, ps, use_cache=False, **kw)
        agreed = 0
        for i, (a, b) in enumerate(zip(cached, uncached)):
            j = next((t for t, (x, y) in enumerate(zip(a, b)) if x != y), len(a))
            agreed += j
            if j < len(a):
                p = ps[i // 2]
                with torch.no_grad():
                    logits = m(torch.tensor([p + a[:j]], device=dev))[0][0, -1].float()
                assert abs(logits[a[j]] - logits[b[j]]).item() <= 0.1, (i, j)
        assert agreed >= sum(len(r) for r in cached) // 4

    def test_adamw_steps_lower_loss(self):
        """Guards against a training step that does not train on the GPU (autocast dtype
        issues, frozen or detached weights): 30 AdamW steps on one fixed batch under bf16
        autocast cut the loss by at least half."""
        dev = torch.device("cuda")
        torch.manual_seed(0)
        m = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=64)).to(dev)
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 257, (8, 33), generator=g).to(dev)
        opt = torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.0)
        losses = []
        for _ in range(30):
            with autocast(dev):
                _, loss = m(x[:, :-1], x[:, 1:])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert all(torch.isfinite(torch.tensor(losses)))
        assert losses[-1] < 0.5 * losses[0]
