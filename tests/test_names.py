"""Names: the display form, the fold that makes names equal and the skeleton that
makes them look alike."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatkit.names import (
    _capitals,
    _translation,
    fold,
    normalize,
    room_name,
    shown_skeleton,
    skeleton,
    valid_room,
)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("alice_k", "аlice_k"),  # Cyrillic a
        ("alice_k", "ａｌｉｃｅ_ｋ"),  # fullwidth
        ("alice_k", "𝐚𝐥𝐢𝐜𝐞_𝐤"),  # mathematical bold
        ("bob", "bοb"),  # Greek omicron
        ("#general", "#gеneral"),  # Cyrillic e
        ("#general", "#ｇｅｎｅｒａｌ"),
        ("Alice", "ALICE"),
        ("alice", "ALICΕ"),  # Greek capital epsilon, whose small letter is not like e
        ("ALICE", "АLICE"),  # Cyrillic capital A
        ("carol", "caro1"),
        ("mike", "rnike"),
    ],
)
def test_look_alikes_share_a_skeleton(a: str, b: str) -> None:
    """Names people cannot tell apart have one skeleton."""
    assert skeleton(a) == skeleton(b)


@pytest.mark.parametrize(("a", "b"), [("bob", "rob"), ("José", "Jose"), ("anna", "anne")])
def test_different_names_keep_different_skeletons(a: str, b: str) -> None:
    """Names that differ to the eye are not confused (accents count)."""
    assert skeleton(a) != skeleton(b)


def general_skeleton(name: str) -> str:
    """skeleton() as it is for any name, without its shortcut for ASCII."""
    capitals = unicodedata.normalize("NFD", normalize(name)).translate(_capitals())
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", capitals).casefold())
    mapped = unicodedata.normalize("NFD", folded).translate(_translation())
    return unicodedata.normalize("NFD", mapped).casefold()


@given(st.text(st.characters(max_codepoint=127)) | st.text())
def test_the_skeleton_of_ascii_takes_a_shortcut_to_the_same_key(name: str) -> None:
    """An ASCII name (every login's, nearly) skips the Unicode steps, which leave it as
    it is, and gets the key the general path gives (``%`` maps to more than ASCII)."""
    assert skeleton(name) == general_skeleton(name)
    assert skeleton(name + "%") == general_skeleton(name + "%")


@pytest.mark.parametrize(
    ("a", "b", "alike"),
    [
        ("aIice", "alice", True),  # a capital I folds to i, but looks like l
        ("Ian", "lan", True),
        ("аIicе", "alice", True),  # and Cyrillic a and e besides
        ("ALlCE", "ALICE", True),
        ("Neil", "Nell", False),  # an i is no l: neither key merges them
        ("Ian", "Lan", False),
        ("ALICE", "alice", False),  # (equal folded: skeleton() has them alike)
    ],
)
def test_the_shown_skeleton_keeps_case(a: str, b: str, alike: bool) -> None:
    """shown_skeleton() is TS #39's skeleton with case kept: what folding hides, a
    capital I for an l, it shows; i and l stay two letters."""
    assert (shown_skeleton(a) == shown_skeleton(b)) is alike
    assert skeleton("Neil") != skeleton("Nell")


def test_fold_ignores_case_and_width_only() -> None:
    """fold() makes case and compatibility forms equal, not other scripts."""
    assert fold("ALICE") == fold("ａｌｉｃｅ") == fold("alice")
    assert fold("Straße") == fold("STRASSE")
    assert fold("аlice") != fold("alice")
    assert normalize("ａｌｉｃｅ") == "alice"


def test_room_names_get_their_hash_and_are_checked() -> None:
    """``general`` is ``#general``; validation says what is allowed."""
    assert room_name("general") == room_name("#general") == "#general"
    assert valid_room("#général", 50) is None
    assert valid_room("general", 50) is not None
    assert valid_room("#", 50) is not None
    assert valid_room("#" + "x" * 50, 50) is not None
