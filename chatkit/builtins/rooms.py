"""/join, /part, /rooms, /who and /topic: moving between rooms and seeing who is there."""

from __future__ import annotations

from chatkit import CommandContext, CommandError, Register, fold, hookimpl, room_name


def join_command(ctx: CommandContext) -> None:
    if not ctx.args or " " in ctx.args:
        raise ctx.usage_error()
    room = room_name(ctx.args)  # "/join general" too
    if not ctx.hub.join(ctx.client, room):
        current = ctx.client.current_room  # the room as it spells itself
        ctx.reply(f"you are in {current}; lines now go there", room=current)


def part_command(ctx: CommandContext) -> None:
    room, _, text = ctx.args.partition(" ")
    if room and fold(room_name(room)) in ctx.client.rooms:
        room = room_name(room)  # /part dev leaves #dev, as /join dev joined it
    if not room.startswith("#"):
        room, text = ctx.room or "", ctx.args
    if not room:
        raise CommandError("you are in no room", "not_in_room")
    ctx.hub.part(ctx.client, room, f"part: {text.strip()}" if text.strip() else "part")


def rooms_command(ctx: CommandContext) -> None:
    rooms = ctx.hub.rooms()
    listing = ", ".join(f"{name} ({count})" for name, count in rooms.items())
    ctx.reply(f"rooms: {listing or 'none'}", rooms=rooms)


def who_command(ctx: CommandContext) -> None:
    room = ctx.args.strip() or ctx.room
    if room:
        room = room_name(room)  # as /join takes it
    if not room:
        raise CommandError("you are in no room; name one: /who #room", "not_in_room")
    members = ctx.hub.who(room)
    if members is None:
        raise CommandError(f"no room {room}", "no_such_room", room=room)
    nicks = sorted(members, key=lambda nick: (nick.casefold(), nick))  # as people look them up
    away = {}
    for nick in nicks:
        text = ctx.hub.away(nick)  # (another node's member's too)
        if text:
            away[nick] = text
    shown = ", ".join(f"{nick} (away)" if nick in away else nick for nick in nicks)
    ctx.reply(f"{room} ({len(nicks)}): {shown}", room=room, nicks=nicks, away=away)


def topic_command(ctx: CommandContext) -> None:
    """``/topic`` shows the current room's topic; ``/topic TEXT`` sets it, ``/topic -``
    clears it (``/topic #room ...`` for another room you are in)."""
    room, args = ctx.room, ctx.args
    word = args.strip()
    if word and " " not in word and not word.startswith("#"):
        other = room_name(word)
        if fold(other) in ctx.client.rooms and fold(other) != fold(room or ""):
            args = other  # /topic dev shows #dev's topic, as /part dev leaves #dev
    if args.startswith("#"):
        room, _, args = args.partition(" ")
    if not room:
        raise CommandError("you are in no room; name one: /topic #room", "not_in_room")
    if not args.strip():
        topic = ctx.hub.topic(room)
        if topic is None:
            ctx.reply(f"{room} has no topic", room=room, topic=None)
        else:
            who = f"set by {topic['nick']}, {topic['ts']}"
            ctx.reply(f"topic of {topic['room']}: {topic['topic']} ({who})", **topic)
        return
    ctx.hub.set_topic(ctx.client, room, "" if args.strip() == "-" else args)


@hookimpl
def chatkit_register_commands(register: Register) -> None:
    register(
        "join",
        join_command,
        help="join a room (lines then go there; '#' may be left out)",
        usage="#ROOM",
    )
    register("part", part_command, help="leave a room", usage="[#ROOM] [REASON]")
    register("rooms", rooms_command, help="list the rooms")
    register("who", who_command, help="list who is in a room", usage="[#ROOM]")
    register(
        "topic",
        topic_command,
        help="show or set a room's topic ('-' clears it)",
        usage="[#ROOM] [TEXT|-]",
    )
