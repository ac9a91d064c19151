"""Performance benchmark: sampling and training throughput of the small GPT in model.py, side by
side with Hugging Face transformers' GPT-2 generate at the same size.

    python -m experiments.bench                  # default model, best device (~1 min, 2 cores)
    python -m experiments.bench --device cpu --iters 1  # quicker, noisier
    python -m experiments.bench --preset gpu     # 8 layers x 512 wide, bigger batches: GPU-sized
    python -m experiments.bench --skip-hf --json # no transformers; one JSON object as last line
    python -m experiments.bench --checkpoint runs/seed0/sft.pt  # also Monte Carlo completion

What it measures, one function each, in the order it prints them (random weights and random
tokens: speed does not depend on what was learned):
  1. bench_sampling: sampling tok/s with the KV cache, model.generate on --batch prompts of
     --prompt-len tokens, --new-tokens new tokens each, no stop token (so exactly
     batch * new-tokens tokens); the same without the cache (every step recomputes the whole
     sequence) and the speed-up;
  2. bench_fanout: the prefix fan-out of the Monte Carlo stage, K=8 continuations of each of
     batch // 8 longer prompts, prefilled once and fanned out, against the prompts repeated K
     times;
  3. bench_train: training tok/s (AdamW steps on random batches under bf16 autocast on CUDA,
     fp32 on CPU) and the achieved FLOP/s by the 6N rule (attention FLOPs not counted); MFU on
     known GPUs;
  4. bench_vs_hf: transformers GPT2LMHeadModel.generate at the same size, batch and precision
     (random init, never downloaded), and our speed over it: the two are timed in turn,
     max(--iters, 5) rounds, so a slow spell of a shared machine hits both alike;
  5. bench_mc, with --checkpoint (a policy from train_sft.py or train_actor.py): the
     pipeline's Monte Carlo completion, K=4 continuations of 256 states cut from the policy's
     own answers, which stop at the end-of-text token at different lengths; model.generate
     with finished rows dropped from the batch (the default) against keeping them to the end,
     timed in turn;
  6. report_memory: peak memory, CUDA max_memory_allocated per phase, or the process's peak
     RSS on CPU.
Every measurement is warmed up first and timed --iters times with time.perf_counter (with a
device synchronize on GPUs; the slow no-cache reference once); the rates printed are tokens over
the median time. On a busy machine, compare runs with --threads 1: tiny ops on threads that wait
for descheduled siblings get many times slower.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import torch

from artifacts import task_of
from common import (UserError, add_device_arg, add_model_args, add_preset_arg, build_model,
                    friendly_errors, load_model, parse_with_preset, positive)
from dapo import max_solution_tokens, prefix_states
from data import EOT_ID, VOCAB_SIZE, encode, eval_split
from model import GPT, GPTConfig, autocast, generate, pick_device

FANOUT_K = 8  # continuations per prompt in the fan-out measurement (train_critic.py's K)
FANOUT_PROMPT_LEN = 60  # a longer prompt: a problem plus a few solution steps
FANOUT_NEW_TOKENS = 32  # the rest of a solution
MC_STATES, MC_K = 256, 4  # --checkpoint: Monte Carlo states, continuations of each
# Dense bf16 peak FLOP/s (no sparsity) by device name, for MFU; unknown devices get none.
PEAK_BF16_FLOPS = [  # (regex on torch.cuda.get_device_name(), FLOP/s); first match wins
    (r"H100.*PCIe", 756e12),
    (r"H100.*NVL", None),  # a different part; not in this table
    (r"H100", 989e12),  # SXM (e.g. "NVIDIA H100 80GB HBM3")
    (r"H200", 989e12),
    (r"A100", 312e12),
    (r"\bL4\b", 121e12),  # not L40 / L40S
    (r"RTX 4090", 165e12),
]


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    g = p.add_argument_group("run")
    add_device_arg(g)
    add_preset_arg(g)
    g.add_argument("--iters", type=int, default=3,
                   help="timed repetitions of each measurement, median reported (default 3);\n"
                        "the much slower no-cache reference is timed once")
    g.add_argument("--seed", type=int, default=0,
                   help="seed for weights, prompts and sampling (default 0)")
    g.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice, usually one per core)")
    g.add_argument("--skip-hf", action="store_true",
                   help="skip the Hugging Face transformers GPT-2 comparison")
    g.add_argument("--checkpoint", default=None, metavar="PT",
                   help="a trained policy (RUN_DIR/sft.pt or actor_R.pt): also time Monte\n"
                        "Carlo completion, with and without dropping finished rows")
    g.add_argument("--json", action="store_true",
                   help="print one JSON object with every number as the last line")
    add_model_args(p)
    g = p.add_argument_group("sampling")
    g.add_argument("--batch", type=int, default=256, help="prompts sampled at once (256)")
    g.add_argument("--prompt-len", type=int, default=20,
                   help="tokens per random prompt (default 20)")
    g.add_argument("--new-tokens", type=int, default=64,
                   help="tokens sampled per prompt (default 64)")
    g = p.add_argument_group("training")
    g.add_argument("--train-batch", type=int, default=64,
                   help="sequences per optimizer step (64)")
    g.add_argument("--train-len", type=int, default=96,
                   help="tokens per training sequence (default 96)")
    g.add_argument("--train-steps", type=int, default=4,
                   help="optimizer steps in one timed training repetition (default 4)")
    g.add_argument("--compile", action="store_true", help="torch.compile the training model")
    args = parse_with_preset(p, argv, "model", "bench")
    if args.threads is not None:
        positive("threads", args.threads)
    for name in ("iters", "n_layer", "n_embd", "n_head", "batch", "prompt_len", "new_tokens",
                 "train_batch", "train_len", "train_steps"):
        positive(name.replace("_", "-"), getattr(args, name))
    return args


# ----------------------------------------------------------------------------- helpers


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that perf_counter measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def median_seconds(fn, device: torch.device, iters: int) -> float:
    """Median wall time of fn() over iters calls (the caller warms up first)."""
    times = []
    for _ in range(iters):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: CUDA's allocator statistics, or on Linux the process's peak resident set
    size (writing 5 to /proc/self/clear_refs resets it). Elsewhere the peak is never reset, so a
    later phase's figure includes the earlier ones."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_memory_mb(device: torch.device) -> float | None:
    """MiB: CUDA max_memory_allocated since the last reset; elsewhere the process's peak RSS
    (resource.getrusage ru_maxrss: KiB on Linux, bytes on macOS), which includes the ~0.2 GiB
    that the torch runtime itself occupies."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def peak_flops(device: torch.device) -> float | None:
    """The device's dense bf16 peak FLOP/s if it is in PEAK_BF16_FLOPS, else None."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for pattern, flops in PEAK_BF16_FLOPS:
        if re.search(pattern, name):
            return flops
    return None


def random_prompts(n: int, length: int, seed: int) -> list[list[int]]:
    """n prompts of random byte tokens (0..255; never the end-of-text id 256)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, length), generator=g).tolist()


def fmt(x: float | None, unit: str = "") -> str:
    return "n/a" if x is None else f"{x:,.0f}{unit}"


# ----------------------------------------------------------------------------- measurements


def sampler(model: GPT, prompts: list[list[int]], new_tokens: int, num_samples: int,
            use_cache: bool, batch: int, seed: int, device: torch.device):
    """run(n_new) samples n_new tokens (default new_tokens) per row with model.generate at
    temperature 1, no stop token, and checks that every row got exactly that many."""
    def run(n_new: int = new_tokens) -> None:
        g = torch.Generator(device=device).manual_seed(seed)
        out = generate(model, prompts, n_new, temperature=1.0, num_samples=num_samples,
                       generator=g, batch_size=batch, use_cache=use_cache)
        if len(out) != len(prompts) * num_samples or any(len(r) != n_new for r in out):
            raise RuntimeError("generate returned the wrong number of tokens; nothing to time")
    return run


def bench_generate(model: GPT, prompts: list[list[int]], new_tokens: int, num_samples: int,
                   use_cache: bool, batch: int, seed: int, device: torch.device, iters: int,
                   warmup_tokens: int | None = None) -> float:
    """Generated tokens per second of model.generate (prefill time included, prompt tokens not
    counted). Warms up once (with warmup_tokens new tokens if given, to spare slow paths)."""
    run = sampler(model, prompts, new_tokens, num_samples, use_cache, batch, seed, device)
    run(warmup_tokens or new_tokens)
    seconds = median_seconds(run, device, iters)
    return len(prompts) * num_samples * new_tokens / seconds


def bench_hf(cfg: GPTConfig, prompts: list[list[int]], new_tokens: int, seed: int,
             device: torch.device):
    """Transformers' GPT2LMHeadModel.generate (KV cache, sampling at temperature 1, no
    top-k/top-p) at our model's size, batch and precision, from a random init: nothing is
    downloaded. Returns (run, note): run() samples once (None if skipped), note says what ran
    or why it was skipped."""
    try:
        import transformers
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError as e:
        return None, (f"skipped: transformers is not importable ({e}); "
                      "pip install transformers to compare")
    transformers.logging.set_verbosity_error()  # no advice about pad tokens and the like
    T = len(prompts[0])
    eot = cfg.vocab_size - 1  # our <|endoftext|>; also the pad id
    hcfg = GPT2Config(vocab_size=cfg.vocab_size, n_positions=T + new_tokens, n_embd=cfg.n_embd,
                      n_layer=cfg.n_layer, n_head=cfg.n_head, bos_token_id=eot,
                      eos_token_id=eot, pad_token_id=eot)
    torch.manual_seed(seed)
    hf = GPT2LMHeadModel(hcfg).to(device).eval()
    ids = torch.tensor(prompts, device=device)  # (B, T)
    mask = torch.ones_like(ids)  # every prompt is T tokens: nothing to mask, but HF wants one

    def run():
        torch.manual_seed(seed)  # HF samples from the global generator
        with torch.no_grad(), autocast(device):
            out = hf.generate(input_ids=ids, attention_mask=mask, do_sample=True,
                              temperature=1.0, top_k=0, top_p=1.0, use_cache=True,
                              max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                              pad_token_id=eot)
        if out.shape != (len(prompts), T + new_tokens):
            raise RuntimeError(f"HF generate returned shape {tuple(out.shape)}")

    try:
        run()  # warm-up, and a check that this transformers version runs at all
    except Exception as e:  # an optional peer must not sink the whole benchmark
        return None, f"skipped: HF generate failed ({type(e).__name__}: {e})"
    attn = getattr(hf.config, "_attn_implementation", None) or "default"
    return run, f"transformers {transformers.__version__} GPT-2, {attn} attention"


def interleaved_seconds(fns: list, device: torch.device, iters: int) -> list[float]:
    """Median wall time of each fn over iters rounds, the fns taking turns within a round, so
    that a slow spell of a shared machine hits both sides of a comparison alike."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(iters):
        for fn, ts in zip(fns, times):
            ts.append(median_seconds(fn, device, 1))
    return [statistics.median(ts) for ts in times]


def bench_training(cfg: GPTConfig, args, device: torch.device) -> tuple[float, int, float]:
    """Training tokens/s of AdamW steps on random (train_batch, train_len) batches through
    model(idx, targets) under model.autocast. Returns (tok/s, N params, seconds per step)."""
    torch.manual_seed(args.seed)
    model = GPT(cfg).to(device)
    n_params = model.num_params()
    train_model = torch.compile(model) if args.compile else model
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1,
                            fused=device.type == "cuda")
    g = torch.Generator().manual_seed(args.seed)
    n_batches = 4  # a few distinct batches, made before timing
    data = torch.randint(0, cfg.vocab_size, (n_batches, args.train_batch, args.train_len + 1),
                         generator=g).to(device)  # (n, B, T + 1)
    step = 0
    losses = []

    def train(n_steps):
        nonlocal step
        for _ in range(n_steps):
            batch = data[step % n_batches]
            x, y = batch[:, :-1], batch[:, 1:]  # (B, T) inputs and next-token targets
            with autocast(device):
                _, loss = train_model(x, y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
        losses.append(loss.detach())  # no host sync inside the timed loop

    train(3 if args.compile else 2)  # warm-up (compilation, allocator, optimizer state)
    seconds = median_seconds(lambda: train(args.train_steps), device, args.iters)
    if not torch.isfinite(torch.stack(losses)).all():
        raise RuntimeError("training loss is not finite; the measurement is meaningless")
    tokens = args.train_steps * args.train_batch * args.train_len
    return tokens / seconds, n_params, seconds / args.train_steps


def load_policy(path: str) -> tuple[GPT, dict]:
    """The --checkpoint policy on the CPU (its value head, if any, dropped) and its checkpoint."""
    model, ckpt = load_model(Path(path), "cpu", "policy checkpoint",
                             "pass --checkpoint RUN_DIR/sft.pt after running train_sft.py",
                             value_head=False)
    return model.eval(), ckpt


def bench_mc(model: GPT, ckpt: dict, args, device: torch.device) -> dict:
    """Tokens/s of the pipeline's Monte Carlo completion (train_critic.py, A.2) with the
    --checkpoint policy: K=4 continuations at temperature 1 of each of 256 states (prefixes of
    the policy's own answers to test problems of its task, cut at step ends, evenly spread),
    stopping at the end-of-text token, so rows of a batch finish at different lengths. Timed
    in turn with finished rows dropped from the batch (the default) and kept to the end."""
    model = model.to(device)
    problems = eval_split("test", MC_STATES, 0, task_of(ckpt, Path(args.checkpoint))[0])
    budget = max_solution_tokens(problems)
    prompts = [encode(p.prompt) for p in problems]
    g = torch.Generator(device=device).manual_seed(args.seed)
    answers = generate(model, prompts, budget, 1.0, 1, g, stop_id=EOT_ID, pad_id=EOT_ID)
    states = [s for p, a in zip(prompts, answers) for s in prefix_states(p, a)]
    if not states:
        raise UserError(f"{args.checkpoint} answers every problem with nothing, so there are no "
                        "states to complete; pass a policy trained by train_sft.py")
    states = [states[i * len(states) // MC_STATES] for i in range(MC_STATES)]
    outs = {}

    def run(drop: bool):
        def go():
            g = torch.Generator(device=device).manual_seed(args.seed)
            outs[drop] = generate(model, states, budget, 1.0, MC_K, g, stop_id=EOT_ID,
                                  pad_id=EOT_ID, batch_size=2 * args.batch, drop_finished=drop)
        return go

    run(True)()  # warm-up, both ways
    run(False)()
    drop_s, keep_s = interleaved_seconds([run(True), run(False)], device, max(args.iters, 3))
    n_tok = sum(map(len, outs[True]))
    return dict(mc_tok_s=n_tok / drop_s, mc_tok_s_keep=sum(map(len, outs[False])) / keep_s,
                mc_drop_speedup=keep_s / drop_s, mc_same_samples=outs[True] == outs[False],
                mc_tokens=n_tok, mc_rows=len(outs[True]))


# ----------------------------------------------------------------------------- the report


def say(line: str) -> None:
    print(line, flush=True)


def describe_machine(cfg: GPTConfig, args, device: torch.device) -> dict:
    """The result dict's header (device, CPU, threads, torch, configuration), printed."""
    res: dict = {"device": device.type, "params": None, "config": dict(
        n_layer=cfg.n_layer, n_embd=cfg.n_embd, n_head=cfg.n_head, batch=args.batch,
        prompt_len=args.prompt_len, new_tokens=args.new_tokens, train_batch=args.train_batch,
        train_len=args.train_len, iters=args.iters, compile=args.compile)}
    if device.type == "cuda":
        res["device_name"] = torch.cuda.get_device_name(device)
        res["cpu"] = cpu_name()
    else:
        res["device_name"] = res["cpu"] = cpu_name()
    res["threads"], res["torch"] = torch.get_num_threads(), torch.__version__
    precision = "bf16 autocast" if isinstance(autocast(device), torch.autocast) else "fp32"
    say(f"machine: {device.type} | {res['device_name']} | {res['threads']} torch threads, "
        f"{os.cpu_count()} logical CPUs | torch {torch.__version__} | {precision}")
    return res


def bench_sampling(model: GPT, args, device: torch.device, res: dict) -> None:
    """1. Sampling with and without the KV cache."""
    prompts = random_prompts(args.batch, args.prompt_len, args.seed)
    shape = f"{args.batch} prompts x {args.prompt_len} tokens -> {args.new_tokens} new"
    reset_peak_memory(device)
    cached = bench_generate(model, prompts, args.new_tokens, 1, True, args.batch, args.seed,
                            device, args.iters)
    res["peak_mem_mb_sample"] = peak_memory_mb(device)
    say(f"sample (KV cache)     {fmt(cached, ' tok/s'):>16} | {shape}")
    # The recomputing reference is tens of times slower: one timed run (after a short warm-up)
    # keeps the default bench near a minute, and its ratio only has to clear 10x.
    uncached = bench_generate(model, prompts, args.new_tokens, 1, False, args.batch, args.seed,
                              device, 1, warmup_tokens=min(args.new_tokens, 4))
    speedup = cached / uncached
    verdict = "ok" if speedup >= 10 else "BELOW TARGET"
    say(f"sample (no cache)     {fmt(uncached, ' tok/s'):>16} | recomputes the whole sequence "
        f"each step | KV cache speed-up {speedup:.1f}x (must be >= 10x: {verdict})")
    res.update(sample_tok_s_cached=cached, sample_tok_s_uncached=uncached, cache_speedup=speedup)


def bench_fanout(model: GPT, args, device: torch.device, res: dict) -> None:
    """2. Prefix fan-out for Monte Carlo completions, against each prompt prefilled K times."""
    n_fan = max(1, args.batch // FANOUT_K)
    fan_prompts = random_prompts(n_fan, FANOUT_PROMPT_LEN, args.seed + 1)
    repeated = [p for p in fan_prompts for _ in range(FANOUT_K)]
    fan = bench_generate(model, fan_prompts, FANOUT_NEW_TOKENS, FANOUT_K, True, args.batch,
                         args.seed, device, args.iters)
    nofan = bench_generate(model, repeated, FANOUT_NEW_TOKENS, 1, True, args.batch, args.seed,
                           device, args.iters)
    say(f"sample (fan-out)      {fmt(fan, ' tok/s'):>16} | {n_fan} prompt(s) x "
        f"{FANOUT_PROMPT_LEN} tokens, prefilled once, {FANOUT_K} x {FANOUT_NEW_TOKENS} new each")
    say(f"sample (no fan-out)   {fmt(nofan, ' tok/s'):>16} | the same prompts repeated "
        f"{FANOUT_K}x, each prefilled | fan-out speed-up {fan / nofan:.2f}x")
    res.update(fanout_tok_s=fan, nofanout_tok_s=nofan, fanout_speedup=fan / nofan)


def bench_train(cfg: GPTConfig, args, device: torch.device, res: dict) -> None:
    """3. Training throughput and FLOP/s by the 6N rule (MFU where the peak is known)."""
    reset_peak_memory(device)
    train_tok_s, n_params, step_s = bench_training(cfg, args, device)
    res["peak_mem_mb_train"] = peak_memory_mb(device)
    gflops = 6 * n_params * train_tok_s / 1e9  # 6N FLOPs per token: 2N forward + 4N backward
    peak = peak_flops(device)
    mfu = gflops * 1e9 / peak if peak else None
    mfu_text = (f" | MFU {100 * mfu:.1f}% of {peak / 1e12:.0f} TFLOP/s bf16 peak" if mfu
                else " | MFU n/a (peak FLOP/s of this device not known)")
    say(f"train                 {fmt(train_tok_s, ' tok/s'):>16} | {args.train_batch} x "
        f"{args.train_len} tokens per step, {1e3 * step_s:.1f} ms/step, AdamW"
        f"{' fused' if device.type == 'cuda' else ''}{', compiled' if args.compile else ''}")
    say(f"train FLOP/s          {gflops:>10,.1f} GFLOP/s | 6N rule, N = {n_params:,} "
        f"(attention FLOPs not counted){mfu_text}")
    res.update(train_tok_s=train_tok_s, train_gflops=gflops, peak_flops=peak, mfu=mfu)


def bench_vs_hf(cfg: GPTConfig, args, device: torch.device, res: dict) -> None:
    """4. Hugging Face transformers GPT-2 generate at the same size, timed in turn with ours
    (after training: importing transformers grows the process, which would blur the CPU
    peak-memory figures above)."""
    res.update(sample_tok_s_hf=None, hf_ratio=None)
    if args.skip_hf:
        return say("sample (HF generate)  skipped (--skip-hf)")
    prompts = random_prompts(args.batch, args.prompt_len, args.seed)
    run_hf, note = bench_hf(cfg, prompts, args.new_tokens, args.seed, device)
    if run_hf is None:
        return say(f"sample (HF generate)  {note}")
    torch.manual_seed(args.seed)
    model = GPT(cfg).to(device).eval()
    run_ours = sampler(model, prompts, args.new_tokens, 1, True, args.batch, args.seed, device)
    run_ours()  # warm-up
    ours_s, hf_s = interleaved_seconds([run_ours, run_hf], device, max(args.iters, 5))
    n_tok = len(prompts) * args.new_tokens
    res.update(sample_tok_s_hf=n_tok / hf_s, hf_ratio=hf_s / ours_s)
    say(f"sample (HF generate)  {fmt(n_tok / hf_s, ' tok/s'):>16} | {note}, same size, batch "
        f"and precision | ours, timed in turn with it: {fmt(n_tok / ours_s, ' tok/s')}, "
        f"{hf_s / ours_s:.2f}x HF")


def bench_checkpoint_mc(policy, args, device: torch.device, res: dict) -> None:
    """5. Monte Carlo completion as in the pipeline, rows stopping early (needs a policy)."""
    if policy is None:
        return say("sample (MC)           skipped: pass --checkpoint RUN_DIR/sft.pt to time it")
    with friendly_errors():
        st = bench_mc(*policy, args, device)
    res.update(st)
    say(f"sample (MC, drop)     {fmt(st['mc_tok_s'], ' tok/s'):>16} | {args.checkpoint}: "
        f"{MC_K} continuations of each of {MC_STATES} states, "
        f"{st['mc_tokens'] / st['mc_rows']:.0f} tokens on average, finished rows dropped")
    say(f"sample (MC, keep)     {fmt(st['mc_tok_s_keep'], ' tok/s'):>16} | finished rows kept "
        f"to the end | dropping speed-up {st['mc_drop_speedup']:.2f}x, same samples: "
        f"{'yes' if st['mc_same_samples'] else 'no'}")


def report_memory(device: torch.device, res: dict) -> None:
    """6. Peak memory of the sampling and training phases."""
    what = ("torch.cuda.max_memory_allocated" if device.type == "cuda"
            else "process peak RSS, torch runtime included")
    say(f"peak memory           sampling (KV cache) {fmt(res['peak_mem_mb_sample'], ' MiB')}, "
        f"training {fmt(res['peak_mem_mb_train'], ' MiB')} ({what})")
    mems = [m for m in (res["peak_mem_mb_sample"], res["peak_mem_mb_train"]) if m is not None]
    res["peak_mem_mb"] = max(mems) if mems else None
    res["peak_mem_kind"] = what


def main(argv=None) -> dict:
    with friendly_errors():
        args = get_args(argv)
        device = pick_device(args.device)
        # loaded now so a bad path fails at once; kept on the CPU until its measurement
        policy = None if args.checkpoint is None else load_policy(args.checkpoint)
        need = max(args.prompt_len + args.new_tokens, FANOUT_PROMPT_LEN + FANOUT_NEW_TOKENS,
                   args.train_len)
        cfg = GPTConfig(vocab_size=VOCAB_SIZE, n_layer=args.n_layer, n_embd=args.n_embd,
                        n_head=args.n_head, block_size=max(GPTConfig.block_size, need))
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    res = describe_machine(cfg, args, device)
    torch.manual_seed(args.seed)
    with friendly_errors():
        model = build_model(cfg, device).eval()
    res["params"] = model.num_params()
    say(f"model: n_layer {cfg.n_layer}, n_embd {cfg.n_embd}, n_head {cfg.n_head}, "
        f"{res['params']:,} params | timing: median of {args.iters} after a warm-up")
    bench_sampling(model, args, device, res)
    bench_fanout(model, args, device, res)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    bench_train(cfg, args, device, res)
    bench_vs_hf(cfg, args, device, res)
    bench_checkpoint_mc(policy, args, device, res)
    report_memory(device, res)
    if args.json:
        print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
