"""The console log: logins, joins, leaves and logouts at INFO, messages at DEBUG."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from chatkit import Message, Session, hookimpl

if TYPE_CHECKING:
    from chatkit import Server

log = logging.getLogger("chatkit.log")


@hookimpl
def chatkit_server_start(server: Server) -> None:
    log.info("chatkit listening on %s:%d", *server.address)


@hookimpl
def chatkit_on_login(client: Session) -> None:
    log.info("%s logged in from %s:%d", client.nick, *client.address)


@hookimpl
def chatkit_on_join(client: Session, room: str) -> None:
    log.info("%s joined %s", client.nick, room)


@hookimpl
def chatkit_on_nick(client: Session, old: str) -> None:
    log.info("%s is now known as %s", old, client.nick)


@hookimpl
def chatkit_on_leave(client: Session, room: str, reason: str) -> None:
    log.info("%s left %s (%s)", client.nick, room, reason)


@hookimpl
def chatkit_on_logout(client: Session, reason: str) -> None:
    log.info("%s logged out (%s)", client.nick, reason)


@hookimpl
def chatkit_on_message(client: Session, message: Message) -> None:
    where = message.room or f"private to {message.to}"
    log.debug("[%s] <%s> %s", where, message.nick, message.text)
