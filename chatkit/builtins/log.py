"""The console log: logins, joins, leaves and logouts at INFO, messages at DEBUG.

Each record carries structured fields (``event``, ``nick``, ``room``, ``address``,
``reason``...) that ``--log-format json`` writes out. A message's text is never
logged unless the ``messages`` setting is true (``chatkit serve --log-messages``):
without it a message's record says who, where, its id and its length.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from chatkit import Config, Message, Session, UsageError, check_settings, hookimpl

if TYPE_CHECKING:
    from chatkit import Server

log = logging.getLogger("chatkit.log")


class Log:
    """Logs the chat's events; remembers whether message text may be logged."""

    def __init__(self) -> None:
        self.messages = False

    @hookimpl
    def chatkit_check_config(self, config: Config) -> None:
        self._read(config)

    @hookimpl
    def chatkit_configure(self, config: Config) -> None:
        self._read(config)

    def _read(self, config: Config) -> None:
        """Read and check the settings (opens nothing: ``chatkit check`` calls it too)."""
        settings = config.plugin_settings("log")
        check_settings("log", settings, ["messages"])
        messages = settings.get("messages", False)
        if not isinstance(messages, bool):
            raise UsageError(f"log: messages must be true or false, not {messages!r}")
        self.messages = messages

    @hookimpl
    def chatkit_server_start(self, server: Server) -> None:
        host, port = server.address
        # Every face's address, for a log tool (the text banner prints them for people).
        listening = {
            face: f"[{h}]:{p}" if ":" in h else f"{h}:{p}"  # (IPv6 bracketed, as in a URL)
            for face, (h, p) in server.addresses.items()
        }
        log.info(
            "chatkit listening on %s:%d",
            host,
            port,
            extra={"event": "start", "address": host, "port": port, "listening": listening},
        )

    @hookimpl
    def chatkit_on_login(self, client: Session) -> None:
        host, port = client.address
        log.info(
            "%s logged in from %s:%d",
            client.nick,
            host,
            port,
            extra={"event": "login", "nick": client.nick, "address": host},
        )

    @hookimpl
    def chatkit_on_join(self, client: Session, room: str) -> None:
        log.info(
            "%s joined %s",
            client.nick,
            room,
            extra={"event": "join", "nick": client.nick, "room": room},
        )

    @hookimpl
    def chatkit_on_nick(self, client: Session, old: str) -> None:
        log.info(
            "%s is now known as %s",
            old,
            client.nick,
            extra={"event": "nick", "nick": client.nick, "old": old},
        )

    @hookimpl
    def chatkit_on_leave(self, client: Session, room: str, reason: str) -> None:
        log.info(
            "%s left %s (%s)",
            client.nick,
            room,
            reason,
            extra={"event": "leave", "nick": client.nick, "room": room, "reason": reason},
        )

    @hookimpl
    def chatkit_on_logout(self, client: Session, reason: str) -> None:
        log.info(
            "%s logged out (%s)",
            client.nick,
            reason,
            extra={"event": "logout", "nick": client.nick, "reason": reason},
        )

    @hookimpl
    def chatkit_on_message(self, client: Session, message: Message) -> None:
        if not log.isEnabledFor(logging.DEBUG):
            return
        where = message.room or f"private to {message.to}"
        fields = {
            "event": "message",
            "nick": message.nick,
            "room": message.room,
            "to": message.to,
            "id": message.id,
        }
        if self.messages:
            log.debug("[%s] <%s> %s", where, message.nick, message.text, extra=fields)
        else:
            log.debug(
                "[%s] <%s> (message %d, %d characters)",
                where,
                message.nick,
                message.id,
                len(message.text),
                extra=fields,
            )
