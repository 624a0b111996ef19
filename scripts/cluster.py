"""``make cluster``: a throwaway local PostgreSQL and three hookd nodes, to try cluster mode.

The nodes listen on 127.0.0.1:50051, :50052 and :50053 and share one database; each serves the
whole API. Extra arguments go to every node (``make cluster ARGS="--allow-http ..."``). Logs go
to var/cluster/node-N.log. Ctrl-C stops the nodes (cleanly: each hands its destinations over)
and throws the database away.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.postgres import PostgresServer  # noqa: E402  (the suite's throwaway server)

PORTS = (50051, 50052, 50053)


def main(args: list[str]) -> int:
    logs = ROOT / "var" / "cluster"
    logs.mkdir(parents=True, exist_ok=True)
    postgres = PostgresServer(durable=True).start()
    nodes: list[subprocess.Popen[bytes]] = []
    try:
        database = postgres.new_database()
        for index, port in enumerate(PORTS, start=1):
            log = (logs / f"node-{index}.log").open("wb")
            nodes.append(
                subprocess.Popen(
                    [
                        str(Path(sys.executable).with_name("hookd")),
                        "serve",
                        "--listen",
                        f"127.0.0.1:{port}",
                        "--database",
                        database,
                        "--node-id",
                        f"node-{index}",
                        *args,
                    ],
                    stdout=log,
                    stderr=log,
                )
            )
        print(f"PostgreSQL: {database} (throwaway)")
        for index, port in enumerate(PORTS, start=1):
            print(f"node-{index}: 127.0.0.1:{port}  log: var/cluster/node-{index}.log")
        print(
            "\nTry:  .venv/bin/hookctl --address 127.0.0.1:50052 health      (the nodes, and who owns what)\n"
            "      .venv/bin/hookctl --address 127.0.0.1:50053 events types\n"
            "Stop a node (kill -9 its pid) and watch its destinations move within the lease (10 s).\n"
            "Ctrl-C stops everything."
        )
        while all(node.poll() is None for node in nodes):
            time.sleep(0.5)
        print("a node exited; see its log", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for node in nodes:
            if node.poll() is None:
                node.send_signal(signal.SIGTERM)
        for node in nodes:
            try:
                node.wait(15)
            except subprocess.TimeoutExpired:
                node.kill()
        postgres.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
