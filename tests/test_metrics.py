"""The metrics builtin: Prometheus /metrics of a real `chatkit serve`, scraped over HTTP
during traffic, checked against what was sent."""

from __future__ import annotations

import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest
from conftest import CHATKIT, ServeProcess
from prometheus_client.parser import text_string_to_metric_families

from chatkit import Config, Server
from chatkit.builtins import metrics
from chatkit.testing import ChatClient, wait_until


def scrape(url: str) -> dict[str, float]:
    """Every sample of ``url``'s metrics, keyed by name and labels."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def wait_for(url: str, check: Callable[[dict[str, float]], bool]) -> dict[str, float]:
    deadline = time.monotonic() + 10
    while True:
        samples = scrape(url)
        if check(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def metrics_url(server: ServeProcess) -> str:
    assert server.proc.stdout is not None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        line = server.proc.stdout.readline()
        server.lines.append(line)
        match = re.search(r"metrics: (http://\S+)", line)
        if match:
            return match.group(1)
    raise AssertionError(f"no metrics address in {server.lines}")


def test_metrics_count_what_clients_did(serve: type[ServeProcess]) -> None:
    server = serve("--metrics-port", "0", "--irc-port", "0", "--no-plugin", "flood")
    url = metrics_url(server)
    assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
    before = scrape(url)
    assert before["chatkit_connections{face=line}"] == 0
    assert before["chatkit_connections{face=irc}"] == 0
    assert before["chatkit_logins_total"] == 0

    alice, bob = ChatClient(server.address), ChatClient(server.address)
    alice.login("alice")
    bob.login("bob")
    for n in range(5):
        alice.say(f"hello {n}")
    for n in range(5):
        assert bob.expect("message")["text"] == f"hello {n}"
    bob.send({"type": "hello", "nick": "again"})
    assert bob.expect("error")["code"] == "bad_frame"
    samples = wait_for(url, lambda s: s["chatkit_history_commits_total"] >= 1)
    assert samples["chatkit_connections{face=line}"] == 2
    assert samples["chatkit_logged_in"] == 2
    assert samples["chatkit_lingering_connections"] == 0
    assert samples["chatkit_logins_total"] == 2
    assert samples["chatkit_messages_total"] == 5
    # Each message to both members, and the joins: alice's to herself, bob's to both.
    assert samples["chatkit_deliveries_total"] == 5 * 2 + 3
    assert samples["chatkit_errors_total{code=bad_frame}"] == 1
    assert samples["chatkit_slow_consumer_cuts_total"] == 0
    assert samples["chatkit_send_queue_bytes_gcount"] == 2
    assert samples["chatkit_rooms"] == 1
    assert samples["chatkit_history_commits_total"] >= 1
    assert samples["chatkit_history_commit_seconds_total"] > 0
    assert samples["chatkit_history_queued"] == 0
    assert samples["chatkit_sent_bytes_total"] > 0
    # Hooks are timed one call in 64: 5 messages, 2 logins, 2 joins... make 64 more.
    for n in range(64):
        alice.say(f"more {n}")
    for n in range(64):
        bob.expect("message", text=f"more {n}")

    def timed(samples: dict[str, float]) -> dict[str, float]:
        return {k: v for k, v in samples.items() if k.startswith("chatkit_hook_seconds_count")}

    def on_message_timed(samples: dict[str, float]) -> bool:
        return any("hook=on_message" in k and "plugin=log" in k for k in timed(samples))

    # (A hook's time is recorded once it returns: chatkit_on_message's, after bob may
    # have the message.)
    samples = wait_for(url, on_message_timed)
    assert on_message_timed(samples), timed(samples)
    assert all(v >= 1 for v in timed(samples).values())
    alice.close()
    bob.close()
    samples = wait_for(url, lambda s: s["chatkit_connections{face=line}"] == 0)
    assert samples["chatkit_connections{face=line}"] == 0
    code, _out, _err = server.stop()
    assert code == 0
    with pytest.raises(urllib.error.URLError):
        scrape(url)


def test_refusals_before_login_are_counted_by_code(
    chat_server_factory: Callable[..., Server],
) -> None:
    server = chat_server_factory(["metrics"], max_clients_per_address=1, limit_loopback=True)
    metrics = server.pluginmanager.get_plugin("metrics")
    assert metrics is not None
    url = "http://{}:{}/metrics".format(*metrics.address)
    first = ChatClient(server.address)
    first.login("first")
    with socket.create_connection(server.address) as second:
        assert b"too_many_connections" in second.recv(4096)
    samples = wait_for(url, lambda s: "chatkit_errors_total{code=too_many_connections}" in s)
    assert samples["chatkit_errors_total{code=too_many_connections}"] == 1
    first.close()


def test_a_metrics_port_in_use_stops_serve_with_status_2() -> None:

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [CHATKIT, "serve", "--port", "0", "--metrics-port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 2
    assert f"metrics: cannot listen on 127.0.0.1:{port}" in result.stderr


def test_the_metrics_port_bounds_its_connections(
    chat_server_factory: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past max_connections a connection to /metrics is closed at once; a silent one is
    closed after its timeout, and scrapes work again."""
    monkeypatch.setattr(metrics._Handler, "timeout", 3.0)  # (the idle two outlast a slow probe)
    config = Config()
    config.plugin_config["metrics"] = {"port": 0, "max_connections": 2}
    server = chat_server_factory(["metrics"], config=config)
    plugin = server.pluginmanager.get_plugin("metrics")
    assert plugin is not None and plugin.address is not None
    address = plugin.address
    idle = [socket.create_connection(address, timeout=10) for _ in range(2)]
    for sock in idle:
        sock.sendall(b"GET /metrics HTTP/1.1\r\n")  # and then nothing

    def refused() -> bool:
        with socket.create_connection(address, timeout=10) as probe:
            probe.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            return probe.recv(100) == b""

    wait_until(refused, 10, "a refusal")
    for sock in idle:
        assert sock.recv(100) == b""  # timed out: closed by the server
        sock.close()
    scraped = scrape(f"http://{address[0]}:{address[1]}/metrics")
    assert "chatkit_logged_in" in scraped


def test_only_the_metrics_path_answers(chat_server_factory: Callable[..., Server]) -> None:
    """/metrics has the counters; any other path is 404 (not the counters again)."""
    config = Config()
    config.plugin_config["metrics"] = {"port": 0}
    server = chat_server_factory(["metrics"], config=config)
    plugin = server.pluginmanager.get_plugin("metrics")
    assert plugin is not None and plugin.address is not None
    base = f"http://{plugin.address[0]}:{plugin.address[1]}"
    assert "chatkit_logged_in" in scrape(f"{base}/metrics")
    for path in ("/", "/robots.txt", "/metrics/x", "/metricsx"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + path, timeout=10)
        assert refused.value.code == 404
        assert b"/metrics" in refused.value.read()
