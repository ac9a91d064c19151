"""Do two run folders hold the same results? Every tensor of every checkpoint and rollout file
(torch.equal) and every value of results.json, leaving out what is meant to differ between two
runs of the same commands: times, speeds, file hashes, fingerprints and machine records.

    python -m experiments.same_runs runs/before runs/after

How a change to the code was shown to keep its behaviour (docs/log.md): the same commands run
before and after it, then this. Exits 0 when the folders agree, 1 with the differences if not.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from common import UserError, friendly_errors, load_torch

# results.json keys holding any of these are not compared (they measure the run, not its result)
SKIP = ("time", "wall", "per_s", "tok_s", "made_by", "sha", "machine", "_s")


def tensors(obj, prefix: str = ""):
    """(path, tensor) of every tensor in a nest of dicts, lists and tuples."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from tensors(v, f"{prefix}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from tensors(v, f"{prefix}[{i}]")


def values(obj, prefix: str = ""):
    """(path, value) of every leaf of a JSON object, keys named in SKIP left out."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not any(s in k for s in SKIP):
                yield from values(v, f"{prefix}/{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from values(v, f"{prefix}[{i}]")
    else:
        yield prefix, obj


def compare(a: Path, b: Path) -> tuple[list[str], dict]:
    """(differences, counts) between run folders a and b."""
    diffs, n_tensors = [], 0
    files = sorted(p.name for p in a.glob("*.pt"))
    if files != sorted(p.name for p in b.glob("*.pt")):
        diffs.append(f"the .pt files differ: {files} against "
                     f"{sorted(p.name for p in b.glob('*.pt'))}")
    for name in (f for f in files if (b / f).exists()):
        x, y = (dict(tensors(load_torch(d / name, "run file", "pass run folders"))) for d in (a, b))
        diffs += [f"{name}{k}: only in one folder" for k in x.keys() ^ y.keys()]
        for k in x.keys() & y.keys():
            n_tensors += 1
            if not torch.equal(x[k], y[k]):
                diffs.append(f"{name}{k}: different tensors")
    ra, rb = (dict(values(json.loads((d / "results.json").read_text()))) for d in (a, b))
    diffs += [f"results.json{k}: {ra.get(k)!r} against {rb.get(k)!r}"
              for k in sorted(ra.keys() | rb.keys()) if ra.get(k) != rb.get(k)]
    return diffs, {"files": len(files), "tensors": n_tensors, "values": len(ra)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("a", type=Path, help="a run folder")
    p.add_argument("b", type=Path, help="the run folder to compare it with")
    args = p.parse_args(argv)
    for d in (args.a, args.b):
        if not (d / "results.json").is_file():
            raise UserError(f"{d} has no results.json; pass two run folders")
    diffs, n = compare(args.a, args.b)
    print(f"{n['files']} checkpoint and rollout files, {n['tensors']} tensors, {n['values']} "
          f"results.json values compared: " + ("the same" if not diffs else
                                               f"{len(diffs)} differences"))
    for d in diffs[:50]:
        print("  " + d)
    return 1 if diffs else 0


if __name__ == "__main__":
    with friendly_errors():
        sys.exit(main())
