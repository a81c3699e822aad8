"""Names people tell apart by sight: nicks and room names, normalised and compared.

This file knows no socket and no chat state. Every face and plugin compares names
through it, so one nick namespace holds however a client spelled a name:

* :func:`normalize` is what a name is shown as: NFKC, so fullwidth ``ａｌｉｃｅ`` and
  mathematical ``𝐚𝐥𝐢𝐜𝐞`` are plain ``alice``.
* :func:`fold` is the key two names are *equal* by: NFKC, then a Unicode case fold
  (``Alice`` and ``ALICE`` are one nick).
* :func:`skeleton` is the key two names are *confusable* by (Unicode TS #39 section
  4): Cyrillic ``аlice`` and Greek ``bοb`` have the skeletons of ``alice`` and
  ``bob``. The prototypes come from Unicode's confusables.txt as packaged by
  ``confusable-homoglyphs``; the server refuses a name whose skeleton another name
  in use already has.
* :func:`shown_skeleton` is TS #39's skeleton of a name as it is shown, case kept: what
  folding hides, a capital ``I`` passing for an ``l`` (``aIice`` beside ``alice``), it
  shows. The hub refuses a nick that has the shown skeleton of one in use, too.
"""

from __future__ import annotations

import functools
import re
import unicodedata

__all__ = [
    "BLANK_LETTERS",
    "SHOWN_HOST",
    "fold",
    "normalize",
    "room_name",
    "shown_skeleton",
    "skeleton",
    "valid_room",
    "wildcard_match",
]

BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0")
"""Letters that show as nothing (the Hangul fillers: Unicode's default-ignorable
letters). ``str.isalnum`` takes them for letters, so a name would pass for another
with them in it (``boss`` and ``boss`` with a filler after it): no name has them."""

# Marks that confusables.txt's comments put around right-to-left glyphs; they are
# not part of the characters the package's data maps.
_DIRECTION_MARKS = str.maketrans("", "", "\u200e\u200f")


def normalize(name: str) -> str:
    """``name`` as it is shown and stored: its NFKC form."""
    return unicodedata.normalize("NFKC", name)


SHOWN_HOST = "chatkit"
"""The host of the ``nick!nick@host`` others see of every chat user (the IRC face's
prefixes): no real address is shown. A ban an IRC client builds from it
(``*!*nina@chatkit``) matches (the ``moderation`` plugin)."""


def room_name(name: str) -> str:
    """``name`` as a room name: ``general`` is ``#general`` (``/join general``, a hello's
    ``room``, ``default_room``: the ``#`` may be left out). Not checked: see :func:`valid_room`."""
    return name if name.startswith("#") else f"#{name}"


def valid_room(room: str, max_len: int) -> str | None:
    """Why ``room`` is not an acceptable room name, or ``None`` if it is."""
    body = room[1:]
    if (
        not room.startswith("#")
        or not body
        or len(room) > max_len
        or not all(c.isalnum() or c in "_-." for c in body)
        or not (body.isascii() or BLANK_LETTERS.isdisjoint(body))
    ):
        return f"room names are '#' and 1 to {max_len - 1} letters, digits, '_', '-' or '.'"
    return None


def fold(name: str) -> str:
    """The key of ``name`` for equality: NFKC, case-folded (and NFKC again, as folding
    may leave text that is not in NFKC)."""
    if name.isascii():
        # ASCII is its own NFKC form and folds to lower case: the common case, on
        # every login, join and leave, without two trips through unicodedata.
        return name.lower()
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


def skeleton(name: str) -> str:
    """The key of ``name`` for confusability: TS #39's skeleton of its fold, folded.

    Two names with one skeleton look alike (``alice``, ``аlice``, ``ALICE``,
    ``ALICΕ`` with a Greek capital epsilon). Case is folded before the mapping (so
    ``ALICE`` is ``alice``, though TS #39 maps a capital ``I`` to ``l``), except for
    a non-Latin capital whose prototype is a Latin capital: it is mapped first, as
    its small letter may look like nothing Latin (Greek ``Ε``, but ``ε``).
    """
    if name.isascii():
        # ASCII is its own NFKC and NFD form, has no non-Latin capitals and folds to
        # lower case: only the mapping is left (the common case, a few times a login).
        mapped = name.lower().translate(_translation())
        if mapped.isascii():
            return mapped.lower()
    else:
        capitals = unicodedata.normalize("NFD", normalize(name)).translate(_capitals())
        mapped = unicodedata.normalize("NFD", fold(capitals)).translate(_translation())
    return unicodedata.normalize("NFD", mapped).casefold()


def shown_skeleton(name: str) -> str:
    """TS #39's skeleton of ``name`` as it is shown (its NFKC form), case kept.

    :func:`skeleton` folds case first, so that names equal in some case look alike; a
    capital ``I`` is then an ``i``, though it looks like an ``l`` (TS #39 maps it so):
    ``aIice`` and ``alice`` have two skeletons but this one. Merging ``i`` and ``l``
    into one key instead would make ``Neil`` and ``Nell``, or a ban of ``bi*`` and
    ``blake``, one. Two names look alike if either key is the same."""
    if name.isascii():
        mapped = name.translate(_translation())
        if mapped.isascii():
            return mapped
    else:
        mapped = unicodedata.normalize("NFD", normalize(name)).translate(_translation())
    return unicodedata.normalize("NFD", mapped)


@functools.cache
def _capitals() -> dict[int, str]:
    """The non-ASCII characters whose prototype is an ASCII capital (Greek ``Ε``,
    Cyrillic ``А``), for ``str.translate``."""
    return {
        ord(char): prototype
        for char, prototype in _prototypes().items()
        if not char.isascii() and prototype.isascii() and prototype.isupper()
    }


@functools.cache
def _translation() -> dict[int, str]:
    """:func:`_prototypes` keyed by code point, for ``str.translate`` (one C call)."""
    return {ord(char): prototype for char, prototype in _prototypes().items()}


@functools.cache
def _prototypes() -> dict[str, str]:
    """Each confusable character's prototype (TS #39's mapping), built once on first use.

    The package keeps confusables.txt as a symmetric table (each character lists the
    ones it is confusable with). A prototype is never itself mapped, so a character
    listing a single partner that lists others is that partner's source; the rest of
    each class maps to itself. Where two characters only list each other, either one
    serves as the prototype: we take the one that is ASCII, else the lower.
    """
    from confusable_homoglyphs import confusables  # ~1 MB of data: loaded when first needed

    data: dict[str, list[dict[str, str]]] = confusables.confusables_data
    partners: dict[str, set[str]] = {}
    for char, entries in data.items():
        key = char.translate(_DIRECTION_MARKS)
        found = partners.setdefault(key, set())
        found.update(entry["c"].translate(_DIRECTION_MARKS) for entry in entries)
    table: dict[str, str] = {}
    for char, found in partners.items():
        if len(char) != 1 or len(found) != 1:
            continue  # a prototype (listing its sources), or a sequence
        (partner,) = found
        if len(partners.get(partner, ())) > 1 or len(partner) != 1:
            table[char] = partner  # partner is the prototype of a class, or a sequence
        elif _preferred(partner, char):
            table[char] = partner  # a pair: map to the preferred one of the two
    return table


def _preferred(a: str, b: str) -> bool:
    """Whether ``a`` rather than ``b`` stands for a pair of confusable characters."""
    return (a.isascii(), -ord(a)) > (b.isascii(), -ord(b))


def wildcard_match(mask: str, text: str) -> bool:
    """Whether ``text`` matches ``mask``: ``*`` any characters, ``?`` one, everything
    else itself (``[`` and ``]`` are letters of nicks here, not a set).

    The pieces between the ``*`` are placed left to right, each at its first place
    after the one before (where any match can put it), searched by ``str.find`` or a
    regular expression without ``*`` (no backtracking across pieces): a regular
    expression of a client's ``*a*a*a...b`` backtracks for minutes, holding the GIL,
    and a character-by-character loop in Python took milliseconds a name."""
    pieces = mask.split("*")
    if len(pieces) == 1:
        return len(mask) == len(text) and _piece_at(mask, text, 0)
    first, last = pieces[0], pieces[-1]
    start, end = len(first), len(text) - len(last)
    if start > end or not _piece_at(first, text, 0) or not _piece_at(last, text, end):
        return False
    for piece in pieces[1:-1]:
        if piece:
            found = _find_piece(piece, text, start, end)
            if found < 0:
                return False
            start = found + len(piece)
    return True


def _piece_at(piece: str, text: str, at: int) -> bool:
    """Whether ``piece`` (no ``*``; ``?`` any character) is in ``text`` at ``at``."""
    if "?" not in piece:
        return text.startswith(piece, at)
    return len(text) - at >= len(piece) and all(
        p == "?" or p == c for p, c in zip(piece, text[at : at + len(piece)], strict=False)
    )


def _find_piece(piece: str, text: str, start: int, end: int) -> int:
    """Where ``piece`` (no ``*``) first lies whole within ``text[start:end]``, or -1."""
    if "?" not in piece:
        return text.find(piece, start, end)
    found = _piece_pattern(piece).search(text, start, end)
    return -1 if found is None else found.start()


@functools.lru_cache(maxsize=256)
def _piece_pattern(piece: str) -> re.Pattern[str]:
    """``piece`` as a regular expression: ``?`` any one character, the rest itself."""
    return re.compile("".join("." if c == "?" else re.escape(c) for c in piece), re.DOTALL)
