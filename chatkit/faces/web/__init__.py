"""The web face: a chat page and a WebSocket endpoint on one port (docs/web.md).

``WebFace`` is what ``Server(faces=[LineFace(), WebFace(port=8080)])`` listens with;
``WebChannel`` is one connection: a :class:`websockets.server.ServerProtocol` (the
library's sans-I/O HTTP and WebSocket handling) that either serves one of the page's
static files (:mod:`chatkit.faces.web.static`) or, after an upgrade on ``/ws``, speaks
chatkit's JSON protocol, one frame per text message (docs/protocol.md).
"""

from chatkit.faces.web.face import WEB_CODEC, WebChannel, WebFace

__all__ = ["WEB_CODEC", "WebChannel", "WebFace"]
