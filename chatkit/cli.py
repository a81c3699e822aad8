"""The ``chatkit`` command: a thin layer over :class:`chatkit.Server` and :mod:`chatkit.plugins`.

All user-facing output of chatkit goes through here; the library only logs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import json
import logging
import os
import select
import selectors
import signal
import socket
import ssl
import sys
import sysconfig
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from time import monotonic
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import pluggy
import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperCommand, TyperGroup

from chatkit import __version__
from chatkit.builtins.history import serve_db
from chatkit.client import (
    LOCAL_ERRORS,
    MAX_SERVER_LINE,
    Client,
    ClientError,
    ConnectionLost,
    LoginRefused,
    NoAnswer,
    RoomRefused,
    printable,
    printable_json,
    room_name,
    tls_client_context,
)
from chatkit.codecs import render_text
from chatkit.config import Config, load_config
from chatkit.errors import UsageError
from chatkit.faces import Face
from chatkit.faces.irc.face import (
    MAX_WHO,
    NETWORK_NAME,
    OPER_DELAY,
    OPER_FREE,
    OPER_MAX_DELAY,
    SERVER_NAME,
    IrcFace,
)
from chatkit.faces.line import LineFace
from chatkit.logs import HUMAN_FORMAT, JsonFormatter
from chatkit.plugins import (
    DISTRIBUTION,
    build_plugin_manager,
    check_plugin_sections,
    check_plugin_settings,
    hook_names,
    list_plugins,
    suggest_hook,
)
from chatkit.protocol import LineDecoder, LineTooLong
from chatkit.scaffold import create_plugin, installed_checkout, plugin_name
from chatkit.server import IRC_TLS_PORT, TLS_PORT, WEB_TLS_PORT, Server, TlsFace, tls_context

__all__ = ["app", "main"]

DEFAULT_CONFIG = Path("chatkit.toml")


class _Command(TyperCommand):
    """A command whose ``--help`` shows no ``<bool>`` type beside it: it takes no value."""

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option


class _Group(TyperGroup):
    """A command group whose ``--help`` shows no ``<bool>`` type beside it."""

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option


app = typer.Typer(
    cls=_Group,
    name="chatkit",
    help="A plugin-extensible chat server. Run one with 'chatkit serve'; talk to it with nc.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(exc: UsageError) -> typer.Exit:
    typer.echo(f"Error: {exc}{_where(exc.__cause__)}", err=True)
    return typer.Exit(2)


def _where(cause: BaseException | None) -> str:
    """Where a plugin's exception behind a startup error was raised (the innermost
    frame of the plugin's code, not chatkit's, pluggy's or Python's own:
    `` (at mine/shout.py:12, in chatkit_configure)``), or nothing."""
    if cause is None or isinstance(cause, UsageError) or cause.__traceback__ is None:
        return ""
    frames = [f for f in traceback.extract_tb(cause.__traceback__) if _plugin_code(f.filename)]
    if not frames:
        return ""
    # The first frame past chatkit's is the plugin's (chatkit called it); the innermost
    # in its package (or its module, if it is one alone) is where it went wrong, not a
    # line of a library it called (redis-py's, say).
    entry = Path(frames[0].filename)
    home = entry.parent
    if home.name in ("site-packages", "dist-packages") or not (home / "__init__.py").exists():
        home = entry
    else:
        while (home.parent / "__init__.py").exists():  # (its top package: pkg of pkg.hooks)
            home = home.parent
    mine = [f for f in frames if Path(f.filename) == home or home in Path(f.filename).parents]
    frame = mine[-1]
    return f" (at {frame.filename}:{frame.lineno}, in {frame.name})"


_CHATKIT = str(Path(__file__).parent) + os.sep
_BUILTINS = str(Path(__file__).parent / "builtins") + os.sep
_PLUGGY = str(Path(pluggy.__file__).parent) + os.sep
_STDLIB = str(Path(sysconfig.get_paths()["stdlib"])) + os.sep


def _plugin_code(filename: str) -> bool:
    """Whether ``filename`` holds a plugin's code: not chatkit's (but its builtins,
    which are plugins), pluggy's, or Python's own (the standard library, importlib's
    frozen modules; a package installed beside them is a plugin's)."""
    if filename.startswith(_BUILTINS):
        return True
    if filename.startswith(_STDLIB):
        return "site-packages" in filename or "dist-packages" in filename
    return not filename.startswith((_CHATKIT, _PLUGGY, "<frozen "))


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"chatkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_version_callback, metavar=""
        ),
    ] = False,
) -> None:
    """A plugin-extensible chat server. Run one with 'chatkit serve'; talk to it with nc."""


def _build_config(
    config_path: Path | None,
    overrides: dict[str, Any],
    *,
    tls_files: bool = True,
    warnings: list[str] | None = None,
) -> Config:
    """The config of ``config_path`` (or ./chatkit.toml) with the flags' ``overrides``,
    checked (:meth:`Config.check`; with ``tls_files``, the certificate's files too).
    What it warns of goes to ``warnings`` if given (a server logs it, in its log's
    format), else to standard error."""
    path = config_path or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    config = load_config(path) if path else Config()
    for key in (
        "host",
        "port",
        "log_level",
        "log_format",
        "default_room",
        "tls_cert",
        "tls_key",
        "tls_port",
        "tls_only",
    ):
        if overrides.get(key) is not None:
            setattr(config, key, overrides[key])
    config.plugins = [*config.plugins, *overrides["plugins"]]
    config.disable = [*config.disable, *overrides["disable"]]
    # (Its tables are checked once the flags that enable plugins are in: below.)
    tables = list(config.plugin_config)
    history = config.plugin_config.setdefault("history", {})
    if overrides.get("db"):
        db = overrides["db"]
        if db != ":memory:":
            db = str(Path(db).absolute())
        history["db"] = db
    elif "db" not in history:
        # The plugin alone keeps history in memory; a served server keeps its own file.
        history["db"] = serve_db(config)
    if overrides.get("metrics_port") is not None:
        config.plugin_config.setdefault("metrics", {})["port"] = overrides["metrics_port"]
        config.plugins = [*config.plugins, "metrics"]
    if overrides.get("redis") is not None:
        config.plugin_config.setdefault("cluster", {})["url"] = overrides["redis"]
        config.plugins = [*config.plugins, "cluster"]
    if overrides.get("log_messages"):
        config.plugin_config.setdefault("log", {})["messages"] = True
    for warning in [*check_plugin_sections(config, tables), *config.unused_tls_ports()]:
        if warnings is not None:
            warnings.append(warning)
        else:
            typer.echo(f"Warning: {warning}", err=True)
    limits = config.limits
    for key, value in overrides["limits"].items():
        if value is not None:
            setattr(limits, key, value)
    limits.__post_init__()  # re-check the flags' values
    config.check(tls_files=tls_files)
    return config


ClientPort = Annotated[
    int | None,
    typer.Option(help="The server's port. \\[default: 9090, or 9443 with --tls]", metavar="PORT"),
]


def _client_port(port: int | None, tls: bool) -> int:
    """The port a client goes to: the one given, or the server's default for it (the
    line face's, or its TLS port's with ``--tls``)."""
    if port is not None:
        return port
    return TLS_PORT if tls else Config.port  # (the dataclass field's default)


PluginOption = Annotated[
    list[str] | None,
    typer.Option(
        "--plugin",
        "-p",
        help="Enable a plugin: a builtin, an installed one, or a module path (pkg.mod[:obj]). "
        "Repeat for more; they run in the order given.",
        metavar="NAME",
    ),
]
NoPluginOption = Annotated[
    list[str] | None,
    typer.Option(
        "--no-plugin", help="Disable a default plugin (e.g. log). Repeatable.", metavar="NAME"
    ),
]


@app.command(cls=_Command)
def serve(
    host: Annotated[
        str | None,
        typer.Option(help="Address to listen on. \\[default: 127.0.0.1]", metavar="HOST"),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            help="Port to listen on; 0 picks a free one. \\[default: 9090]",
            metavar="PORT",
            min=0,
            max=65535,
        ),
    ] = None,
    plugin: PluginOption = None,
    no_plugin: NoPluginOption = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="TOML config file. \\[default: ./chatkit.toml if it exists]",
            dir_okay=False,
            metavar="FILE",
        ),
    ] = None,
    log_level: Annotated[
        str | None,
        typer.Option(help="debug, info, warning or error. \\[default: info]", metavar="LEVEL"),
    ] = None,
    default_room: Annotated[
        str | None,
        typer.Option(help="The room every client joins. \\[default: #general]", metavar="ROOM"),
    ] = None,
    max_line: Annotated[
        int | None,
        typer.Option(
            help="Longest line a client may send, in bytes. \\[default: 8192]", metavar="BYTES"
        ),
    ] = None,
    max_sendq: Annotated[
        int | None,
        typer.Option(
            help="Bytes queued for a client before it is cut off. \\[default: 1048576]",
            metavar="BYTES",
        ),
    ] = None,
    slow_timeout: Annotated[
        float | None,
        typer.Option(
            help="Seconds a client's socket may stay full with more than --max-sendq "
            "waiting before it is cut. \\[default: 5]",
            metavar="SECONDS",
        ),
    ] = None,
    max_backlog: Annotated[
        int | None,
        typer.Option(
            help="Bytes the server may be behind in sending before it pauses reading "
            "from senders. \\[default: 16777216]",
            metavar="BYTES",
        ),
    ] = None,
    max_clients: Annotated[
        int | None, typer.Option(help="Connections in total. \\[default: 10000]", metavar="N")
    ] = None,
    max_clients_per_address: Annotated[
        int | None,
        typer.Option(
            help="Connections per IP address, loopback exempt. \\[default: 20]", metavar="N"
        ),
    ] = None,
    max_pending: Annotated[
        int | None,
        typer.Option(
            help="Connections that have sent nothing yet; past it the oldest is closed. "
            "\\[default: 1000]",
            metavar="N",
        ),
    ] = None,
    first_byte_timeout: Annotated[
        float | None,
        typer.Option(
            help="Seconds a new connection may stay silent. \\[default: 15]", metavar="SECONDS"
        ),
    ] = None,
    connect_rate: Annotated[
        float | None,
        typer.Option(
            help="New connections a second per IP address, loopback exempt. \\[default: 10]",
            metavar="N",
        ),
    ] = None,
    login_timeout: Annotated[
        float | None,
        typer.Option(help="Seconds a connection has to log in. \\[default: 30]", metavar="SECONDS"),
    ] = None,
    idle_park: Annotated[
        float | None,
        typer.Option(
            help="Seconds without input before a client's reader thread ends until it "
            "talks again. \\[default: 1]",
            metavar="SECONDS",
        ),
    ] = None,
    idle_timeout: Annotated[
        float | None,
        typer.Option(
            help="Seconds of silence before a client is pinged. \\[default: 300]", metavar="SECONDS"
        ),
    ] = None,
    ping_timeout: Annotated[
        float | None,
        typer.Option(
            help="Seconds a pinged client has to answer. \\[default: 60]", metavar="SECONDS"
        ),
    ] = None,
    irc_port: Annotated[
        int | None,
        typer.Option(
            help="Also speak IRC on this port (0: any free one), for irssi, WeeChat or "
            "HexChat (docs/irc.md). \\[default: \\[faces.irc] port in the config file, else off]",
            metavar="PORT",
            min=0,
            max=65535,
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Serve Prometheus metrics on http://127.0.0.1:PORT/metrics (0: any free "
            "port; docs/operations.md). \\[default: off]",
            metavar="PORT",
            min=0,
            max=65535,
        ),
    ] = None,
    redis: Annotated[
        str | None,
        typer.Option(
            help="Join the cluster of servers sharing this Redis "
            "(redis://HOST:6379/0; docs/cluster.md): the builtin plugin cluster. "
            "\\[default: off]",
            metavar="URL",
        ),
    ] = None,
    log_format: Annotated[
        str | None,
        typer.Option(
            help="text (for people) or json (one object per line, for log tools). "
            "\\[default: text]",
            metavar="FORMAT",
        ),
    ] = None,
    log_messages: Annotated[
        bool,
        typer.Option(
            "--log-messages",
            help="Log what people say (at debug level); without it, never.",
            metavar="",
        ),
    ] = False,
    pid_file: Annotated[
        Path | None,
        typer.Option(
            help="Write the server's process id to this file while it runs.", metavar="PATH"
        ),
    ] = None,
    web_port: Annotated[
        int | None,
        typer.Option(
            help="Also serve the chat page and its WebSocket on this port (0: any free "
            "one), for people with a browser (docs/web.md). "
            "\\[default: \\[faces.web] port in the config file, else off]",
            metavar="PORT",
            min=0,
            max=65535,
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            help="Also listen with TLS, with this certificate chain (PEM); needs --tls-key. "
            "Reloaded on SIGHUP. \\[default: \\[tls] cert in the config file, else no TLS]",
            metavar="FILE",
        ),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option(help="The private key of --tls-cert (PEM).", metavar="FILE"),
    ] = None,
    tls_port: Annotated[
        int | None,
        typer.Option(
            help="The TLS port of the line protocol. \\[default: 9443; 0 with --port 0]",
            metavar="PORT",
            min=0,
            max=65535,
        ),
    ] = None,
    irc_tls_port: Annotated[
        int | None,
        typer.Option(
            help="The TLS port of IRC, with a certificate (without --irc-port: IRC over "
            "TLS only). \\[default: 6697; 0 with --irc-port 0]",
            metavar="PORT",
            min=0,
            max=65535,
        ),
    ] = None,
    tls_only: Annotated[
        bool,
        typer.Option(
            "--tls-only",
            help="Listen on TLS ports alone: the line protocol on --tls-port, IRC on "
            "--irc-tls-port, the page on \\[faces.web] tls_port; no chat port in clear "
            "(the metrics and webhooks plugins' HTTP ports stay plain). "
            "\\[default: \\[tls] only in the config file, else off]",
            metavar="",
        ),
    ] = False,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="The history database (SQLite file, or :memory:). "
            "\\[default: one file per server in the user data directory, "
            "e.g. history-127.0.0.1-9090.sqlite3; see docs/operations.md]",
            metavar="PATH",
        ),
    ] = None,
) -> None:
    """Run a chat server until Ctrl+C or SIGTERM.

    Clients connect with 'nc HOST PORT' (type a nick, then chat) or speak the JSON
    protocol (docs/protocol.md). Flags win over the config file.
    """
    overrides: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "default_room": default_room,
        "plugins": plugin or [],
        "disable": no_plugin or [],
        "db": db,
        "log_format": log_format,
        "log_messages": log_messages,
        "metrics_port": metrics_port,
        "redis": redis,
        "tls_cert": None if tls_cert is None else str(tls_cert.absolute()),
        "tls_key": None if tls_key is None else str(tls_key.absolute()),
        "tls_port": tls_port,
        "tls_only": True if tls_only else None,
        "limits": {
            "max_line": max_line,
            "max_sendq": max_sendq,
            "max_backlog": max_backlog,
            "slow_timeout": slow_timeout,
            "max_clients": max_clients,
            "max_clients_per_address": max_clients_per_address,
            "max_pending": max_pending,
            "first_byte_timeout": first_byte_timeout,
            "connect_rate": connect_rate,
            "login_timeout": login_timeout,
            "idle_park": idle_park,
            "idle_timeout": idle_timeout,
            "ping_timeout": ping_timeout,
        },
    }
    try:
        warnings: list[str] = []
        cfg = _build_config(config, overrides, warnings=warnings)
        if tls_port is not None and cfg.tls_cert is None:
            raise UsageError(
                "--tls-port needs a certificate (--tls-cert and --tls-key, or [tls] cert and key)"
            )
        level = logging.getLevelName(cfg.log_level.upper())  # an int: checked
        handler = logging.StreamHandler(sys.stderr)
        if cfg.log_format == "json":
            handler.setFormatter(JsonFormatter())
        else:
            handler.setFormatter(logging.Formatter(HUMAN_FORMAT))
            # In the text format, facts the banner prints are not logged twice.
            handler.addFilter(_said_by_banner)
        logging.basicConfig(level=level, handlers=[handler], force=True)
        for warning in warnings:
            logging.getLogger("chatkit.config").warning("%s", warning)
        server = Server(config=cfg, faces=_faces(cfg, irc_port, irc_tls_port, web_port))
    except UsageError as exc:
        raise _fail(exc) from None
    server.reloader = functools.partial(_reload, server, config, overrides, handler)

    def reload() -> None:
        path = config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
        reload_log.info(
            "SIGHUP: reloading %s", path or "(no config file: the flags, the TLS files)"
        )
        try:
            notes = _reload(server, config, overrides, handler)
        except UsageError as exc:
            reload_log.error("reload failed, the old config stays: %s", exc)
        else:
            reload_log.info("reloaded: %s", "; ".join(notes) if notes else "nothing changed")

    # From here on SIGINT, SIGTERM (stop) and SIGHUP (reload) are only noted; the
    # main thread acts on them once the server is up (a stop during start() stops it
    # as soon as it is).
    signals = _Signals()
    try:
        try:
            # The kernel may hand SIGINT or SIGTERM to any thread that does not block
            # it, and Python runs the handler only once the main thread wakes: blocked
            # in serve_forever(), it might never. So the server's threads (and the ones
            # they start, which inherit the mask) block both; only this thread takes them.
            _block_stop_signals(True)
            try:
                server.start()
            finally:
                _block_stop_signals(False)
        except UsageError as exc:
            raise _fail(exc) from None
        host_, port_ = server.address
        everywhere = host_ in _ANY_ADDRESS
        where = " (all interfaces)" if everywhere else ""
        if "line" not in server.addresses:
            where += ", TLS only"
        typer.echo(f"chatkit {__version__} listening on {host_}:{port_}{where}")
        typer.echo(f"plugins: {', '.join(info.name for info in server.plugin_infos)}")
        history = server.pluginmanager.get_plugin("history")
        if history is not None and history.store is not None:
            path = history.store.path
            if path == ":memory:":
                path = "in memory only, gone when the server stops (--db FILE keeps it)"
            typer.echo(f"history: {path}")
        if cfg.source:
            typer.echo(f"config: {cfg.source}")
        hosts = local_addresses(socket.AF_INET6 if ":" in host_ else socket.AF_INET)
        if "line" in server.addresses:
            tries = " or ".join(f"nc {h} {port_}" for h in (hosts if everywhere else [host_]))
            typer.echo(f"try: {tries}   (type a nick, then chat; Ctrl+C here stops it)")
        if "line-tls" in server.addresses:
            tls_host, tls_port_ = server.addresses["line-tls"]
            name = _CERTIFICATE_NAME if tls_host in _ANY_ADDRESS else tls_host
            typer.echo(
                f"TLS: {tls_host}:{tls_port_}{_everywhere(tls_host)}   (chatkit join --tls "
                f"--host {name} --port {tls_port_})"
            )
        if "irc" in server.addresses:
            irc_host, irc_port_ = server.addresses["irc"]
            irc_hosts = (
                local_addresses(_family(irc_host)) if irc_host in _ANY_ADDRESS else [irc_host]
            )
            urls = " or ".join(f"irc://{_bracketed(h)}:{irc_port_}" for h in irc_hosts)
            typer.echo(f"IRC: {urls}   (irssi: /connect {irc_hosts[0]} {irc_port_})")
        if "web" in server.addresses:
            web_host, web_port_ = server.addresses["web"]
            pages = hosts if web_host in _ANY_ADDRESS else [web_host]
            urls = " or ".join(f"http://{f'[{h}]' if ':' in h else h}:{web_port_}/" for h in pages)
            typer.echo(f"web: {urls}   (open it in a browser)")
        metrics = server.pluginmanager.get_plugin("metrics")
        if metrics is not None and metrics.address is not None:
            m_host, m_port = metrics.address
            typer.echo(f"metrics: http://{m_host}:{m_port}/metrics")
        cluster = server.pluginmanager.get_plugin("cluster")
        if cluster is not None and cluster.node:
            typer.echo(f"cluster: node {cluster.node} on {cluster.url} (lease {cluster.lease:g}s)")
        if "irc-tls" in server.addresses:
            irc_host, irc_port_ = server.addresses["irc-tls"]
            # irssi checks a certificate by name only (an IP address never matches).
            name = _tls_name(irc_host)
            shown = _CERTIFICATE_NAME if irc_host in _ANY_ADDRESS else _bracketed(irc_host)
            typer.echo(
                f"IRC over TLS: ircs://{shown}:{irc_port_}{_everywhere(irc_host)}   "
                f"(irssi: /connect -tls {name} {irc_port_})"
            )
        if "web-tls" in server.addresses:
            web_host, web_port_ = server.addresses["web-tls"]
            shown = _CERTIFICATE_NAME if web_host in _ANY_ADDRESS else _bracketed(web_host)
            typer.echo(f"web over TLS: https://{shown}:{web_port_}/{_everywhere(web_host)}")
        if pid_file is not None:
            _write_pid_file(pid_file)
        sys.stdout.flush()
        # The server runs in its threads; this waits for a signal, or for the server
        # to stop itself (Server.fail).
        signals.serve(server, reload)
    finally:
        signals.close()  # a second Ctrl+C must not break shutdown: ignored from now on
        server.shutdown()
        if pid_file is not None:
            _remove_pid_file(pid_file)
    if server.failure is not None:
        typer.echo(f"chatkit stopped: {server.failure}", err=True)
        raise typer.Exit(1)
    typer.echo("stopped")


_ANY_ADDRESS = ("0.0.0.0", "::", "")  # listening on every interface
_CERTIFICATE_NAME = "NAME"  # what the banner shows for a TLS address to give out


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _bracketed(host: str) -> str:
    """``host`` as a URL has it (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host else host


def _everywhere(host: str) -> str:
    """What the banner says of a TLS port on every interface: its clients connect by
    the name the certificate holds, which the banner cannot know (no address matches)."""
    if host not in _ANY_ADDRESS:
        return ""
    return f" (all interfaces; {_CERTIFICATE_NAME}: the name your certificate holds)"


def _tls_name(host: str) -> str:
    """The name irssi connects to over TLS for a server listening on ``host``: it
    checks the certificate by name (an IP address never matches)."""
    if host in ("127.0.0.1", "::1"):
        return "localhost"
    if host in _ANY_ADDRESS:
        return _CERTIFICATE_NAME
    return host


def _write_pid_file(path: Path) -> None:
    """Write this process's id to ``path`` (atomically: a reader never sees half)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        temporary.write_text(f"{os.getpid()}\n")
        temporary.replace(path)
    except OSError as exc:
        raise _fail(UsageError(f"cannot write the pid file {path}: {exc.strerror}")) from None


def _remove_pid_file(path: Path) -> None:
    """Remove ``path`` if it still names this process."""
    try:
        if path.read_text().strip() == str(os.getpid()):
            path.unlink()
    except OSError:
        pass


def _faces(
    config: Config,
    irc_port: int | None,
    irc_tls_port: int | None = None,
    web_port: int | None = None,
) -> list[Face]:
    """The line face, the IRC face if ``--irc-port`` or ``[faces.irc] port`` asks, and
    the web face if ``--web-port`` or ``[faces.web] port`` does; with a certificate,
    each also on a TLS port of its own. An IRC or web face given a ``tls_port`` and no
    ``port`` listens on TLS alone (no port where passwords would travel in clear), and
    with ``tls_only`` every face does (a plain port asked for is then a mistake)."""
    tls = config.tls_cert is not None
    irc = config.faces.get("irc", {})
    web = config.faces.get("web", {})
    if config.tls_only:
        asked = [
            ("--irc-port", irc_port),
            ("[faces.irc] port", irc.get("port")),
            ("--web-port", web_port),
            ("[faces.web] port", web.get("port")),
        ]
        for what, plain in asked:
            if plain is not None:
                instead = "--irc-tls-port" if "irc" in what else "[faces.web] tls_port"
                raise UsageError(
                    f"{what} would listen in clear, and TLS only (--tls-only, [tls] only) says"
                    f" no port does: use {instead}"
                )
    # A port asked for on the command line that nothing would listen on is a mistake to
    # say, not to ignore (the config file's are warned of: Config.unused_tls_ports).
    if irc_tls_port is not None and not tls:
        raise UsageError(
            "--irc-tls-port needs a certificate (--tls-cert and --tls-key, or [tls] cert and key)"
        )
    line = LineFace()
    faces: list[Face] = [] if config.tls_only else [line]
    if tls:
        port = config.tls_port
        faces.append(TlsFace(line, port=port if port is not None else _tls_port(config.port)))
    port = irc_port if irc_port is not None else irc.get("port")
    secure = irc_tls_port if irc_tls_port is not None else irc.get("tls_port")
    if port is not None or (tls and secure is not None):
        face: Face = IrcFace(
            host=irc.get("host"),
            port=port if port is not None else secure,
            server_name=irc.get("server_name", SERVER_NAME),
            network=irc.get("network", NETWORK_NAME),
            operators=irc.get("operators", {}),
            max_who=irc.get("max_who", MAX_WHO),
            oper_delay=irc.get("oper_delay", OPER_DELAY),
            oper_free_failures=irc.get("oper_free_failures", OPER_FREE),
            oper_max_delay=irc.get("oper_max_delay", OPER_MAX_DELAY),
        )
        if port is not None:
            faces.append(face)
        if tls:
            if secure is None:
                secure = 0 if port == 0 else IRC_TLS_PORT
            faces.append(TlsFace(face, port=secure))
    port = web_port if web_port is not None else web.get("port")
    secure = web.get("tls_port")
    if port is not None or (tls and secure is not None):
        from chatkit.faces.web import WebFace  # (websockets: imported when a page is served)

        face = WebFace(
            host=web.get("host"),
            port=port if port is not None else secure,
            origins=web.get("origins", ()),
            allow_no_origin=web.get("allow_no_origin", False),
            hosts=web.get("hosts", ()),
            proxies=web.get("proxies", ()),
        )
        if port is not None:
            faces.append(face)
        if tls:
            if secure is None:
                secure = 0 if port == 0 else WEB_TLS_PORT
            faces.append(TlsFace(face, port=secure))
    _check_clashes(config, faces)
    return faces


def _check_clashes(config: Config, faces: list[Face]) -> None:
    """:class:`UsageError` naming two faces set to listen on one port of one address
    (the second bind would fail, and its error would not say the first was ours)."""
    seen: list[tuple[str, int, str]] = []
    for face in faces:
        host = face.host if face.host is not None else config.host
        port = face.port if face.port is not None else config.port
        if port == 0:
            continue  # any free one: never the same
        for other_host, other_port, other in seen:
            if port == other_port and _overlap(host, other_host):
                where = (
                    f"{host or '*'}:{port}"
                    if host == other_host
                    else f"port {port} ({other_host or '*'} and {host or '*'})"
                )
                raise UsageError(
                    f"the {other} and {face.name} faces are both set to {where}: give each"
                    " a port of its own"
                )
        seen.append((host, port, face.name))


def _overlap(one: str, two: str) -> bool:
    """Whether listening on both hosts at one port clashes: the same address, or a
    wildcard (``::`` takes IPv4 as well) covering the other's."""
    if one == two or "::" in (one, two):
        return True
    wild4 = {"", "0.0.0.0"}
    return (one in wild4 and ":" not in two) or (two in wild4 and ":" not in one)


def _tls_port(port: int) -> int:
    """The line face's TLS port when none is given: 9443, or any free one beside port 0."""
    return 0 if port == 0 else TLS_PORT


# Log lines that say what serve's own output already says: one line per fact.
_BANNER_FACTS = {
    ("chatkit.log", "chatkit listening on %s:%d"),
    ("chatkit.builtins.history", "history in %s"),
    ("chatkit.builtins.cluster", "cluster: node %s on %s (lease %gs)"),
    ("chatkit.builtins.metrics", "metrics on http://%s:%d/metrics"),
    ("chatkit.server", "server stopped"),
}


def _said_by_banner(record: logging.LogRecord) -> bool:
    return (record.name, record.msg) not in _BANNER_FACTS


_SIOCGIFADDR = 0x8915  # Linux ioctl: an interface's IPv4 address


def local_addresses(family: socket.AddressFamily = socket.AF_INET) -> list[str]:
    """This machine's addresses of ``family`` that others may connect to, loopback last.

    Read from the interfaces on Linux (``/proc/net/if_inet6`` and an ioctl per
    interface), else from the host name and the default route.
    """
    found: list[str] = []
    if family == socket.AF_INET6:
        try:
            with open("/proc/net/if_inet6") as f:
                for line in f:
                    raw = line.split()[0]
                    packed = bytes.fromhex(raw)
                    if not (packed[0] == 0xFE and packed[1] & 0xC0 == 0x80):  # link-local
                        found.append(socket.inet_ntop(socket.AF_INET6, packed))
        except OSError:
            pass
    else:
        try:
            import fcntl
            import struct

            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                for _index, name in socket.if_nameindex():
                    request = struct.pack("256s", name.encode()[:15])
                    try:
                        answer = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, request)
                    except OSError:
                        continue  # an interface without an IPv4 address
                    found.append(socket.inet_ntoa(answer[20:24]))
        except (ImportError, OSError, AttributeError):
            pass
    if not found:
        try:
            infos = socket.getaddrinfo(socket.gethostname(), None, family)
            found = [str(info[4][0]) for info in infos]
        except OSError:
            pass
    loopback = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    others = [a for a in dict.fromkeys(found) if not a.startswith("127.") and a != "::1"]
    return [*others, loopback]


reload_log = logging.getLogger("chatkit.reload")


def _reload(
    server: Server, path: Path | None, overrides: dict[str, Any], handler: logging.Handler
) -> list[str]:
    """Read the config file again (the command line's flags still win) and apply it
    (SIGHUP, ``/reload``): returns what changed, one line each; raises
    :class:`UsageError` (and keeps the old config) if it cannot be applied."""
    # A certificate file that is gone keeps the old certificate (below), not the old config.
    warnings: list[str] = []
    config = _build_config(path, overrides, tls_files=False, warnings=warnings)
    for warning in warnings:
        reload_log.warning("%s", warning)
    level = logging.getLevelName(config.log_level.upper())  # an int: checked
    files = server.config.tls_cert, server.config.tls_key
    notes = server.reload(config)
    try:
        server.reload_tls()  # new handshakes use the (new) certificate files
    except UsageError as exc:
        reload_log.error("%s; keeping the old certificate", exc)
        notes.append(f"certificate not reloaded: {exc}")
        server.config.tls_cert, server.config.tls_key = files  # (what is in use)
    logging.getLogger().setLevel(level)
    # (The text format leaves out what the banner says; JSON, read by programs, has it all.)
    if config.log_format == "json" and not isinstance(handler.formatter, JsonFormatter):
        handler.setFormatter(JsonFormatter())
        handler.removeFilter(_said_by_banner)
    elif config.log_format == "text" and isinstance(handler.formatter, JsonFormatter):
        handler.setFormatter(logging.Formatter(HUMAN_FORMAT))
        handler.addFilter(_said_by_banner)
    return notes


class _Signals:
    """SIGINT, SIGTERM and SIGHUP for ``chatkit serve``'s main thread.

    A Python signal handler runs on the main thread between any two bytecodes, even
    inside ``threading``'s own code: raising ``KeyboardInterrupt`` there (as this
    did) could leave an ``Event``'s lock held, and the shutdown that followed hung,
    or died with a traceback, when a SIGTERM came twice (``uv run`` passes on the
    one sent to its process group). So the handlers only note the signal, and the
    wakeup fd wakes :meth:`serve`, which acts on it outside any lock.
    """

    def __init__(self) -> None:
        self._noted: list[int] = []  # appended by the handlers (atomic), read by serve()
        # Started in its controlling terminal: a SIGHUP may be the terminal closing
        # (serve() looks). A terminal that is not the controlling one never sends it.
        self._terminal = sys.stdin.isatty() and not self._hung_up(looking=True)
        self._wake_r, self._wake_w = socket.socketpair()
        for end in (self._wake_r, self._wake_w):
            end.setblocking(False)
        self._old_wakeup = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        for signum in _STOP_SIGNALS:
            signal.signal(signum, self._note)

    def _note(self, signum: int, frame: object) -> None:
        self._noted.append(signum)

    def serve(self, server: Server, reload: Callable[[], None]) -> None:
        """Until a stop signal, or the server stops itself; SIGHUP calls ``reload``,
        unless it is the terminal the server was started in closing: a stop then, as
        for any program in a closed terminal."""
        while not server.stopped:
            while self._noted:
                if self._noted.pop(0) != signal.SIGHUP or self._hung_up():
                    return
                reload()
            # Woken by a signal (the wakeup fd), else a look at the server twice a second.
            select.select([self._wake_r], [], [], 0.5)
            with contextlib.suppress(OSError):
                self._wake_r.recv(4096)

    def _hung_up(self, *, looking: bool = False) -> bool:
        """Whether the terminal the server was started in is gone (a hung-up terminal
        answers nothing: asking it for its foreground process group fails; so does a
        terminal that is not this process's controlling one, which ``looking`` at the
        start tells apart)."""
        if not (looking or self._terminal):
            return False
        try:
            os.tcgetpgrp(sys.stdin.fileno())
        except OSError:
            return True
        return False

    def close(self) -> None:
        """Ignore the signals from now on (a second Ctrl+C during shutdown)."""
        for signum in _STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        signal.set_wakeup_fd(self._old_wakeup)
        self._wake_r.close()
        self._wake_w.close()


# Taken by the main thread only: stop (SIGINT, SIGTERM) and reload (SIGHUP).
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


def _block_stop_signals(block: bool) -> None:
    """Block (or unblock) SIGINT and SIGTERM in the calling thread; threads it starts
    meanwhile inherit the mask. A no-op where there is no ``pthread_sigmask``."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK if block else signal.SIG_UNBLOCK, _STOP_SIGNALS)


@app.command("check", cls=_Command)
def check_command(
    config: Annotated[
        Path | None,
        typer.Argument(
            help="The TOML config file. \\[default: ./chatkit.toml]",
            dir_okay=False,
            metavar="FILE",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the settings as JSON, for scripts.", metavar="")
    ] = False,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="The history database 'serve' is given (its --db), as it would use it.",
            metavar="PATH",
        ),
    ] = None,
    plugin: PluginOption = None,
    no_plugin: NoPluginOption = None,
) -> None:
    """Check a config file and print the settings 'chatkit serve -c FILE' would use
    (given the same --plugin, --no-plugin and --db).

    Exit 2 with the error if anything in it is wrong: an unknown key, a bad value, two
    faces on one port, a plugin that is not installed, a plugin's setting it refuses,
    a TLS certificate and key that do not load.
    Opens no port and no database: a plugin without chatkit_check_config has its
    settings checked only when the server starts, and the output says so.
    """
    path = config if config is not None else DEFAULT_CONFIG
    if config is None and not DEFAULT_CONFIG.is_file():
        raise _fail(UsageError(f"no config file given and no {DEFAULT_CONFIG} here"))
    # (--plugin and --no-plugin as 'serve' is given them: the plugins they enable
    # check their settings too.)
    overrides: dict[str, Any] = {
        "plugins": plugin or [],
        "disable": no_plugin or [],
        "limits": {},
        "db": db,
    }
    try:
        cfg = _build_config(path, overrides)
        pm, infos = build_plugin_manager(cfg)
        unchecked = check_plugin_settings(cfg, pm, infos)
        _faces(cfg, None)  # (their ports: two on one)
        if cfg.tls_cert and cfg.tls_key:
            tls_context(cfg.tls_cert, cfg.tls_key)  # as serve loads them (a bad renewal)
    except UsageError as exc:
        raise _fail(exc) from None
    settings = masked(effective_settings(cfg, [info.name for info in infos]))
    notes = [
        f"[plugins.{_toml_key(name)}]: checked by its plugin only when the server starts"
        for name in unchecked
    ]
    if as_json:
        typer.echo(json.dumps(settings, indent=2, default=_json_default))
        for note in notes:  # (stdout is the JSON: scripts parse it)
            typer.echo(f"Note: {note}", err=True)
        return
    typer.echo(f"# {path}: OK")
    for note in notes:
        typer.echo(f"# {note}")
    for section, values in settings.items():
        kind, _, name = section.partition(".")  # (a plugin's name may hold a dot)
        typer.echo(f"\n[{kind}.{_toml_key(name)}]" if name else f"\n[{section}]")
        for key, value in values.items():
            if value is not None:  # (TOML has no null: a setting left unset)
                typer.echo(f"{_toml_key(key)} = {_toml(value)}")


def effective_settings(config: Config, plugins: list[str]) -> dict[str, dict[str, Any]]:
    """What a server built from ``config`` runs with, by section: defaults filled in."""
    settings: dict[str, dict[str, Any]] = {
        "server": {
            "host": config.host,
            "port": config.port,
            "default_room": config.default_room,
            "log_level": config.log_level,
            "log_format": config.log_format,
            "bidi": config.bidi,
            "plugins": plugins,
        },
        "limits": dataclasses.asdict(config.limits),
    }
    if config.tls_cert:
        settings["tls"] = {
            "cert": config.tls_cert,
            "key": config.tls_key,
            "port": config.tls_port if config.tls_port is not None else _tls_port(config.port),
            "only": config.tls_only,
        }
    for name, table in sorted(config.faces.items()):
        settings[f"faces.{name}"] = dict(table)
    for name, table in sorted(config.plugin_config.items()):
        if table:
            shown = dict(table)
            if isinstance(shown.get("db"), str) and shown["db"]:
                # The file a server opens (relative to the config file's directory).
                db = config.plugin_path(name)
                shown["db"] = db if db == ":memory:" else str(Path(db).absolute())
            settings[f"plugins.{name}"] = shown
    return settings


SECRET_KEYS = ("password", "secret", "token")
"""Settings whose values :func:`masked` hides: any key containing one of these, and an
``operators`` table of names and passwords (IRC's ``OPER``: ``[faces.irc] operators``;
``moderation``'s ``operators``, rooms and account names, are shown)."""


def _secret(key: str, value: Any) -> bool:
    """Whether the setting ``key`` holds a secret (:data:`SECRET_KEYS`)."""
    if any(word in key.lower() for word in SECRET_KEYS):
        return True
    return (
        key.lower() == "operators"
        and isinstance(value, dict)
        and all(isinstance(item, str) for item in value.values())
    )


def masked(value: Any, secret: bool = False) -> Any:
    """``value`` (settings, nested) with secrets shown as ``"***"``: the values under a
    key naming one (:data:`SECRET_KEYS`), and the password in a URL."""
    if isinstance(value, dict):
        return {key: masked(item, secret or _secret(key, item)) for key, item in value.items()}
    if isinstance(value, list):
        return [masked(item, secret) for item in value]
    if isinstance(value, str):
        return "***" if secret else _without_password(value)
    return value


def _without_password(text: str) -> str:
    """``text`` with the secrets of a URL replaced: its password (``redis://:***@host/0``),
    and an HTTP URL's path and query, where webhooks keep theirs
    (``https://hooks.example.com/***`` for ``.../services/T0/B0/XXXX`` or ``?key=...``)."""
    if "://" not in text:
        return text
    # (redis, under the cluster plugin: imported only when a URL is shown)
    from chatkit.builtins.cluster import redact

    hidden = redact(text, SECRET_KEYS)  # (the cluster's log line's: a Redis URL's too)
    scheme = text.partition("://")[0]
    if scheme.lower() not in ("http", "https"):
        return hidden
    try:
        parts = urlsplit(hidden)
        password = parts.password
    except ValueError:  # (what redact() made of a malformed one: show nothing of it)
        return f"{scheme}://***"
    if parts.path not in ("", "/") or parts.query:
        parts = parts._replace(path="/***", query="", fragment="")
    if password is None and parts.username:
        # (https://TOKEN@host/: a token in the user part, as some webhook services take it)
        parts = parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2])
    return urlunsplit(parts)


def _toml(value: Any) -> str:
    """``value`` as a TOML value (check prints settings a config file could hold)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # JSON's escapes are TOML's, but for DEL, which TOML wants escaped.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, dict):
        items = (f"{_toml_key(k)} = {_toml(v)}" for k, v in value.items() if v is not None)
        return "{ " + ", ".join(items) + " }"
    if isinstance(value, datetime.date | datetime.time):  # (TOML's own: read back as one)
        return value.isoformat()
    return _toml(str(value))


def _json_default(value: Any) -> str:
    """What ``json`` cannot write of the settings: a TOML date or time, in RFC 3339."""
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return str(value)


def _toml_key(key: str) -> str:
    bare = key and all(c.isascii() and (c.isalnum() or c in "_-") for c in key)
    return key if bare else _toml(key)


@app.command("plugins", cls=_Command)
def plugins_command(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON list, for scripts.", metavar="")
    ] = False,
    hook: Annotated[
        str | None,
        typer.Option(
            metavar="HOOK",
            help="Only plugins that implement this hook (chatkit_on_join, or on_join).",
        ),
    ] = None,
) -> None:
    """List every builtin and installed plugin: what it does, its package, hooks and commands."""
    rows = list_plugins()
    if hook:
        full = hook if hook.startswith("chatkit_") else f"chatkit_{hook}"
        if full not in hook_names():
            typer.echo(
                f"Error: unknown hook {hook!r}.{suggest_hook(full)} "
                "chatkit's hooks are listed in docs/hooks.md",
                err=True,
            )
            raise typer.Exit(2)
        rows = [r for r in rows if full in r.hooks]
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    console = Console()
    if console.width < NARROW:
        # Too narrow for six columns (hook names were cut): a block per plugin.
        for r in rows:
            on = {"essential": "always", "default": "yes", "off": "no"}.get(r.default, r.default)
            package = "builtin" if r.origin == "builtin" else f"{r.package} {r.version}"
            console.print(f"[bold]{escape(r.name)}[/] ({escape(package)}; on: {on})")
            console.print(escape(r.description), style="dim")
            if r.error:
                console.print(f"[red]error: {escape(r.error)}[/]")
            elif r.hooks:
                hooks = ", ".join(h.removeprefix("chatkit_") for h in r.hooks)
                console.print(f"hooks: {hooks}")
            if r.commands:
                console.print("commands: " + ", ".join(f"/{c}" for c in r.commands))
            console.print()
        console.print("hooks without their chatkit_ prefix; on: enabled without --plugin")
        return
    # Readable at 80 columns: light borders, one hook or command a line, and long
    # text folded rather than cut.
    table = Table(
        width=min(console.width, 120),
        title="chatkit plugins",
        caption="hooks without their chatkit_ prefix; on: enabled without --plugin",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_edge=False,
        padding=0,
        collapse_padding=True,
    )

    def widest(texts: Iterable[str], header: str) -> int:
        return min(20, max([len(header), *(len(t) for t in texts)]))

    hook_lines = [h.removeprefix("chatkit_") for r in rows for h in r.hooks]
    table.add_column("name", overflow="fold", min_width=widest((r.name for r in rows), "name"))
    table.add_column("what", overflow="fold", min_width=14, ratio=1)  # the rest of the width
    table.add_column("package", overflow="fold")
    table.add_column("on", overflow="fold", min_width=6)
    table.add_column("hooks", overflow="fold", min_width=widest(hook_lines, "hooks"))
    commands_ = [f"/{c}" for r in rows for c in r.commands]
    table.add_column("commands", overflow="fold", min_width=widest(commands_, "commands"))
    for r in rows:
        package = "builtin" if r.origin == "builtin" else f"{r.package}\n{r.version}"
        hooks = "\n".join(h.removeprefix("chatkit_") for h in r.hooks)
        if r.error:
            hooks = f"[red]error: {escape(r.error)}[/]"
        on = {"essential": "always", "default": "yes", "off": "no"}.get(r.default, r.default)
        commands = "\n".join(f"/{c}" for c in r.commands)
        table.add_row(r.name, escape(r.description), escape(package), on, hooks, commands)
    console.print(table)


NARROW = 80  # columns below which `chatkit plugins` lists plugins as blocks, not a table
EXIT_OK = 0  # input ended and the server handled every line (or --stay: the server closed)
SCRIPT_BURST = 10  # lines of a script sent at once...
SCRIPT_RATE = 4.0  # ...then this many a second (under the server's default flood control)
SCRIPT_LOGIN_WAIT = 30.0  # seconds a script's login may take (a silent port: not forever)
EXIT_USAGE = 2  # bad flags
EXIT_REFUSED = 3  # no server at that address
EXIT_LOGIN = 4  # the nick was refused (taken, invalid, or a plugin said no)
EXIT_LOST = 5  # the server closed the connection, or it broke
EXIT_ROOM = 6  # the server refused the --room (a bad name, or a plugin said no)
EXIT_NOT_READY = 7  # ping --ready: the server answered that it is not ready


def _show(frame: dict[str, Any], as_json: bool) -> None:
    """Print a frame from the server; one the client made of a line it could not read
    (chatkit.client.LOCAL_ERRORS) is a problem, said on standard error."""
    if frame["type"] == "error" and frame.get("code") in LOCAL_ERRORS:
        typer.echo(render_text(printable(frame)), err=True)
    else:
        typer.echo(printable_json(frame) if as_json else render_text(printable(frame)))


def _scripted(client: Client, as_json: bool, stay: bool, wait: float = 0.0) -> int:
    """Send stdin's lines, print what the server sends; see ``join``'s help.

    With ``wait``, it ends ``wait`` seconds after the last line was sent (once
    the server has handled every line), not as soon as it has handled them.
    """
    stdin = sys.stdin.buffer
    selector = selectors.DefaultSelector()
    selector.register(client.sock, selectors.EVENT_READ)
    try:
        selector.register(stdin, selectors.EVENT_READ)
        selectable = True
    except (PermissionError, ValueError):  # a regular file or /dev/null: always readable
        selectable = False
    lines = LineDecoder(MAX_SERVER_LINE)  # input is split as the server splits lines
    input_done = quitting = handled = pinged = False
    last_sent = monotonic()
    # Lines go out paced (SCRIPT_BURST at once, then SCRIPT_RATE a second), under the
    # server's flood control (by default 20 at once, then 5 a second): a script's lines
    # are all delivered, not refused as rate_limited.
    tokens, tokens_at, backlog = float(SCRIPT_BURST), monotonic(), False

    def send_lines() -> None:
        nonlocal quitting, last_sent, tokens, tokens_at, backlog
        now = monotonic()
        tokens = min(float(SCRIPT_BURST), tokens + (now - tokens_at) * SCRIPT_RATE)
        tokens_at = now
        backlog = False
        while True:
            if tokens < 1:
                backlog = True  # (the rest when a token comes: the loop wakes for it)
                return
            raw = lines.next_line()
            if raw is None:
                return
            if isinstance(raw, LineTooLong):
                typer.echo(f"a line of input longer than {raw.limit} bytes was not sent", err=True)
                continue
            try:
                line = raw.decode("utf-8").rstrip("\r")
            except UnicodeDecodeError as exc:  # refused, as the server refuses it from nc
                typer.echo(
                    f"a line of input that is not UTF-8 (byte {exc.start + 1}) was not sent",
                    err=True,
                )
                continue
            if line.strip():
                quitting |= line.split(" ", 1)[0].lower() == "/quit"
                client.say(line)
                tokens -= 1
                last_sent = monotonic()

    try:
        while True:
            busy = client.buffered() or (not selectable and not input_done and not backlog)
            timeout: float | None = None
            if handled:  # --wait: every line was handled; show replies until the deadline
                timeout = last_sent + wait - monotonic()
                if timeout <= 0:
                    return EXIT_OK
            if backlog:  # lines wait for a token
                timeout = (1 - tokens) / SCRIPT_RATE
            ready = [key.fileobj for key, _ in selector.select(0 if busy else timeout)]
            if backlog:
                send_lines()
            if selectable and not input_done:
                # Not read while lines wait (unread input waits in its pipe); watched
                # again once they are sent. (Watched while waiting, a readable stdin
                # would wake the loop at once, again and again.)
                watched = stdin in selector.get_map()
                if backlog and watched:
                    selector.unregister(stdin)
                elif not backlog and not watched:
                    selector.register(stdin, selectors.EVENT_READ)
            if not backlog and (stdin in ready or (not selectable and not input_done)):
                data = os.read(stdin.fileno(), 65536)
                lines.feed(data or b"\n")  # at the end: the last line, if it has no newline
                send_lines()
                if not data:
                    if selectable:
                        selector.unregister(stdin)
                    input_done = True
            if input_done and not backlog and not pinged and not quitting:
                pinged = True
                client.send(type="ping")  # its pong: all our lines were handled
            if client.sock in ready or client.buffered():
                try:
                    # Briefly: what woke us may have been a ping, which the client
                    # answers and does not return (input must not wait on the server).
                    frame = client.receive(timeout=0.05)
                except TimeoutError:
                    continue
                if frame is None:
                    if quitting or (input_done and stay):
                        return EXIT_OK
                    typer.echo("connection closed by the server", err=True)
                    return EXIT_LOST
                if frame["type"] == "pong" and input_done and not stay:
                    if not wait:
                        return EXIT_OK
                    handled = True
                elif frame["type"] != "pong":
                    _show(frame, as_json)
    except ConnectionLost as exc:
        typer.echo(str(exc), err=True)
        return EXIT_LOST


TlsFlag = Annotated[
    bool, typer.Option("--tls", help="Speak TLS (the server's TLS port, e.g. 9443).", metavar="")
]
InsecureFlag = Annotated[
    bool,
    typer.Option(
        "--insecure",
        help="With --tls, accept any certificate (a self-signed one): anyone in "
        "between can read along.",
        metavar="",
    ),
]


def _client_tls(tls: bool, insecure: bool) -> ssl.SSLContext | None:
    """The TLS context of the client commands' --tls [--insecure]; exit 2 for --insecure alone."""
    if insecure and not tls:
        typer.echo("Error: --insecure goes with --tls", err=True)
        raise typer.Exit(EXIT_USAGE)
    return tls_client_context(insecure) if tls else None


@app.command("ping", cls=_Command)
def ping_command(
    host: Annotated[str, typer.Option(help="The server's address.", metavar="HOST")] = "127.0.0.1",
    port: ClientPort = None,
    timeout: Annotated[
        float,
        typer.Option(
            help="Seconds to wait for the answer.", metavar="SECONDS", min=0.001, max=3600
        ),
    ] = 5.0,
    tls: TlsFlag = False,
    insecure: InsecureFlag = False,
    ready: Annotated[
        bool,
        typer.Option(
            "--ready",
            help="Also ask whether the server is ready for new clients (exit 7 if not).",
            metavar="",
        ),
    ] = False,
) -> None:
    """Check that a server answers, without logging in (for health checks).

    Sends a JSON ping and waits for the pong; nobody in the chat sees it. Exit 0 if
    the server answered, 3 if it cannot connect (nothing listens there, or --tls
    failed: a certificate this machine does not trust, say), 5 if it did not answer
    in time. With --ready, exit 7 if it answered that it should take no new clients
    now (a cluster node cut off from Redis), saying why: a readiness check for a
    load balancer, where the plain ping is a liveness check.
    """
    context = _client_tls(tls, insecure)
    port = _client_port(port, tls)
    started = monotonic()
    try:
        client = Client.connect(host, port, timeout=timeout, tls=context)
    except NoAnswer as exc:  # (something may listen there: a TLS port's silent listener)
        typer.echo(str(exc), err=True)
        raise typer.Exit(EXIT_LOST) from None
    except ClientError as exc:
        typer.echo(_with_flag_hint(str(exc)), err=True)
        raise typer.Exit(EXIT_REFUSED) from None
    problems: list[str] = []
    with client:
        try:
            if ready:
                problems = client.ready(timeout)
            else:
                client.sync(timeout)
        except (ConnectionLost, TimeoutError) as exc:
            why = f"{exc or 'timed out'}"
            if any(f.get("code") == "server_bad_frame" for f in client.pending):
                # (An IRC port answers a JSON line with a 421; a web port with HTTP.)
                why = (
                    "it answered in lines that are not chatkit's JSON frames (an IRC or web "
                    "port? ping speaks to the line protocol's port)"
                )
            typer.echo(f"no answer from {host}:{port}: {why}", err=True)
            raise typer.Exit(EXIT_LOST) from None
    took = f"in {(monotonic() - started) * 1000:.0f} ms"
    if problems:
        typer.echo(f"{host}:{port} is not ready ({took}):", err=True)
        for problem in problems:
            typer.echo(f"  {problem}", err=True)
        raise typer.Exit(EXIT_NOT_READY)
    typer.echo(f"pong from {host}:{port} {took}" + (", ready" if ready else ""))


def _with_flag_hint(error: str) -> str:
    """A connection error, with the flag that may help (a self-signed certificate)."""
    if "CERTIFICATE_VERIFY_FAILED" in error:
        return f"{error}; --insecure accepts any certificate"
    return error


@app.command(cls=_Command, short_help="Join a chat: a terminal client, or lines from a script.")
def join(
    host: Annotated[str, typer.Option(help="The server's address.", metavar="HOST")] = "127.0.0.1",
    port: ClientPort = None,
    nick: Annotated[str | None, typer.Option(help="Your nick.", metavar="NICK")] = None,
    room: Annotated[
        str | None,
        typer.Option(
            help="Join this room instead of the default one ('#' may be left out).",
            metavar="ROOM",
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print one JSON object per frame, for scripts.", metavar=""),
    ] = False,
    replay: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Earlier messages to show per room joined; 0 for none. "
            "\\[default: the server's, 50]",
            metavar="N",
        ),
    ] = None,
    stay: Annotated[
        bool,
        typer.Option(help="After input ends, keep printing until the server closes.", metavar=""),
    ] = False,
    wait: Annotated[
        float,
        typer.Option(
            min=0,
            max=86400,  # (a day: inf would overflow the wait; --stay waits for good)
            help="After input ends, keep printing until SECONDS after the last line sent "
            "(for replies).",
            metavar="SECONDS",
        ),
    ] = 0.0,
    color: Annotated[
        bool,
        typer.Option(
            "--color/--no-color", help="Colours (also off if NO_COLOR is set).", metavar=""
        ),
    ] = True,
    reconnect: Annotated[
        bool,
        typer.Option(
            "--reconnect/--no-reconnect", help="Reconnect after a lost connection.", metavar=""
        ),
    ] = True,
    tls: TlsFlag = False,
    insecure: InsecureFlag = False,
    password: Annotated[
        str | None,
        typer.Option(
            envvar="CHATKIT_PASSWORD",
            help="The password of your registered nick (better: the CHATKIT_PASSWORD "
            "environment variable, which other users cannot see).",
            metavar="PASSWORD",
        ),
    ] = None,
) -> None:
    """Join a chat. In a terminal: an interactive client (type a line, Enter sends it;
    /quit or Ctrl+D leaves). In a script: each line of standard input is sent (a message,
    or a /command) and what the server sends is printed as readable lines (or JSON
    with --json); it exits when input ends and the server has handled every line.

    Exit codes: 0 ok, 2 bad usage, 3 no server, 4 nick refused, 5 connection lost,
    6 room refused.
    Examples: echo "hello" | chatkit join --nick bot --wait 2;
    chatkit join --nick watcher --json --stay < /dev/null
    """
    context = _client_tls(tls, insecure)
    port = _client_port(port, tls)
    if sys.stdin.isatty() and sys.stdout.isatty() and not as_json:
        from chatkit.terminal import Terminal  # (prompt_toolkit: only for a person)

        colours = color and not os.environ.get("NO_COLOR")
        terminal = Terminal(
            host,
            port,
            color=colours,
            reconnect=reconnect,
            replay=replay,
            tls=context,
            password=password,
        )
        try:
            code = terminal.run(nick, room)
        except (ConnectionLost, TimeoutError) as exc:  # (as a script's: the login's end)
            typer.echo(printable(str(exc)) or "the server did not answer", err=True)
            raise typer.Exit(EXIT_LOST) from None
        except ClientError as exc:
            typer.echo(_with_flag_hint(str(exc)), err=True)
            raise typer.Exit(EXIT_REFUSED) from None
        raise typer.Exit(code)
    if not nick:
        typer.echo("Error: --nick is required when standard input is not a terminal", err=True)
        raise typer.Exit(EXIT_USAGE)
    if stay and wait:
        typer.echo("Error: --stay and --wait do not go together; choose one", err=True)
        raise typer.Exit(EXIT_USAGE)
    try:
        client = Client.connect(host, port, tls=context)
    except ClientError as exc:
        typer.echo(_with_flag_hint(str(exc)), err=True)
        raise typer.Exit(EXIT_REFUSED) from None
    with client:
        try:
            welcome = client.login(
                nick, replay=replay, password=password, room=room, timeout=SCRIPT_LOGIN_WAIT
            )
            frames = client.enter(room) if room else []
        except LoginRefused as exc:
            text = printable(str(exc))
            if exc.code == "nick_registered" and password is None:
                # (The server's words are for a JSON client: "the hello's password".)
                text = text.removesuffix(" (the hello's password)")
                text += "; give its password in CHATKIT_PASSWORD (or --password)"
            typer.echo(f"nick {nick!r} refused: {text}", err=True)
            raise typer.Exit(EXIT_LOGIN) from None
        except RoomRefused as exc:
            typer.echo(f"cannot join {room_name(room or '')}: {printable(str(exc))}", err=True)
            raise typer.Exit(EXIT_ROOM) from None
        except (ConnectionLost, TimeoutError) as exc:
            typer.echo(printable(str(exc)) or "the server did not answer", err=True)
            raise typer.Exit(EXIT_LOST) from None
        for frame in [welcome, *frames]:
            _show(frame, as_json)
        code = _scripted(client, as_json, stay, wait)
    raise typer.Exit(code)


plugin_app = typer.Typer(
    cls=_Group,
    name="plugin",
    help="Tools for plugin authors.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(plugin_app)


@plugin_app.command(
    "new", cls=_Command, short_help="Create a ready-to-install plugin package, with its test."
)
def plugin_new(
    name: Annotated[
        str,
        typer.Argument(
            metavar="NAME",
            help="The plugin's name, e.g. welcome_bot (a chatkit_ or chatkit- prefix is dropped).",
        ),
    ],
    directory: Annotated[
        Path,
        typer.Option(
            "--dir", metavar="DIR", help="Where to create chatkit-NAME/.", file_okay=False
        ),
    ] = Path("."),
    chatkit_path: Annotated[
        Path | None,
        typer.Option(
            "--chatkit-path",
            metavar="PATH",
            help="A chatkit source checkout to depend on (a uv path source). \\[default: the "
            "checkout this chatkit is installed from in editable mode, else chatkit-server "
            "from PyPI]",
            file_okay=False,
        ),
    ] = None,
) -> None:
    """Create a ready-to-install plugin package: pyproject with the entry point, a module
    with one hook, a test that uses chatkit's fixtures, and a README."""
    source = chatkit_path or installed_checkout()
    try:
        root = create_plugin(name, directory, source)
    except UsageError as exc:
        raise _fail(exc) from None
    typer.echo(f"created {root}")
    if source is None:
        typer.echo(f"chatkit: {DISTRIBUTION} {__version__} or later, from PyPI")
    else:
        typer.echo(f"chatkit: {DISTRIBUTION} from {source.absolute()}")
    typer.echo(f"next: cd {root} && uv run pytest")
    plugin = plugin_name(name)
    typer.echo(f"then: uv run chatkit serve --plugin {plugin}   (in {root}: it is installed there)")


def main() -> None:
    """Entry point of the ``chatkit`` script."""
    app()
