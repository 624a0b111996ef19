"""``make bench``: run every scenario, print a table, write bench/results.json.

``BENCH_PROFILE=full`` runs longer; ``BENCH_ONLY=throughput,isolation`` runs a subset (the
other scenarios' figures already in results.json are kept).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from bench import cluster, retention, scenarios
from bench.harness import receiver

RESULTS = Path(__file__).resolve().parent / "results.json"
ORDER = (
    "throughput",
    "isolation",
    "latency",
    "ingestion",
    "scale",
    "health",
    "restart",
    "retention",
    "ordered",
    "cluster",
)
#: Scenarios that live in a module of their own.
MODULES = {"cluster": cluster.cluster, "retention": retention.retention}


def _earlier(only: list[str]) -> dict[str, Any]:
    """The figures of the scenarios not run this time, from the last results.json."""
    if set(only) >= set(ORDER) or not RESULTS.exists():
        return {}
    try:
        earlier: dict[str, Any] = json.loads(RESULTS.read_text())
    except ValueError:
        return {}
    return {name: figures for name, figures in earlier.items() if name in ORDER and name not in only}


def _table(results: dict[str, Any]) -> str:
    lines = [f"{'scenario':<11} {'figure':<34} {'value':>12}", "-" * 59]
    for section in ORDER:
        for key, value in results.get(section, {}).items():
            lines.append(f"{section:<11} {key:<34} {value!s:>12}")
    return "\n".join(lines)


def main() -> None:
    profile = scenarios.PROFILES[os.environ.get("BENCH_PROFILE", "quick")]
    only = [s for s in os.environ.get("BENCH_ONLY", "").split(",") if s] or list(ORDER)
    results: dict[str, Any] = {
        **_earlier(only),
        "meta": {
            "profile": profile.name,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    }
    started = time.perf_counter()
    with receiver() as rx:
        for name in ORDER:
            if name not in only:
                continue
            begin = time.perf_counter()
            print(f"== {name}", file=sys.stderr, flush=True)
            run = MODULES.get(name) or getattr(scenarios, name)
            results[name] = run(profile, rx)
            results[name]["seconds"] = round(time.perf_counter() - begin, 1)
            RESULTS.write_text(json.dumps(results, indent=2) + "\n")  # a later crash keeps these
    results["meta"]["seconds"] = round(time.perf_counter() - started, 1)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(_table(results))
    print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
