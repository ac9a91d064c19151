"""Course assignments from this very source (docs/handout.md): student copies with functions
to write, the tests that check them, and the known mistakes those tests must catch.

    python exercise.py list                          # the sets and their functions
    python exercise.py make --set advantages --out hw1   # a student copy
    python exercise.py test --set advantages         # a set's tests (in a student copy too)
    python exercise.py mutants                       # the tests, tested (instructors, CI)

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
from pathlib import Path

from common import UserError, friendly_errors

ROOT = Path(__file__).resolve().parent
MARK = re.compile(r"^(\s*)# EXERCISE ([a-z-]+) \((.+)\)\s*$")
KEY = Path("tests/exercises/mutants.py")  # the instructors' key: never in a student copy
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
               f"python exercise.py test --set {name} checks it")
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
    return [Path(f) for f in out.splitlines() if Path(f) != KEY and (ROOT / f).is_file()]


def copy_tree(dest: Path) -> None:
    for f in project_files():
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dest / f)


def make(name: str, out: Path) -> str:
    """Write a student copy of set name to out, all at once: built in a temporary folder
    beside it, then renamed into place."""
    sets = marked()
    if name not in sets:
        raise UserError(f"there is no exercise set {name!r}; python exercise.py list shows "
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
            f"({', '.join(record['functions'])}); test with: cd {out} && python exercise.py "
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
        raise UserError(f"{KEY} (the instructors' key) is not here: exercise.py mutants runs in "
                        "the reference checkout, not in a student copy")
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
    """exercise.py mutants: 0 if every check holds, 1 (with the list) if any does not."""
    sets, key = marked(), load_key()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        copy_tree(scratch)
        problems = check_stubs(scratch, sets)
        problems += [p for m in key if (p := check_mutant(scratch, m))]
    print(f"\n{len(key)} mutants, {len(sets)} sets: "
          + ("every check holds" if not problems else f"{len(problems)} problems:"))
    for p in problems:
        print("  " + p)
    return 1 if problems else 0


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
    return p.parse_args(argv)


def main(argv=None):
    args = get_args(argv)
    if args.command == "list":
        print(listing())
    elif args.command == "make":
        print(make(args.name, args.out))
    elif args.command == "test":
        if args.name not in marked():
            raise UserError(f"there is no exercise set {args.name!r}; python exercise.py list")
        sys.exit(subprocess.call([sys.executable, "-m", "pytest", "-q", test_file(args.name)],
                                 cwd=ROOT))
    else:
        sys.exit(check_mutants())


if __name__ == "__main__":
    with friendly_errors():
        main()
