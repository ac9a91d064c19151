"""course/exercise.py: student copies (stubs keep signature and docstring, everything else works),
its bad input, and the chain a course relies on. (`python -m course.exercise mutants`, the check of
the exercise tests against stubs and known mistakes, runs in CI: .ci/run.)"""

import importlib.util
import json
import subprocess
import sys

import pytest

from course import exercise
from tiny import run

SETS = {"advantages", "critic", "steps", "sampler", "actor-step"}


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_set_is_marked_and_has_its_tests():
    sets = exercise.marked()
    assert set(sets) == SETS
    assert {r["function"] for r in sets["advantages"]} == {
        "advantages", "action_advantages", "passes_gap_filter", "dapo_loss"}
    for name in sets:
        assert (exercise.ROOT / exercise.test_file(name)).exists()
    assert "dapo.py:dapo_loss  (eq. 12)" in exercise.listing()


def test_a_student_copy_stubs_its_set_and_nothing_else(tmp_path):
    """Guards against a copy that leaks the solution, loses the docstring, or breaks the
    functions of other sets."""
    out = tmp_path / "hw"
    exercise.make("advantages", out)
    record = json.loads((out / ".exercise.json").read_text())
    assert record["set"] == "advantages" and "dapo.py:dapo_loss" in record["functions"]
    assert not (out / "tests/exercises/mutants.py").exists()  # the key stays with instructors
    text = (out / "dapo.py").read_text()
    assert "return values - values.mean()" not in text and "0.5 * ((adv / beta" not in text
    dapo = load(out / "dapo.py", "student_dapo")
    assert "Eq. 12" in dapo.dapo_loss.__doc__
    with pytest.raises(NotImplementedError, match=r"exercise advantages: write dapo_loss "
                                                  r"\(eq. 12\)"):
        dapo.dapo_loss(None, None, None, 0.1)
    import torch
    assert dapo.mc_value(torch.tensor([[1.0, 0.0]])).tolist() == [0.5]  # another set: works
    assert (out / "model.py").read_text() == (exercise.ROOT / "model.py").read_text()


def test_bad_input_gets_one_sentence_and_writes_nothing(tmp_path, capsys):
    code, err = run(exercise.main, ["make", "--set", "nope", "--out", str(tmp_path / "a")],
                    capsys)
    assert code == 2 and "there is no exercise set 'nope'" in err
    assert not (tmp_path / "a").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    code, err = run(exercise.main, ["make", "--set", "critic", "--out", str(tmp_path / "full")],
                    capsys)
    assert code == 2 and "is not an empty folder" in err
    assert [p.name for p in tmp_path.iterdir()] == ["full"]  # no temporary folder left


def test_a_student_copy_runs_its_tests_and_cannot_make_copies(tmp_path):
    """Guards against a student copy whose own test command passes on stubs, or that can
    make copies of itself or run the instructors' check."""
    out = tmp_path / "hw"
    exercise.make("critic", out)

    def call(*argv):
        return subprocess.run([sys.executable, "-m", "course.exercise", *argv], cwd=out,
                              capture_output=True, text=True)
    assert call("test", "--set", "critic").returncode != 0
    assert call("test", "--set", "steps").returncode == 0  # not stubbed in this copy
    made = call("make", "--set", "critic", "--out", str(tmp_path / "again"))
    assert made.returncode == 2 and "is a student copy" in made.stderr
    key = call("mutants")
    assert key.returncode == 2 and "instructors' key" in key.stderr


def test_grade_scores_the_reference_s_tests_not_the_student_s(tmp_path):
    """Guards against a grader that trusts the copy's own tests, or scores stubs: a copy
    whose stubs are left gets 0 on its set's tests; with the reference's code put back (a
    correct answer) every visible and hidden check scores; the results file is Gradescope's
    shape."""
    out = tmp_path / "hw"
    exercise.make("steps", out)
    (out / "tests/exercises/test_steps.py").write_text("def test_nothing():\n    pass\n")
    res = tmp_path / "results.json"
    summary = exercise.grade(out, res, golden=False)
    graded = json.loads(res.read_text())
    visible = [t for t in graded["tests"] if t["visibility"] == "visible"]
    assert len(visible) == 5 and graded["score"] == 0 and "set steps, 0 /" in summary
    assert all(set(t) == {"name", "score", "max_score", "visibility", "output"}
               for t in graded["tests"])
    (out / "dapo.py").write_text((exercise.ROOT / "dapo.py").read_text())
    graded = json.loads((exercise.grade(out, res, golden=False) and res).read_text())
    hidden = [t for t in graded["tests"] if t["visibility"] == "after_due_date"]
    assert hidden and graded["score"] == sum(t["max_score"] for t in graded["tests"])


def test_grade_refuses_a_folder_that_is_not_a_student_copy(tmp_path, capsys):
    code, err = run(exercise.main, ["grade", str(tmp_path), "--no-golden"], capsys)
    assert code == 2 and "is not a student copy" in err
    assert list(tmp_path.iterdir()) == []


def test_the_handout_lists_every_set_and_every_mutant():
    """Guards against a marking guide that drifts from the key, or a set the handout omits."""
    text = (exercise.ROOT / "docs/handout.md").read_text().replace("\\|", "|")
    for name in SETS:
        assert f"| `{name}` |" in text
    for name, set_name, *_ in exercise.load_key():
        assert f"| {set_name} | {name} |" in text, name


def test_the_golden_bands_pass_the_reference_and_fail_learning_nothing():
    """Guards against a golden.json whose bands a correct implementation fails, or that an
    implementation which learns nothing passes."""
    record = json.loads((exercise.ROOT / exercise.GOLDEN_FILE).read_text())
    assert len(record["seeds"]) >= 5
    for measures in record["seeds"].values():
        assert all(exercise.passes(measures[k], record["bands"][k])
                   for k, *_ in exercise.MEASURES)
    assert not exercise.passes(0.0, record["bands"]["gain"])  # no change
    assert not exercise.passes(1.0, record["bands"]["brier_ratio"])  # a constant critic
    table = exercise.golden_table(record, {"gain": 9.0, "brier_ratio": 0.7, "kept": 0.5})
    assert table.count("PASS") == 2 and table.count("FAIL") == 1  # too many states kept
