"""The benchmark suite works (not how fast anything is): a tiny run against real servers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


# Its own bound, the subprocess's: the suite's 60 s default is too tight for a tiny
# run of eight scenarios on a loaded 2-core machine.
@pytest.mark.timeout(240)
def test_the_suite_runs_every_scenario_against_both_servers(tmp_path: Path) -> None:
    """benchmarks.run measures chatkit and the baseline in every scenario and prints the table."""
    out = tmp_path / "results.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--tiny", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| scenario | chatkit | baseline | chatkit ÷ baseline |" in result.stdout
    data = json.loads(out.read_text())
    scenarios = data["scenarios"]
    assert set(scenarios) == {
        "fanout C=20",
        "slow consumer C=100",
        "idle N=20",
        "churn",
        "history C=50",
        "storm N=50",
        "storm idle N=50",
        "overload C=20",
    }
    for kind in ("chatkit", "baseline"):
        steps = scenarios["fanout C=20"][kind]["steps"]
        assert [s["rate"] for s in steps][:1] == [200]
        assert steps[0]["sent"] > 0 and steps[0]["complete"] >= 0.99
        assert steps[0]["p99_ms"] > 0
        assert scenarios["idle N=20"][kind]["connected"] == 20
        assert scenarios["churn"][kind]["cycles_per_s"] > 0
        for storm in ("storm N=50", "storm idle N=50"):
            stormed = scenarios[storm][kind]
            assert stormed["storm_connections"]["connected"] == 50
            assert stormed["storm"]["sent"] > 0 and stormed["storm"]["complete"] >= 0.99
            assert stormed["storm"]["p99_ms"] > 0 and stormed["calm"]["p99_ms"] > 0
        overload = scenarios["overload C=20"][kind]
        assert overload["offered"] > 0 and overload["delivered_per_reader"] > 0
        assert "readers_disconnected" in overload
    chatkit_step = scenarios["fanout C=20"]["chatkit"]["steps"][0]
    assert chatkit_step["server_deliveries"] >= chatkit_step["sent"] * 20
    assert chatkit_step["server_sends"] > 0
    for kind in ("history off", "history on", "history on, synchronous full"):
        history = scenarios["history C=50"][kind]
        assert history["clients"] == 50 and history["steps"][0]["complete"] >= 0.99
        assert history["messages_per_s"] > 0
    assert (
        "history C=50: messages/s stored and delivered, history on (best of rounds:"
        in result.stdout
    )
    assert "storm N=50 (opened at once, then closed): chatters' p50/p99 latency during" in (
        result.stdout
    )
    assert "overload C=20: readers disconnected" in result.stdout
