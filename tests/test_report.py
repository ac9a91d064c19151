"""Tests of report.py: the critic report's yardsticks and bootstrap interval, the accuracy
tables and the multi-seed summary's cells."""

import pytest
import torch

from model import flat
from report import cell, grid
from evaluation import ratio_interval, reference_predictors


def test_reference_predictors_on_a_hand_example():
    """Guards against the critic report's yardsticks grouping states by the wrong key: the
    depth-only predictor must average over all states with as many steps, the error-aware one
    only over those that share whether an earlier line is wrong (verifier's per-step truth)."""
    from data import Problem, decode, encode, verify
    p = Problem(3, (("+", 4), ("*", 2)))  # Q: 3+4*2 -> 3+4=7, A: 7*2=14
    prompt = encode(p.prompt)
    states = [prompt, prompt + encode("3+4=7\n"), prompt + encode("3+4=8\n"),  # train
              prompt + encode("3+4=7\n"), prompt + encode("3+4=9\n")]  # held out
    # as the rollouts store them: each kept response's states and its per-line verdicts
    ok = [[int(x) for x in verify(p, decode(states[i][len(prompt):])).line_ok]
          for i in (1, 2, 3, 4)]
    data = {"resp_states": flat([[0, i] for i in (1, 2, 3, 4)]), "resp_line_ok": flat(ok)}
    mc = torch.tensor([0.4, 0.9, 0.1, 0.7, 0.2])
    ref = reference_predictors(data, mc, [0, 1, 2], [3, 4])
    # by depth: both held-out states have taken 1 step -> predict mean(0.9, 0.1) = 0.5
    assert ref["brier_by_depth"] == pytest.approx(((0.5 - 0.7) ** 2 + (0.5 - 0.2) ** 2) / 2)
    # error-aware: the right line predicts 0.9, the wrong one 0.1
    assert ref["brier_error_aware"] == pytest.approx(((0.9 - 0.7) ** 2 + (0.1 - 0.2) ** 2) / 2)


def test_ratio_interval():
    """Guards against a bootstrap that ignores the grouping or the data: a critic whose error is
    the constant's times 0.5 in every problem has the degenerate interval [0.5, 0.5]; otherwise
    the interval holds the point ratio, and resampling whole problems gives a wider interval
    than resampling states would when one problem carries most of the error."""
    const = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.2, 0.1])
    groups = [7, 7, 3, 3, 9, 9]
    assert ratio_interval(0.5 * const, const, groups) == pytest.approx((0.5, 0.5))
    err = torch.tensor([0.01, 0.02, 0.3, 0.4, 0.01, 0.01])  # problem 3 carries the error
    lo, hi = ratio_interval(err, const, groups)
    point = float(err.sum() / const.sum())
    assert lo < point < hi
    lo_s, hi_s = ratio_interval(err, const, list(range(6)))  # states independent
    assert hi - lo > hi_s - lo_s


def test_grid_and_cells_line_up():
    """Guards against misaligned tables: the first column is left-aligned, the others
    right-aligned to a common width, and a mean ± std cell reads "m ± sd" (one value alone,
    with no std it does not have; "-" if empty)."""
    out = grid(["stage", "val"], [["sft", "45.8%"], ["dapo_10", "57.0%"]], first=8, width=7)
    assert out.splitlines() == ["stage        val", "sft        45.8%", "dapo_10    57.0%"]
    assert cell([1.0, 3.0], "5.1f") == "  2.0 ±  1.4"
    assert cell([2.0], "5.1f") == "  2.0" and cell([], "5.1f") == "-"
