"""Writes docs/hooks.md from chatkit/hookspecs.py: ``uv run python tests/hookdoc.py``.

tests/test_hooks.py checks that the committed page equals what this produces, so the
hook reference cannot drift from the code.
"""

from __future__ import annotations

import inspect
import re
import sys
import textwrap
from pathlib import Path

from chatkit import hookspecs

PAGE = Path(__file__).parent.parent / "docs" / "hooks.md"

INTRO = """\
# Hook reference

Every hook chatkit calls, as defined in [`chatkit/hookspecs.py`](../chatkit/hookspecs.py), the one
file that holds the plugin contract. Implement a hook by writing a function (or method) of the same
name, decorated with `chatkit.hookimpl`, taking any subset of the listed arguments by name.
See [plugins.md](plugins.md) for a walk-through. This page is generated from the hook
specifications by `tests/hookdoc.py`; a test fails if it is out of date.

## Lifecycle: the order of calls

{lifecycle}

## Rules for every hook

{rules}

| kind | hooks | what a return does | if it raises |
| --- | --- | --- | --- |
| startup | `chatkit_configure`, `chatkit_register_commands` | ignored | the server does not start (a `UsageError`'s text is shown as is) |
| check | `chatkit_check_config` (`chatkit check` only) | ignored | `chatkit check` exits 2 (a `UsageError`'s text is shown as is) |
| veto (first result) | `chatkit_allow_input`, `chatkit_allow_login`, `chatkit_allow_nick`, `chatkit_allow_join`, `chatkit_allow_topic` | a `Reject` refuses; the first one wins | refused (fail closed), logged |
| filter (first result) | `chatkit_filter_message` | a `Drop` stops the message; may change `message.text` | not delivered (fail closed), logged |
| authenticate (first result) | `chatkit_authenticate` | `True` if the password is right, a `Reject` if not, `None` if the plugin keeps no accounts | the authentication fails (fail closed), logged |
| store | `chatkit_store_messages`, `chatkit_store_message` | `None` once stored, a `Future`, or a `Drop` | the message is delivered to nobody, the sender gets `not_stored` |
| replay (first result) | `chatkit_room_replay` | the frames a joiner sees first, or `None` | logged; the client joins without a replay |
| protocol (first result) | `chatkit_handle_request` | `True` for a frame type of the plugin's, a `Reject`, or `None` | the client gets `internal_error`, logged |
| readiness | `chatkit_check_ready` | a sentence naming a problem, or `None` | logged; the server counts as not ready |
| notify | `chatkit_server_start`, `chatkit_on_*`, `chatkit_server_stop` | ignored | logged with the plugin's name; other plugins still run |
"""


def sections() -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = []
    for line in inspect.getsource(hookspecs).splitlines():
        banner = re.match(r"^# (Startup|Connection|Messages|Shutdown)$", line)
        if banner:
            found.append((banner.group(1), []))
        hook = re.match(r"^def (chatkit_\w+)\(", line)
        if hook:
            found[-1][1].append(hook.group(1))
    return found


def docstring_sections() -> dict[str, str]:
    """The module docstring's sections (a title underlined with ``-``) by title."""
    doc = inspect.getdoc(hookspecs) or ""
    parts = re.split(r"^(\w[\w ]*)\n-+\n", doc, flags=re.M)
    return {title: body.strip() for title, body in zip(parts[1::2], parts[2::2], strict=True)}


def markdown(text: str) -> str:
    """reStructuredText's ``::`` literal block as a fenced block; ``x`` as `x`."""
    text = re.sub(
        r"::\n\n((?:    .*\n?|\n)+)",
        lambda m: ":\n\n```text\n" + textwrap.dedent(m.group(1)).strip("\n") + "\n```\n\n",
        text,
    )
    return re.sub(r"(?<!`)``(?!`)", "`", text).rstrip()


def render() -> str:
    found = docstring_sections()
    lifecycle, rules = markdown(found["Lifecycle"]), markdown(found["Rules"])
    out = [INTRO.format(lifecycle=lifecycle, rules=rules)]
    for title, names in sections():
        out += [f"## {title}", ""]
        for name in names:
            spec = getattr(hookspecs, name)
            signature = inspect.signature(spec)
            params = ", ".join(signature.parameters)
            out += [
                f"### `{name}({params})`",
                "",
                "```python",
                f"def {name}{str(signature).replace(chr(39), '')}",
                "```",
                "",
                inspect.getdoc(spec) or "",
                "",
            ]
    return re.sub(r"(?<!`)``(?!`)", "`", "\n".join(out)).rstrip() + "\n"


if __name__ == "__main__":
    PAGE.write_text(render())
    sys.stdout.write(f"wrote {PAGE}\n")
