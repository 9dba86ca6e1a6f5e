"""``python -m benchmarks {infer,mirror,train,serve,blend,sheet}``: one command runs every benchmark (each file says
what it measures)."""
from __future__ import annotations

import argparse
import sys

from . import blend, infer, mirror, serve, sheet, train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description="Benchmarks, measured rather than "
                                     "assumed: inference, the mirror, training, serving and the blend")
    sub = parser.add_subparsers(dest="command", required=True)
    for benchmark in (infer, mirror, train, serve, blend, sheet):
        benchmark.add_parser(sub)
    args = parser.parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
