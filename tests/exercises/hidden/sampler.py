import torch

from model import GPT, GPTConfig, generate


def test_cached_equals_uncached_on_fresh_prompts(rng):
    torch.manual_seed(rng.randrange(1000))
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=64)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(30)
    prompts = [[rng.randint(1, 90) for _ in range(rng.randint(1, 8))] for _ in range(4)]
    seed, n = rng.randrange(10 ** 6), rng.randint(1, 4)
    a, b = (generate(model, prompts, 10, 1.0, n, torch.Generator().manual_seed(seed),
                     pad_id=0, use_cache=c) for c in (True, False))
    assert a == b
