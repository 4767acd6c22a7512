"""``python -m protoreg``: the same as the ``protoreg`` command."""

from .cli import console_main

console_main()
