"""Crash soak: many SIGKILLs under publishing load; prints what was published, delivered, duplicated, lost.

Run from the repository root (not part of ``make test``, it takes a minute or more)::

    .venv/bin/python -m bench.crash_soak --kills 25

The exit status is 1 when an acknowledged event was lost, an event went to a webhook that does
not subscribe to it, or duplicates exceed what the requests in flight at the kills can explain.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from tests.support.crash import WEBHOOKS, CrashHarness


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.crash_soak", description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=25, help="SIGKILLs to deliver")
    parser.add_argument("--publishers", type=int, default=3, help="client threads publishing")
    parser.add_argument("--max-in-flight", type=int, default=4, help="the server's --max-in-flight")
    parser.add_argument("--seed", type=int, default=None, help="seed for kill timing and event mix")
    parser.add_argument(
        "--up-time", type=float, nargs=2, default=(0.3, 1.5), metavar=("MIN", "MAX"), help="seconds up between kills"
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hookd-crash-soak-") as workdir:
        harness = CrashHarness(
            Path(workdir), publishers=args.publishers, max_in_flight=args.max_in_flight, seed=args.seed
        )
        try:
            report = harness.run(args.kills, up_time=tuple(args.up_time), drain_timeout=180.0)
        finally:
            harness.close()
    elapsed = time.monotonic() - started
    print(f"crash soak: {report.kills} kills in {elapsed:.0f} s, seed {report.seed}")
    print(f"  destinations  {len(WEBHOOKS)} webhooks, max in flight {args.max_in_flight} each")
    print(f"  published     {report.published} events acknowledged ({report.failed_calls} calls failed mid-crash)")
    print(f"  delivered     {report.delivered} (event, webhook) pairs")
    print(f"  duplicated    {report.duplicated} (bound {report.duplicate_bound})")
    print(f"  lost          {report.lost}")
    print(f"  torn requests {report.torn}, misrouted {report.misrouted}")
    if report.lost_examples:
        print(f"  lost, e.g.    {', '.join(report.lost_examples)}")
    ok = report.lost == 0 and report.misrouted == 0 and report.duplicated <= report.duplicate_bound
    print("  result        " + ("OK" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
