"""Smoke test of experiments/bench.py: a tiny end-to-end run whose --json line carries every
number."""

import json
import math

import pytest
import torch

from experiments import bench

REQUIRED = ("sample_tok_s_cached", "sample_tok_s_uncached", "train_tok_s", "train_gflops",
            "fanout_tok_s", "nofanout_tok_s", "params")
# a tiny model on one thread: tiny ops on two threads of a busy 2-core machine wait on each other
TINY = ["--threads", "1", "--device", "cpu", "--n-layer", "1", "--n-embd", "16", "--n-head", "2",
        "--prompt-len", "5", "--new-tokens", "6", "--train-batch", "2", "--train-len", "8",
        "--train-steps", "1", "--iters", "1", "--skip-hf", "--json"]


@pytest.fixture(autouse=True)
def keep_threads():
    """bench.main sets torch's thread count; leave the other tests as they were."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_bench_json_smoke(capsys):
    """Guards against a benchmark that crashes, prints its JSON anywhere but the last line,
    drops or renames a key that autograders and the README read, or reports a zero, negative or
    non-finite rate (for example a timer around nothing, or tokens counted wrongly)."""
    bench.main(TINY + ["--batch", "4"])
    lines = capsys.readouterr().out.strip().splitlines()
    res = json.loads(lines[-1])
    for key in REQUIRED:
        assert isinstance(res[key], (int, float)) and math.isfinite(res[key]) and res[key] > 0, key
    assert "sample_tok_s_hf" in res and res["sample_tok_s_hf"] is None  # --skip-hf
    assert res["train_gflops"] == 6 * res["params"] * res["train_tok_s"] / 1e9  # the 6N rule
    assert res["device"] == "cpu" and res["mfu"] is None  # no peak FLOP/s known for a CPU
    assert any(line.startswith("sample (HF generate)  skipped") for line in lines)



def stopping_policy(path, p_stop: float = 0.05):
    """A 1-layer policy checkpoint whose every next-token distribution puts p_stop on the
    end-of-text token and the rest near-uniformly elsewhere: answers stop at geometric, varied
    lengths, as a trained policy's do."""
    from common import save_checkpoint
    from data import EOT_ID
    from model import GPT, GPTConfig
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_embd=16, n_head=2))
    with torch.no_grad():
        model.ln_f.weight.zero_()  # the final hidden state is ln_f.bias, whatever the input
        model.ln_f.bias.zero_()
        model.ln_f.bias[0] = 1.0
        model.wte.weight[EOT_ID].zero_()
        model.wte.weight[EOT_ID, 0] = math.log(p_stop / (1 - p_stop) * 256)
    save_checkpoint(path, model, args={}, task={}, data_seed=0)  # the default task


def test_bench_checkpoint_times_early_stops(tmp_path, capsys):
    """Guards against the --checkpoint measurement timing nothing, counting tokens wrongly or
    comparing runs that sampled different things: with a policy whose continuations stop at
    varied lengths, it samples 4 continuations of each of 256 states both ways, the same
    samples, and reports finite positive rates in the JSON line."""
    stopping_policy(tmp_path / "sft.pt")
    bench.main(TINY + ["--batch", "1024", "--checkpoint", str(tmp_path / "sft.pt")])
    lines = capsys.readouterr().out.strip().splitlines()
    res = json.loads(lines[-1])
    for key in ("mc_tok_s", "mc_tok_s_keep", "mc_drop_speedup"):
        assert math.isfinite(res[key]) and res[key] > 0, key
    assert res["mc_rows"] == 1024 and res["mc_same_samples"] is True
    assert 5 < res["mc_tokens"] / res["mc_rows"] < 40  # geometric, mean ~19: early stops
    assert any(line.startswith("sample (MC, keep)") for line in lines)


def test_bench_bad_checkpoint_fails_before_timing(tmp_path, capsys):
    """Guards against a mistyped --checkpoint surfacing as a traceback after a minute of
    timing: it exits at once with code 2 and one sentence naming the file."""
    with pytest.raises(SystemExit) as e:
        bench.main(TINY + ["--checkpoint", str(tmp_path / "nope.pt")])
    assert e.value.code == 2
    out = capsys.readouterr()
    assert "nope.pt" in out.err and len(out.err.strip().splitlines()) == 1
    assert "sample" not in out.out


def test_bench_checkpoint_that_never_answers_fails_cleanly(tmp_path, capsys):
    """Guards against a policy that stops at once (no states to complete) surfacing as an
    IndexError: exit code 2 and one sentence naming the checkpoint."""
    stopping_policy(tmp_path / "sft.pt", p_stop=1 - 1e-9)
    with pytest.raises(SystemExit) as e:
        bench.main(TINY + ["--batch", "1024", "--checkpoint", str(tmp_path / "sft.pt")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sft.pt" in err[0] and "no states" in err[0]
