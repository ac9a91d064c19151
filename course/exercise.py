"""Course assignments from this very source (docs/handout.md): student copies with functions
to write, the tests that check them, and the known mistakes those tests must catch.

    python -m course.exercise list                          # the sets and their functions
    python -m course.exercise make --set advantages --out hw1   # a student copy
    python -m course.exercise test --set advantages         # a set's tests (in a student copy too)
    python -m course.exercise mutants                       # the tests, tested (instructors, CI)

A solution region is a function whose body starts, right after its docstring, with a line
"# EXERCISE <set> (<equation>)". In a student copy the body of every function of the chosen
set becomes a NotImplementedError naming the set and the equation; signature, docstring and
everything else stay as they are, so every other part of the project works. A set's tests are
tests/exercises/test_<set>.py; each failure names the mistake it most likely is.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import UserError, friendly_errors, save_json

ROOT = Path(__file__).resolve().parents[1]
MARK = re.compile(r"^(\s*)# EXERCISE ([a-z-]+) \((.+)\)\s*$")
KEY = Path("tests/exercises/mutants.py")  # the instructors' key: never in a student copy
HIDDEN = Path("tests/exercises/hidden")  # the graders' property checks on fresh seeds: the same
COPY_RECORD = ".exercise.json"


def marked(root: Path = ROOT) -> dict[str, list[dict]]:
    """{set: [{"file", "function", "equation", "start", "end"}]}: every solution region under
    root (start: the marker's line index, end: the function's last line index, 0-based)."""
    sets: dict[str, list[dict]] = {}
    for path in sorted(root.glob("*.py")):
        lines = path.read_text().split("\n")
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, ast.FunctionDef) or len(node.body) < 2:
                continue
            m = MARK.match(lines[node.body[0].end_lineno])  # the line after the docstring
            if m:
                sets.setdefault(m.group(2), []).append(
                    {"file": path.name, "function": node.name, "equation": m.group(3),
                     "start": node.body[0].end_lineno, "end": node.end_lineno - 1})
    return sets


def stub(lines: list[str], region: dict, name: str) -> list[str]:
    """lines with the region's body replaced by its marker and a NotImplementedError."""
    indent = MARK.match(lines[region["start"]]).group(1)
    message = (f"exercise {name}: write {region['function']} ({region['equation']}); "
               f"python -m course.exercise test --set {name} checks it")
    return (lines[:region["start"] + 1] + [f"{indent}raise NotImplementedError({message!r})"]
            + lines[region["end"] + 1:])


def stub_set(root: Path, name: str, sets: dict) -> None:
    """Stub every function of set name in the tree at root, in place."""
    by_file: dict[str, list[dict]] = {}
    for region in sets[name]:
        by_file.setdefault(region["file"], []).append(region)
    for file, regions in by_file.items():
        lines = (root / file).read_text().split("\n")
        for region in sorted(regions, key=lambda r: -r["start"]):  # bottom up: lines stay put
            lines = stub(lines, region, name)
        (root / file).write_text("\n".join(lines))


def project_files() -> list[Path]:
    """The files of the project (git's, tracked or not, ignored ones left out), the
    instructors' key left out."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        raise UserError(f"{ROOT} is not the project's git checkout; make student copies from "
                        "the reference (a clone of the repository), not from a copy") from None
    return [Path(f) for f in out.splitlines() if Path(f) != KEY and HIDDEN not in Path(f).parents
            and (ROOT / f).is_file()]


def copy_tree(dest: Path) -> None:
    for f in project_files():
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dest / f)


def make(name: str, out: Path) -> str:
    """Write a student copy of set name to out, all at once: built in a temporary folder
    beside it, then renamed into place."""
    sets = marked()
    if name not in sets:
        raise UserError(f"there is no exercise set {name!r}; python -m course.exercise list shows "
                        f"them ({', '.join(sorted(sets))})")
    if (ROOT / COPY_RECORD).exists():
        raise UserError(f"{ROOT} is a student copy; make copies from the reference")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} exists and is not an empty folder; pick a new --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        copy_tree(tmp)
        stub_set(tmp, name, sets)
        record = {"set": name, "functions": [f"{r['file']}:{r['function']}"
                                             for r in sets[name]]}
        (tmp / COPY_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return (f"wrote {out}: set {name}, {len(sets[name])} functions to write "
            f"({', '.join(record['functions'])}); test with: cd {out} && python -m course.exercise "
            f"test --set {name}")


def listing() -> str:
    lines = []
    for name, regions in sorted(marked().items()):
        lines.append(f"{name}: tests/exercises/test_{name.replace('-', '_')}.py")
        lines += [f"  {r['file']}:{r['function']}  ({r['equation']})" for r in regions]
    return "\n".join(lines)


def test_file(name: str) -> str:
    return f"tests/exercises/test_{name.replace('-', '_')}.py"


def pytest(root: Path, files: list[str], extra=()) -> subprocess.CompletedProcess:
    """Run pytest on files in the tree at root, in a fresh interpreter."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--no-header",
           "-o", "addopts=", "-rA", *extra, *files]
    return subprocess.run(cmd, cwd=root, capture_output=True, text=True)


def outcomes(proc: subprocess.CompletedProcess) -> dict[str, bool]:
    """{test file: every test in it passed} from pytest -rA's summary lines."""
    out: dict[str, bool] = {}
    for line in proc.stdout.splitlines():
        m = re.match(r"(PASSED|FAILED|ERROR) (tests/exercises/test_\w+\.py)", line)
        if m:
            out[m.group(2)] = out.get(m.group(2), True) and m.group(1) == "PASSED"
    return out


def load_key() -> list[tuple]:
    path = ROOT / KEY
    if not path.exists():
        raise UserError(f"{KEY} (the instructors' key) is not here: python -m course.exercise "
                        "mutants runs in the reference checkout, not in a student copy")
    namespace: dict = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace["MUTANTS"]


def check_stubs(scratch: Path, sets: dict) -> list[str]:
    """The reference passes every set's tests; each set's stubs fail its own tests only."""
    files = [test_file(n) for n in sorted(sets)]
    problems, ref = [], outcomes(pytest(scratch, files))
    bad = [f for f in files if not ref.get(f)]
    print(f"reference: {'passes every set' if not bad else 'FAILS ' + ', '.join(bad)}")
    problems += [f"the reference fails {f}" for f in bad]
    originals = {p: p.read_text() for p in scratch.glob("*.py")}
    for name in sorted(sets):
        stub_set(scratch, name, sets)
        got = outcomes(pytest(scratch, files))
        own = not got.get(test_file(name), True)
        others = [f for f in files if f != test_file(name) and not got.get(f)]
        print(f"stubs of {name}: {'fail' if own else 'PASS'} its tests"
              + (f"; also fail {', '.join(others)}" if others else "; no other set's"))
        problems += [f"the stubs of {name} pass its tests"] * (not own)
        problems += [f"the stubs of {name} fail {f}" for f in others]
        for p, text in originals.items():
            p.write_text(text)
    return problems


def check_mutant(scratch: Path, mutant: tuple) -> str | None:
    """Apply one mistake; None if its set's tests fail with its hint, else what went wrong."""
    name, exercise, file, old, new, hint = mutant
    path = scratch / file
    text = path.read_text()
    if text.count(old) != 1:
        return f"mutant {name!r}: its text is not in {file} exactly once (the key is stale)"
    path.write_text(text.replace(old, new))
    try:
        proc = pytest(scratch, [test_file(exercise)])
    finally:
        path.write_text(text)
    caught, hinted = proc.returncode != 0, hint in proc.stdout
    print(f"mutant {name!r} ({exercise}): "
          + ("caught, with its hint" if caught and hinted else
             "caught, but WITHOUT its hint" if caught else "SURVIVES"))
    return None if caught and hinted else \
        f"mutant {name!r} {'lacks its hint' if caught else 'survives'}"


def check_mutants() -> int:
    """python -m course.exercise mutants: 0 if every check holds, 1 (with the list) if any
    does not."""
    sets, key = marked(), load_key()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        copy_tree(scratch)
        shutil.copytree(ROOT / HIDDEN, scratch / HIDDEN)
        hidden = pytest(scratch, [str(HIDDEN / f"{n.replace('-', '_')}.py") for n in sets])
        print(f"hidden checks on the reference: {'pass' if hidden.returncode == 0 else 'FAIL'}")
        problems = [] if hidden.returncode == 0 else ["the reference fails the hidden checks"]
        problems += check_stubs(scratch, sets)
        problems += [p for m in key if (p := check_mutant(scratch, m))]
    print(f"\n{len(key)} mutants, {len(sets)} sets: "
          + ("every check holds" if not problems else f"{len(problems)} problems:"))
    for p in problems:
        print("  " + p)
    return 1 if problems else 0


# ----------------------------------------------------------------------------- the golden run

# The golden run: pi_ref (the SFT stage at seed 0, built once and reused) and the pipeline's
# round 1, about 4 minutes on a 2-core CPU (docs/handout.md).
GOLDEN = {"sft": ["--seed", "0"], "critic": [], "actor": []}
GOLDEN_FILE = Path("tests/exercises/golden.json")
# What the golden run grades, in which direction a result may pass the reference's spread, and
# what learning nothing gives (a passing result must beat it).
MEASURES = (("gain", "greedy test gain of the round, points", "higher", 0.0),
            ("brier_ratio", "critic's held-out Brier / a constant predictor's", "lower", 1.0),
            ("kept", "share of states kept by the gap filter", "both", None))


def golden_measures(run_dir: Path) -> dict:
    """The graded numbers of a finished golden run, and the seconds its round took (its critic
    and actor stages, as they measured themselves)."""
    from artifacts import read_results
    res = read_results(run_dir)
    held = res["critic_1"]["heldout"]
    return {"gain": 100 * (res["dapo_1"]["test"]["greedy_acc"] - res["sft"]["test"]["greedy_acc"]),
            "brier_ratio": held["brier"] / held["brier_const"],
            "kept": res["dapo_1"]["filter"]["kept_state_frac"],
            "round_s": res["critic_1"]["wall_time_s"] + res["dapo_1"]["wall_time_s"]}


def golden_run(run_dir: Path, seed: int, sft_from: Path | None = None) -> dict:
    """The stages of the golden run in the tree this file is in (a student copy runs the
    student's code); each reuses what it made before. Returns the graded measures."""
    import train_actor
    import train_critic
    import train_sft
    if sft_from is not None and sft_from != run_dir:
        from artifacts import share_sft
        share_sft(sft_from, run_dir)
    common = ["--run-dir", str(run_dir), "--device", "cpu"]
    train_sft.main(common + GOLDEN["sft"])
    train_critic.main(common + ["--seed", str(seed)] + GOLDEN["critic"])
    train_actor.main(common + ["--seed", str(seed)] + GOLDEN["actor"])
    return golden_measures(run_dir)


def band(xs: list[float], side: str, nothing: float | None) -> dict:
    """The reference's mean and std over seeds, and the interval a result passes in: 3 std
    (and 1 % of the mean) on the side(s) a mistake moves it to, and no worse than learning
    nothing; unbounded on the other side."""
    import statistics
    mean, sd = statistics.mean(xs), statistics.stdev(xs)
    slack = 3 * sd + 0.01 * abs(mean)
    low = None if side == "lower" else mean - slack
    high = None if side == "higher" else mean + slack
    if nothing is not None and side == "higher":
        low = max(low, nothing)
    if nothing is not None and side == "lower":
        high = min(high, nothing)
    return {"mean": mean, "sd": sd, "low": low, "high": high}


def calibrate(out: Path, seeds: list[int], sft_from: Path | None = None) -> str:
    """The reference's own spread: the golden run on each seed (one shared pi_ref: sft_from's,
    or the first seed's), written to tests/exercises/golden.json with each measure's band."""
    if len(seeds) < 5:
        raise UserError("calibrate on at least 5 seeds (--seeds 0 1 2 3 4)")
    per_seed, first = {}, out / f"seed{seeds[0]}"
    for s in seeds:
        per_seed[str(s)] = golden_run(out / f"seed{s}", s, sft_from=sft_from or first)
    from artifacts import file_hash
    record = {"flags": GOLDEN, "seeds": per_seed,
              "sft_sha256": file_hash(out / f"seed{seeds[0]}" / "sft.pt"),
              "bands": {key: band([m[key] for m in per_seed.values()], side, nothing)
                        for key, _, side, nothing in MEASURES}}
    save_json(ROOT / GOLDEN_FILE, record)
    return golden_table(record) + f"\nwritten to {GOLDEN_FILE}"


def passes(x: float, b: dict) -> bool:
    return (b["low"] is None or x >= b["low"]) and (b["high"] is None or x <= b["high"])


def golden_table(record: dict, got: dict | None = None) -> str:
    """Each measure's reference mean ± std over seeds and pass band, and a result beside it."""
    lines = []
    for key, what, _, _ in MEASURES:
        b = record["bands"][key]
        lo = "-inf" if b["low"] is None else f"{b['low']:.3f}"
        hi = "inf" if b["high"] is None else f"{b['high']:.3f}"
        line = f"{what:50s} reference {b['mean']:7.3f} ± {b['sd']:.3f}, passes in [{lo}, {hi}]"
        if got is not None:
            line += f": yours {got[key]:.3f} {'PASS' if passes(got[key], b) else 'FAIL'}"
        lines.append(line)
    return "\n".join(lines)


# ----------------------------------------------------------------------------- grading


def student_set(copy: Path) -> str:
    path = copy / COPY_RECORD
    if not path.is_file():
        raise UserError(f"{copy} is not a student copy (it has no {COPY_RECORD}); grade the "
                        "folder course/exercise.py make wrote")
    try:
        return json.loads(path.read_text())["set"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise UserError(f"{path} is damaged; make the copy again") from None


def grading_tree(copy: Path, dest: Path) -> None:
    """The student's code (the top-level modules) with the reference's tests,
    grader and settings: a student's edits to the tests or the grader count for nothing."""
    copy_tree(dest)
    for path in copy.glob("*.py"):
        shutil.copy2(path, dest / path.name)
    if (ROOT / HIDDEN).is_dir():
        shutil.copytree(ROOT / HIDDEN, dest / HIDDEN, dirs_exist_ok=True)


def test_scores(proc: subprocess.CompletedProcess, visibility: str) -> list[dict]:
    """Gradescope entries, one point per test, from pytest -rA's summary and its failures."""
    entries = []
    for line in proc.stdout.splitlines():
        m = re.match(r"(PASSED|FAILED|ERROR) (\S+?)(?: - (.*))?$", line)
        if m:
            ok = m.group(1) == "PASSED"
            entries.append({"name": m.group(2).split("::")[-1], "score": float(ok),
                            "max_score": 1.0, "visibility": visibility,
                            "output": "" if ok else (m.group(3) or "failed")})
    return entries


def cached_sft(record: dict) -> list[str]:
    """--sft-from the calibration's SFT stage, when it is here and is the one calibrated on
    (checked by hash); else nothing, and the golden run trains its own pi_ref."""
    from artifacts import file_hash
    cache = ROOT / "runs" / "seed0"  # the seed-0 pipeline's pi_ref, calibrated on
    want = record.get("sft_sha256")
    ok = want is not None and file_hash(cache / "sft.pt") == want
    return ["--sft-from", str(cache)] if ok else []


def golden_entry(tree: Path, run_dir: Path, seed: int) -> dict:
    """The golden run of the student's code, in a fresh interpreter, graded on the bands."""
    if not (ROOT / GOLDEN_FILE).exists():
        raise UserError(f"there is no {GOLDEN_FILE}: run python -m course.exercise golden "
                        "runs/golden --calibrate first (the reference's spread), or grade with "
                        "--no-golden")
    record = json.loads((ROOT / GOLDEN_FILE).read_text())
    proc = subprocess.run([sys.executable, "-m", "course.exercise", "golden",
                           str(run_dir.resolve()), "--seed", str(seed)] + cached_sft(record),
                          cwd=tree, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"name": "golden run", "score": 0.0, "max_score": 3.0, "visibility": "visible",
                "output": "the golden run failed: " + (proc.stderr.strip().splitlines()
                                                       or ["no output"])[-1]}
    got = golden_measures(run_dir)
    ok = sum(passes(got[k], record["bands"][k]) for k, _, _, _ in MEASURES)
    return {"name": "golden run", "score": float(ok), "max_score": 3.0,
            "visibility": "visible", "output": golden_table(record, got)}


def grade(copy: Path, results: Path, golden: bool = True) -> str:
    """Run a student copy's set's tests, the hidden checks and the golden run; write a
    Gradescope results.json and return a summary a person reads."""
    name = student_set(copy)
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        grading_tree(copy, tree)
        tests = test_scores(pytest(tree, [test_file(name)]), "visible")
        hidden = tree / HIDDEN / f"{name.replace('-', '_')}.py"
        if hidden.exists():
            tests += test_scores(pytest(tree, [str(hidden.relative_to(tree))]), "after_due_date")
        if golden:
            tests.append(golden_entry(tree, copy / "golden_run", seed=0))
    score, top = sum(t["score"] for t in tests), sum(t["max_score"] for t in tests)
    save_json(results, {"score": score, "tests": tests})
    lines = [f"{copy}: set {name}, {score:g} / {top:g}"]
    lines += [f"  {'ok  ' if t['score'] == t['max_score'] else 'MISS'} {t['name']}"
              + ("" if t["score"] == t["max_score"] else f": {t['output'][:150]}")
              for t in tests]
    return "\n".join(lines + [f"Gradescope results: {results}"])


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the sets and their functions")
    m = sub.add_parser("make", help="write a student copy")
    m.add_argument("--set", required=True, dest="name", help="which set")
    m.add_argument("--out", required=True, type=Path, help="a new (or empty) folder")
    t = sub.add_parser("test", help="run a set's tests")
    t.add_argument("--set", required=True, dest="name", help="which set")
    sub.add_parser("mutants", help="check the tests against stubs and known mistakes")
    g = sub.add_parser("golden", help="the golden run of this tree's code (or --calibrate)")
    g.add_argument("run_dir", type=Path, help="its run folder")
    g.add_argument("--seed", type=int, default=0, help="seed of the round")
    g.add_argument("--sft-from", type=Path, default=None,
                   help="a run folder whose SFT stage to reuse (built once)")
    g.add_argument("--calibrate", action="store_true",
                   help="the reference's spread over --seeds, written to " + str(GOLDEN_FILE))
    g.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    r = sub.add_parser("grade", help="grade a student copy")
    r.add_argument("copy", type=Path, help="the student's copy")
    r.add_argument("--results", type=Path, default=None,
                   help="where the Gradescope results.json goes (COPY/grade.json)")
    r.add_argument("--no-golden", action="store_true", help="the tests only")
    return p.parse_args(argv)


def main(argv=None):
    args = get_args(argv)
    if args.command == "list":
        print(listing())
    elif args.command == "make":
        print(make(args.name, args.out))
    elif args.command == "test":
        if args.name not in marked():
            raise UserError(f"there is no exercise set {args.name!r}; python -m course.exercise "
                            "list shows them")
        sys.exit(subprocess.call([sys.executable, "-m", "pytest", "-q", test_file(args.name)],
                                 cwd=ROOT))
    elif args.command == "mutants":
        sys.exit(check_mutants())
    elif args.command == "golden":
        if args.calibrate:
            print(calibrate(args.run_dir, args.seeds, args.sft_from))
        else:
            t0 = time.time()
            got = golden_run(args.run_dir, args.seed, args.sft_from)
            print(f"golden run: {time.time() - t0:.0f} s (stages reused from before count as 0)")
            record = json.loads((ROOT / GOLDEN_FILE).read_text()) \
                if (ROOT / GOLDEN_FILE).exists() else None
            print(golden_table(record, got) if record else json.dumps(got))
    else:
        print(grade(args.copy, args.results or args.copy / "grade.json", not args.no_golden))


if __name__ == "__main__":
    with friendly_errors():
        main()
