"""chatkit-motd: a message of the day on login, and a /motd command."""

from chatkit import (
    CommandContext,
    Config,
    Register,
    Session,
    UsageError,
    check_settings,
    hookimpl,
)

__all__ = ["Motd"]

DEFAULT = "Welcome, {nick}! Be kind, and type /help to see what you can do."


class Motd:
    """One instance per server, so each server keeps its own text."""

    def __init__(self) -> None:
        self.text = DEFAULT

    @hookimpl
    def chatkit_check_config(self, config: Config) -> None:
        _text(config)  # `chatkit check FILE` refuses a bad text before a deploy

    @hookimpl
    def chatkit_configure(self, config: Config) -> None:
        self.text = _text(config)

    def message_for(self, client: Session) -> str:
        return self.text.replace("{nick}", client.nick or "")

    @hookimpl
    def chatkit_on_login(self, client: Session) -> None:
        client.notice(self.message_for(client))

    @hookimpl
    def chatkit_register_commands(self, register: Register) -> None:
        register("motd", self.motd_command, help="show the message of the day")

    def motd_command(self, ctx: CommandContext) -> None:
        ctx.reply(self.message_for(ctx.client), motd=self.message_for(ctx.client))


def _text(config: Config) -> str:
    """The configured text, checked (the one place both hooks read it)."""
    settings = config.plugin_settings("motd")
    check_settings("motd", settings, ["text"])  # a typo ("txt") is an error, not ignored
    text = settings.get("text", DEFAULT)
    if not isinstance(text, str) or not text.strip():
        raise UsageError(f"motd: text must be a non-empty string, not {text!r}")
    return text
