"""IRC channel modes on top of the moderation plugin, through real sockets.

From RFC 2812 3.2.3 and modern.ircdocs.horse (MODE, channel modes, RPL_CHANNELMODEIS,
RPL_BANLIST, ERR_CHANOPRIVSNEEDED...): ``MODE #room`` answers ``324`` with the modes
the room really has; ``+o``/``-o``, ``+b``/``-b`` (and the ban list), ``+i``, ``+m``,
``+t``, ``+M`` are the moderation plugin's commands; every member sees the change, IRC
clients as ``MODE`` from the operator, other faces as its notice.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_irc_face import SERVER, IrcClient

from chatkit import Server
from chatkit.config import config_from_dict
from chatkit.faces.irc import IrcFace
from chatkit.faces.irc.face import _masks
from chatkit.faces.irc.message import Message
from chatkit.faces.irc.numerics import RPL_BANLIST
from chatkit.faces.line import LineFace
from chatkit.testing import ChatClient, TextClient, make_config


def start(moderation: bool = True, history_db: str | None = None) -> Server:
    settings: dict[str, object] = {"server": {"plugins": ["moderation"] if moderation else []}}
    if history_db is not None:
        settings["plugins"] = {"history": {"db": history_db}}
    config = make_config(config_from_dict(settings))
    config.disable = ["flood"]
    return Server(
        config=config, faces=[LineFace(), IrcFace(port=0, server_name=SERVER, network="T")]
    )


def first(client: IrcClient, nick: str = "ann") -> list[str]:
    """Register the first client, which is an operator of #general: its lines up to
    the MODE saying so (sent after the join: before it, a second client could join
    first and the room would have no operator)."""
    lines = client.register(nick)
    return lines + client.until(f"MODE #general +o {nick}")


@pytest.fixture
def server() -> Iterator[Server]:
    with start() as server:
        yield server


def test_mode_query_reflects_the_rooms_modes(server: Server) -> None:
    """ISUPPORT CHANMODES names b and iMmnt; MODE #room is 324 +n then the flags set."""
    with IrcClient(server.addresses["irc"]) as ann:
        lines = first(ann)
        assert any("CHANMODES=bq,,,iMmnt" in line for line in lines)
        assert lines[3].startswith(f":{SERVER} 004 ann {SERVER} ")
        assert lines[3].split()[-3:] == ["io", "Mbimnoqt", "boq"]  # user, channel, with a param
        ann.send("MODE #general")
        ann.expect(f":{SERVER} 324 ann #general +n")
        ann.expect(f":{SERVER} 329 ann #general ")
        ann.send("MODE #general +imtM")
        for change in ("+i", "+m", "+t", "+M"):
            ann.expect(f":ann!ann@chatkit MODE #general {change}")
        ann.send("MODE #general")
        ann.expect(f":{SERVER} 324 ann #general +Mimnt")
        ann.send("MODE #general -mi+n")
        ann.expect(":ann!ann@chatkit MODE #general -m")
        ann.expect(":ann!ann@chatkit MODE #general -i")
        ann.send("MODE #general")
        ann.expect(f":{SERVER} 324 ann #general +Mnt")
        ann.send("MODE #general +k secret")
        ann.expect(f":{SERVER} 472 ann k :")


def test_op_and_deop_reach_every_face(server: Server) -> None:
    """MODE +o/-o: IRC members see MODE, JSON clients the notice; a non-operator's
    MODE change gets 482 and changes nothing."""
    with (
        IrcClient(server.addresses["irc"]) as ann,
        IrcClient(server.addresses["irc"]) as bob,
        ChatClient(server.addresses["line"]) as jay,
    ):
        first(ann)
        bob.register("bob")
        jay.login("jay")
        bob.send("MODE #general +o bob")
        bob.expect(f":{SERVER} 482 bob #general :")
        bob.send("MODE #general +m")
        bob.expect(f":{SERVER} 482 bob #general :")
        ann.send("MODE #general +o bob")
        bob.expect(":ann!ann@chatkit MODE #general +o bob")
        ann.expect(":ann!ann@chatkit MODE #general +o bob")
        frame = jay.expect("notice", text="ann made bob an operator")
        assert (frame["mode"], frame["arg"], frame["by"]) == ("+o", "bob", "ann")
        bob.send("MODE #general +m")  # an operator now
        ann.expect(":bob!bob@chatkit MODE #general +m")
        ann.send("MODE #general -o bob")
        bob.expect(":ann!ann@chatkit MODE #general -o bob")
        bob.send("MODE #general -m")
        bob.expect(f":{SERVER} 482 bob #general :")
        ann.send("MODE #general +o nobody")
        ann.expect(f":{SERVER} 401 ann nobody :")


def test_bans_and_the_ban_list(server: Server) -> None:
    """MODE +b mask bans (a banned JOIN is 474); MODE #room b and +b list the bans
    (367 each, 368); -b lifts it."""
    with IrcClient(server.addresses["irc"]) as ann, IrcClient(server.addresses["irc"]) as bob:
        first(ann)
        ann.send("JOIN #den")
        ann.expect(f":{SERVER} 366 ann #den ")
        bob.register("bob")
        ann.send("MODE #den b")
        ann.expect(f":{SERVER} 368 ann #den :End of channel ban list")
        ann.send("MODE #den +b bob")
        ann.expect(":ann!ann@chatkit MODE #den +b bob!*@*")
        ann.send("MODE #den +b *!*@203.0.113.*")
        ann.expect(":ann!ann@chatkit MODE #den +b *!*@203.0.113.*")
        # A host ban (irssi's ban_type host) would match everyone: every user shows
        # at host chatkit. Refused, saying why; nobody is banned.
        ann.send("MODE #den +b *!*@chatkit")
        ann.expect(f":{SERVER} NOTICE ann :error [bad_usage]: *!*@chatkit matches everyone (")
        ann.send("MODE #den +b-b")  # the list, once
        lines = ann.until(" 368 ")
        # Each with who set it and when (Unix seconds), as the modern IRC docs have 367.
        listed = [line.rsplit(" ", 1) for line in lines if " 367 " in line]
        assert [line for line, _ts in listed] == [
            f":{SERVER} 367 ann #den *!*@203.0.113.* ann!ann@chatkit",
            f":{SERVER} 367 ann #den bob!*@* ann!ann@chatkit",
        ]
        assert all(abs(int(ts) - time.time()) < 60 for _line, ts in listed), listed
        assert [line for line in ann.sync() if " 36" in line] == []
        bob.send("JOIN #den")
        bob.expect(f":{SERVER} 474 bob #den :")
        ann.send("MODE #den -b bob")
        ann.expect(":ann!ann@chatkit MODE #den -b bob!*@*")
        bob.send("JOIN #den")
        bob.expect(":bob!bob@chatkit JOIN #den")
        # The mask an IRC client's /ban builds from what it sees (*!*user@host) holds.
        ann.send("KICK #den bob", "MODE #den +b *!*bob@chatkit")
        ann.expect(":ann!ann@chatkit MODE #den +b *!*bob@chatkit")
        bob.send("JOIN #den")
        bob.expect(f":{SERVER} 474 bob #den :")


def test_an_unknown_mode_uses_up_its_argument(server: Server) -> None:
    """A mode chatkit does not have (voice, a key, a limit, ban exceptions) is 472, and
    takes the argument it takes on other servers: the next change gets its own (a
    typed +vb bob mask bans the mask, not bob)."""
    with IrcClient(server.addresses["irc"]) as ann, IrcClient(server.addresses["irc"]) as bob:
        first(ann)
        bob.register("bob")
        ann.send("MODE #general +vb bob evil!*@*")
        ann.expect(f":{SERVER} 472 ann v :")
        ann.expect(":ann!ann@chatkit MODE #general +b evil!*@*")
        ann.send("MODE #general +ko secret bob")
        ann.expect(f":{SERVER} 472 ann k :")
        ann.expect(":ann!ann@chatkit MODE #general +o bob")
        ann.send("MODE #general +lb 10 worse!*@*")
        ann.expect(f":{SERVER} 472 ann l :")
        ann.expect(":ann!ann@chatkit MODE #general +b worse!*@*")
        ann.send("MODE #general -l+b worst!*@*")  # -l takes none
        ann.expect(f":{SERVER} 472 ann l :")
        ann.expect(":ann!ann@chatkit MODE #general +b worst!*@*")
        ann.send("MODE #general b")
        bans = [line for line in ann.until(" 368 ") if " 367 " in line]
        assert sorted(line.split()[4] for line in bans) == [
            "evil!*@*", "worse!*@*", "worst!*@*",
        ]  # fmt: skip


def test_invite_only_moderated_and_topic_modes(server: Server) -> None:
    """+i: a JOIN is 473 until INVITE; +m: only operators speak (404 for the others);
    +t: only operators set the topic (482); -t: anyone again."""
    with IrcClient(server.addresses["irc"]) as ann, IrcClient(server.addresses["irc"]) as bob:
        first(ann)
        ann.send("JOIN #den")
        ann.expect(f":{SERVER} 366 ann #den ")
        bob.register("bob")
        ann.send("MODE #den +i")
        ann.expect(":ann!ann@chatkit MODE #den +i")
        bob.send("JOIN #den")
        bob.expect(f":{SERVER} 473 bob #den :")
        ann.send("INVITE bob #den")
        bob.expect(":ann!ann@chatkit INVITE bob #den")
        ann.expect(f":{SERVER} 341 ann bob #den")  # RPL_INVITING
        bob.send("JOIN #den")
        bob.expect(":bob!bob@chatkit JOIN #den")
        ann.send("INVITE bob #den")
        ann.expect(f":{SERVER} 443 ann bob #den :")  # ERR_USERONCHANNEL
        ann.send("MODE #den +mt")
        bob.expect(":ann!ann@chatkit MODE #den +m")
        bob.expect(":ann!ann@chatkit MODE #den +t")
        bob.send("PRIVMSG #den :may I?")
        bob.expect(f":{SERVER} 404 bob #den :")
        ann.send("PRIVMSG #den :operators may")
        bob.expect(":ann!ann@chatkit PRIVMSG #den :operators may")
        bob.send("TOPIC #den :mine")
        bob.expect(f":{SERVER} 482 bob #den :")
        ann.send("TOPIC #den :set by an operator")
        bob.expect(":ann!ann@chatkit TOPIC #den :set by an operator")
        ann.send("MODE #den -mt")
        bob.expect(":ann!ann@chatkit MODE #den -t")
        bob.send("TOPIC #den :mine now", "PRIVMSG #den :thanks")
        ann.expect(":bob!bob@chatkit TOPIC #den :mine now")
        ann.expect(":bob!bob@chatkit PRIVMSG #den :thanks")


def test_without_moderation_mode_changes_get_482() -> None:
    """Without the moderation plugin: CHANMODES=,,,nt, 324 +n, an empty ban list, and
    every change 482 (nobody is an operator)."""
    with start(moderation=False) as server, IrcClient(server.addresses["irc"]) as ann:
        lines = ann.register("ann")
        assert any("CHANMODES=,,,nt" in line for line in lines)
        assert lines[3].split()[-2:] == ["io", "nt"]  # 004
        ann.send("MODE #general", "MODE #general b", "MODE #general +o ann")
        ann.expect(f":{SERVER} 324 ann #general +n")
        ann.expect(f":{SERVER} 368 ann #general :")
        ann.expect(f":{SERVER} 482 ann #general :")


def test_chat_commands_for_the_new_room_settings(server: Server) -> None:
    """/moderated and /topicops from a JSON client: the others get moderated and
    not_room_operator; IRC members see the MODE; a modes request lists the settings."""
    with ChatClient(server.addresses["line"]) as ann, IrcClient(server.addresses["irc"]) as bob:
        ann.login("ann")
        ann.expect("notice", text="you are an operator of #general")
        bob.register("bob")
        ann.say("/moderated on")
        ann.expect("notice", text="ann moderated the room: only operators speak")
        bob.expect(":ann!ann@chatkit MODE #general +m")
        ann.say("/topicops on")
        ann.expect("notice", text="ann let only operators set the topic")
        ann.send(type="modes", room="#general")
        frame = ann.expect("modes")
        assert frame["flags"] == ["moderated", "topic_ops"] and frame["bans"] == []
        ann.say("/topicops on")
        ann.expect("reply", text_contains="already")
        ann.say("/moderated off")
        bob.expect(":ann!ann@chatkit MODE #general -m")


def test_topics_survive_a_restart_with_moderation(tmp_path: Path) -> None:
    """With moderation, a topic is kept in its SQLite file: after a restart the first
    to join the room gets it as a joiner gets a room's topic (332 and 333 on IRC, who
    set it kept; a topic frame with join for JSON), never as a TOPIC its setter would
    have sent just now."""
    db = str(tmp_path / "h.sqlite3")
    with start(history_db=db) as first, ChatClient(first.addresses["line"]) as ann:
        ann.login("ann")
        ann.say("/join #den")
        ann.expect("join", room="#den")
        ann.say("/topic #den Release on Friday")
        ann.expect("topic", topic="Release on Friday")
        ann.sync()
    with start(history_db=db) as second, IrcClient(second.addresses["irc"]) as bob:
        bob.register("bob")
        bob.send("JOIN #den")
        bob.expect(f":{SERVER} 332 bob #den :Release on Friday")
        bob.expect(f":{SERVER} 333 bob #den ann!ann@chatkit ")
        assert not [line for line in bob.sync() if " TOPIC " in line]
        bob.send("PART #den")
        bob.expect(":bob!bob@chatkit PART #den")
        with ChatClient(second.addresses["line"]) as jay:  # the room emptied: again
            jay.login("jay")
            jay.say("/join #den")
            jay.expect("join", room="#den")
            topic = jay.expect("topic", room="#den")
            assert (topic["topic"], topic["nick"], topic.get("join")) == (
                "Release on Friday",
                "ann",
                True,
            )
        bob.send("JOIN #den")
        bob.send("TOPIC #den")
        bob.expect(f":{SERVER} 332 bob #den :Release on Friday")
        bob.expect(f":{SERVER} 333 bob #den ann!ann@chatkit ")
        bob.send("TOPIC #den :")  # cleared: forgotten too
        bob.expect(":bob!bob@chatkit TOPIC #den :")
        bob.sync()
    with start(history_db=db) as third, ChatClient(third.addresses["line"]) as cat:
        cat.login("cat")
        cat.say("/join #den")
        cat.expect("join", room="#den")
        cat.say("/topic #den")
        assert cat.expect("reply", command="topic")["text"] == "#den has no topic"


def test_an_operator_who_joins_again_is_one_in_every_names_list(server: Server) -> None:
    """An operator of a room who leaves it and comes back is still one (the plugin
    keeps it): the room, the operator included, sees MODE +o from the server after the
    JOIN, so every client's names list shows the @ (a later NAMES too)."""
    with IrcClient(server.addresses["irc"]) as ann, IrcClient(server.addresses["irc"]) as bob:
        first(ann)
        bob.register("bob")
        ann.send("JOIN #rr")
        ann.expect(":ann!ann@chatkit JOIN #rr")
        ann.until(f":{SERVER} MODE #rr +o ann")
        bob.send("JOIN #rr")
        bob.expect(f":{SERVER} 353 bob = #rr :@ann bob")
        ann.send("PART #rr", "JOIN #rr")
        bob.expect(":ann!ann@chatkit JOIN #rr")
        bob.expect(f":{SERVER} MODE #rr +o ann")
        ann.expect(f":{SERVER} MODE #rr +o ann")
        bob.send("NAMES #rr")
        bob.expect(f":{SERVER} 353 bob = #rr :bob @ann")


def test_kick_is_a_kick_line(server: Server) -> None:
    """KICK #room nick :reason: every IRC member (the kicked one too) sees KICK from the
    operator with the reason (not a PART, not the notice); JSON clients get the leave
    with by and the notice; a nick not in the room is 441, a non-operator's KICK 482."""
    with (
        IrcClient(server.addresses["irc"]) as ann,
        IrcClient(server.addresses["irc"]) as bob,
        ChatClient(server.addresses["line"]) as jay,
    ):
        first(ann)
        bob.register("bob")
        jay.login("jay")
        bob.send("KICK #general jay :no")
        bob.expect(f":{SERVER} 482 bob #general :")
        ann.send("JOIN #den")
        ann.expect(f":{SERVER} 366 ann #den ")
        ann.send("KICK #den bob :not here")
        ann.expect(f":{SERVER} 441 ann bob #den :")
        ann.send("KICK #general bob :spamming")
        bob.expect(":ann!ann@chatkit KICK #general bob :spamming")
        lines = ann.until(":ann!ann@chatkit KICK #general bob :spamming")
        assert not [line for line in lines if "NOTICE" in line or "PART" in line]
        jay.expect("notice", text="ann kicked bob: spamming")
        frame = jay.expect("leave", nick="bob")
        assert (frame["reason"], frame["by"]) == ("kicked by ann: spamming", "ann")
        ann.send("KICK #general jay")
        ann.expect(":ann!ann@chatkit KICK #general jay :ann")


def test_kick_takes_several_nicks(server: Server) -> None:
    """KICK #room a,b :reason kicks each (RFC 2812 3.2.8), each refusal on its own (441 for
    a nick not in the room, 401 for nobody); as many rooms as nicks pair up; other counts
    are 461. ISUPPORT's TARGMAX says how many a KICK may name."""
    with (
        IrcClient(server.addresses["irc"]) as ann,
        IrcClient(server.addresses["irc"]) as bob,
        IrcClient(server.addresses["irc"]) as cat,
    ):
        lines = first(ann)
        assert any("TARGMAX=PRIVMSG:4,NOTICE:4,KICK:4,NAMES:4,WHOIS:1" in line for line in lines)
        bob.register("bob")
        cat.register("cat")
        ann.send("JOIN #den")
        ann.expect(f":{SERVER} 366 ann #den ")
        ann.send("KICK #general bob,nobody,cat :enough")
        bob.expect(":ann!ann@chatkit KICK #general bob :enough")
        ann.expect(f":{SERVER} 401 ann nobody :")
        cat.expect(":ann!ann@chatkit KICK #general cat :enough")
        for client, nick in ((bob, "bob"), (cat, "cat")):
            client.send("JOIN #general,#den")
            ann.expect(f":{nick}!{nick}@chatkit JOIN #den")
        ann.send("KICK #general,#den bob,cat")
        bob.expect(":ann!ann@chatkit KICK #general bob :ann")
        cat.expect(":ann!ann@chatkit KICK #den cat :ann")
        ann.send("KICK #general,#den bob")
        ann.expect(f":{SERVER} 461 ann KICK :")
        ann.send("KICK #den cat")
        ann.expect(f":{SERVER} 441 ann cat #den :")


def test_quiet_list_is_the_mute_list(server: Server) -> None:
    """+q mask / -q mask mute and unmute (solanum's quiet list): a quieted member's
    PRIVMSG is 404, and its TAGMSG (a reaction) too; MODE #room q lists them (728
    each, 729)."""
    with IrcClient(server.addresses["irc"]) as ann, IrcClient(server.addresses["irc"]) as bob:
        first(ann)
        bob.register("bob")
        ann.send("MODE #general +q bob")
        bob.expect(":ann!ann@chatkit MODE #general +q bob!*@*")
        bob.send("PRIVMSG #general :hello?")
        bob.expect(f":{SERVER} 404 bob #general :")
        ann.send("CAP REQ :message-tags")
        ann.expect("ACK")
        bob.send("CAP REQ :message-tags")
        bob.expect("ACK")
        bob.send("@+draft/react=lol TAGMSG #general")  # not round the mute either
        bob.expect(f":{SERVER} 404 bob #general :")
        ann.send("MODE #general q")
        quiet, end = ann.until(" 729 ")[-2:]
        line, ts = quiet.rsplit(" ", 1)  # who set it, when (Unix seconds)
        assert line == f":{SERVER} 728 ann #general q bob!*@* ann!ann@chatkit"
        assert abs(int(ts) - time.time()) < 60
        assert end == f":{SERVER} 729 ann #general q :End of channel quiet list"
        ann.send("MODE #general -q bob")
        bob.expect(":ann!ann@chatkit MODE #general -q bob!*@*")
        bob.send("PRIVMSG #general :thanks")
        ann.expect(":bob!bob@chatkit PRIVMSG #general :thanks")


def test_names_lists_show_operators(server: Server) -> None:
    """The first to join a room gets MODE +o from the server (and no notice besides, as
    other IRC servers do); names lists, the join's and NAMES's, prefix operators with @
    (PREFIX=(o)@: there is no voice)."""
    with IrcClient(server.addresses["irc"]) as ann, IrcClient(server.addresses["irc"]) as bob:
        lines = first(ann)
        assert f":{SERVER} MODE #general +o ann" in lines
        assert not [line for line in lines if "you are an operator" in line]
        assert any("PREFIX=(o)@" in line for line in lines)
        names = [line for line in bob.register("bob") if " 353 " in line]
        assert names == [f":{SERVER} 353 bob = #general :@ann bob"]
        ann.send("JOIN #den")
        ann.expect(f":{SERVER} MODE #den +o ann")
        ann.send("MODE #den +i", "INVITE bob #den")
        bob.expect("INVITE bob #den")
        bob.send("JOIN #den")
        bob.expect(f":{SERVER} 353 bob = #den :@ann bob")
        ann.send("MODE #den +o bob")
        bob.expect(":ann!ann@chatkit MODE #den +o bob")
        bob.send("NAMES #den")
        bob.expect(f":{SERVER} 353 bob = #den :@ann @bob")
        bob.send("WHO #den")
        assert [line.split()[8] for line in bob.until(" 315 ") if " 352 " in line] == ["H@", "H@"]
        ann.send("WHOIS bob")  # 319 prefixes the rooms where bob is an operator
        ann.expect(f":{SERVER} 319 ann bob :#general @#den")
        ann.send("MODE #den -o bob")
        bob.expect(":ann!ann@chatkit MODE #den -o bob")
        bob.send("WHO #den")
        assert [line.split()[8] for line in bob.until(" 315 ") if " 352 " in line] == ["H@", "H"]


def test_multi_prefix_and_userhost_in_names(server: Server) -> None:
    """Both capabilities are acknowledged; with userhost-in-names, names lists (the
    join's and NAMES's) give each member as nick!user@host, after its prefix."""
    with IrcClient(server.addresses["irc"]) as ann, IrcClient(server.addresses["irc"]) as bob:
        first(ann)
        lines = bob.register("bob", caps="multi-prefix userhost-in-names")
        assert [line for line in lines if " 353 " in line] == [
            f":{SERVER} 353 bob = #general :@ann!ann@chatkit bob!bob@chatkit"
        ]
        bob.send("NAMES #general")
        bob.expect(f":{SERVER} 353 bob = #general :@ann!ann@chatkit bob!bob@chatkit")
        ann.send("NAMES #general")  # without the capability: nicks alone
        ann.expect(f":{SERVER} 353 ann = #general :@ann bob")


def test_kill_by_a_non_operator_is_481(server: Server) -> None:
    """KILL (the moderation plugin's /kill) by someone who is not a server operator is
    ERR_NOPRIVILEGES, and nobody is disconnected."""
    with IrcClient(server.addresses["irc"]) as ann, IrcClient(server.addresses["irc"]) as bob:
        first(ann)
        bob.register("bob")
        bob.send("KILL ann :bye")
        bob.expect(f":{SERVER} 481 bob :only server operators may do that")
        ann.sync()  # answered: still connected (a killed client's sync raises)
        assert not ann.eof


def test_invite_by_a_member_of_an_open_room(server: Server) -> None:
    """INVITE from a member who is no operator: 341 and INVITE for an open room; 442
    for a room the inviter is not in (test_moderation: +i rooms)."""
    with IrcClient(server.addresses["irc"]) as ann, IrcClient(server.addresses["irc"]) as bob:
        first(ann)
        bob.register("bob")
        ann.send("JOIN #den")
        ann.expect(f":{SERVER} MODE #den +o ann")
        bob.send("INVITE ann #elsewhere", "JOIN #den")
        bob.expect(f":{SERVER} 442 bob #elsewhere :")
        bob.expect(":bob!bob@chatkit JOIN #den")
        ann.send("PART #den")
        ann.expect(":ann!ann@chatkit PART #den")
        bob.send("INVITE ann #den")
        bob.expect(f":{SERVER} 341 bob ann #den")
        ann.expect(":bob!bob@chatkit INVITE ann #den")


def test_a_room_s_announcement_names_the_room(server: Server) -> None:
    """A member of several rooms learns which one an action was in: IRC clients get the
    NOTICE in the channel, text clients ``*** [#room] ...``, JSON clients its ``room``."""
    with IrcClient(server.addresses["irc"]) as ann, IrcClient(server.addresses["irc"]) as bob:
        first(ann)
        bob.register("bob")
        with (
            TextClient(server.addresses["line"]) as nina,
            ChatClient(server.addresses["line"]) as web,
        ):
            nina.send_line("nina")
            nina.expect("joined #general")
            web.login("webby")
            ann.send("JOIN #den")
            ann.expect(f":{SERVER} 366 ann #den ")
            bob.send("JOIN #den")
            bob.expect(":bob!bob@chatkit JOIN #den")
            nina.send_line("/join #den")
            nina.expect("nina joined #den")  # a member before the mode, or not told of it
            web.say("/join #den")
            web.expect("join", room="#den", nick="webby")
            ann.send("MODE #den +m")
            bob.expect(":ann!ann@chatkit MODE #den +m")  # IRC has a mode for this one
            nina.expect("*** [#den] ann moderated the room")
            assert web.expect("notice", text_contains="moderated the room")["room"] == "#den"
            server.hub.announce("maintenance at noon", "#den")  # one IRC has no mode for
            bob.expect(f":{SERVER} NOTICE #den :*** maintenance at noon")
            nina.expect("*** [#den] maintenance at noon")


def test_a_ban_lists_who_set_it_only_where_the_line_holds_it_whole() -> None:
    """367's who and set-ts are left out, the mask alone listed, for a mask from before
    they were kept, one only a trailing parameter can carry (a leading ':'), one too long
    for the pair to fit in 512 bytes (a line is cut from its end: a time cut short is
    another time), and a time that is none (unreadable, before 1970)."""
    long = "\N{GRINNING FACE}" * 95 + "!*@*"  # 384 bytes, and a setter of 30 letters
    setter, nick = "a" * 30, "b" * 30
    fields = {
        "bans": ["old!*@*", ":evil!*@*", long, "bad!*@*", "early!*@*", "good!*@*"],
        "set_by": {
            "bans": {
                mask: {"nick": setter if mask == long else "ann", "ts": ts}
                for mask, ts in [
                    (":evil!*@*", "2026-12-03T05:00:00.000Z"),
                    (long, "2026-12-03T05:00:00.000Z"),
                    ("bad!*@*", "soon"),
                    ("early!*@*", "1960-01-01T00:00:00.000Z"),
                    ("good!*@*", "2026-12-03T05:00:00.000Z"),
                ]
            }
        },
    }
    around = len(f":{SERVER} 000 {nick} #den q ".encode())
    listed = dict(_masks(fields, "bans", around))
    assert listed == {
        "old!*@*": (),
        ":evil!*@*": (),
        long: (),
        "bad!*@*": (),
        "early!*@*": (),
        "good!*@*": ("ann!ann@chatkit", "1796274000"),
    }
    line = Message(RPL_BANLIST, ("#den", ":evil!*@*")).line()
    assert line == "367 #den ::evil!*@*"  # (the mask as it is, as the trailing parameter)
    whole = f":{SERVER} 367 {nick} #den {long} {setter}!{setter}@chatkit 1796274000"
    assert len(whole.encode()) + 2 > 512


def test_rooms_a_client_asks_about_leave_nothing_behind(server: Server) -> None:
    """The face remembers a room's operators for the client's own join only: NAMES, WHO
    and MODE of rooms that do not exist (a client naming new ones for ever) keep nothing
    per room, so a connection's memory does not grow with the rooms it names."""
    with IrcClient(server.addresses["irc"]) as ann:
        first(ann)
        channel = server.hub.find("ann").transport.channel  # type: ignore[union-attr]
        for batch in range(10):
            rooms = ",".join(f"#nothing{batch}x{i}" for i in range(4))
            ann.send(f"NAMES {rooms}", f"WHO #who{batch}", f"MODE #mode{batch}")
            ann.until(f" 403 ann #mode{batch} ")
        assert set(channel._ops) == {"#general"}
        ann.send("JOIN #den")
        ann.expect(f":{SERVER} 366 ann #den ")
        assert set(channel._ops) == {"#general", "#den"}
        ann.send("PART #den", "JOIN #ops")
        ann.expect(f":{SERVER} 366 ann #ops ")
        assert set(channel._ops) == {"#general", "#ops"}
