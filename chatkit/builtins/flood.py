"""Flood control: a token bucket per client, on by default.

Each client may send ``burst`` lines at once, then ``rate`` lines per second; a
message of several lines costs one per line (at most ``burst``), so a paste is
accepted whole, in one message or as lines from ``nc``. A line over the limit is
refused (not delayed, not queued) with ``rate_limited`` and the number of seconds
after which the next one will be accepted; a paced client's (IRC's: IRC servers
hold a flooding client back, and clients show a line as sent once written) waits
its turn instead (:class:`chatkit.Wait`), up to ``max_wait`` seconds, and is refused
beyond (a wait is at most ``burst / rate``: 4 s by default). ``ping`` and
``/quit`` are never limited. With ``kick_after`` set, a client refused (or, paced,
held back) that many lines in a row is disconnected.

Settings (``[plugins.flood]``): ``rate`` (5.0), ``burst`` (20), ``kick_after`` (0: never),
``max_wait`` (10.0).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

from chatkit import (
    Config,
    Hello,
    Reject,
    Request,
    Say,
    Session,
    Wait,
    check_settings,
    hookimpl,
    number_setting,
)

RATE = 5.0  # lines per second, sustained: faster than anyone types
BURST = 20  # lines at once: a paste (as many as a message may have, max_message_lines),
# or a client's queued lines after a reconnect
KICK_AFTER = 0  # refusals in a row before disconnecting; 0 never disconnects
MAX_WAIT = 10.0  # seconds a paced client's line waits its turn at most (Session.paced)
_QUIT = re.compile(r"/quit(\s|$)", re.IGNORECASE)  # /quit, with a reason or not


@dataclass
class Bucket:
    """One client's allowance. Only that client's reader thread touches it: no lock."""

    tokens: float
    at: float
    refused: int = 0
    """Lines refused in a row (a paced client's lines held back are not refused)."""


class Flood:
    """The ``flood`` plugin; one instance per server, registered only when enabled."""

    def __init__(self) -> None:
        self.rate = RATE
        """Lines per second refilled."""
        self.burst = float(BURST)
        """Bucket size: lines accepted at once."""
        self.kick_after = KICK_AFTER
        """Refusals in a row before a disconnect (0: never)."""
        self.max_wait = MAX_WAIT
        """Seconds a paced client's line may wait; beyond, it is refused."""

    @hookimpl
    def chatkit_check_config(self, config: Config) -> None:
        self._read(config)

    @hookimpl
    def chatkit_configure(self, config: Config) -> None:
        self._read(config)

    def _read(self, config: Config) -> None:
        """Read and check the settings (opens nothing: ``chatkit check`` calls it too)."""
        settings = config.plugin_settings("flood")
        check_settings("flood", settings, ["rate", "burst", "kick_after", "max_wait"])
        self.rate = number_setting("flood", settings, "rate", RATE, 0.001)
        self.burst = number_setting("flood", settings, "burst", BURST, 1)
        self.kick_after = int(number_setting("flood", settings, "kick_after", KICK_AFTER, 0))
        self.max_wait = number_setting("flood", settings, "max_wait", MAX_WAIT, 0)

    @hookimpl
    def chatkit_on_login(self, client: Session) -> None:
        # The hello that logged in is given back (a failed one stays paid): right after
        # a login, `burst` lines go at once, a paste of as many lines as a message
        # may have. (The client's reader thread, as chatkit_allow_input's.)
        bucket = client.data.get("flood")
        if bucket is not None:
            bucket.tokens = min(self.burst, bucket.tokens + 1.0)

    @hookimpl
    def chatkit_allow_input(
        self, client: Session, event: Hello | Say | Request
    ) -> Reject | Wait | None:
        if isinstance(event, Say) and event.command and _QUIT.match(event.text):
            return None  # leaving is never refused (IRC's QUIT neither): it ends the flood
        now = time.monotonic()
        bucket = client.data.get("flood")
        if bucket is None:
            bucket = client.data["flood"] = Bucket(self.burst, now)
        tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        cost = 1.0
        if isinstance(event, Say) and "\n" in event.text:
            cost = min(float(event.text.count("\n") + 1), self.burst)
        elif isinstance(event, Hello) and event.rooms:
            # Every four rooms a line, as on IRC's JOIN (a reconnect in 30 rooms leaves
            # most of a burst for what follows it).
            cost = min(1.0 + math.ceil(len(event.rooms) / 4), self.burst)
        if tokens >= cost:
            bucket.tokens = tokens - cost
            # (A line that waited its turn is not refused: a paced client's paste arrives
            # whole, however long, at `rate` lines a second, and costs the server only the
            # wait; what it has not read yet waits in TCP. So it does not count toward
            # kick_after, which would cut a paste of burst + kick_after lines.)
            bucket.refused = 0
            return None
        bucket.tokens = tokens
        retry = (cost - tokens) / self.rate
        if client.paced and retry <= self.max_wait:
            return Wait(retry)
        bucket.refused += 1
        if self.kick_after and bucket.refused >= self.kick_after:
            client.disconnect("flooding")
        return Reject(
            f"too many lines: wait {retry:.2g} s (at most {self.rate:g} a second)",
            "rate_limited",
            {"retry_after": round(retry, 3)},
        )
