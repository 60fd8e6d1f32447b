"""`make serve` (deploy/serve.py) refuses to start without production's settings, naming the
variable, before it starts anything."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support import KEY_A, PROJECT_ROOT, SECRET_KEY
from tests.support.servers import APP_VARIABLES, free_port

GOOD = {"SWITCHBOARD_ENV": "production", "SECRET_KEY": SECRET_KEY, "ENCRYPTION_KEYS": KEY_A,
        "DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:9/none"}


def launch(**settings: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in APP_VARIABLES}
    # Empty rather than absent: a developer's .env never fills a variable that is set.
    env.update({name: "" for name in GOOD}, PORT=str(free_port()), PYTHONPATH=PROJECT_ROOT, **settings)
    return subprocess.run([sys.executable, "deploy/serve.py"], cwd=PROJECT_ROOT, env=env, capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.mark.parametrize("missing", ["SECRET_KEY", "ENCRYPTION_KEYS", "DATABASE_URL"])
def test_a_missing_production_setting_stops_it_naming_the_variable(missing):
    done = launch(**{**GOOD, missing: ""})
    assert done.returncode != 0
    assert f"{missing} is not set" in done.stderr
    assert "gunicorn" not in done.stderr.lower()  # nothing was started


def test_a_malformed_setting_is_refused_with_the_apps_own_message():
    done = launch(**{**GOOD, "ENCRYPTION_KEYS": "not-base64-and-not-32-bytes"})
    assert done.returncode != 0
    assert "ENCRYPTION_KEYS" in done.stderr
    assert "not-base64-and-not-32-bytes" not in done.stderr  # never the value itself


def test_it_runs_in_production_mode_only():
    done = launch(**{**GOOD, "SWITCHBOARD_ENV": "development"})
    assert done.returncode != 0
    assert "SWITCHBOARD_ENV" in done.stderr
