"""experiments/same_runs.py: the check that a change kept the results (docs/log.md)."""

import json

import torch

from common import save_torch
from experiments import same_runs


def folder(path, weight: float, accuracy: float, seconds: float):
    path.mkdir()
    save_torch(path / "sft.pt", {"model": {"w": torch.tensor([1.0, weight])}, "step": 3})
    (path / "results.json").write_text(json.dumps(
        {"sft": {"test": {"greedy_acc": accuracy}, "wall_time_s": seconds,
                 "made_by": {"sha256": str(seconds)}}}))
    return path


def test_same_results_agree_whatever_their_times(tmp_path, capsys):
    """Guards against a check that reports a difference where only the clock differs."""
    a, b = folder(tmp_path / "a", 2.0, 0.5, 10.0), folder(tmp_path / "b", 2.0, 0.5, 99.0)
    assert same_runs.main([str(a), str(b)]) == 0
    assert "1 tensors, 1 results.json values compared: the same" in capsys.readouterr().out


def test_a_different_weight_or_number_is_named(tmp_path):
    """Guards against a check that cannot fail: one changed weight, one changed accuracy."""
    a, b = folder(tmp_path / "a", 2.0, 0.5, 10.0), folder(tmp_path / "b", 2.5, 0.6, 10.0)
    diffs, counts = same_runs.compare(a, b)
    assert counts == {"files": 1, "tensors": 1, "values": 1}
    assert diffs == ["sft.pt/model/w: different tensors",
                     "results.json/sft/test/greedy_acc: 0.5 against 0.6"]
    assert same_runs.main([str(a), str(b)]) == 1
