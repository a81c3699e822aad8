"""/nick, /away, /quit and /ping: renaming, being away, leaving, and checking the line."""

from __future__ import annotations

from chatkit import CommandContext, Register, hookimpl


def nick_command(ctx: CommandContext) -> None:
    if not ctx.args or " " in ctx.args:
        raise ctx.usage_error()
    old = ctx.client.nick
    ctx.hub.rename(ctx.client, ctx.args)
    if old == ctx.client.nick:
        ctx.reply(f"you are already {old}", nick=old)


def away_command(ctx: CommandContext) -> None:
    """``/away TEXT`` marks you away (whoever messages you privately is told);
    ``/away`` alone, back."""
    was = ctx.client.away
    away = ctx.hub.set_away(ctx.client, ctx.args)
    if away:
        ctx.reply(f"you are marked away: {away}", away=away)
    else:
        ctx.reply("you are back" if was else "you were not away", away=None)


def quit_command(ctx: CommandContext) -> None:
    reason = f"quit: {ctx.args}" if ctx.args else "quit"
    ctx.reply("bye", reason=reason)
    ctx.client.disconnect(reason)


def ping_command(ctx: CommandContext) -> None:
    ctx.reply("pong")


@hookimpl
def chatkit_register_commands(register: Register) -> None:
    register("nick", nick_command, help="change your nick", usage="NEW")
    register(
        "away",
        away_command,
        help="mark yourself away (private messages get your text back); alone: back",
        usage="[TEXT]",
    )
    register("quit", quit_command, help="leave the chat", usage="[REASON]")
    register("ping", ping_command, help="check that the server answers (it says pong)")
