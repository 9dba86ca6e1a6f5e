"""The generator's inference paths, and the start-up measurement that picks the fastest one that stays exact.

A *path* is a function ``run(x, c) -> x_fake``: x (N, 3, S, S) and c (N, c_dim) on the CPU in, fp32 (N, 3, S, S)
on the CPU out, the same numbers as ``G(x, c)`` in fp32 up to ``MAX_ERROR``. The candidates (``PATHS``):

- ``fp32``: eager PyTorch, the reference; also the path on a GPU or MPS, and the fallback for any failure.
- ``bf16-weights``: a bf16 copy of G made once (not autocast on every call).
- ``bf16-channels-last``: the same in NHWC memory layout, the one oneDNN's AMX convolutions read without a reorder.
- ``onnxruntime``: G exported once to ONNX (InstanceNormalization and all) and run by ONNX Runtime in fp32.
- ``onnxruntime-int8``: the same graph with every convolution but the output one in int8 on VNNI (the 7x7 input
  conv, both down-sampling convs and the 12 of the residual blocks: most of a face's FLOPs): static quantisation,
  per-channel weights, activation ranges calibrated on the probe faces. The two transposed convs stay fp32, and so
  does the output conv: quantised, they added error and no speed.
- ``onnxruntime-int8-blocks``: the cautious recipe, for nets whose ranges int8 does not hold (the paper's net with
  random weights misses ``MAX_ERROR`` with all 12 block convs): only the residual blocks after the first in int8.

``choose_path`` runs at load time: the fp32 reference on ``probe_faces()`` (two public-domain aligned faces), then
each candidate, each timed once on the same faces after a warm-up, in ``candidate_order``: a look at the CPU's flags
(as oneDNN will see them) puts the likely winner first, so that the budget is spent where it pays. Where AMX does
bf16, the bf16 copies go first: they cost one cast of G to try, the ONNX ones an export and a calibration.
Elsewhere int8 goes first, and without bf16 hardware a bf16 forward falls back to slow kernels, so those go last.
The order only decides what is tried first; what is chosen is what measured fastest. A candidate that raises, whose
mean error is above ``MAX_ERROR`` or that is not faster is dropped with its reason; no candidate starts that would
end past ``budget_s``, judged by the longest one so far (the first starts if the reference left time). Whatever
happens, the answer is a working path (fp32 at worst). ``torch.compile`` is not a candidate: its compilation alone
takes many times the budget, and the compiled G was not faster than int8. Measured figures: README, "Speed", and
``docs/EXPERIMENTS.md``.
"""
from __future__ import annotations

import copy
import io
import os
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

Run = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x, c) -> fp32 x_fake, all on the CPU
MAX_ERROR = 2.0  # the largest mean |path - fp32| allowed, in 0..255 pixel levels
PROBE = Path(__file__).with_name("probe_faces.png")  # 2 aligned 128 px faces side by side (skimage, public domain)


@dataclass
class Choice:
    """The chosen path and what the measurement saw: seconds per face, mean error, or why a candidate was dropped."""

    name: str
    run: Run
    seconds: dict[str, float] = field(default_factory=dict)  # candidate -> seconds per face on the probe
    error: dict[str, float] = field(default_factory=dict)  # candidate -> mean |path - fp32| in pixel levels
    dropped: dict[str, str] = field(default_factory=dict)  # candidate -> why it was not used
    took: float = 0.0  # seconds the whole measurement took

    def summary(self) -> str:
        """One line per candidate, for logs and ``bench infer``."""
        lines = [f"path {self.name} (chosen in {self.took:.2f} s)"]
        for k in self.seconds | self.dropped:
            ms = f"{self.seconds[k] * 1e3:7.1f} ms/face" if k in self.seconds else " " * 15
            err = f"error {self.error[k]:.3f}/255" if k in self.error else ""
            lines.append(f"  {k:<23} {ms}  {err:<17} {self.dropped.get(k, '<- chosen' if k == self.name else '')}")
        return "\n".join(lines)


def fp32(G: nn.Module, x: torch.Tensor, c: torch.Tensor) -> Run:
    """Eager PyTorch in fp32, on G's device."""
    device = next(G.parameters()).device
    return torch.inference_mode()(lambda x, c: G(x.to(device), c.to(device)).float().cpu())


def bf16_weights(G: nn.Module, x: torch.Tensor, c: torch.Tensor) -> Run:
    """Eager on a bf16 copy of G, cast once: bf16 in, fp32 out."""
    G = copy.deepcopy(G).to(torch.bfloat16)
    return torch.inference_mode()(lambda x, c: G(x.bfloat16(), c.bfloat16()).float())


def bf16_channels_last(G: nn.Module, x: torch.Tensor, c: torch.Tensor) -> Run:
    """Eager on a bf16 copy of G in NHWC layout: bf16 in, fp32 (NCHW) out."""
    G = copy.deepcopy(G).to(torch.bfloat16).to(memory_format=torch.channels_last)
    nhwc = torch.channels_last
    return torch.inference_mode()(lambda x, c: G(x.bfloat16().contiguous(memory_format=nhwc), c.bfloat16())
                                  .float().contiguous())


def to_onnx(G: nn.Module, x: torch.Tensor, c: torch.Tensor) -> bytes:
    """G as an ONNX graph (batch size free), by the TorchScript exporter (~0.5 s; the dynamo one takes ~6 s)."""
    buf = io.BytesIO()
    with warnings.catch_warnings():  # tracer chatter; InstanceNorm is exported with per-image statistics, as wanted
        warnings.simplefilter("ignore")
        torch.onnx.export(copy.deepcopy(G).float().eval(), (x[:1], c[:1]), buf, dynamo=False, opset_version=17,
                          input_names=["x", "c"], output_names=["y"], dynamic_axes={k: {0: "n"} for k in "xcy"})
    return buf.getvalue()


def ort_session(model: bytes | str) -> Run:
    """An ONNX Runtime CPU session as a path, with torch's thread count and no busy-waiting between calls."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = torch.get_num_threads(), 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # 2 vCPUs: MTCNN needs them between runs
    session = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])

    def run(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        feed = {"x": x.float().contiguous().numpy(), "c": c.float().contiguous().numpy()}
        return torch.from_numpy(session.run(None, feed)[0])
    return run


def onnxruntime(G: nn.Module, x: torch.Tensor, c: torch.Tensor) -> Run:
    """G exported to ONNX and run by ONNX Runtime in fp32."""
    return ort_session(to_onnx(G, x, c))


def onnxruntime_int8(G: nn.Module, x: torch.Tensor, c: torch.Tensor) -> Run:
    """ONNX Runtime with every convolution but the output one in int8 (QDQ), calibrated on x."""
    return _int8(G, x, c, lambda name, i, n: i < n - 1)


def onnxruntime_int8_blocks(G: nn.Module, x: torch.Tensor, c: torch.Tensor) -> Run:
    """ONNX Runtime with the convolutions of the residual blocks after the first in int8 (QDQ), calibrated on x."""
    blocks = [f"/main/main.{i}/" for i, m in enumerate(G.main) if type(m).__name__ == "ResidualBlock"][1:]
    return _int8(G, x, c, lambda name, i, n: any(name.startswith(b) for b in blocks))


def _int8(G: nn.Module, x: torch.Tensor, c: torch.Tensor, pick: Callable[[str, int, int], bool]) -> Run:
    """G in ONNX Runtime with the Conv nodes ``pick(name, position, count)`` selects statically quantised to int8:
    per-channel int8 weights, uint8 activations whose ranges are calibrated on the faces x (min-max)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Faces(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter({"x": x[i:i + 1].numpy(), "c": c[i:i + 1].numpy()} for i in range(len(x)))

        def get_next(self):
            return next(self.feeds, None)

    with tempfile.TemporaryDirectory() as tmp:
        fp32_path, int8_path = Path(tmp) / "g.onnx", Path(tmp) / "g8.onnx"
        fp32_path.write_bytes(to_onnx(G, x, c))
        convs = [n.name for n in onnx.load(str(fp32_path)).graph.node if n.op_type == "Conv"]
        convs = [name for i, name in enumerate(convs) if pick(name, i, len(convs))]
        if not convs:
            raise RuntimeError("no convolution to quantise in the exported graph")
        quantize_static(str(fp32_path), str(int8_path), Faces(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_quantize=convs)
        return ort_session(int8_path.read_bytes())


PATHS: dict[str, Callable[[nn.Module, torch.Tensor, torch.Tensor], Run]] = {
    "fp32": fp32, "bf16-weights": bf16_weights, "bf16-channels-last": bf16_channels_last,
    "onnxruntime-int8": onnxruntime_int8, "onnxruntime-int8-blocks": onnxruntime_int8_blocks,
    "onnxruntime": onnxruntime}
CHEAP = ["bf16-weights", "bf16-channels-last"]  # a cast copy of G: no export, no calibration
EXPORTED = ["onnxruntime-int8", "onnxruntime-int8-blocks", "onnxruntime"]  # an ONNX export (and a calibration)


def preload_exporters() -> threading.Thread:
    """Import what the exported candidates need (torch.onnx, onnx, ONNX Runtime and its quantiser) in a background
    thread, and return it. Importing onnx loads ml_dtypes, which alone costs more than an int8 export; in a process
    that starts this before its other imports (``app.py``: before Gradio's), that cost overlaps them instead of
    eating the race's budget. The clock stays honest: a candidate that needs a module still being imported waits
    on Python's import lock, inside the race's time."""
    def imports():
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxruntime.quantization  # noqa: F401
        import torch.onnx  # noqa: F401
    thread = threading.Thread(target=imports, name="preload-exporters", daemon=True)
    thread.start()
    return thread


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none: macOS, Windows)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    except OSError:
        return set()


def bf16_hardware() -> str:
    """``"amx"``, ``"avx512_bf16"`` or ``""``: what computes bf16 here, as oneDNN sees it (held back by
    ``ONEDNN_MAX_CPU_ISA``, which makes a machine without AMX or bf16 easy to simulate)."""
    flags = cpu_flags()
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "ALL")).upper()
    uncapped = cap in ("ALL", "DEFAULT", "")
    if "amx_bf16" in flags and (uncapped or "AMX" in cap):
        return "amx"
    if "avx512_bf16" in flags and (uncapped or any(k in cap for k in ("BF16", "FP16", "AMX", "AVX10"))):
        return "avx512_bf16"
    return ""


def candidate_order(names: list[str], bf16: str | None = None) -> list[str]:
    """``names`` with the likely winner first for this CPU's bf16 hardware (default: ``bf16_hardware()``); names
    that are not in ``PATHS`` keep their order, after the known ones."""
    bf16 = bf16_hardware() if bf16 is None else bf16
    ranked = {"amx": ["fp32", *CHEAP, *EXPORTED], "avx512_bf16": ["fp32", EXPORTED[0], *CHEAP, *EXPORTED[1:]],
              "": ["fp32", *EXPORTED, *CHEAP]}[bf16]
    return sorted(names, key=lambda n: ranked.index(n) if n in ranked else len(ranked))


def probe_faces(size: int, c_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two real aligned faces (2, 3, size, size) in [-1, 1] and two conditions (2, c_dim) to measure paths on."""
    strip = Image.open(PROBE).convert("RGB")
    faces = [strip.crop((i * 128, 0, i * 128 + 128, 128)).resize((size, size), Image.BICUBIC) for i in range(2)]
    x = torch.from_numpy(np.stack([np.asarray(f, np.float32) for f in faces])).permute(0, 3, 1, 2) / 127.5 - 1
    c = torch.zeros(2, c_dim)
    c[0, 0], c[1, min(1, c_dim - 1)] = 1, 1
    return x, c


def mean_error(y: torch.Tensor, y_ref: torch.Tensor) -> float:
    """Mean |y - y_ref| in 0..255 pixel levels (outputs in [-1, 1])."""
    return float((y.float() - y_ref.float()).abs().mean() * 127.5)


def _timed(run: Run, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, float]:
    run(x[:1], c[:1])  # warm-up: oneDNN primitives, ONNX Runtime's first-run allocations
    t = time.perf_counter()
    y = run(x, c)
    return y, (time.perf_counter() - t) / len(x)


def choose_path(G: nn.Module, size: int, names: list[str] | None = None, budget_s: float = 2.0,
                paths: dict[str, Callable] | None = None) -> Choice:
    """The fastest of ``names`` (default: all ``paths``, i.e. ``PATHS``) within MAX_ERROR of fp32, measured on the
    probe faces at ``size`` px (the model's crop size), tried in ``candidate_order``."""
    start, paths = time.perf_counter(), paths or PATHS
    reference = fp32(G, None, None)
    try:
        cpu = next(G.parameters()).device.type == "cpu"
        x, c = probe_faces(size, G.main[0].in_channels - 3)  # c_dim: G's first conv sees 3 + c_dim channels
        y_ref, t_ref = _timed(reference, x, c)
    except Exception as e:  # noqa: BLE001 - anything at all: keep the reference path
        return Choice("fp32", reference, dropped={"fp32": f"kept without measuring ({e})"})
    best = Choice("fp32", reference, {"fp32": t_ref}, {"fp32": 0.0})
    longest = 0.0  # the longest any candidate took to build and measure: what the next one is expected to take
    for name in [n for n in candidate_order(list(names or paths)) if n != "fp32"]:
        if not cpu:
            best.dropped[name] = "G is not on the CPU"
        elif time.perf_counter() - start + longest > budget_s:
            best.dropped[name] = f"not tried: it would not end within the {budget_s:g} s budget"
        elif name not in paths:
            best.dropped[name] = "no such path"
        else:
            t = time.perf_counter()
            _try(best, name, paths[name], G, x, c, y_ref)
            longest = max(longest, time.perf_counter() - t)
    best.took = time.perf_counter() - start
    return best


def _try(best: Choice, name: str, make: Callable, G: nn.Module, x: torch.Tensor, c: torch.Tensor,
         y_ref: torch.Tensor) -> None:
    """Build and measure one candidate; make it ``best`` if it is exact enough and faster."""
    try:
        run = make(G, x, c)
        y, seconds = _timed(run, x, c)
        best.seconds[name], best.error[name] = seconds, mean_error(y, y_ref)
    except Exception as e:  # noqa: BLE001 - a candidate that fails in any way is simply not used
        best.dropped[name] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''}"
        return
    if best.error[name] > MAX_ERROR:
        best.dropped[name] = f"error above {MAX_ERROR:.0f}/255"
    elif seconds >= best.seconds[best.name]:
        best.dropped[name] = "not faster"
    else:
        if best.name != "fp32":
            best.dropped[best.name] = "not faster"
        best.name, best.run = name, run
