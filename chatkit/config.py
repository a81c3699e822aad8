"""Server settings: defaults, the TOML config file, and per-plugin tables.

A config file looks like this (every key optional)::

    [server]
    host = "127.0.0.1"
    port = 9090
    plugins = ["profanity"]       # enable these (besides the defaults)
    disable = ["log"]             # turn off these default plugins
    default_room = "#general"
    log_level = "info"

    [limits]
    max_line = 8192

    [plugins.profanity]           # handed to the plugin via chatkit_configure
    action = "mask"

    [faces.irc]                   # an IRC listener beside the line one (docs/irc.md)
    port = 6667
    host = "127.0.0.1"            # default: [server] host
    server_name = "chat.example.org"
    network = "example"

    [faces.web]                   # the chat page and its WebSocket (docs/web.md)
    port = 8080
    origins = ["https://chat.example.org"]  # besides the page's own; "*": any
    allow_no_origin = false       # WebSocket clients that send no Origin (programs)
    hosts = ["chat.lan"]          # names it is reached by, besides addresses and localhost
    proxies = ["127.0.0.1"]       # reverse proxies trusted for X-Forwarded-For

Command-line flags win over the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import logging
import math
import re
import tomllib
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatkit.addresses import IPV6_PREFIX
from chatkit.errors import UsageError
from chatkit.names import normalize, room_name, valid_room
from chatkit.protocol import BIDI_POLICIES, MAX_LINE_BYTES, MAX_MESSAGE_LINES

__all__ = ["Config", "Limits", "check_settings", "load_config", "number_setting"]

MAX_SENDQ_BYTES = 1024 * 1024  # bytes queued for one client before it is cut off as a
# slow consumer; about 5,000 chat lines, minutes of a busy room for a person.
MAX_BACKLOG_BYTES = 16 * 1024 * 1024  # bytes the server's writer may be behind before it
# stops reading from senders until it catches up: tens of milliseconds of its sending.
SLOW_TIMEOUT = 5.0  # seconds a client's socket may stay full with over max_sendq waiting
# before it is cut: a reader on a slow link catches up; one that stopped reading does not.
GREETING_DELAY = 1.0  # seconds a new connection may stay silent before it is greeted with a
# prompt (for nc); JSON clients send their hello at once and never see it.
MAX_CLIENTS = 10_000  # connections in total; each costs a file descriptor (and a thread while
# it talks: see IDLE_PARK).
MAX_CLIENTS_PER_ADDRESS = 20  # connections from one IP address (not loopback, by default).
MAX_TOPIC_CHARS = 390  # characters of a room's topic (IRC's TOPICLEN on most networks)
MAX_AWAY_CHARS = 200  # characters of an away message (IRC's AWAYLEN)
MAX_NICK_CHARS = 32  # characters in a nick; IRC's NICKLEN is typically 9 to 30.
MAX_ROOM_CHARS = 50  # characters in a room name, "#" included (IRC's CHANNELLEN is 50).
MAX_ROOMS = 100  # rooms one client may be in at once (IRC's CHANLIMIT; Libera allows 250,
# ngIRCd 10): ample for a team's or a class's rooms, and it bounds what one client's joins
# cost (each room's members, its WHOIS and /rooms lines).
LOGIN_TIMEOUT = 30.0  # seconds a connection may take to log in.
FREE_LINES = 100  # lines a client may send at once that no flood control counts: pings,
# pongs, lines refused unread (bad JSON, bad UTF-8, too long), IRC's CAP and bad commands.
FREE_LINE_RATE = 10.0  # of those a second, sustained; a client sending more is paused (its
# reader sleeps): pings and junk in a loop cannot take the server's core from the others.
MAX_RECVQ = 64 * 1024  # bytes a paused client (over flood control's rate or free_lines) may
# have sent that wait unread in its socket; past them it is disconnected ("excess flood", as
# IRC servers' receive queue): else lines a client sent and left would be acted on, at the
# paced rate, for minutes after it went. A paste of a chat message's 20 lines is a few KiB.
MAX_PENDING = 1000  # connections that have sent nothing yet. Each holds a descriptor and about
# 2 KiB, but no thread; a client sends its hello within a round trip, so only a storm of silent
# sockets reaches this. Past it the oldest silent one is closed, so such a storm cannot lock
# out clients that do talk (refusing the newest instead would let 100 sockets a second hold it).
FIRST_BYTE_TIMEOUT = 15.0  # seconds a new connection may stay silent: half of LOGIN_TIMEOUT,
# still ample for a person at nc typing a nick (nothing prompts them), and a silent socket's
# descriptor is freed twice as fast. Like nginx's client_header_timeout, only shorter.
CONNECT_RATE = 10.0  # new connections a second from one address, sustained (not loopback,
# by default): a client reconnecting in a loop, not a crowd behind one NAT, hits it.
CONNECT_BURST = 20  # new connections at once from one address: MAX_CLIENTS_PER_ADDRESS.
IDLE_PARK = 1.0  # seconds a logged-in client's reader waits for input before it parks the
# connection (no thread until it talks again): an idle thread costs ~20 KiB of memory, a new
# one ~0.1 ms once a client talks again. A client talking more often than this never parks.
IDLE_TIMEOUT = 300.0  # seconds of silence before the server pings a client.
PING_TIMEOUT = 60.0  # seconds a pinged client has to send anything back.
TLS_HANDSHAKE_TIMEOUT = 10.0  # seconds a TLS client has to finish its handshake: a few round
# trips, even over a slow link; nginx's ssl_handshake_timeout defaults to 60.
LINGER = 2.0  # seconds a connection the server ended (a kick, /quit, a timeout, the
# shutdown) stays open at most until its client has taken what it is owed: closed under
# bytes not sent yet, with input arriving, the kernel would reset it and drop them.
MAX_LINGERING = 256  # connections lingering at once at most: each holds a descriptor outside
# max_clients for up to LINGER seconds; past it, one is closed at once.
SHUTDOWN_GRACE = 1.5  # seconds the shutdown waits for accepted messages to be delivered,
# and then again for clients to take them and its notice, before it cuts them.
MAX_HANDSHAKES = 100  # TLS handshakes under way at once, each on a reader thread: past them
# a new TLS connection is closed (its client retries), so half-done handshakes cannot take
# the threads logged-in clients need (a parked one's next line needs one).


@dataclass
class Limits:
    """Every limit the server enforces; each has a default and a config key (``[limits]``),
    and most a flag of ``chatkit serve`` (named in its text)."""

    max_line: int = MAX_LINE_BYTES
    """Longest line a client may send, in bytes (``--max-line``)."""
    max_sendq: int = MAX_SENDQ_BYTES
    """Bytes queued for one client before it is disconnected (``--max-sendq``)."""
    slow_timeout: float = SLOW_TIMEOUT
    """Seconds a client's socket may stay full with more than ``max_sendq`` waiting
    before it is disconnected as a slow consumer (``--slow-timeout``)."""
    max_backlog: int = MAX_BACKLOG_BYTES
    """Bytes queued to clients that can take them (the server's own delay) before the
    server pauses reading from senders until half of it is sent (``--max-backlog``)."""
    max_message_lines: int = MAX_MESSAGE_LINES
    """Lines in one message (a JSON ``say`` whose text holds line breaks)."""
    greeting_delay: float = GREETING_DELAY
    """Seconds a new connection may stay silent before the server shows it a one-line
    prompt (for people at ``nc``); one at or above ``first_byte_timeout`` never does."""
    max_clients: int = MAX_CLIENTS
    """Connections in total (``--max-clients``)."""
    max_clients_per_address: int = MAX_CLIENTS_PER_ADDRESS
    """Connections from one IP address (``--max-clients-per-address``)."""
    limit_loopback: bool = False
    """Apply ``max_clients_per_address`` and ``connect_rate`` to loopback addresses too."""
    ipv6_prefix: int = IPV6_PREFIX
    """Leading bits of an IPv6 address that count as one address for the per-address
    limits (``max_clients_per_address``, ``connect_rate``, the ``accounts`` plugin's):
    a host is handed a whole /64 (:mod:`chatkit.addresses`)."""
    max_nick: int = MAX_NICK_CHARS
    """Longest nick, in characters."""
    max_room: int = MAX_ROOM_CHARS
    """Longest room name, in characters, ``#`` included."""
    max_rooms: int = MAX_ROOMS
    """Rooms one client may be in at once."""
    max_topic: int = MAX_TOPIC_CHARS
    """Longest room topic, in characters (IRC's ``TOPICLEN``)."""
    max_away: int = MAX_AWAY_CHARS
    """Longest away message, in characters (IRC's ``AWAYLEN``)."""
    max_pending: int = MAX_PENDING
    """Connections that have not sent their first byte; past it the oldest is closed
    (``--max-pending``)."""
    first_byte_timeout: float = FIRST_BYTE_TIMEOUT
    """Seconds a new connection may stay silent before it is closed
    (``--first-byte-timeout``)."""
    connect_rate: float = CONNECT_RATE
    """New connections a second from one address (``--connect-rate``); loopback is
    exempt unless ``limit_loopback``."""
    connect_burst: int = CONNECT_BURST
    """New connections from one address at once, before ``connect_rate`` applies."""
    login_timeout: float = LOGIN_TIMEOUT
    """Seconds a new connection has to log in (``--login-timeout``)."""
    free_lines: int = FREE_LINES
    """Lines a client may send at once that no flood control counts (pings, pongs, lines
    refused unread); then ``free_line_rate`` a second, the client paused meanwhile."""
    free_line_rate: float = FREE_LINE_RATE
    """Such lines a second, sustained."""
    max_recvq: int = MAX_RECVQ
    """Bytes a client may have sent that wait unread while it is paused (over flood
    control's rate, or past ``free_lines``); past them it is disconnected (excess flood)."""
    idle_park: float = IDLE_PARK
    """Seconds a reader waits for input before it parks its connection: it ends, and the
    connection waits with no thread until it is readable again (``--idle-park``)."""
    idle_timeout: float = IDLE_TIMEOUT
    """Seconds of silence before the server pings a client (``--idle-timeout``)."""
    ping_timeout: float = PING_TIMEOUT
    """Seconds a pinged client has to answer before it is dropped (``--ping-timeout``)."""
    tls_handshake_timeout: float = TLS_HANDSHAKE_TIMEOUT
    """Seconds a client on a TLS port has to finish its handshake, from its first byte,
    before it is closed (one that sends nothing is closed at ``first_byte_timeout``)."""
    max_handshakes: int = MAX_HANDSHAKES
    """TLS handshakes under way at once (each holds a reader thread); past them a new
    TLS connection is closed."""
    linger: float = LINGER
    """Seconds a connection the server ended stays open at most until its client has
    taken what is still queued or unsent for it; also what a client cut for not
    answering a ping has to take the error saying so."""
    max_lingering: int = MAX_LINGERING
    """Connections lingering (``linger``) at once; past them, one is closed at once."""
    shutdown_grace: float = SHUTDOWN_GRACE
    """Seconds the shutdown waits for accepted messages to be delivered, and then again
    for the clients to take them and the notice, before it cuts them."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or f.type == "bool":
                continue
            if not value > 0 or not math.isfinite(value):  # (not nan, nor inf: TOML has both)
                raise UsageError(f"limit {f.name} must be positive, not {value!r}")
        if self.ipv6_prefix > 128:
            raise UsageError(f"limit ipv6_prefix must be at most 128 bits, not {self.ipv6_prefix}")


@dataclass
class Config:
    """Everything a :class:`~chatkit.Server` is configured with."""

    host: str = "127.0.0.1"
    """Address to listen on."""
    port: int = 9090
    """Port to listen on; 0 picks a free one."""
    plugins: list[str] = field(default_factory=list)
    """Plugins to enable besides the defaults, in call order."""
    disable: list[str] = field(default_factory=list)
    """Default plugins to turn off."""
    default_room: str = "#general"
    """The room every client joins on login."""
    log_level: str = "info"
    """Logging level for ``chatkit serve``."""
    log_format: str = "text"
    """``text`` (for people) or ``json`` (one object per line: :mod:`chatkit.logs`)."""
    bidi: str = "replace"
    """Bidi controls in message text: ``replace`` (by U+FFFD), ``refuse`` (``bad_text``)
    or ``allow`` (see :data:`chatkit.protocol.BIDI_POLICIES`)."""
    limits: Limits = field(default_factory=Limits)
    """The server's limits."""
    plugin_config: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per-plugin settings: the ``[plugins.NAME]`` tables of the config file."""
    faces: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Listeners beside the line face: the ``[faces.NAME]`` tables of the config file
    (``irc``: ``host``, ``port``, ``server_name``, ``network``, ``max_who``,
    ``oper_delay``, ``oper_free_failures``, ``oper_max_delay``; ``web``: ``host``,
    ``port``, ``origins``, ``allow_no_origin``, ``hosts``, ``proxies``), checked here."""
    tls_cert: str | None = None
    """The TLS certificate chain (PEM file), ``--tls-cert`` or ``[tls] cert``: with
    :attr:`tls_key`, the server listens with TLS too (docs/operations.md, "TLS")."""
    tls_key: str | None = None
    """The private key of :attr:`tls_cert` (PEM file), ``--tls-key`` or ``[tls] key``."""
    tls_port: int | None = None
    """The line face's TLS port (``--tls-port``, ``[tls] port``); ``None``: 9443."""
    tls_only: bool = False
    """``--tls-only``, ``[tls] only``: every face ``chatkit serve`` makes listens on its
    TLS port alone (no port where passwords would travel in clear); needs
    :attr:`tls_cert`. (A :class:`~chatkit.Server` given its faces listens where they say.)"""
    source: Path | None = None
    """The file this config was read from, if any."""

    def plugin_settings(self, name: str) -> dict[str, Any]:
        """The settings table of plugin ``name`` (empty if the file has none)."""
        return dict(self.plugin_config.get(name, {}))

    def plugin_path(self, name: str, key: str = "db", beside: str | None = None) -> str | Path:
        """The file a plugin's setting names (``[plugins.NAME] KEY``), found from any
        working directory: a relative path is relative to the config file's directory;
        an absolute one, and ``:memory:``, are kept. Unset: with ``beside`` (a word),
        a file beside the ``history`` plugin's database (``history.BESIDE.sqlite3``
        for ``history.sqlite3``), else ``:memory:``. :class:`UsageError` if the
        setting is not a file name."""
        value = self.plugin_settings(name).get(key)
        if value is None:
            history = self.plugin_path("history") if beside is not None else ":memory:"
            if history == ":memory:":
                return history
            path = Path(history)
            return path.with_name(f"{path.stem}.{beside}{path.suffix or '.sqlite3'}")
        if not isinstance(value, str) or not value:
            raise UsageError(f"{name}: {key} must be a file name, not {value!r}")
        if value == ":memory:" or Path(value).is_absolute() or self.source is None:
            return value
        return self.source.parent / value

    def check(self, *, tls_files: bool = True) -> None:
        """Raise :class:`UsageError` for a value a server could not run with, whether
        it came from the file or a flag: a log level or format, the default room, a
        port, TLS's certificate without its key (or, with ``tls_files``, a file that
        is not there).

        A default room without its ``#`` gets one, as ``/join`` gives it.
        """
        where = f"{self.source}: " if self.source else ""
        if not isinstance(logging.getLevelName(self.log_level.upper()), int):
            raise UsageError(
                f"{where}unknown log level {self.log_level!r}; use debug, info, warning or error"
            )
        if self.log_format not in LOG_FORMATS:
            raise UsageError(
                f"{where}unknown log format {self.log_format!r}; use {' or '.join(LOG_FORMATS)}"
            )
        room = room_name(normalize(self.default_room.strip()))
        problem = valid_room(room, self.limits.max_room)
        if problem:
            raise UsageError(f"{where}bad default_room {self.default_room!r}: {problem}")
        self.default_room = room
        _check_port(f"{where}port", self.port)
        if self.tls_port is not None:
            _check_port(f"{where}TLS port", self.tls_port)
        for name, table in self.faces.items():
            for key in ("port", "tls_port"):
                if table.get(key) is not None:
                    _check_port(f"{where}[faces.{name}] {key}", table[key])
        if bool(self.tls_cert) != bool(self.tls_key):
            missing = "key" if self.tls_cert else "certificate"
            raise UsageError(
                f"{where}TLS needs both a certificate and its key: the {missing} is missing"
                " (--tls-cert and --tls-key, or [tls] cert and key)"
            )
        if self.tls_only and not self.tls_cert:
            raise UsageError(
                f"{where}TLS only needs a certificate (--tls-cert and --tls-key, or [tls] cert"
                " and key)"
            )
        for path in (self.tls_cert, self.tls_key) if tls_files else ():
            if path and not Path(path).is_file():
                raise UsageError(f"{where}TLS: {path} does not exist")

    def unused_tls_ports(self) -> list[str]:
        """The TLS ports set without a certificate, which nothing listens on (warned of:
        the certificate may come from flags the file does not show)."""
        if self.tls_cert:
            return []
        ports = [("[tls] port", self.tls_port)]
        ports += [(f"[faces.{n}] tls_port", t.get("tls_port")) for n, t in self.faces.items()]
        return [
            f"{what} = {port} is unused: TLS needs a certificate ([tls] cert and key, or "
            "--tls-cert and --tls-key)"
            for what, port in ports
            if port is not None
        ]


def _check_port(where: str, port: int) -> None:
    if not 0 <= port <= 65535:
        raise UsageError(f"{where} must be 0 to 65535 (0: any free one), not {port}")


_SERVER_KEYS = {
    "host",
    "port",
    "plugins",
    "disable",
    "default_room",
    "log_level",
    "log_format",
    "bidi",
}
LOG_FORMATS = ("text", "json")
_FACE_KEYS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "irc": {
        "host": str,
        "port": int,
        "server_name": str,
        "network": str,
        "operators": dict,
        "tls_port": int,
        "max_who": int,
        "oper_delay": (int, float),
        "oper_free_failures": int,
        "oper_max_delay": (int, float),
    },
    "web": {
        "host": str,
        "port": int,
        "origins": list,
        "allow_no_origin": bool,
        "tls_port": int,
        "hosts": list,
        "proxies": list,
    },
}


_TLS_KEYS: dict[str, type] = {"cert": str, "key": str, "port": int, "only": bool}

_TYPE_NAMES = {
    bool: "true or false",
    int: "an integer",
    str: "a string",
    list: "a list",
    dict: "a table",
}


_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def _is_origin(text: str) -> bool:
    """Whether ``text`` is a browser's Origin: a scheme and a host (and a port), with
    no user, path, query or fragment (``chrome-extension://ID`` is one too)."""
    if "?" in text or "#" in text:
        return False
    try:
        parts = urllib.parse.urlsplit(text)
        _ = parts.port  # (a bad port raises ValueError)
    except ValueError:
        return False
    return bool(parts.scheme and parts.hostname) and not (parts.username or parts.path)


def _check_type(where: str, value: Any, expected: type | tuple[type, ...]) -> None:
    ok = False if isinstance(value, bool) and expected is not bool else isinstance(value, expected)
    if not ok:
        wanted = _TYPE_NAMES.get(expected, "a number") if isinstance(expected, type) else "a number"
        raise UsageError(f"{where} must be {wanted}, not {value!r}")


def load_config(path: Path | str) -> Config:
    """Read a TOML config file; raise :class:`UsageError` naming any bad key or value."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise UsageError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"config file {path} is not UTF-8 (a byte {exc.object[exc.start]:#04x} at offset "
            f"{exc.start}): save it as UTF-8"
        ) from None
    return config_from_dict(data, source=path)


def config_from_dict(data: dict[str, Any], source: Path | None = None) -> Config:
    """Build a :class:`Config` from the parsed TOML document ``data``."""
    where = f"{source}: " if source else ""
    unknown = set(data) - {"server", "limits", "plugins", "faces", "tls"}
    if unknown:
        raise UsageError(
            f"{where}unknown section(s) {', '.join(sorted(unknown))}; "
            "expected [server], [limits], [tls], [faces.NAME] and [plugins.NAME]"
        )
    config = Config(source=source)
    server = data.get("server", {})
    _check_type(f"{where}[server]", server, dict)
    for key, value in server.items():
        if key not in _SERVER_KEYS:
            raise UsageError(f"{where}{_unknown(f'key server.{key}', key, _SERVER_KEYS)}")
        if key == "port":
            _check_type(f"{where}[server] port", value, int)
        elif key in ("plugins", "disable"):
            _check_type(f"{where}[server] {key}", value, list)
            for item in value:
                _check_type(f"{where}[server] {key} items", item, str)
            value = list(value)
        else:
            _check_type(f"{where}[server] {key}", value, str)
            if key == "bidi" and value not in BIDI_POLICIES:
                raise UsageError(
                    f"{where}[server] bidi must be one of {', '.join(BIDI_POLICIES)}, not {value!r}"
                )
            if key == "log_format" and value not in LOG_FORMATS:
                raise UsageError(
                    f"{where}[server] log_format must be one of {', '.join(LOG_FORMATS)}, "
                    f"not {value!r}"
                )
        setattr(config, key, value)
    limits = data.get("limits", {})
    _check_type(f"{where}[limits]", limits, dict)
    known = {f.name: f for f in dataclasses.fields(Limits)}
    values: dict[str, Any] = {}
    for key, value in limits.items():
        if key not in known:
            raise UsageError(f"{where}{_unknown(f'key limits.{key}', key, known)}")
        default = getattr(Limits(), key)
        if isinstance(default, bool):
            _check_type(f"{where}[limits] {key}", value, bool)
        elif isinstance(default, float):
            _check_type(f"{where}[limits] {key}", value, (int, float))
            value = float(value)
        else:
            _check_type(f"{where}[limits] {key}", value, int)
        values[key] = value
    try:
        config.limits = Limits(**values)
    except UsageError as exc:
        raise UsageError(f"{where}{exc}") from None
    plugins = data.get("plugins", {})
    _check_type(f"{where}[plugins]", plugins, dict)
    for name, table in plugins.items():
        _check_type(f"{where}[plugins.{name}]", table, dict)
    config.plugin_config = {name: dict(table) for name, table in plugins.items()}
    faces = data.get("faces", {})
    _check_type(f"{where}[faces]", faces, dict)
    for name, table in faces.items():
        if name not in _FACE_KEYS:
            expected = ", ".join(f"[faces.{known}]" for known in sorted(_FACE_KEYS))
            raise UsageError(f"{where}unknown face [faces.{name}]; expected {expected}")
        _check_type(f"{where}[faces.{name}]", table, dict)
        keys = _FACE_KEYS[name]
        for key, value in table.items():
            if key not in keys:
                raise UsageError(f"{where}{_unknown(f'key faces.{name}.{key}', key, keys)}")
            _check_type(f"{where}[faces.{name}] {key}", value, keys[key])
            if key in ("origins", "hosts", "proxies"):
                for item in value:
                    _check_type(f"{where}[faces.{name}] {key} items", item, str)
            if key == "origins":
                for item in value:
                    if item not in ("*", "null") and not _is_origin(item):
                        # (A browser's Origin is scheme://host[:port]: nothing else matches.)
                        raise UsageError(
                            f"{where}[faces.{name}] origins: {item!r} is not an origin "
                            '(https://chat.example.org, http://host:8080, or "*")'
                        )
            if key == "proxies":
                for item in value:
                    try:
                        ipaddress.ip_network(item, strict=False)
                    except ValueError:
                        raise UsageError(
                            f"{where}[faces.{name}] proxies: {item!r} is not an address or "
                            "a network (127.0.0.1, 10.0.0.0/8, ::1)"
                        ) from None
            if key == "max_who" and value < 1:
                raise UsageError(f"{where}[faces.{name}] max_who must be at least 1, not {value}")
            if key in ("oper_delay", "oper_free_failures", "oper_max_delay") and value < 0:
                raise UsageError(f"{where}[faces.{name}] {key} must be at least 0, not {value}")
            if key in ("server_name", "network") and (not value or " " in value):
                raise UsageError(f"{where}[faces.{name}] {key} must be one word, not {value!r}")
            if key == "operators":
                for who, password in value.items():
                    _check_type(f"{where}[faces.{name}.operators] {who}", password, str)
                    # (sha256sum's "HEX  -" is taken too: its first word is the digest.)
                    digest = (password[7:].split() or [""])[0]
                    if password.startswith("sha256:") and not _SHA256.fullmatch(digest):
                        raise UsageError(
                            f"{where}[faces.{name}.operators] {who}: sha256: is followed by "
                            "the 64 hex digits of the password's SHA-256 (printf %s PASSWORD "
                            f"| sha256sum), not {digest!r}"
                        )
        config.faces[name] = dict(table)
    tls = data.get("tls", {})
    _check_type(f"{where}[tls]", tls, dict)
    for key, value in tls.items():
        if key not in _TLS_KEYS:
            raise UsageError(f"{where}{_unknown(f'key tls.{key}', key, tuple(_TLS_KEYS))}")
        _check_type(f"{where}[tls] {key}", value, _TLS_KEYS[key])
        if key in ("cert", "key") and source is not None:
            value = str(source.parent / value)  # relative to the config file
        setattr(config, f"tls_{key}", value)
    return config


def _unknown(what: str, key: str, known: Iterable[str]) -> str:
    """The words for an unknown ``key``: ``unknown key limits.max_client (did you mean
    max_clients?); expected one of ...``."""
    names = sorted(known)
    close = difflib.get_close_matches(key, names, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown {what}{hint}; expected one of {', '.join(names)}"


def check_settings(plugin: str, settings: dict[str, Any], known: Iterable[str]) -> None:
    """Raise :class:`UsageError` naming any key of ``[plugins.PLUGIN]`` not in ``known``."""
    known = sorted(known)
    unknown = sorted(set(settings) - set(known))
    if unknown:
        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UsageError(
            f"{plugin}: unknown setting(s) {', '.join(unknown)}{hint}; expected {', '.join(known)}"
        )


def number_setting(
    plugin: str,
    settings: dict[str, Any],
    key: str,
    default: float,
    minimum: float,
    maximum: float = math.inf,
) -> float:
    """The number ``settings[key]`` (or ``default``); :class:`UsageError` if below
    ``minimum`` or above ``maximum`` (a port's 65535)."""
    value = settings.get(key, default)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not minimum <= value <= maximum  # (nan too)
        or not math.isfinite(value)
    ):
        bounds = (
            f"of at least {minimum:g}"
            if maximum == math.inf
            else f"from {minimum:g} to {maximum:g}"
        )
        raise UsageError(f"{plugin}: {key} must be a number {bounds}, not {value!r}")
    return float(value)
