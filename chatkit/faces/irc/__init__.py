"""The IRC face (work in progress): IRC clients in the same rooms as everyone else.

``message.py`` is the IRC message grammar, sans I/O.
"""

__all__: list[str] = []
