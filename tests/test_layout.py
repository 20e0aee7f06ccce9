"""The design card's layering: the library `saerl` imports no Prefect."""

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


def test_no_prefect_import_statements_in_library():
    offenders = [p.name for p in SAERL.rglob("*.py")
                 if any(line.strip().startswith(("import prefect", "from prefect")) for line in p.read_text().splitlines())]
    assert offenders == []
