"""Benchmarks, measured rather than assumed: ``python -m benchmarks {infer,mirror,train,serve,blend} --help``.

One file per benchmark; each measures the package's own code paths (the pipeline, the training loop's update, the
app, the blend) rather than copies of them. What they measured, dated and with the command: the README ("Speed",
"Serving"), ``docs/BLENDING.md`` and ``docs/EXPERIMENTS.md``.
"""
import os
from pathlib import Path

SHARED_DATA = Path(os.environ.get("STARGAN_SHARED_DATA", Path(__file__).resolve().parents[1] / "../shared/data"))
PHOTOS = SHARED_DATA / "photos"  # the shared photos the benchmarks edit
