"""``python -m protoreg``: the same as the ``protoreg`` command."""

from protoreg.frontend.cli import console_main

console_main()
