"""chatkit plugin new: the template makes a package that installs and passes its test."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chatkit import UsageError
from chatkit.scaffold import create_plugin

ROOT = Path(__file__).parent.parent
CHATKIT = str(Path(sys.executable).parent / "chatkit")


def test_a_new_plugin_installs_and_its_test_passes(tmp_path: Path) -> None:
    """The created package installs into a fresh environment and its own test passes there."""
    result = subprocess.run(
        [CHATKIT, "plugin", "new", "welcome_bot", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    package = tmp_path / "chatkit-welcome-bot"
    assert f"created {package}" in result.stdout
    assert 'welcome_bot = "chatkit_welcome_bot"' in (package / "pyproject.toml").read_text()
    uv = os.environ.get("UV") or shutil.which("uv")  # `uv run` names itself in $UV
    assert uv, "uv is needed to make the test environment"
    venv = tmp_path / "venv"
    subprocess.run(
        [uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True, timeout=120
    )
    python = str(venv / "bin" / "python")
    subprocess.run(
        [
            uv,
            "pip",
            "install",
            "-q",
            "--python",
            python,
            "-e",
            str(ROOT),
            "-e",
            str(package),
            "pytest",
        ],
        check=True,
        timeout=300,
    )
    listed = subprocess.run(
        [str(venv / "bin" / "chatkit"), "plugins", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert '"name": "welcome_bot"' in listed.stdout
    tests = subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(package)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=package,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "1 passed" in tests.stdout


def test_bad_names_and_existing_directories_are_refused(tmp_path: Path) -> None:
    """The name must be a valid module name; an existing package is not overwritten."""
    with pytest.raises(UsageError, match="bad plugin name"):
        create_plugin("Bad-Name", tmp_path)
    create_plugin("ok", tmp_path)
    with pytest.raises(UsageError, match="already exists"):
        create_plugin("ok", tmp_path)
