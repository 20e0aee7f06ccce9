"""The suite's own environment (tests/conftest.py): what the developer's shell exports does not reach the tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

CONFTEST = Path(__file__).with_name("conftest.py")
PROBE_TIMEOUT_S = 300
DEAD_API = "http://127.0.0.1:9/api"  # nothing listens on port 9: a test that used it failed (Connection refused)
# what a Prefect Cloud user, or one of a team server, typically exports; each reached the tests before
SHELL_PREFECT = {"PREFECT_API_URL": DEAD_API, "PREFECT_API_KEY": "pnu_not-a-key", "PREFECT_PROFILE": "team",
                 "PREFECT_SERVER_DATABASE_CONNECTION_URL": "postgresql+asyncpg://team-db/prefect"}

PROBE = '''
import os
from pathlib import Path


def test_probe():
    leaked = {n: v for n, v in os.environ.items() if n.startswith("PREFECT_") and n != "PREFECT_HOME"}
    assert not leaked, f"the shell's Prefect settings reached the suite: {leaked}"
    assert os.environ["WANDB_MODE"] == "disabled"
    home = Path(os.environ["HOME"])
    for name in ("PREFECT_HOME", "MPLCONFIGDIR"):
        assert not Path(os.environ[name]).is_relative_to(home), f"{name} under HOME: {os.environ[name]}"
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    assert settings.api.url is None and settings.api.key is None, "prefect reads no API of the shell"
    assert str(settings.home) == os.environ["PREFECT_HOME"]
'''


def test_the_shells_prefect_settings_and_home_stay_out_of_the_suite(tmp_path):
    """A shell exporting PREFECT_API_URL (a Prefect Cloud workspace, a team server) sent the tests' flow runs and
    deployments there, or failed them when it did not answer; importing prefect created ~/.prefect. A test run in
    such a shell, under a fresh HOME, sees no Prefect setting of the shell, and HOME stays empty."""
    suite, home = tmp_path / "suite", tmp_path / "home"
    suite.mkdir()
    home.mkdir()
    shutil.copy(CONFTEST, suite / "conftest.py")
    (suite / "pytest.ini").write_text("[pytest]\n")
    (suite / "test_probe.py").write_text(PROBE)
    env = {**os.environ, **SHELL_PREFECT, "HOME": str(home), "WANDB_MODE": "online"}
    env.pop("PREFECT_HOME", None)  # as in a shell that never set it: prefect's default is then ~/.prefect
    env.pop("MPLCONFIGDIR", None)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_probe.py"],
                          cwd=suite, env=env, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert list(home.iterdir()) == [], "the test run wrote into HOME"
