"""``hookd serve``: the service's command line."""

from __future__ import annotations

import asyncio
import sys

from hookd.engine import StartupError
from hookd.server import config as server_config
from hookd.server import logs
from hookd.server.app import serve


def main(argv: list[str] | None = None) -> None:
    args = server_config.parser().parse_args(argv)
    config = server_config.from_args(args)
    logs.configure(config.log_level)
    try:
        asyncio.run(serve(config))
    except StartupError as error:  # something the operator can fix: one line, no traceback
        print(f"hookd: error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:  # pragma: no cover - SIGINT before the handler was installed
        sys.exit(130)


if __name__ == "__main__":
    main()
