"""The docs stay true to the code: docs/design.md's stage table is saerl.stages.STAGES, and every relative link in
README.md and docs/*.md names a file of this checkout."""

from __future__ import annotations

import re
from pathlib import Path

from saerl.pipeline import ORDER
from saerl.stages import STAGES

REPO = Path(__file__).resolve().parents[1]
DESIGN = REPO / "docs" / "design.md"
STAGE_NAME = re.compile(r"\b(" + "|".join(STAGES) + r")\b")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def stage_rows(text: str) -> dict[str, list[str]]:
    """The rows of a markdown table whose first cell is a stage name, as {stage: cells}."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 3 and (name := cells[0].strip("`")) in STAGES:
            rows[name] = cells
    return rows


def test_the_design_docs_stage_table_is_the_codes():
    """A stage added, a version bumped or an input changed in saerl/stages.py must be stated in docs/design.md."""
    rows = stage_rows(DESIGN.read_text(encoding="utf-8"))
    assert list(rows) == list(ORDER)
    for name, (_, version, reads, *_) in rows.items():
        assert version == STAGES[name].version, f"docs/design.md: {name} is version {STAGES[name].version}"
        assert set(STAGE_NAME.findall(reads)) == set(STAGES[name].inputs), f"docs/design.md: {name}'s inputs"


def test_relative_links_in_the_docs_name_files_of_the_checkout():
    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    broken = [
        (doc.name, target)
        for doc in docs
        for target in LINK.findall(doc.read_text(encoding="utf-8"))
        if "://" not in target
        and not target.startswith("#")
        and not (REPO in (path := (doc.parent / target.split("#")[0]).resolve()).parents and path.exists())
    ]
    assert broken == []


def test_the_readmes_python_example_compiles_and_imports_what_saerl_has():
    """README's "Using saerl from Python" example (run end to end on a smoke run by
    tests/test_scoring.py::test_score_new_scores_new_prompts_with_a_finished_runs_models' calls) names functions
    saerl has: it compiles, and each `from saerl.x import y` resolves."""
    import importlib

    text = (REPO / "README.md").read_text(encoding="utf-8")
    code = re.search(r"## Using saerl from Python.*?```python\n(.*?)```", text, re.S).group(1)
    compile(code, "README.md", "exec")
    names = re.findall(r"^from (saerl\.\w+) import (.+)$", code, re.M)
    assert names, "the example imports from saerl"
    for module, items in names:
        for item in items.split(","):
            assert hasattr(importlib.import_module(module), item.strip()), f"README: {module}.{item.strip()}"
