"""chatkit-profanity: masks, drops or warns about swear words.

Built on better-profanity, which knows leetspeak and look-alike spellings. It
filters room messages, private messages (unless ``private = false``) and ``/me``
actions, and refuses nicks and room names that contain such words.

Settings (``[plugins.profanity]``)::

    action = "mask"       # mask: words become ****; drop: not delivered; warn: sender warned
    words = ["darn"]      # extra words to filter
    allowed = ["hell"]    # words of the default list to allow
    private = true        # filter private messages too
"""

from __future__ import annotations

from typing import Any

from better_profanity import Profanity as WordFilter

from chatkit import Config, Drop, Message, Reject, Session, UsageError, hookimpl

__all__ = ["ACTIONS", "Profanity"]

ACTIONS = ("mask", "drop", "warn")
SETTINGS = ("action", "words", "allowed", "private")


def _words(settings: dict[str, Any], key: str) -> list[str]:
    value = settings.get(key, [])
    if not isinstance(value, list) or not all(isinstance(w, str) and w.strip() for w in value):
        raise UsageError(f"profanity: {key} must be a list of words, not {value!r}")
    return [w.strip().lower() for w in value]


def _settings(config: Config) -> tuple[str, bool, list[str], list[str]]:
    """The settings, checked: action, private, the allowed words and the extra ones
    (the one place both hooks read them)."""
    settings = config.plugin_settings("profanity")
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        expected = ", ".join(SETTINGS)
        raise UsageError(f"profanity: unknown setting(s) {', '.join(unknown)}; expected {expected}")
    action = settings.get("action", "mask")
    if action not in ACTIONS:
        raise UsageError(f"profanity: action must be one of {', '.join(ACTIONS)}, not {action!r}")
    private = settings.get("private", True)
    if not isinstance(private, bool):
        raise UsageError(f"profanity: private must be true or false, not {private!r}")
    return action, private, _words(settings, "allowed"), _words(settings, "words")


class Profanity:
    """The plugin: one instance per server (the entry point names this class)."""

    def __init__(self) -> None:
        self.action = "mask"
        """What happens to a message with a filtered word: mask, drop or warn."""
        self.private = True
        """Whether private messages are filtered too."""
        # Read-only once configured, and better-profanity's censor() only reads
        # it, so reader threads share it without a lock.
        self.filter = WordFilter()
        """The better-profanity word filter."""

    @hookimpl
    def chatkit_check_config(self, config: Config) -> None:
        _settings(config)  # `chatkit check FILE` refuses a bad setting before a deploy

    @hookimpl
    def chatkit_configure(self, config: Config) -> None:
        self.action, self.private, allowed, extra = _settings(config)
        self.filter = WordFilter()
        self.filter.load_censor_words(whitelist_words=allowed)
        if extra:
            self.filter.add_censor_words(extra)

    def _clean(self, text: str) -> bool:
        return not self.filter.contains_profanity(text)

    @hookimpl
    def chatkit_filter_message(self, client: Session, message: Message) -> Drop | None:
        if message.private and not self.private:
            return None
        censored = self.filter.censor(message.text)
        if censored == message.text:
            return None
        if self.action == "drop":
            return Drop("it contains words that are not allowed here")
        if self.action == "warn":
            client.notice("please mind your language")
        else:
            message.text = censored
        return None

    @hookimpl
    def chatkit_allow_login(self, client: Session, nick: str) -> Reject | None:
        return None if self._clean(nick) else Reject("that nick is not allowed here", "bad_nick")

    @hookimpl
    def chatkit_allow_nick(self, client: Session, nick: str) -> Reject | None:
        return self.chatkit_allow_login(client, nick)

    @hookimpl
    def chatkit_allow_join(self, client: Session, room: str) -> Reject | None:
        return (
            None
            if self._clean(room[1:])
            else Reject("that room name is not allowed here", "bad_room")
        )
