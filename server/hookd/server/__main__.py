"""``python -m hookd.server serve``."""

from hookd.server.cli import main

main()
