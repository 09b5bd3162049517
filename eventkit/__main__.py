"""``python -m eventkit``: the ``eventkit`` command."""

from eventkit.cli import main

main()
