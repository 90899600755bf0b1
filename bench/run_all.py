"""`python -m bench.run_all [name ...]` (or `make bench`): run the benchmarks one after the other, each on
its own fresh PostgreSQL database, print every figure and a PASS/FAIL summary. Exit status 1 when any
target is missed. Names: throughput, flash_sale, fanout, dhl_cycle, catalog_scale, search."""

from __future__ import annotations

import importlib
import os
import platform
import sys
import time

from bench.common import Result, quiet_logs
from bot.loop import run as run_loop

ALL = ("throughput", "flash_sale", "fanout", "dhl_cycle", "catalog_scale", "search")


def machine() -> str:
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = float("nan")
    return f"{os.cpu_count()} cores, {mem:.0f} GiB, Python {platform.python_version()}, load {os.getloadavg()[0]:.2f}"


async def run_one(name: str) -> Result:
    module = importlib.import_module(f"bench.{name}")
    began = time.perf_counter()
    try:
        result: Result = await module.run()
    except Exception as exc:  # noqa: BLE001 - one broken benchmark must not hide the others' figures
        result = Result(name, "ran to the end", False, {"error": f"{type(exc).__name__}: {exc}"})
    result.figures["benchmark run time s"] = time.perf_counter() - began
    return result


def main() -> None:
    quiet_logs()
    names = sys.argv[1:] or list(ALL)
    unknown = [n for n in names if n not in ALL]
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(ALL)}")
    print(f"# storefront benchmarks on {machine()}", flush=True)
    results = []
    for name in names:
        result = run_loop(run_one(name))
        result.print()
        results.append(result)
    print("\n# summary")
    for r in results:
        print(f"   {'PASS' if r.passed else 'FAIL'}  {r.name}  ({r.target})")
    raise SystemExit(0 if all(r.passed for r in results) else 1)


if __name__ == "__main__":
    main()
