"""``python -m benchmarks serve``: the app under N concurrent users.

It starts ``app.py`` in its own process (the paper's 128 px nets with random weights, or ``--model``), runs N
concurrent ``gradio_client`` users that each edit photos through the ``/edit`` endpoint, and prints latency
percentiles, throughput and the server's peak RSS (``VmHWM``) for N = 1, 8, 16.
"""
from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from . import PHOTOS
from .timing import machine_load


def _write_bench_release(folder: Path) -> Path:
    """The paper's 128 px G and D (random weights) as a release, so ``serve`` needs no download."""
    from stargan_core.config import ModelConfig
    from stargan_core.nets.model import build_discriminator, build_generator
    from stargan_core.weights.formats import save_release

    cfg = ModelConfig()
    torch.manual_seed(0)
    return save_release(build_generator(cfg), cfg, folder, D=build_discriminator(cfg))


def _server_kib(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` memory field in KiB: VmRSS (now) or VmHWM (peak since start)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def serve(args: argparse.Namespace) -> None:
    """Latency percentiles, throughput and server peak RSS of the app under N concurrent users."""
    import socket
    import subprocess
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    from gradio_client import Client, handle_file

    root = Path(__file__).resolve().parents[1]
    photos = sorted(p for p in PHOTOS.glob("*.[jp][pn]g") if "no-faces" not in p.name) or \
        [root / "demo" / "examples" / "astronaut.jpg"]
    with tempfile.TemporaryDirectory() as tmp, socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        model = args.model or str(_write_bench_release(Path(tmp) / "model"))
        env = {**os.environ, "STARGAN_MODEL": model, "GRADIO_SERVER_PORT": str(port), "HF_HUB_OFFLINE": "1",
               "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_TEMP_DIR": tmp}
        start = time.perf_counter()
        log = Path(tmp) / "app.log"  # the app prints its start-up race there
        server = subprocess.Popen([sys.executable, "app.py"], cwd=root, env=env, stdout=log.open("w"),
                                  stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}/"
        try:
            for _ in range(600):
                try:
                    if httpx.get(url, timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.5)
            ready = time.perf_counter() - start
            Client(url, verbose=False, download_files=tmp).predict(photo=handle_file(str(photos[0])), hair="Blond",
                                                                  api_name="/edit")
            print(f"app start to first edit: {time.perf_counter() - start:.1f} s (the server answered after "
                  f"{ready:.1f} s; the edit: {photos[0].name}, hair -> blond, through the API)")
            lines = log.read_text(errors="replace").splitlines()  # the race: "generator: path ..." + indented
            at = next((i for i, line in enumerate(lines) if line.startswith("generator: ")), len(lines))
            print("the app's start-up race, " + "\n".join(lines[at:at + 1] + list(
                itertools.takewhile(lambda line: line.startswith("  "), lines[at + 1:]))))
            print(f"{len(photos)} photos, {args.edits} edits per user, {machine_load()}; server RSS after start "
                  f"{_server_kib(server.pid, 'VmRSS') / 1024:.0f} MiB")
            print("users   edits   p50 s   p90 s   p99 s   max s   edits/s   server peak RSS   RSS after")
            for n in args.users:
                _serve_round(server.pid, url, n, args.edits, photos, Client, handle_file, ThreadPoolExecutor, tmp)
        finally:
            server.terminate()
            server.wait(timeout=30)


def _serve_round(pid, url, n, edits, photos, Client, handle_file, pool, tmp) -> None:  # noqa: N803 - classes
    """One round: ``n`` users, each with its own client, ``edits`` edits each of photos in turn."""
    hair = ("Black", "Blond", "Brown")

    def user(u: int) -> list[float]:
        client, times = Client(url, verbose=False, download_files=tmp), []
        for k in range(edits):
            t = time.perf_counter()
            client.predict(photo=handle_file(str(photos[(u + k) % len(photos)])), hair=hair[(u + k) % 3],
                           api_name="/edit")
            times.append(time.perf_counter() - t)
        return times

    start = time.perf_counter()
    with pool(n) as ex:
        lat = sorted(t for times in ex.map(user, range(n)) for t in times)
    wall = time.perf_counter() - start
    q = statistics.quantiles(lat * 2 if len(lat) == 1 else lat, n=100, method="inclusive")  # one edit: its own
    print(f"{n:5d}   {len(lat):5d}   {q[49]:5.2f}   {q[89]:5.2f}   {q[98]:5.2f}   {lat[-1]:5.2f}   "
          f"{len(lat) / wall:7.2f}   {_server_kib(pid, 'VmHWM') / 1024:11.0f} MiB   "
          f"{_server_kib(pid, 'VmRSS') / 1024:5.0f} MiB", flush=True)


def add_parser(sub) -> None:
    """The ``serve`` command and its options."""
    p = sub.add_parser("serve", help="the app under N concurrent users: latency, throughput, server peak RSS")
    p.add_argument("--model", default=None, help="STARGAN_MODEL for the app (default: random paper-size nets)")
    p.add_argument("--users", type=int, nargs="+", default=[1, 8, 16])
    p.add_argument("--edits", type=int, default=4, help="edits per user and round")
    p.set_defaults(func=serve)
