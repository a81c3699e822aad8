from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["chatkit.testing"]


@pytest.fixture(autouse=True)
def _private_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test, and every `chatkit` process it starts, gets its own data directory,
    so the default history database is never the user's and never shared by tests."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
