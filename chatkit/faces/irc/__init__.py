"""The IRC face: IRC clients in the same rooms as everyone else (docs/irc.md).

One concept per module: ``message.py`` the IRC message grammar, ``numerics.py`` the
numerics by name, ``render.py`` frames as IRC lines (the codecs fan-outs use),
``protocol.py`` one connection's state (registration, capabilities), ``face.py`` the
face and the adapter to hub operations.
"""

from chatkit.faces.irc.face import IrcChannel, IrcFace

__all__ = ["IrcChannel", "IrcFace"]
