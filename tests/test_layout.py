"""The house rules a newcomer relies on, checked: no stage script imports another, every
function fits on a screen, lines stay at 100 characters, every citation of docs/paper.md
resolves, and the README stays a guide."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("train_sft", "train_critic", "train_actor", "train_rft", "train_grpo", "train_ppo",
          "pipeline", "sweep", "exercise", "bench", "bench_torchrun")
SOURCES = sorted(ROOT.glob("*.py")) + sorted((ROOT / "tests").rglob("*.py"))


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("stage", STAGES)
def test_no_stage_script_imports_another(stage):
    """Guards against shared code living in a stage script: only the drivers (pipeline.py,
    sweep.py, exercise.py's golden run) may call the stages; library modules import none."""
    dapo_stages = {"train_sft", "train_critic", "train_actor"}
    allowed = {"pipeline": dapo_stages, "exercise": dapo_stages,  # the drivers
               "sweep": set(STAGES) - {"sweep", "exercise", "bench", "bench_torchrun"}}.get(
                   stage, set())
    assert imported(ROOT / f"{stage}.py") & set(STAGES) <= allowed


@pytest.mark.parametrize("path", [p for p in ROOT.glob("*.py") if p.stem not in STAGES],
                         ids=lambda p: p.name)
def test_library_modules_import_no_stage_script(path):
    assert not imported(path) & set(STAGES)


def test_functions_fit_on_a_screen():
    """Guards against functions a reader cannot take in at once (about 70 lines at most)."""
    long = []
    for path in ROOT.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > 70:
                    long.append(f"{path.name}:{node.lineno} {node.name}")
    assert not long


def test_lines_at_most_100_characters():
    long = [f"{p.name}:{i}" for p in SOURCES
            for i, line in enumerate(p.read_text().splitlines(), 1) if len(line) > 100]
    assert not long


def test_paper_citations_resolve():
    """Guards against references into nothing: every "docs/paper.md §N" (or §N.M) cited in the
    code, tests or docs names a section docs/paper.md has, and nothing cites a PAPER.md that
    is not in the repository."""
    paper = (ROOT / "docs" / "paper.md").read_text()
    have = set(re.findall(r"§(\d+(?:\.\d+)?)", paper))
    texts = [p.read_text() for p in SOURCES + sorted((ROOT / "docs").glob("*.md"))]
    texts.append((ROOT / "README.md").read_text())
    cited = {m for t in texts for m in re.findall(r"docs/paper\.md §(\d+(?:\.\d+)?)", t)}
    assert cited and cited <= have, cited - have
    assert not any(re.search(r"PAPER\.md §", t) for t in texts)


def test_readme_is_a_guide():
    """Guards against the README growing back into a lab notebook: at most 250 lines, and no
    history (that goes to docs/log.md)."""
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    assert not re.search(r"\b(commit [0-9a-f]{7}|previous(ly)? version|earlier version)\b",
                         text, re.I)
