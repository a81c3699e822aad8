"""Run chatkit's benchmarks beside the classroom baseline and print a Markdown table.

    uv run python -m benchmarks.run            # the full suite (about 45 minutes)
    uv run python -m benchmarks.run --quick    # a smaller one (about 8 minutes)
    uv run python -m benchmarks.run --only history   # history off vs on
    uv run python -m benchmarks.run --quick --only irc   # chatkit's IRC face beside ngIRCd

Each scenario starts a fresh server (chatkit, then the baseline) pinned to core 0
where ``taskset`` exists; this process, the load generator, pins itself to core 1.
Every headline figure is reported as chatkit ÷ baseline from the same run, since
this machine is shared and absolute figures drift. ``--json FILE`` writes every
number (default: benchmarks/results/latest.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import loadgen

ROOT = Path(__file__).parent.parent
SERVERS = ("chatkit", "baseline")
SCENARIOS = (
    "fanout", "slow", "idle", "churn", "history", "storm", "overload", "irc", "cluster", "peers",
)  # fmt: skip
# The IRC scenarios' servers: chatkit over its IRC face, and ngIRCd (Debian's ngircd),
# both spoken to in IRC by the same generator. ngIRCd is left out if not installed.
IRC_SERVERS = ("chatkit-irc", "ngircd")


# msg/s steps at C=100 of the peers scenario and of the overload's ladder
PEER_RATES_100 = (
    1000, 2000, 4000, 6000, 8000, 10000, 12000, 14000, 16000, 20000, 24000, 32000, 40000,
    48000, 56000, 64000, 72000, 80000, 96000,
)  # fmt: skip


@dataclass
class Plan:
    fanout_clients: tuple[int, ...]
    rates: tuple[int, ...]
    step_seconds: float
    idle_clients: tuple[int, ...]
    churn_workers: int
    churn_seconds: float
    slow_rates: tuple[int, ...]
    slow_seconds: float = 6.0  # at 1,000 msg/s of 1 KB: 6 MB for the client that never reads
    slow_payload: int = 1000  # bytes: it must fall further behind than the kernel's buffers hold
    history_rates: tuple[int, ...] = ()  # msg/s steps of the history scenario (50 clients)
    history_repeats: int = 1  # rounds of the history scenario; each kind keeps its best
    storm_sizes: tuple[int, ...] = ()  # connections opened at once in the storm scenarios
    storm_hold: float = 3.0  # seconds the idle storm's connections stay open, silent
    storm_calm: float = 1.0  # seconds the chatters are measured before the storm
    storm_tail: float = 2.0  # seconds they go on after it, while the server closes the storm
    overload_clients: int = 100
    # msg/s steps of the ladder that measures each server's capacity first (its best step
    # that counts); the overload then offers twice that rate
    overload_ladder: tuple[int, ...] = (*PEER_RATES_100, 120000, 150000, 190000, 240000, 300000)
    overload_ladder_seconds: float = 2.0
    overload_seconds: float = 3.0
    irc_fanout_clients: tuple[int, ...] = (100, 1000)
    irc_rates: tuple[int, ...] = ()  # msg/s steps of the IRC fan-outs (default: rates)
    irc_idle_clients: int = 1000  # each JOIN goes to every member: N² lines, so not 10,000
    cluster_clients: int = 100  # members of the cluster scenario's room, spread over its nodes
    cluster_rates: tuple[int, ...] = ()  # msg/s steps of the cluster scenario (default: rates)
    peers_clients: tuple[int, ...] = (100, 1000)  # room sizes of the peers scenario
    peers_rounds: int = 3  # rounds of the peers scenario; each kind reports its median


RATES = (1000, 2000, 3000, 4000, 6000, 8000, 10000, 12000, 14000, 16000, 20000, 24000, 32000)
# 1,000 msg/s apart near the top, so that the two capacities compare finely.
HISTORY_RATES = (1000, 2000, 4000, 6000, 8000, *range(10000, 50001, 1000))
HISTORY_CLIENTS = 50  # the setting: one room, 50 clients, 10 of them sending
FULL = Plan(
    (100, 1000), RATES, 3.0, (1000, 10000), 10, 5.0, (1000,),
    history_rates=HISTORY_RATES, history_repeats=3, storm_sizes=(5000,), storm_hold=10.0,
    overload_seconds=10.0,  # issue #19: twice the capacity, for 10 s
)  # fmt: skip
QUICK = Plan(
    (100,), RATES, 1.0, (500,), 10, 2.0, (1000,), history_rates=HISTORY_RATES, history_repeats=2,
    storm_sizes=(5000,), irc_rates=(250, 500, *RATES), irc_idle_clients=500, peers_rounds=1,
)  # fmt: skip
# For the test that keeps the suite from rotting: every scenario, tiny and fast.
TINY = Plan(
    (20,), (200, 400), 0.5, (20,), 4, 0.5, (200,), slow_seconds=0.5, slow_payload=64,
    history_rates=(200,), storm_sizes=(50,), storm_hold=0.3, storm_calm=0.3, storm_tail=0.3,
    overload_clients=20, overload_ladder=(200, 400), overload_ladder_seconds=0.5,
    overload_seconds=0.5,
    irc_fanout_clients=(20,), irc_idle_clients=20, cluster_clients=21, peers_clients=(20,),
    peers_rounds=1,
)  # fmt: skip
# The peers scenario: ngIRCd over IRC and the classroom baseline (its text lines) beside
# chatkit's JSON and IRC faces, history off and on, taking turns in each round (issue #19's
# comparison).
PEER_KINDS = (
    "ngircd", "baseline", "chatkit json, history off", "chatkit json, history on",
    "chatkit irc, history off", "chatkit irc, history on",
)  # fmt: skip
# msg/s steps by room size: C=1,000 starts lower (each message is 1,000 deliveries).
PEER_RATES = {
    100: PEER_RATES_100,
    1000: (250, 500, 1000, 1500, 2000, 3000, 4000, 6000, 8000, 10000, 12000, 14000, 16000),
}  # fmt: skip
STORM_CHATTERS = 20  # clients in one room measured during a storm
STORM_RATE = 200  # msg/s they send in all: 4,000 deliveries/s, light load
# The history scenario's servers: chatkit without history (as in every other
# scenario), with it (the default, synchronous = "normal"), and with "full".
HISTORY_KINDS = ("history off", "history on", "history on, synchronous full")
# The cluster scenario's setups: one server without the cluster, then 1, 2 and 3 nodes
# sharing one redis-server (docs/cluster.md), the room's members spread evenly.
CLUSTER_KINDS = ("alone", "1 node", "2 nodes", "3 nodes")


def raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


BENCH_SENDQ = 4 * 1024 * 1024  # max_sendq of chatkit's fan-out runs (its default: 1 MiB)


def server_command(kind: str, workdir: Path, sendq: int | None = BENCH_SENDQ) -> list[str]:
    """The command line of a server of ``kind`` (see SERVERS and HISTORY_KINDS); chatkit's
    ``max_sendq`` is ``sendq`` (``None``: its default)."""
    if kind == "baseline":
        return [sys.executable, "-m", "benchmarks.baseline.server", "--port", "0"]
    command = [
        sys.executable, "-m", "chatkit", "serve", "--port", "0", "--log-level", "warning",
        "--no-plugin", "log", "--no-plugin", "flood", "--plugin", "stats",
        "--max-clients", "20000",
    ]  # fmt: skip
    if sendq is not None:
        command += ["--max-sendq", str(sendq)]
    if kind in ("chatkit", "history off"):
        return [*command, "--no-plugin", "history"]
    config = workdir / "chatkit.toml"
    synchronous = "full" if kind.endswith("full") else "normal"
    config.write_text(f'[plugins.history]\nsynchronous = "{synchronous}"\n')
    # A fresh database each time, on the disk the results directory is on.
    return [*command, "--db", str(workdir / "history.sqlite3"), "--config", str(config)]


@contextmanager
def running(
    kind: str, *extra: str, sendq: int | None = BENCH_SENDQ
) -> Iterator[tuple[str, int, int]]:
    """Start a server of ``kind`` (with ``extra`` arguments, and ``max_sendq`` ``sendq``:
    see server_command); yield (host, port, pid); stop it."""
    scratch = ROOT / "benchmarks" / "results"
    scratch.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="chatkit-bench-", dir=scratch))
    command = [*server_command(kind, workdir, sendq), *extra]
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        command = ["taskset", "-c", "0", *command]
    proc = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            match = re.search(r"listening on (\S+):(\d+)", line)
            if match:
                yield match.group(1), int(match.group(2)), proc.pid
                return
        raise RuntimeError(f"{kind} server did not start")
    finally:
        proc.stdout.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


NGIRCD_CONF = """\
# Written by benchmarks/run.py for one run; see docs/performance.md.
[Global]
Name = ngircd.bench
Info = chatkit benchmark peer
AdminInfo1 = benchmarks
AdminEMail = bench@localhost
Listen = 127.0.0.1
Ports = {port}
MotdPhrase = benchmark
Network = bench
PidFile = {workdir}/ngircd.pid
[Limits]
MaxConnections = 0
MaxConnectionsIP = 0
MaxJoins = 0
MaxNickLength = 30
# No penalty (flood) delays: 0 disables them altogether (ngIRCd 26).
MaxPenaltyTime = 0
PingTimeout = 600
PongTimeout = 600
[Options]
DNS = no
Ident = no
PAM = no
"""


@contextmanager
def running_irc(kind: str) -> Iterator[tuple[str, int, int, int | None]]:
    """Start an IRC server of ``kind`` (see IRC_SERVERS); yield (host, IRC port, pid,
    chatkit's JSON port for /stats or None); stop it."""
    scratch = ROOT / "benchmarks" / "results"
    scratch.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="chatkit-bench-", dir=scratch))
    if kind == "ngircd":
        port = free_port()
        conf = workdir / "ngircd.conf"
        conf.write_text(NGIRCD_CONF.format(port=port, workdir=workdir))
        workdir.chmod(0o755)  # ngIRCd started as root runs as nobody
        conf.chmod(0o644)
        command = [NGIRCD, "--nodaemon", "--passive", "--config", str(conf)]
    else:  # "chatkit-irc", or "chatkit-irc, history on"
        base = "history on" if kind.endswith("history on") else "chatkit"
        command = [*server_command(base, workdir), "--irc-port", "0"]
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        command = ["taskset", "-c", "0", *command]
    # ngIRCd logs every connection to its stdout: a pipe nobody reads would fill and
    # stop it, so its log goes to a file.
    output = (workdir / "ngircd.log").open("w") if kind == "ngircd" else subprocess.PIPE
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=output,
        stderr=subprocess.STDOUT if kind == "ngircd" else subprocess.DEVNULL,
        text=True,
    )
    try:
        if kind == "ngircd":
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), 1).close()
                    break
                except OSError:
                    if proc.poll() is not None:
                        break
                    time.sleep(0.05)
            else:
                raise RuntimeError("ngircd did not start")
            if proc.poll() is not None:
                raise RuntimeError("ngircd did not start")
            yield "127.0.0.1", port, proc.pid, None
            return
        json_port: int | None = None
        assert proc.stdout is not None
        for line in proc.stdout:
            match = re.search(r"listening on (\S+):(\d+)", line)
            if match:
                json_port = int(match.group(2))
            match = re.search(r"IRC: irc://(\S+):(\d+)", line)
            if match:
                yield match.group(1), int(match.group(2)), proc.pid, json_port
                return
        raise RuntimeError(f"{kind} server did not start")
    except BaseException:
        if kind == "ngircd":  # why ngIRCd closed a client, if it did
            log = (workdir / "ngircd.log").read_text(errors="replace").splitlines()
            why = [line for line in log if "Shutting down" in line and "Client closed" not in line]
            print("ngircd.log:", *why[:5], sep="\n  ", file=sys.stderr, flush=True)
        raise
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if not isinstance(output, int):  # the log file (subprocess.PIPE is an int)
            output.close()
        shutil.rmtree(workdir, ignore_errors=True)


NGIRCD = shutil.which("ngircd") or "/usr/sbin/ngircd"


@contextmanager
def running_redis() -> Iterator[tuple[int, int]]:
    """Start a redis-server on a free port, keeping nothing on disk; yield (port, pid)."""
    workdir = Path(tempfile.mkdtemp(prefix="chatkit-bench-redis-"))
    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir)]
    proc = subprocess.Popen(
        [*command, "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        yield port, proc.pid
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def cpu_seconds(pid: int) -> float:
    """The CPU time (user and system) process ``pid`` has used, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def irc_servers() -> tuple[str, ...]:
    """The IRC servers to measure: chatkit's IRC face, and ngIRCd where it is installed."""
    if shutil.which("ngircd") or Path("/usr/sbin/ngircd").exists():
        return IRC_SERVERS
    print("ngircd is not installed: IRC scenarios measure chatkit alone", file=sys.stderr)
    return IRC_SERVERS[:1]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def scenario_fanout(plan: Plan, clients: int, slow: bool = False) -> dict[str, Any]:
    rates = plan.slow_rates if slow else plan.rates
    out: dict[str, Any] = {}
    for kind in SERVERS:
        with running(kind) as (host, port, _pid):
            result = run(
                loadgen.fan_out(
                    host, port, "json" if kind == "chatkit" else "text", clients,
                    rates=rates, seconds=plan.slow_seconds if slow else plan.step_seconds,
                    slow_consumer=slow, payload=plan.slow_payload if slow else loadgen.PAYLOAD,
                )
            )  # fmt: skip
            out[kind] = result.to_dict()
    return out


def scenario_cluster(plan: Plan) -> dict[str, Any]:
    """Fan-out in one room over 1, 2 and 3 nodes of a cluster, beside one server alone."""
    out: dict[str, Any] = {}
    for kind in CLUSTER_KINDS:
        nodes = 0 if kind == "alone" else int(kind.split()[0])
        with ExitStack() as stack:
            extra: tuple[str, ...] = ()
            redis_pid: int | None = None
            if nodes:
                redis_port, redis_pid = stack.enter_context(running_redis())
                extra = ("--redis", f"redis://127.0.0.1:{redis_port}/0")
            servers = [stack.enter_context(running("chatkit", *extra)) for _ in range(nodes or 1)]
            host, port, _pid = servers[0]
            cpu0, start = (cpu_seconds(redis_pid) if redis_pid else 0.0), time.monotonic()
            result = run(
                loadgen.fan_out(
                    host, port, "json", plan.cluster_clients,
                    rates=plan.cluster_rates or plan.rates, seconds=plan.step_seconds,
                    ports=[p for _h, p, _pid in servers],
                )
            )  # fmt: skip
            out[kind] = result.to_dict()
            out[kind]["nodes"] = nodes
            if redis_pid:
                used = cpu_seconds(redis_pid) - cpu0
                out[kind]["redis_cpu"] = round(used / (time.monotonic() - start), 3)
    return out


def idle_memory(host: str, port: int, pid: int, protocol: str, clients: int) -> dict[str, Any]:
    """Server memory per idle client: ``clients`` connect (logged in, in one room) and
    stay; the server's RSS before and after."""
    time.sleep(0.5)
    before = rss_kib(pid)

    async def hold() -> tuple[int, int]:
        load = loadgen.Load(host, port, protocol)
        await load.connect_many(clients, "idle")
        await asyncio.sleep(1.0)
        after = rss_kib(pid)
        connected = len([c for c in load.clients if not c.closed])
        load.close()
        return connected, after

    connected, after = run(hold())
    return {
        "clients": clients,
        "connected": connected,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_client": round((after - before) / clients, 2),
    }


def scenario_idle(clients: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in SERVERS:
        with running(kind) as (host, port, pid):
            protocol = "json" if kind == "chatkit" else "text"
            out[kind] = idle_memory(host, port, pid, protocol, clients)
    return out


def scenario_history(plan: Plan) -> dict[str, Any]:
    """Messages per second stored, and latency, with history off, on, and on with fsync.

    The kinds take turns, ``plan.history_repeats`` rounds of them, and each keeps its
    best round: on a shared machine a round is only ever slowed down by others, so
    the best is the least disturbed, and taking turns exposes every kind to the same
    disturbances.
    """
    out: dict[str, Any] = {}
    for _round in range(plan.history_repeats):
        for kind in HISTORY_KINDS:
            with running(kind) as (host, port, _pid):
                result = run(
                    loadgen.fan_out(
                        host, port, "json", HISTORY_CLIENTS, rates=plan.history_rates,
                        seconds=plan.step_seconds,
                    )
                ).to_dict()  # fmt: skip
            counted = [s for s in result["steps"] if s["ok"]]
            result["messages_per_s"] = round(
                max((s["deliveries_per_s"] for s in counted), default=0.0) / HISTORY_CLIENTS
            )
            rounds = [*out.get(kind, {}).get("rounds", []), result["messages_per_s"]]
            if kind not in out or result["messages_per_s"] > out[kind]["messages_per_s"]:
                out[kind] = result
            out[kind]["rounds"] = rounds
    return out


def scenario_storm(plan: Plan, count: int, idle: bool) -> dict[str, Any]:
    """Chatters' latency while ``count`` connections open at once, then close (or idle first)."""
    out: dict[str, Any] = {}
    for kind in SERVERS:
        with running(kind) as (host, port, _pid):
            out[kind] = run(
                loadgen.storm_chat(
                    host, port, "json" if kind == "chatkit" else "text", STORM_CHATTERS,
                    STORM_RATE, count, plan.storm_hold if idle else 0.0, plan.storm_calm,
                    plan.storm_tail,
                )
            )  # fmt: skip
    return out


def scenario_overload(plan: Plan) -> dict[str, Any]:
    """Senders offering twice what the server can send, flood control off, chatkit's
    settings its defaults (``max_sendq`` too): first a ladder of short steps measures the
    server's capacity (its best step that counts), then a fresh server is offered twice
    that rate for ``overload_seconds``."""
    out: dict[str, Any] = {}
    for kind in SERVERS:
        protocol = "json" if kind == "chatkit" else "text"
        with running(kind, sendq=None) as (host, port, _pid):
            ladder = run(
                loadgen.fan_out(
                    host, port, protocol, plan.overload_clients, rates=plan.overload_ladder,
                    seconds=plan.overload_ladder_seconds,
                )
            )  # fmt: skip
        top = max((s.rate for s in ladder.steps if s.ok), default=plan.overload_ladder[0])
        with running(kind, sendq=None) as (host, port, _pid):
            result = run(
                loadgen.fan_out(
                    host, port, protocol, plan.overload_clients, rates=(2 * top,),
                    seconds=plan.overload_seconds,
                )
            ).to_dict()  # fmt: skip
        step = result["steps"][0]
        receivers = plan.overload_clients
        out[kind] = {
            **result,
            "capacity_rate": top,
            "overload_seconds": plan.overload_seconds,
            "offered": step["sent"],
            # what the generator could send of the rate asked (it saturates near 200,000)
            "offered_per_s": round(step["sent"] / plan.overload_seconds),
            "delivered_per_reader": round(step["received"] / receivers, 1),
            "readers_short": step["short"],
            "readers_disconnected": step["dropped"],
        }
    return out


def churn_result(host: str, port: int, protocol: str, plan: Plan) -> dict[str, Any]:
    """The churn loop against one server: cycles/s, and the generator's share of its core
    (near 1.0, the generator and not the server would be what is measured)."""
    cpu, start = time.process_time(), time.monotonic()
    rate = run(loadgen.churn(host, port, protocol, plan.churn_workers, plan.churn_seconds))
    busy = (time.process_time() - cpu) / (time.monotonic() - start)
    return {
        "workers": plan.churn_workers,
        "cycles_per_s": round(rate, 1),
        "generator_cpu": round(busy, 3),
    }


def scenario_churn(plan: Plan) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in SERVERS:
        with running(kind) as (host, port, _pid):
            protocol = "json" if kind == "chatkit" else "text"
            out[kind] = churn_result(host, port, protocol, plan)
    return out


def scenario_irc_fanout(plan: Plan, clients: int) -> dict[str, Any]:
    """Fan-out over IRC: chatkit's IRC face, then ngIRCd, the same generator speaking IRC."""
    out: dict[str, Any] = {}
    for kind in irc_servers():
        # No /stats: its JSON client would join #general, where chatkit's IRC clients
        # are too, and its join and leave lines would count as deliveries.
        with running_irc(kind) as (host, port, _pid, _stats_port):
            out[kind] = run(
                loadgen.fan_out(
                    host, port, "irc", clients, rates=plan.irc_rates or plan.rates,
                    seconds=plan.step_seconds,
                )
            ).to_dict()  # fmt: skip
    return out


def scenario_peers(plan: Plan, clients: int) -> dict[str, Any]:
    """Fan-out capacity and latency of ngIRCd, the baseline and chatkit's faces, history
    off and on, in ``plan.peers_rounds`` rounds of turns; each kind reports its median round."""
    rates = PEER_RATES.get(clients, plan.rates) if plan is not TINY else plan.rates
    kinds = [k for k in PEER_KINDS if k != "ngircd" or "ngircd" in irc_servers()]
    rounds: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    for n in range(plan.peers_rounds):
        # Each round starts with the next kind: none always goes first (or after another).
        for kind in kinds[n % len(kinds) :] + kinds[: n % len(kinds)]:
            for attempt in (1, 2):  # a second try if a server cut a client at setup
                try:
                    rounds[kind].append(peer_round(kind, clients, rates, plan.step_seconds))
                    break
                except (OSError, RuntimeError) as exc:
                    print(f"peers C={clients}, {kind}: {exc!r}", file=sys.stderr, flush=True)
                    if attempt == 2:
                        rounds[kind].append({"capacity": 0.0, "steps": [], "error": repr(exc)})
    out: dict[str, Any] = {}
    for kind, results in rounds.items():
        ordered = sorted(results, key=lambda r: r["capacity"])
        out[kind] = {**ordered[(len(ordered) - 1) // 2], "rounds": [r["capacity"] for r in results]}
    return out


def peer_round(kind: str, clients: int, rates: tuple[int, ...], seconds: float) -> dict[str, Any]:
    """One fan-out ladder of one kind of the peers scenario (see PEER_KINDS)."""
    if kind.startswith("chatkit json") or kind == "baseline":
        server = kind if kind == "baseline" else kind.split(", ")[1]  # "history on"/"off"
        protocol = "text" if kind == "baseline" else "json"
        with running(server) as (host, port, _pid):
            result = run(
                loadgen.fan_out(host, port, protocol, clients, rates=rates, seconds=seconds)
            )
    else:
        irc = "ngircd" if kind == "ngircd" else f"chatkit-irc, {kind.split(', ')[1]}"
        with running_irc(irc) as (host, port, _pid, _stats):
            result = run(loadgen.fan_out(host, port, "irc", clients, rates=rates, seconds=seconds))
    data: dict[str, Any] = result.to_dict()
    return data


def peers_report(name: str, result: dict[str, Any]) -> list[str]:
    """One table of the peers scenario: capacity beside ngIRCd's, and p99 at ngIRCd's steps."""
    peer = result.get("ngircd")
    lines = [
        f"{name}: capacity = best step with p99 <= 1 s, all delivered, nobody dropped "
        "(median round); p99 = the worst ratio to ngIRCd's p99 over the steps up to "
        "ngIRCd's capacity.",
        "",
        "| server | capacity, deliveries/s | ÷ ngIRCd | rounds | p99, worst ÷ ngIRCd's |",
        "| --- | --- | --- | --- | --- |",
    ]
    for kind, value in result.items():
        share = ratio(value["capacity"], peer["capacity"], 2) if peer else "n/a"
        worst = "n/a"
        if peer and kind not in ("ngircd", "baseline"):
            top = max((s["rate"] for s in peer["steps"] if s["ok"]), default=0)
            shares = []
            for step in peer["steps"]:
                mine = best_step(value, step["rate"])
                if step["rate"] <= top and step["ok"] and mine and step["p99_ms"] > 0:
                    shares.append(mine["p99_ms"] / step["p99_ms"])
            worst = f"{max(shares):.2f}×" if shares else "n/a"
        rounds = ", ".join(f"{c / 1e6:.2f}M" for c in value["rounds"])
        lines.append(f"| {kind} | {value['capacity']:,.0f} | {share} | {rounds} | {worst} |")
    return lines


def scenario_irc_idle(clients: int) -> dict[str, Any]:
    """Server memory per idle IRC client, registered and in one channel."""
    out: dict[str, Any] = {}
    for kind in irc_servers():
        with running_irc(kind) as (host, port, pid, _stats_port):
            out[kind] = idle_memory(host, port, pid, "irc", clients)
    return out


def scenario_irc_churn(plan: Plan) -> dict[str, Any]:
    """Connect, register (NICK/USER until 001), QUIT, in a loop."""
    out: dict[str, Any] = {}
    for kind in irc_servers():
        with running_irc(kind) as (host, port, _pid, _stats_port):
            out[kind] = churn_result(host, port, "irc", plan)
    return out


def ratio(a: float, b: float, digits: int = 0) -> str:
    """``a ÷ b`` to two decimals, or to ``digits`` significant digits."""
    if not b:
        return "n/a"
    return f"{a / b:.{digits}g}×" if digits else f"{a / b:.2f}×"


def best_step(result: dict[str, Any], rate: int) -> dict[str, Any] | None:
    return next((s for s in result["steps"] if s["rate"] == rate), None)


def report(results: dict[str, Any]) -> str:
    lines = [f"chatkit benchmarks, {results['mode']} run, {results['date']}", ""]
    if any(not key.startswith(("irc ", "peers ")) for key in results["scenarios"]):
        lines += [
            "| scenario | chatkit | baseline | chatkit ÷ baseline |",
            "| --- | --- | --- | --- |",
        ]
    irc = {k: v for k, v in results["scenarios"].items() if k.startswith("irc ")}
    for key, value in results["scenarios"].items():
        if key.startswith(("irc ", "peers ")):
            continue
        if key.startswith("fanout"):
            c, b = value["chatkit"], value["baseline"]
            lines.append(
                f"| {key}: capacity, deliveries/s | {c['capacity']:,.0f} | {b['capacity']:,.0f} "
                f"| {ratio(c['capacity'], b['capacity'])} |"
            )
            for rate in (1000, 2000):
                cs, bs = best_step(c, rate), best_step(b, rate)
                if cs and bs:
                    lines.append(
                        f"| {key}: p99 latency at {rate} msg/s | {cs['p99_ms']} ms | {bs['p99_ms']} ms "
                        f"| {ratio(cs['p99_ms'], bs['p99_ms'])} |"
                    )
            counted = [s for s in c["steps"] if s["ok"] and s["server_deliveries"]]
            if counted:
                best = max(counted, key=lambda s: s["deliveries_per_s"])
                lines.append(
                    f"| {key}: chatkit send() calls per delivered line at capacity ({best['rate']} msg/s) "
                    f"| {best['server_sends'] / best['server_deliveries']:.4f} | | |"
                )
            done = [
                s for s in b["steps"] if s["short"] == 0 and s["extra"] == 0 and s["dropped"] == 0
            ]
            if done and max(s["deliveries_per_s"] for s in done) > b["capacity"]:
                top = max(done, key=lambda s: s["deliveries_per_s"])
                lines.append(
                    f"| {key}: baseline's best complete step, generator saturated: the baseline holds at least this "
                    f"| | {top['deliveries_per_s']:,.0f} | {ratio(c['capacity'], top['deliveries_per_s'])} |"
                )
        elif key.startswith("slow"):
            c, b = value["chatkit"], value["baseline"]
            cs, bs = c["steps"][-1], b["steps"][-1]
            lines.append(
                f"| {key}: others' deliveries/s, one client never reads | {cs['deliveries_per_s']:,.0f} "
                f"(p99 {cs['p99_ms']} ms, {cs['complete']:.1%} complete) | {bs['deliveries_per_s']:,.0f} "
                f"(p99 {bs['p99_ms']} ms, {bs['complete']:.1%} complete) "
                f"| {ratio(cs['deliveries_per_s'], bs['deliveries_per_s'])} |"
            )
        elif key.startswith("idle"):
            c, b = value["chatkit"], value["baseline"]
            lines.append(
                f"| {key}: server memory per idle client | {c['kib_per_client']} KiB "
                f"({c['connected']} held) | {b['kib_per_client']} KiB ({b['connected']} held) "
                f"| {ratio(c['kib_per_client'], b['kib_per_client'])} |"
            )
        elif key.startswith("history"):
            off = value["history off"]
            for kind in HISTORY_KINDS:
                r = value[kind]
                share = ratio(r["messages_per_s"], off["messages_per_s"])
                rounds = ", ".join(f"{x:,}" for x in r.get("rounds", []))
                lines.append(
                    f"| {key}: messages/s stored and delivered, {kind} (best of rounds: {rounds}) "
                    f"| {r['messages_per_s']:,} | | {share} of history off |"
                )
                for rate in (1000, 4000):
                    s = best_step(r, rate)
                    if s:
                        lines.append(
                            f"| {key}: p50/p99 latency at {rate} msg/s, {kind} "
                            f"| {s['p50_ms']}/{s['p99_ms']} ms | | |"
                        )
        elif key.startswith("storm"):
            c, b = value["chatkit"], value["baseline"]
            what = "held idle, then closed" if "idle" in key else "opened at once, then closed"
            for name, r in (("before", "calm"), ("during", "storm")):
                cs, bs = c[r], b[r]
                lines.append(
                    f"| {key} ({what}): chatters' p50/p99 latency {name} the storm "
                    f"| {cs['p50_ms']}/{cs['p99_ms']} ms ({cs['complete']:.1%}) "
                    f"| {bs['p50_ms']}/{bs['p99_ms']} ms ({bs['complete']:.1%}) "
                    f"| {ratio(cs['p99_ms'], bs['p99_ms'], 3)} (p99) |"
                )
            cc, bc = c["storm_connections"], b["storm_connections"]
            lines.append(
                f"| {key}: storm connections established; seconds to open them; closed by server "
                f"| {cc.get('connected')}; {cc.get('open_seconds')} s; {cc.get('closed_by_server')} "
                f"| {bc.get('connected')}; {bc.get('open_seconds')} s; {bc.get('closed_by_server')} | |"
            )
        elif key.startswith("overload"):
            c, b = value["chatkit"], value["baseline"]
            cs, bs = c["steps"][0], b["steps"][0]
            lines.append(
                f"| {key}: readers disconnected; readers short of a message; messages offered "
                f"→ delivered per reader (twice the capacity's msg/s, for "
                f"{c['overload_seconds']:g} s) "
                f"| {c['readers_disconnected']}; {c['readers_short']}; {c['offered']:,} → "
                f"{c['delivered_per_reader']:,} ({cs['complete']:.1%}; {cs['rate']:,} msg/s "
                f"asked, {c['offered_per_s']:,} sent) "
                f"| {b['readers_disconnected']}; {b['readers_short']}; {b['offered']:,} → "
                f"{b['delivered_per_reader']:,} ({bs['complete']:.1%}; {bs['rate']:,} msg/s "
                f"asked, {b['offered_per_s']:,} sent) | |"
            )
        elif key.startswith("cluster"):
            alone = value["alone"]
            for kind in CLUSTER_KINDS:
                r = value[kind]
                s = best_step(r, 1000)
                p99 = f"p99 at 1000 msg/s {s['p99_ms']} ms" if s else "no step at 1000 msg/s"
                cpu = f", Redis CPU {r['redis_cpu']:.0%} of a core" if "redis_cpu" in r else ""
                lines.append(
                    f"| {key}, {kind}: capacity, deliveries/s ({p99}{cpu}) "
                    f"| {r['capacity']:,.0f} | | {ratio(r['capacity'], alone['capacity'])} of alone |"
                )
        elif key == "churn":
            c, b = value["chatkit"], value["baseline"]
            lines.append(
                f"| churn: connect, log in, quit; cycles/s ({c['workers']} workers) "
                f"| {c['cycles_per_s']:,.0f} | {b['cycles_per_s']:,.0f} "
                f"| {ratio(c['cycles_per_s'], b['cycles_per_s'])} |"
            )
    if irc:
        lines += ["", *irc_report(irc)]
    for key, value in results["scenarios"].items():
        if key.startswith("peers "):
            lines += ["", *peers_report(key, value)]
    lines += [
        "",
        "Fan-out steps (rate msg/s → deliveries/s, complete, p50/p99/max ms, generator CPU):",
        "",
    ]
    for key, value in results["scenarios"].items():
        if not (key.startswith(("fanout", "slow", "history", "irc fanout", "cluster", "peers"))):
            continue
        for kind in value:
            for s in value[kind]["steps"]:
                flag = " (generator saturated: not counted)" if s["generator_saturated"] else ""
                lines.append(
                    f"- {key} {kind} {s['rate']}: {s['deliveries_per_s']:,.0f}/s, {s['complete']:.1%}, "
                    f"{s['p50_ms']}/{s['p99_ms']}/{s['max_ms']} ms, cpu {s['generator_cpu']:.0%}, "
                    f"dropped {s['dropped']}{'' if s['ok'] else ' ✗'}{flag}"
                )
    return "\n".join(lines) + "\n"


def irc_report(scenarios: dict[str, Any]) -> list[str]:
    """The IRC table: chatkit's IRC face beside ngIRCd (n/a where ngIRCd was not run)."""
    lines = [
        "| IRC scenario | chatkit (IRC face) | ngIRCd | chatkit ÷ ngIRCd |",
        "| --- | --- | --- | --- |",
    ]

    def row(what: str, c: str, g: str | None, share: str) -> None:
        lines.append(f"| {what} | {c} | {g if g is not None else 'n/a'} | {share} |")

    for key, value in scenarios.items():
        c, g = value["chatkit-irc"], value.get("ngircd")
        if key.startswith("irc fanout"):
            gc = g["capacity"] if g else 0.0
            row(
                f"{key}: capacity, deliveries/s", f"{c['capacity']:,.0f}",
                f"{gc:,.0f}" if g else None, ratio(c["capacity"], gc),
            )  # fmt: skip
            for rate in sorted({s["rate"] for s in c["steps"]} & {250, 1000, 2000}):
                cs, gs = best_step(c, rate), (best_step(g, rate) if g else None)
                if cs:
                    row(
                        f"{key}: p50/p99 latency at {rate} msg/s",
                        f"{cs['p50_ms']}/{cs['p99_ms']} ms",
                        f"{gs['p50_ms']}/{gs['p99_ms']} ms" if gs else None,
                        f"{ratio(cs['p99_ms'], gs['p99_ms'])} (p99)" if gs else "n/a",
                    )
        elif key.startswith("irc idle"):
            row(
                f"{key}: server memory per idle client (registered, in one channel)",
                f"{c['kib_per_client']} KiB ({c['connected']} held)",
                f"{g['kib_per_client']} KiB ({g['connected']} held)" if g else None,
                ratio(c["kib_per_client"], g["kib_per_client"]) if g else "n/a",
            )
        elif key.startswith("irc churn"):
            row(
                f"{key}: connect, NICK/USER until 001, QUIT; cycles/s ({c['workers']} workers)",
                f"{c['cycles_per_s']:,.0f}",
                f"{g['cycles_per_s']:,.0f}" if g else None,
                ratio(c["cycles_per_s"], g["cycles_per_s"]) if g else "n/a",
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a smaller run, about 8 minutes")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # for the tests
    parser.add_argument(
        "--json", type=Path, default=ROOT / "benchmarks" / "results" / "latest.json"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=SCENARIOS,
        help="run only these",
    )
    args = parser.parse_args(argv)
    plan = TINY if args.tiny else QUICK if args.quick else FULL
    raise_fd_limit()
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})  # the generator; servers run on core 0
    only = set(args.only or SCENARIOS)
    scenarios: dict[str, Callable[[], dict[str, Any]]] = {}
    if "fanout" in only:
        for c in plan.fanout_clients:
            scenarios[f"fanout C={c}"] = lambda c=c: scenario_fanout(plan, c)  # type: ignore[misc]
    if "slow" in only:
        scenarios["slow consumer C=100"] = lambda: scenario_fanout(plan, 100, slow=True)
    if "idle" in only:
        for n in plan.idle_clients:
            scenarios[f"idle N={n}"] = lambda n=n: scenario_idle(n)  # type: ignore[misc]
    if "churn" in only:
        scenarios["churn"] = lambda: scenario_churn(plan)
    if "history" in only:
        scenarios[f"history C={HISTORY_CLIENTS}"] = lambda: scenario_history(plan)
    if "storm" in only:
        for n in plan.storm_sizes:
            scenarios[f"storm N={n}"] = lambda n=n: scenario_storm(plan, n, idle=False)  # type: ignore[misc]
            scenarios[f"storm idle N={n}"] = lambda n=n: scenario_storm(plan, n, idle=True)  # type: ignore[misc]
    if "overload" in only:
        scenarios[f"overload C={plan.overload_clients}"] = lambda: scenario_overload(plan)
    if "cluster" in only:
        scenarios[f"cluster C={plan.cluster_clients}"] = lambda: scenario_cluster(plan)
    if "peers" in only:
        for c in plan.peers_clients:
            scenarios[f"peers C={c}"] = lambda c=c: scenario_peers(plan, c)  # type: ignore[misc]
    if "irc" in only:
        for c in plan.irc_fanout_clients:
            scenarios[f"irc fanout C={c}"] = lambda c=c: scenario_irc_fanout(plan, c)  # type: ignore[misc]
        n_idle = plan.irc_idle_clients
        scenarios[f"irc idle N={n_idle}"] = lambda: scenario_irc_idle(n_idle)
        scenarios["irc churn"] = lambda: scenario_irc_churn(plan)
    results: dict[str, Any] = {
        "mode": "tiny" if args.tiny else "quick" if args.quick else "full",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpus": os.cpu_count(),
        "payload_bytes": loadgen.PAYLOAD,
        "scenarios": {},
    }
    for name, scenario in scenarios.items():
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results["scenarios"][name] = scenario()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(report(results))
    print(f"(all figures in {args.json})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
