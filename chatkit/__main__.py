"""``python -m chatkit``: the same as the ``chatkit`` command."""

from chatkit.cli import main

main()
