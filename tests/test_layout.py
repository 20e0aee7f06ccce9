"""The design card's layering: the library `saerl` imports no Prefect."""

import ast
import subprocess
import sys
from pathlib import Path

SAERL = Path(__file__).resolve().parents[1] / "saerl"


def test_library_modules_import_without_prefect():
    modules = [f"saerl.{p.stem}" for p in SAERL.glob("*.py") if p.stem != "__init__"]
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules)
            + "bad = [m for m in sys.modules if m == 'prefect' or m.startswith('prefect.')]\n"
            + "assert not bad, bad\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]


UPPER_LAYERS = ("prefect", "prefect_dask", "flows", "tasks")  # what the library must never import, at any depth


def upper_imports(source: str) -> list[str]:
    """The imports of Prefect or of the layers above the library (flows, tasks) anywhere in a module's source,
    function bodies included (a lazy `from flows.pipeline import ...` inside a command loaded Prefect all the same).
    in: the source; out: the imported module names."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
        found += [n for n in names if n.split(".")[0] in UPPER_LAYERS]
    return found


def test_the_library_imports_neither_prefect_nor_the_layers_above_it_anywhere():
    """Before, saerl/cli.py imported flows.* inside its commands, and this test read only lines starting with
    'import prefect': the command line is the top layer now (flows/cli.py)."""
    offenders = {p.name: found for p in SAERL.rglob("*.py") if (found := upper_imports(p.read_text(encoding="utf-8")))}
    assert offenders == {}


def test_the_import_check_sees_an_import_inside_a_function():
    assert upper_imports("def f():\n    from flows.pipeline import x\n    import prefect.client\n") == [
        "flows.pipeline", "prefect.client"]
    assert upper_imports("from .flows import x\nimport saerl.tasks_util\n") == []
