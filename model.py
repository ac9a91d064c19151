"""A small, self-contained GPT: training forward, KV-cache batched sampling, summed log-probs of
a continuation, and a scalar value head, so the critic is the same class with another head.

Shapes: B batch, T time, C n_embd, nh heads, hs = C // nh head size, V vocabulary.
Batches are right-padded for training and scoring (a causal model never looks right, so padding
after the real tokens changes nothing) and left-padded for sampling (so every row's next token
lands in the same column); left padding shifts each row's positions and masks its pad keys.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    vocab_size: int = 257  # 256 bytes + <|endoftext|> (data.py)
    block_size: int = 256  # longest sequence the rotary table covers
    n_layer: int = 4  # transformer blocks
    n_head: int = 4  # attention heads per block
    n_embd: int = 128  # residual stream width
    value_head: bool = False  # add a scalar head V(s) = sigmoid(w . h_last + b) for the critic
    value_surprisal: bool = False  # the value head also reads the LM's own surprisal (below)
    prompt_end_id: int = 10  # surprisal counts after the first of these tokens ("\n" ends the
    #                          prompt, data.NL_ID)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) <= 0:
                raise ValueError(f"model size {name}={getattr(self, name)} must be positive")
        if self.n_embd % self.n_head or (self.n_embd // self.n_head) % 2:
            raise ValueError("n_embd must be a multiple of n_head with an even head size")


# ----------------------------------------------------------------------------- devices


def pick_device(name: str = "auto") -> torch.device:
    """"auto" picks cuda, then mps, then cpu; anything else must name an available device."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but CUDA is not available; use auto or cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("--device mps was asked for but MPS is not available; use auto or cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {name!r}; use auto, cpu, cuda or mps")
    return dev


def autocast(device: torch.device):
    """bf16 autocast on CUDA that supports it; full fp32 elsewhere."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


# ----------------------------------------------------------------------------- the network


def rotary(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding: rotate channel pairs (x[2i], x[2i+1]) by position-dependent
    angles, done as one complex multiply. x (B, T, heads, hs); freqs (B, T, 1, hs/2) complex,
    e^{i * pos * theta_i}."""
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))  # (B, T, heads, hs/2)
    return torch.view_as_real(xc * freqs).flatten(-2).type_as(x)


def attention(q, k, v, mask):
    """softmax(q k^T / sqrt(hs) + mask) v. One query row per sequence (decoding) on the CPU
    takes the plain matmul path, which beats the fused kernel built for long queries; everything
    else goes to scaled_dot_product_attention (flash / memory-efficient kernels on CUDA)."""
    if q.size(2) == 1 and mask is not None and not q.is_cuda:
        att = (q @ k.transpose(-2, -1)) * q.size(-1) ** -0.5  # (B, nh, 1, keys)
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        return att @ v  # (B, nh, 1, hs)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)


class KVCache:
    """Keys and values of every layer for B rows, filled left to right.

    k, v: (n_layer, B, nh, capacity, hs), the first `len` columns filled, the rest zeros;
    key_valid (B, max_len) marks real (non-pad) keys. Attention reads all `capacity` columns
    (the unfilled ones masked out: zero weight times zero values adds exactly nothing), because
    on a CPU a batched matmul over a whole contiguous tensor runs several times faster than over
    the first columns of a longer one. So the capacity grows in steps of GROW columns, copying
    the filled ones, rather than being max_len from the start.
    """
    GROW = 16

    def __init__(self, cfg: GPTConfig, batch: int, max_len: int, device, dtype):
        self.k = torch.zeros(cfg.n_layer, batch, cfg.n_head, 0, cfg.n_embd // cfg.n_head,
                             device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        self.key_valid = torch.zeros(batch, max_len, dtype=torch.bool, device=device)
        self.len = 0  # number of filled columns
        self.max_len = max_len

    def reserve(self, T: int) -> int:
        """Make room for T more columns; returns the capacity, the key columns attention sees."""
        cap = self.k.size(3)
        if self.len + T > cap:
            cap = min(self.max_len, -(-(self.len + T) // self.GROW) * self.GROW)
            if self.len + T > cap:
                raise ValueError(f"the cache holds {self.max_len} columns, not {self.len + T}")
            shape = self.k.shape[:3] + (cap, self.k.size(4))
            k, v = self.k.new_zeros(shape), self.v.new_zeros(shape)
            k[:, :, :, :self.len] = self.k[:, :, :, :self.len]
            v[:, :, :, :self.len] = self.v[:, :, :, :self.len]
            self.k, self.v = k, v
        return cap

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Write layer's new keys and values (B, nh, T, hs) after the filled columns (reserve(T)
        first); returns the layer's whole cache (B, nh, capacity, hs), keys then values."""
        t0, T = self.len, k.size(2)
        self.k[layer, :, :, t0:t0 + T] = k
        self.v[layer, :, :, t0:t0 + T] = v
        return self.k[layer], self.v[layer]

    def fan_out(self, n: int) -> None:
        """Repeat every row n times (row i becomes rows i*n .. i*n+n-1): the prefix's keys and
        values are computed once and shared by its n samples."""
        if n == 1:
            return
        self.k = self.k.repeat_interleave(n, dim=1)
        self.v = self.v.repeat_interleave(n, dim=1)
        self.key_valid = self.key_valid.repeat_interleave(n, dim=0)

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only the given rows (a 1-D index), in that order: finished samples leave the
        batch, so later steps neither compute nor read their keys and values."""
        self.k, self.v = self.k[:, rows], self.v[:, rows]
        self.key_valid = self.key_valid[rows]


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.ln1 = nn.LayerNorm(cfg.n_embd)
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        self.ln2 = nn.LayerNorm(cfg.n_embd)
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=False)
        self.fc_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=False)

    def forward(self, x, freqs, mask, cache, layer):
        B, T, C = x.shape
        qk, v = self.qkv(self.ln1(x)).split((2 * C, C), dim=2)
        qk = rotary(qk.view(B, T, 2 * self.n_head, C // self.n_head), freqs)  # q, k together
        q, k = qk.transpose(1, 2).split(self.n_head, dim=1)  # (B, nh, T, hs) each
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, nh, t0 + T, hs)
        y = attention(q, k, v, mask)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        x = x + self.proj(y)
        return x + self.fc_proj(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying
        self.value_head = nn.Linear(cfg.n_embd, 1) if cfg.value_head else None
        if cfg.value_head and cfg.value_surprisal:  # names start with value_head: critic-only
            self.value_head_gate = nn.Linear(cfg.n_embd, 1)
            self.value_head_surprisal = nn.Parameter(torch.zeros(1))
        hs = cfg.n_embd // cfg.n_head
        inv_freq = 1.0 / (10000 ** (torch.arange(0, hs, 2).float() / hs))
        angles = torch.outer(torch.arange(cfg.block_size).float(), inv_freq)  # (block, hs/2)
        self.register_buffer("freqs", torch.polar(torch.ones_like(angles), angles),
                             persistent=False)  # (block, hs/2) complex
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections
            if name.endswith("proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg.n_layer))
        if self.value_head is not None:
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)
        if hasattr(self, "value_head_gate"):  # gate 1/2 everywhere, surprisal weight 0: at
            nn.init.zeros_(self.value_head_gate.weight)  # init this is the plain head
            nn.init.zeros_(self.value_head_gate.bias)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)

    def num_params(self) -> int:
        """Parameters, tied embedding counted once (the N of the 6N FLOP rule)."""
        return sum(p.numel() for p in self.parameters())

    def hidden(self, idx: torch.Tensor, pos: torch.Tensor | None = None,
               mask: torch.Tensor | None = None, cache: KVCache | None = None) -> torch.Tensor:
        """Final hidden states (B, T, C) of token ids idx (B, T).

        pos (B, T) are rotary positions (default: cache.len + arange(T)); mask is a boolean
        attention mask (B, 1, T, keys), True = may attend, over the keys so far (with a cache:
        its cache.len filled columns, then these T); None means plain causal attention.
        """
        B, T = idx.shape
        t0 = cache.len if cache is not None else 0
        if pos is None:
            pos = torch.arange(t0, t0 + T, device=idx.device).expand(B, T)
        if cache is not None:
            if mask is None:  # causal over the cached keys too (SDPA's is_causal is not)
                mask = torch.ones(T, t0 + T, dtype=torch.bool, device=idx.device).tril(t0)
            cap = cache.reserve(T)  # attention sees cap key columns: never the unfilled ones
            mask = F.pad(mask, (0, cap - mask.size(-1)), value=False)
        freqs = self.freqs[pos].unsqueeze(2)  # (B, T, 1, hs/2)
        x = self.wte(idx)  # (B, T, C)
        for layer, block in enumerate(self.blocks):
            x = block(x, freqs, mask, cache, layer)
        if cache is not None:
            cache.len += T
        return self.ln_f(x)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                loss_mask: torch.Tensor | None = None):
        """Training forward on right-padded idx (B, T): logits (B, T, V) and, with targets, the
        mean cross-entropy over the positions where loss_mask (B, T) is 1."""
        logits = self.lm_head(self.hidden(idx))
        if targets is None:
            return logits, None
        nll = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none")
        m = torch.ones_like(nll) if loss_mask is None else loss_mask.flatten().float()
        return logits, (nll * m).sum() / m.sum().clamp(min=1)

    def value_logits(self, idx: torch.Tensor, with_surprisal: bool = False):
        """Critic logits (B, T): position t scores the state idx[:, :t+1]. V = sigmoid(logit).

        The paper's head is linear in the last hidden state: w . h_t + b. With
        config.value_surprisal (this project's addition, README "The critic") it also reads how
        surprised the network's own language-model head is by each token written so far:

            logit_t = w . h_t + b + u * max_{j <= t, j in response} g_j * s_j
            s_j = -log p_LM(idx_j | idx_<j),   g_j = sigmoid(a . h_{j-1} + c)

        A critic initialised from pi_ref starts with pi_ref's LM, so s_j is large where a step
        wrote a digit pi_ref itself found unlikely: the mark of an arithmetic slip, which the
        plain head has to learn to re-derive. The gate g learns which positions count (result
        digits, not a free choice of wording); u starts at 0, so training starts from the plain
        head. with_surprisal=True also returns s (B, T-1), for the language-model loss that keeps
        the critic's LM the completer's (train_critic.py --lm-coef).
        """
        if self.value_head is None:
            raise ValueError("this model has no value head (GPTConfig.value_head=False)")
        h = self.hidden(idx)  # (B, T, C)
        logit = self.value_head(h).squeeze(-1).float()  # (B, T): the paper's head
        # BEYOND THE PAPER (from here on): the surprisal input, docs/critic.md
        reads = hasattr(self, "value_head_gate")
        if not (reads or with_surprisal):
            return logit
        logp = F.log_softmax(self.lm_head(h[:, :-1]).float(), dim=-1)  # predicts idx[:, 1:]
        s = -logp.gather(-1, idx[:, 1:, None]).squeeze(-1)  # (B, T-1) surprisal of idx_j
        if reads:
            g = torch.sigmoid(self.value_head_gate(h[:, :-1]).squeeze(-1).float())
            x = torch.where(self.after_prompt(idx), g * s, torch.zeros_like(s))
            x = torch.cat([x.new_zeros(len(x), 1), x], dim=1).cummax(dim=1).values  # (B, T)
            logit = logit + self.value_head_surprisal * x
        return (logit, s) if with_surprisal else logit

    def after_prompt(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, T-1) bool: token j + 1 of each row comes after the first prompt_end_id token."""
        return (idx == self.config.prompt_end_id).long().cumsum(1)[:, :-1] > 0


# ----------------------------------------------------------------------------- batching


def pack(seqs: list[list[int]], pad_id: int, device=None, left: bool = False) -> tuple:
    """Pad token lists into one (B, T) tensor. Returns (idx, lengths).

        >>> pack([[5, 6, 7], [8]], pad_id=0)[0].tolist()
        [[5, 6, 7], [8, 0, 0]]
        >>> pack([[5, 6, 7], [8]], pad_id=0, left=True)[0].tolist()
        [[5, 6, 7], [0, 0, 8]]
    """
    T = max(len(s) for s in seqs)
    idx = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        if left:
            idx[i, T - len(s):] = torch.tensor(s, dtype=torch.long)
        else:
            idx[i, :len(s)] = torch.tensor(s, dtype=torch.long)
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    return idx.to(device), lengths.to(device)


def pack_continuations(prefixes: list[list[int]], continuations: list[list[int]], pad_id: int,
                       device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad prefix+continuation rows; mask (B, T) is 1 on continuation tokens only.

        >>> idx, m = pack_continuations([[1, 2], [3]], [[4], [5, 6]], pad_id=0)
        >>> idx.tolist(), m.tolist()
        ([[1, 2, 4], [3, 5, 6]], [[0, 0, 1], [0, 1, 1]])
    """
    idx, _ = pack([p + c for p, c in zip(prefixes, continuations)], pad_id, device)
    mask = torch.zeros_like(idx)
    for i, (p, c) in enumerate(zip(prefixes, continuations)):
        mask[i, len(p):len(p) + len(c)] = 1
    return idx, mask


def token_logprobs(model: GPT, idx: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Log-prob (B, T-1) of each token idx[:, 1:] given everything before it, zero where
    mask[:, 1:] is 0. Differentiable; the one log-prob implementation every stage uses."""
    logits = model(idx[:, :-1])[0]  # (B, T-1, V): predicts idx[:, 1:]
    logp = -F.cross_entropy(logits.flatten(0, 1).float(), idx[:, 1:].flatten(),
                            reduction="none").view_as(idx[:, 1:])  # (B, T-1)
    return logp * mask[:, 1:]


def continuation_logprob(model: GPT, idx: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Summed log-prob (B,) of the tokens where mask (B, T) is 1, each given everything before
    it. Sums, not means: DAPO's log pi(a|s) is the sum over the action's tokens (no length
    normalisation)."""
    return token_logprobs(model, idx, mask).sum(dim=1)


@torch.no_grad()
def sequence_logprobs(model: GPT, prefixes: list[list[int]], continuations: list[list[int]],
                      pad_id: int, batch_size: int = 256) -> torch.Tensor:
    """Summed log-probs (N,) of each continuation given its prefix, in fp32 on the CPU."""
    dev = next(model.parameters()).device
    out = []
    for i in range(0, len(prefixes), batch_size):
        idx, mask = pack_continuations(prefixes[i:i + batch_size],
                                       continuations[i:i + batch_size], pad_id, dev)
        with autocast(dev):
            out.append(continuation_logprob(model, idx, mask).float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


@torch.no_grad()
def state_values(model: GPT, states: list[list[int]], pad_id: int,
                 batch_size: int = 256) -> torch.Tensor:
    """Critic values V(s) in [0, 1] (N,), read at the last token of each state."""
    dev = next(model.parameters()).device
    out = []
    for i in range(0, len(states), batch_size):
        idx, lengths = pack(states[i:i + batch_size], pad_id, dev)
        with autocast(dev):
            logits = model.value_logits(idx)  # (B, T)
        out.append(torch.sigmoid(logits[torch.arange(len(idx)), lengths - 1]).float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


# ----------------------------------------------------------------------------- sampling


def _sample(logits: torch.Tensor, temperature: float, generator, rows: int,
            live: torch.Tensor) -> torch.Tensor:
    """Next tokens (B,) from last-position logits (B, V): argmax if temperature == 0, else one
    draw from softmax(logits / temperature) by inverse CDF (one uniform number per row, where
    torch.multinomial draws one per vocabulary entry). live (B,) are the rows' indices in the
    batch of `rows` rows they started in: the uniforms are drawn for that whole batch and the
    live rows' used, so dropping finished rows leaves every other row's draws, and thus its
    sample, unchanged."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    cdf = torch.softmax(logits.float() / temperature, dim=-1).cumsum(dim=-1)  # (B, V)
    u = torch.rand(rows, 1, device=cdf.device, generator=generator)[live] * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp_(max=cdf.size(1) - 1)


def _prompt_mask(lengths: torch.Tensor, T: int, total: int) -> tuple:
    """Positions (B, T) and attention mask (B, 1, T, total) for left-padded prompts of the
    given lengths, inside a key space of `total` columns whose first T are the prompt."""
    dev = lengths.device
    pad = (T - lengths).unsqueeze(1)  # (B, 1) pads on the left
    cols = torch.arange(total, device=dev)
    rows = torch.arange(T, device=dev)
    key_valid = cols.unsqueeze(0) >= pad  # (B, total)
    causal = cols.unsqueeze(0) <= rows.unsqueeze(1)  # (T, total)
    mask = causal.unsqueeze(0) & key_valid.unsqueeze(1)  # (B, T, total)
    mask |= cols.unsqueeze(0) == rows.unsqueeze(1)  # a pad row attends to itself: no NaNs
    pos = (rows.unsqueeze(0) - pad).clamp(min=0)  # (B, T)
    return pos, mask.unsqueeze(1), key_valid


@torch.inference_mode()
def generate(model: GPT, prompts: list[list[int]], max_new_tokens: int, temperature: float = 1.0,
             num_samples: int = 1, generator: torch.Generator | None = None,
             stop_id: int | None = None, pad_id: int = 0, batch_size: int = 256,
             use_cache: bool = True, sync_every: int = 16,
             drop_finished: bool = True) -> list[list[int]]:
    """Sample continuations of prompts of different lengths, num_samples per prompt.

    Returns a list of len(prompts) * num_samples token lists; sample k of prompt i is at
    i * num_samples + k. A continuation ends before its first stop_id (not included) or after
    max_new_tokens. temperature 0 is greedy. With use_cache, each prompt is prefilled once and
    its keys/values fanned out to its num_samples rows; without it, every step recomputes the
    whole sequence (the slow reference that tests compare against). Prompts are processed in
    length order, batch_size rows at a time, so rows of a batch finish at similar times. With a
    stop_id, finished rows are counted every sync_every steps (the loop's only host-device
    sync); with the cache and drop_finished, once a quarter of the rows are done they leave the
    batch, so the stragglers do not drag finished rows (and their keys and values) through
    every step. Dropping changes no sample (the random draws of the other rows stay the same).
    """
    if max_new_tokens <= 0 or num_samples <= 0 or batch_size <= 0 or temperature < 0:
        raise ValueError("max_new_tokens, num_samples and batch_size must be positive and "
                         "temperature >= 0")
    dev = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    per_batch = max(1, batch_size // num_samples)
    results: list[list[int]] = [[] for _ in range(len(prompts) * num_samples)]
    for c in range(0, len(order), per_batch):
        chunk = order[c:c + per_batch]
        outs = _generate_batch(model, [prompts[i] for i in chunk], max_new_tokens, temperature,
                               num_samples, generator, stop_id, pad_id, use_cache, dev,
                               sync_every, drop_finished)
        for j, i in enumerate(chunk):
            for k in range(num_samples):
                results[i * num_samples + k] = outs[j * num_samples + k]
    return results


def _generate_batch(model, prompts, max_new, temperature, n, generator, stop_id, pad_id,
                    use_cache, dev, sync_every, drop_finished) -> list[list[int]]:
    """One batch of generate: n samples of each prompt, cut before their first stop_id."""
    idx, lengths = pack(prompts, pad_id, dev, left=True)  # (P, T)
    max_new = min(max_new, model.config.block_size - int(lengths.max()))
    if max_new <= 0:
        raise ValueError(f"prompt longer than block_size={model.config.block_size}")
    if use_cache:
        out = _sample_cached(model, idx, lengths, max_new, temperature, n, generator, stop_id,
                             pad_id, sync_every, drop_finished)
    else:
        out = _sample_uncached(model, idx, lengths, max_new, temperature, n, generator,
                               stop_id, pad_id, sync_every)
    rows = out.tolist()
    if stop_id is not None:
        rows = [r[:r.index(stop_id)] if stop_id in r else r for r in rows]
    return rows


def _sample_cached(model, idx, lengths, max_new, temperature, n, generator, stop_id, pad_id,
                   sync_every, drop_finished) -> torch.Tensor:
    """The sampler: prefill the left-padded prompts idx (P, T) once, fan the KV cache out to
    n rows each, then decode one token per step from the cache. Returns (P*n, max_new) tokens,
    stop_id repeated after a row's first stop (pad_id where the loop ended early)."""
    # EXERCISE sampler (KV cache)
    dev = idx.device
    P, T = idx.shape
    pos, mask, key_valid = _prompt_mask(lengths, T, T + max_new)
    dtype = torch.bfloat16 if isinstance(autocast(dev), torch.autocast) else torch.float32
    cache = KVCache(model.config, P, T + max_new, dev, dtype)
    cache.key_valid = key_valid
    with autocast(dev):
        h = model.hidden(idx, pos, mask[..., :T], cache)  # prefill: once per prompt
    logits = model.lm_head(h[:, -1]).float().repeat_interleave(n, dim=0)  # (P*n, V)
    cache.fan_out(n)  # (P*n) rows share each prompt's prefill
    next_pos = lengths.repeat_interleave(n)  # (B,) position of the next token per row
    B = P * n
    out = torch.full((B, max_new), pad_id, dtype=torch.long, device=dev)
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    live = torch.arange(B, device=dev)  # the rows still sampling (may shrink)
    for t in range(max_new):
        tok = _sample(logits, temperature, generator, B, live)  # (len(live),)
        if stop_id is not None:
            tok = torch.where(done, torch.full_like(tok, stop_id), tok)
            done |= tok == stop_id
        out[live, t] = tok
        if stop_id is not None and (t + 1) % sync_every == 0:  # one host-device sync per
            n_done = int(done.sum())                             # sync_every steps, not per step
            if n_done == len(done):
                break
            if drop_finished and 4 * n_done >= len(done):  # a quarter done: drop those rows
                keep = (~done).nonzero().squeeze(1)
                live = live[keep]
                tok, done, next_pos = tok[keep], done[keep], next_pos[keep]
                cache.keep(keep)
        if t == max_new - 1:
            break
        m = cache.key_valid[:, :cache.len + 1]  # (B, keys): real keys, this token included
        with autocast(dev):
            h = model.hidden(tok.unsqueeze(1), next_pos.unsqueeze(1), m[:, None, None, :], cache)
        logits = model.lm_head(h[:, -1]).float()
        next_pos = next_pos + 1
    return out


def _sample_uncached(model, idx, lengths, max_new, temperature, n, generator, stop_id, pad_id,
                     sync_every) -> torch.Tensor:
    """The slow reference the tests compare _sample_cached with: no cache, every step
    recomputes the whole sequence (positions and mask included). Same draws, same output."""
    dev = idx.device
    P, T = idx.shape
    seq, lengths = idx.repeat_interleave(n, 0), lengths.repeat_interleave(n)
    B = P * n
    out = torch.full((B, max_new), pad_id, dtype=torch.long, device=dev)
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    live = torch.arange(B, device=dev)  # never shrinks here
    for t in range(max_new):
        L = seq.size(1)
        p, m, _ = _prompt_mask(lengths, T, L)
        p = torch.cat([p, lengths.unsqueeze(1) + torch.arange(L - T, device=dev)], 1)
        with autocast(dev):
            logits = model.lm_head(model.hidden(seq, p, _full_mask(m, T, L))[:, -1]).float()
        tok = _sample(logits, temperature, generator, B, live)
        if stop_id is not None:
            tok = torch.where(done, torch.full_like(tok, stop_id), tok)
            done |= tok == stop_id
        out[:, t] = tok
        if stop_id is not None and (t + 1) % sync_every == 0 and bool(done.all()):
            break
        seq = torch.cat([seq, tok.unsqueeze(1)], dim=1)
    return out


def _full_mask(prompt_mask: torch.Tensor, T: int, L: int) -> torch.Tensor:
    """Extend a prompt mask (B, 1, T, L) to all L rows: generated rows see every valid key to
    their left (the prompt's valid columns and all generated ones)."""
    B = prompt_mask.size(0)
    key_valid = prompt_mask[:, 0, -1, :]  # the last prompt row sees every valid prompt key
    key_valid = key_valid | (torch.arange(L, device=prompt_mask.device) >= T)
    causal = torch.ones(L - T, L, dtype=torch.bool, device=prompt_mask.device).tril(T)
    gen = causal.unsqueeze(0) & key_valid.unsqueeze(1)  # (B, L - T, L)
    return torch.cat([prompt_mask[:, 0], gen], dim=1).unsqueeze(1).expand(B, 1, L, L)


def config_dict(model: GPT) -> dict:
    return asdict(model.config)


def flat(seqs: list[list[int]]) -> dict:
    """Token lists as one flat int32 tensor + offsets (compact, and weights_only-loadable).

        >>> flat([[5, 6], [], [7]])["offsets"].tolist()
        [0, 2, 2, 3]
    """
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    tokens = torch.tensor([t for s in seqs for t in s], dtype=torch.int32)
    return {"tokens": tokens, "offsets": torch.cat([torch.zeros(1, dtype=torch.long),
                                                    lengths.cumsum(0)])}


def unflat(d: dict) -> list[list[int]]:
    """The inverse of flat."""
    tok, off = d["tokens"].tolist(), d["offsets"].tolist()
    return [tok[off[i]:off[i + 1]] for i in range(len(off) - 1)]
