"""Exercise "sampler": the KV-cache sampler (model._sample_cached) against the plain,
uncached reference that recomputes the whole sequence every token. Run: python -m course.exercise
test --set sampler."""

import torch

from model import GPT, GPTConfig, generate

HINT = ("likely mistake: the cached sampler must draw exactly the tokens of the uncached "
        "reference: prefill the left-padded prompts once and read the logits at the last "
        "position, give each new token the position after its row's own prompt (not after the "
        "padding), and let it attend to its row's real keys only")


def tiny():
    """A random GPT with its weight matrices scaled up: sharp attention and a next-token
    distribution whose top token has about a quarter of the mass, so that a mistaken position
    or mask changes the draws (a fresh GPT's near-uniform outputs would hide it)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=64)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(30)
    return model


def draw(model, prompts, use_cache, temperature=1.0, n=3, stop=None):
    gen = torch.Generator().manual_seed(5)
    return generate(model, prompts, 12, temperature, n, gen, stop_id=stop, pad_id=0,
                    use_cache=use_cache)


def test_cached_sampling_draws_the_reference_tokens():
    model, prompts = tiny(), [[65, 66, 67, 10], [70, 10], [71, 72, 73, 74, 75, 10]]
    assert draw(model, prompts, True) == draw(model, prompts, False), HINT


def test_cached_greedy_decoding_matches_a_full_recompute():
    model, prompts = tiny(), [[65, 66, 10], [80, 81, 82, 83, 10]]
    got = draw(model, prompts, True, temperature=0.0, n=1)
    for p, out in zip(prompts, got):
        seq = list(p)
        for _ in range(12):
            seq.append(int(model(torch.tensor([seq]))[0][0, -1].argmax()))
        assert out == seq[len(p):], HINT


def test_rows_stop_at_their_stop_token():
    model, prompts = tiny(), [[65, 66, 10], [70, 71, 10]]
    a, b = draw(model, prompts, True, stop=11), draw(model, prompts, False, stop=11)
    assert a == b and all(11 not in row for row in a), HINT
