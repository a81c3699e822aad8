"""The benchmark suite works (not how fast anything is): a tiny run against real servers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parent.parent
SCENARIOS = ("fanout", "slow", "idle", "churn", "history", "storm", "overload", "irc")


def tiny_run(tmp_path: Path, *args: str, timeout: float) -> tuple[str, dict[str, Any]]:
    """Run ``benchmarks.run --tiny ARGS`` in a subprocess; its output and scenarios."""
    out = tmp_path / "results.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--tiny", "--json", str(out), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    scenarios: dict[str, Any] = json.loads(out.read_text())["scenarios"]
    return result.stdout, scenarios


# Its own bound, the subprocess's: the suite's 60 s default is too tight for a tiny
# run of eight scenarios on a loaded 2-core machine.
@pytest.mark.timeout(240)
def test_the_suite_runs_every_scenario_against_both_servers(tmp_path: Path) -> None:
    """benchmarks.run measures chatkit and the baseline in every scenario and prints the table."""
    stdout, scenarios = tiny_run(
        tmp_path,
        *[f"--only={name}" for name in SCENARIOS if name not in ("irc", "peers")],
        timeout=240,
    )
    assert "| scenario | chatkit | baseline | chatkit ÷ baseline |" in stdout
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
        assert steps[0]["sent"] > 0 and steps[0]["complete"] == 1.0 and steps[0]["short"] == 0
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
        # Twice the rate of its ladder's best step (the server's own capacity).
        assert overload["steps"][0]["rate"] == 2 * overload["capacity_rate"]
        assert "readers_disconnected" in overload and "readers_short" in overload
        assert scenarios["churn"][kind]["generator_cpu"] > 0
    chatkit_step = scenarios["fanout C=20"]["chatkit"]["steps"][0]
    assert chatkit_step["server_deliveries"] >= chatkit_step["sent"] * 20
    assert chatkit_step["server_sends"] > 0
    for kind in ("history off", "history on", "history on, synchronous full"):
        history = scenarios["history C=50"][kind]
        assert history["clients"] == 50 and history["steps"][0]["complete"] >= 0.99
        assert history["messages_per_s"] > 0
    assert "history C=50: messages/s stored and delivered, history on (best of rounds:" in stdout
    assert "storm N=50 (opened at once, then closed): chatters' p50/p99 latency during" in (stdout)
    assert "overload C=20: readers disconnected" in stdout


@pytest.mark.timeout(200)  # its subprocess's bound (two servers, under load)
def test_the_irc_scenarios_speak_irc_to_chatkit_and_to_ngircd(tmp_path: Path) -> None:
    """benchmarks.run --only irc: the generator registers, joins and chats over IRC with
    chatkit's IRC face, and with ngIRCd beside it (Debian's package, which .ci/run installs)."""
    stdout, scenarios = tiny_run(tmp_path, "--only", "irc", timeout=200)
    assert "| IRC scenario | chatkit (IRC face) | ngIRCd | chatkit ÷ ngIRCd |" in stdout
    assert set(scenarios) == {"irc fanout C=20", "irc idle N=20", "irc churn"}
    # ngIRCd is Debian's package, which .ci/run installs: the peer must be measured too.
    assert shutil.which("ngircd") or Path("/usr/sbin/ngircd").exists(), "install ngircd"
    kinds = ["chatkit-irc", "ngircd"]
    for kind in kinds:
        step = scenarios["irc fanout C=20"][kind]["steps"][0]
        assert step["rate"] == 200 and step["sent"] > 0
        assert step["expected"] == step["sent"] * 19  # no echo: everyone but the sender
        assert step["complete"] >= 0.99 and step["p99_ms"] > 0
        assert scenarios["irc idle N=20"][kind]["connected"] == 20
        assert scenarios["irc churn"][kind]["cycles_per_s"] > 0
    assert set(scenarios["irc churn"]) == set(kinds)


@pytest.mark.timeout(200)  # its subprocess's bound (four setups, up to three nodes and Redis)
def test_the_cluster_scenario_spreads_members_over_nodes(tmp_path: Path) -> None:
    """benchmarks.run --only cluster: one server alone, then 1, 2 and 3 nodes sharing a
    redis-server; every setup delivers every message, and Redis's CPU is measured."""
    # Debian's redis-server, which .ci/run installs: a failure, never a skip CI would hide.
    assert shutil.which("redis-server"), "install redis-server (apt-get install redis-server)"
    stdout, scenarios = tiny_run(tmp_path, "--only", "cluster", timeout=200)
    cluster = scenarios["cluster C=21"]
    assert list(cluster) == ["alone", "1 node", "2 nodes", "3 nodes"]
    for kind, setup in cluster.items():
        assert setup["steps"][0]["complete"] >= 0.99, kind
        assert ("redis_cpu" in setup) == (kind != "alone")
    assert "cluster C=21, 3 nodes: capacity, deliveries/s" in stdout


@pytest.mark.timeout(200)  # its subprocess's bound (five servers, taking turns)
def test_the_peers_scenario_sets_ngircd_beside_both_faces_history_off_and_on(
    tmp_path: Path,
) -> None:
    """benchmarks.run --only peers: ngIRCd over IRC, the classroom baseline, chatkit over
    JSON and IRC with history off and on, the same generator; every kind delivers everything, and the table shows
    each capacity beside ngIRCd's."""
    stdout, scenarios = tiny_run(tmp_path, "--only", "peers", timeout=200)
    peers = scenarios["peers C=20"]
    assert list(peers) == [
        "ngircd",
        "baseline",
        "chatkit json, history off",
        "chatkit json, history on",
        "chatkit irc, history off",
        "chatkit irc, history on",
    ]
    for kind, value in peers.items():
        step = value["steps"][0]
        assert step["complete"] >= 0.99 and step["dropped"] == 0, kind
        assert len(value["rounds"]) == 1
    assert "| chatkit json, history on | " in stdout
    assert "| server | capacity, deliveries/s | ÷ ngIRCd |" in stdout
