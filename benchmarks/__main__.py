"""``python -m benchmarks {infer,train,serve,blend}``: one command runs every benchmark (see each file's docstring)."""
from __future__ import annotations

import argparse
import sys

from . import blend, infer, serve, train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description="Benchmarks, measured rather than "
                                     "assumed: inference, training, serving and the blend")
    sub = parser.add_subparsers(dest="command", required=True)
    for benchmark in (infer, train, serve, blend):
        benchmark.add_parser(sub)
    args = parser.parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
