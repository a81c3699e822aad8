"""Log formats of `chatkit serve` (chatkit/logs.py) and the log builtin's fields."""

from __future__ import annotations

import json
import signal
import subprocess

from conftest import CHATKIT, ServeProcess

from chatkit.testing import ChatClient


def json_records(err: str) -> list[dict[str, object]]:
    records = [json.loads(line) for line in err.splitlines() if line.strip()]
    for record in records:
        assert {"ts", "level", "logger", "message"} <= set(record)
        assert str(record["ts"]).endswith("Z")
    return records


def chat(server: ServeProcess) -> None:
    alice, bob = ChatClient(server.address), ChatClient(server.address)
    alice.login("alice")
    bob.login("bob")
    alice.say("a secret plan")
    assert bob.expect("message")["text"] == "a secret plan"
    alice.close()
    bob.close()
    bob.wait_closed()


def test_json_logs_have_one_object_per_line_with_event_fields(
    serve: type[ServeProcess],
) -> None:
    server = serve("--log-format", "json", "--log-level", "debug", "--irc-port", "0")
    chat(server)
    code, _out, err = server.stop(signal.SIGTERM)
    assert code == 0
    records = json_records(err)
    events = {(r.get("event"), r.get("nick")): r for r in records if "event" in r}
    # The start event says where every face listens, for a log tool.
    start = events[("start", None)]
    assert (start["address"], start["port"]) == server.address
    listening = start["listening"]
    assert isinstance(listening, dict) and set(listening) == {"line", "irc"}
    assert listening["line"] == "{}:{}".format(*server.address)
    login = events[("login", "alice")]
    assert login["address"] == "127.0.0.1" and login["level"] == "info"
    assert events[("join", "bob")]["room"] == "#general"
    message = events[("message", "alice")]
    assert message["room"] == "#general" and isinstance(message["id"], int)
    assert ("logout", "alice") in events
    # What people say is never logged without --log-messages, in any field.
    assert "a secret plan" not in err


def test_log_messages_logs_what_people_say(serve: type[ServeProcess]) -> None:
    server = serve("--log-format", "json", "--log-level", "debug", "--log-messages")
    chat(server)
    _code, _out, err = server.stop(signal.SIGTERM)
    [message] = [r for r in json_records(err) if r.get("event") == "message"]
    assert message["message"] == "[#general] <alice> a secret plan"


def test_text_logs_keep_message_text_out_too(serve: type[ServeProcess]) -> None:
    server = serve("--log-level", "debug")
    chat(server)
    _code, _out, err = server.stop(signal.SIGTERM)
    assert "alice logged in from 127.0.0.1" in err
    assert "<alice> (message " in err and "a secret plan" not in err


def test_an_unknown_log_format_exits_2() -> None:
    result = subprocess.run(
        [CHATKIT, "serve", "--port", "0", "--log-format", "xml"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "unknown log format 'xml'; use text or json" in result.stderr
