"""An interleaved A/B of two limner source trees as gateways, for measuring one change at a time.

Starts the fake provider and two ``limner serve`` processes on the same accounts database, one running
this checkout's ``limner`` package and one a copy of it elsewhere (``--base DIR``, a directory holding a
``limner`` package: the code before the change), then runs wrk against each in turn, the order alternating
from round to round, for the unmetered and the metered consumer. Prints the median requests/s, p50 and
server CPU per request of each, and the median of the ratios paired within a round.

    python -m benchmarks.gateway_ab --base /tmp/before [--rounds 4] [--seconds 5] [--concurrency 16 64]

Not part of ``python -m benchmarks``; a tool for deciding whether a lever pays.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from benchmarks import wrk
from benchmarks.gateway_vs_litellm import BODY, Bench, Target, _headers, measure
from benchmarks.harness import ROOT, Server


def _limner(bench: Bench, name: str, cwd: Path) -> Server:
    command = [sys.executable, "-m", "limner.cli", "serve", "--host", "127.0.0.1"]
    return bench._start(name, command, bench._limner_env(), cwd=cwd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="a directory holding the 'before' limner package")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--consumers", nargs="+", default=["limner", "limner-metered"])
    args = parser.parse_args(argv)
    bench = Bench()
    try:
        servers = {"before": _limner(bench, "before", args.base.resolve()), "after": _limner(bench, "after", ROOT)}
        table: dict[tuple[str, int, str], list[dict[str, float]]] = {}
        for consumer in args.consumers:
            for server in servers.values():
                target = Target(consumer, server, _headers(consumer, bench.tokens))
                wrk.run(target.url, wrk.lua(BODY, target.headers), concurrency=16, seconds=2)
        for round_index in range(args.rounds):
            for concurrency in args.concurrency:
                for consumer in args.consumers:
                    order = ["before", "after"] if round_index % 2 == 0 else ["after", "before"]
                    for label in order:
                        target = Target(consumer, servers[label], _headers(consumer, bench.tokens))
                        data = measure(target, concurrency, args.seconds)
                        table.setdefault((consumer, concurrency, label), []).append(data)
                        print(
                            f"  r{round_index + 1} c={concurrency:<3} {consumer:<15} {label:<6} "
                            f"{data['rps']:7.1f} req/s"
                            f"  p50 {data['p50_ms']:6.2f} ms  cpu {data['cpu_ms_per_request'] or 0:5.2f} ms/req"
                            f"  errors {data['errors']}",
                            flush=True,
                        )
        print()
        print("consumer         c    before req/s  after req/s  ratio   p50 ms b/a      cpu ms/req b/a")
        for consumer in args.consumers:
            for concurrency in args.concurrency:
                before, after = table[(consumer, concurrency, "before")], table[(consumer, concurrency, "after")]
                ratio = statistics.median(a["rps"] / b["rps"] for a, b in zip(after, before, strict=True))

                def med(runs: list[dict[str, float]], key: str) -> float:
                    return statistics.median(run[key] or 0 for run in runs)

                print(
                    f"{consumer:<15} {concurrency:>3} {med(before, 'rps'):12.1f} {med(after, 'rps'):12.1f}"
                    f"  {ratio:5.2f}x  {med(before, 'p50_ms'):5.2f} / {med(after, 'p50_ms'):5.2f}"
                    f"  {med(before, 'cpu_ms_per_request'):6.2f} / {med(after, 'cpu_ms_per_request'):6.2f}"
                )
    finally:
        bench.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
