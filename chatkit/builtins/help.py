"""/help: lists every command with the plugin that provides it."""

from __future__ import annotations

from chatkit import CommandContext, CommandError, Register, hookimpl


def help_command(ctx: CommandContext) -> None:
    commands = ctx.hub.commands
    if ctx.args:
        command = commands.get(ctx.args.lstrip("/"))
        if command is None:
            raise CommandError(f"no command /{ctx.args.lstrip('/')}", "unknown_command")
        usage = f"/{command.name} {command.usage}".rstrip()
        ctx.reply(
            f"{usage}: {command.help} (plugin {command.plugin})",
            command=command.name,
            usage=command.usage,
            help=command.help,
            plugin=command.plugin,
        )
        return
    rows = commands.all()
    width = max(len(f"/{c.name} {c.usage}".rstrip()) for c in rows)
    lines = [f"{f'/{c.name} {c.usage}'.rstrip():<{width}}  {c.help} [{c.plugin}]" for c in rows]
    ctx.reply(
        "Commands:\n" + "\n".join(lines),
        commands=[
            {"name": c.name, "usage": c.usage, "help": c.help, "plugin": c.plugin} for c in rows
        ],
    )


@hookimpl
def chatkit_register_commands(register: Register) -> None:
    register("help", help_command, help="list commands, or explain one", usage="[COMMAND]")
