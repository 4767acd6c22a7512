"""``python -m protoreg``: the same as the ``protoreg`` command."""

from protoreg.frontend.cli import console_main

if __name__ == "__main__":
    console_main()
