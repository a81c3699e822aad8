"""/msg, /me and /describe: private messages and actions."""

from __future__ import annotations

from chatkit import CommandContext, CommandError, Register, hookimpl


def msg_command(ctx: CommandContext) -> None:
    _private(ctx, action=False)


def describe_command(ctx: CommandContext) -> None:
    """``/describe NICK ACTION``: ``/me`` in a private conversation (IRC's CTCP ACTION
    to a nick; mIRC's command of that name)."""
    _private(ctx, action=True)


def _private(ctx: CommandContext, *, action: bool) -> None:
    nick, _, text = ctx.args.partition(" ")
    if not nick or not text.strip():
        raise ctx.usage_error()
    if ctx.hub.find(nick) is ctx.client:  # found by the hub's own rule for equal nicks
        raise CommandError(
            f"you are {ctx.client.nick}: /{ctx.name} sends to someone else (see /who)",
            "bad_usage",
        )
    sent = ctx.hub.private(ctx.client, nick, text.strip(), action=action)
    to = sent.to or nick
    away = ctx.hub.away(to)  # (another node's member's too)
    if away:  # as IRC's 301 tells whoever messages them
        ctx.reply(f"{to} is away: {away}", nick=to, away=away)


def me_command(ctx: CommandContext) -> None:
    if not ctx.args:
        raise ctx.usage_error()
    ctx.hub.say(ctx.client, ctx.room, ctx.args, action=True)


@hookimpl
def chatkit_register_commands(register: Register) -> None:
    register("msg", msg_command, help="send a private message", usage="NICK TEXT")
    register("me", me_command, help="act: /me waves", usage="ACTION")
    register(
        "describe",
        describe_command,
        help="act in private: /describe bob waves",
        usage="NICK ACTION",
    )
