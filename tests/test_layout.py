"""The house rules a newcomer relies on, checked: no stage script imports another, every
function fits on a screen, lines stay at 100 characters, every citation of docs/paper.md
resolves, and the README stays a guide."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROOMS = ("baselines", "experiments", "course", "tasks")  # the folders beside the top level
MODULES = sorted(ROOT.glob("*.py")) + [p for r in ROOMS for p in sorted((ROOT / r).glob("*.py"))
                                      if p.name != "__init__.py"]
SOURCES = MODULES + sorted((ROOT / "tests").rglob("*.py"))
# the scripts, by module name: DAPO's stages at the top level, the rest in their rooms
DAPO_STAGES = {"train_sft", "train_critic", "train_actor"}
STAGES = DAPO_STAGES | {"pipeline", "course.exercise", "baselines.train_rft",
                        "baselines.train_grpo", "baselines.train_ppo", "baselines.train_eq12",
                        "baselines.rollouts", "experiments.sweep",
                        "experiments.bench", "experiments.bench_torchrun",
                        "experiments.same_runs"}
DRIVERS = {"pipeline": DAPO_STAGES, "course.exercise": DAPO_STAGES,  # they call the stages
           "experiments.sweep": DAPO_STAGES | {"pipeline", "baselines.train_rft",
                                               "baselines.train_grpo", "baselines.train_ppo",
                                               "baselines.train_eq12", "baselines.rollouts"}}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    return ".".join(rel.parts)


def imported(path: Path) -> set[str]:
    """The project modules path imports, by full name (baselines.train_grpo, common)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            if node.module in ROOMS:  # from baselines import train_grpo
                names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_the_top_level_shows_the_method():
    """Guards against the top level filling up again: at most 13 modules (the method and the
    library it needs), ls train_* lists DAPO's stages only, and each room is a package whose
    modules run as python -m ROOM.NAME."""
    top = {p.stem for p in ROOT.glob("*.py")}
    assert len(top) <= 13, sorted(top)
    assert {p.stem for p in ROOT.glob("train_*.py")} == DAPO_STAGES
    assert all((ROOT / r / "__init__.py").is_file() for r in ROOMS)
    assert {module_name(p) for p in MODULES} >= STAGES


def test_the_method_module_imports_only_the_task_and_the_model():
    """Guards against plumbing (torchrun, files, evaluation) creeping back into dapo.py, the
    module a reader opens to learn the method."""
    project = {module_name(p) for p in MODULES}
    assert imported(ROOT / "dapo.py") & project <= {"data", "model"}


@pytest.mark.parametrize("stage", sorted(DAPO_STAGES))
def test_a_dapo_stage_imports_at_most_20_local_names(stage):
    """Guards against a stage script that a reader must learn the whole library to follow:
    provenance, logging and torchrun stay behind a few names (artifacts.open_stage, ...)."""
    project = {module_name(p).split(".")[0] for p in MODULES}
    names = 0
    for node in ast.walk(ast.parse((ROOT / f"{stage}.py").read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in project:
            names += len(node.names)
        elif isinstance(node, ast.Import):
            names += sum(a.name.split(".")[0] in project for a in node.names)
    assert names <= 20, names


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_no_stage_script_imports_another(stage):
    """Guards against shared code living in a stage script: only the drivers (pipeline.py,
    experiments/sweep.py, course/exercise.py's golden run) may call the stages."""
    path = ROOT / (stage.replace(".", "/") + ".py")
    assert imported(path) & STAGES <= DRIVERS.get(stage, set())


@pytest.mark.parametrize("path", [p for p in MODULES if module_name(p) not in STAGES],
                         ids=lambda p: module_name(p))
def test_library_modules_import_no_stage_script(path):
    assert not imported(path) & STAGES


def test_functions_fit_on_a_screen():
    """Guards against functions a reader cannot take in at once (about 70 lines at most)."""
    long = []
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > 70:
                    long.append(f"{module_name(path)}:{node.lineno} {node.name}")
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
