"""Which generator path the pipeline runs on this CPU: choose_path builds and measures the candidates (fp32,
bf16, ONNX Runtime fp32 and int8) in the order the CPU's features suggest, drops a failing, inexact or too slow one,
and stays within its start-up budget; the exporters' imports are started early; the CPU budget reads the cgroup.
"""
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from conftest import TINY
from stargan_core.config import ModelConfig
from stargan_core.edit import inference
from stargan_core.edit.geometry import align
from stargan_core.edit.images import load_image
from stargan_core.edit.inference import EXPORTED, MAX_ERROR, PATHS, choose_path, fp32, mean_error
from stargan_core.edit.pipeline import StarGANPipeline
from stargan_core.edit.threads import cpu_budget
from stargan_core.nets.model import build_generator


@pytest.fixture
def one_thread():
    """One torch thread while a test times small budgets: on 2 cores that other work keeps busy, two threads that wait
    on each other made a tiny G's forward hundreds of times slower, spending the budget before any candidate."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.data
@pytest.mark.slow
def test_the_chosen_path_equals_fp32_within_two_levels_on_real_faces(photos_dir, detector):
    cfg = ModelConfig()  # the paper's Generator(64, 5, 6) at 128 px
    torch.manual_seed(0)
    G = build_generator(cfg).eval()
    choice = choose_path(G, 128, budget_s=120)  # every candidate measured, whatever the machine's load
    assert set(choice.seconds) | set(choice.dropped) == set(PATHS)
    assert "onnxruntime-int8" in choice.error  # built and measured, not failed
    photo = load_image(photos_dir / "facenet_multiface.jpg")
    x = align(photo, detector.detect(photo, 128), 128)  # 6 real aligned faces, none of them the probe faces
    c = torch.eye(5)[torch.arange(6) % 5]
    with torch.no_grad():
        x_ref = G(x, c)
    assert mean_error(choice.run(x, c), x_ref) <= MAX_ERROR
    assert choice.name == "fp32" or choice.seconds[choice.name] < choice.seconds["fp32"]


def test_a_failing_or_inexact_candidate_falls_back_to_fp32(monkeypatch, one_thread):
    torch.manual_seed(0)
    G = build_generator(TINY).eval()

    def broken(G, x, c):
        raise RuntimeError("this runtime cannot run InstanceNormalization")

    def inexact(G, x, c):  # fast but wrong: a constant grey image
        return lambda x, c: torch.zeros_like(x)

    choice = choose_path(G, 32, paths={"fp32": fp32, "broken": broken, "inexact": inexact})
    assert choice.name == "fp32" and choice.dropped["broken"].startswith("failed: RuntimeError")
    assert choice.dropped["inexact"] == "error above 2/255" and choice.error["inexact"] > 2
    x, c = torch.rand(2, 3, 32, 32) * 2 - 1, torch.eye(5)[:2]
    with torch.no_grad():
        assert torch.equal(choice.run(x, c), G(x, c))
    monkeypatch.setattr("stargan_core.edit.inference.PROBE", Path("/nonexistent/probe.png"))
    assert choose_path(G, 32).name == "fp32"  # nothing to measure on: fp32, unmeasured
    assert StarGANPipeline(G, TINY, path="broken-name").path.name == "fp32"


def test_no_candidate_starts_that_would_end_past_the_budget(one_thread):
    torch.manual_seed(0)
    G = build_generator(TINY).eval()

    def slow(G, x, c):  # takes ~0.4 s to build, then runs as fp32 does
        time.sleep(0.4)
        return fp32(G, x, c)

    choice = choose_path(G, 32, budget_s=0.6, paths={"fp32": fp32, "slow": slow, "slow too": slow})
    assert "slow" in choice.seconds  # the first candidate starts: nothing says how long it takes
    assert choice.dropped["slow too"] == "not tried: it would not end within the 0.6 s budget"
    assert choice.took < 0.6 + 0.4


def _noting(tried: list[str], builders: dict) -> dict:
    """``builders`` (name -> make), each noting its name in ``tried`` when choose_path starts building it."""
    def note(name, make):
        def build(G, x, c):
            tried.append(name)
            return make(G, x, c)
        return build
    return {name: note(name, make) for name, make in builders.items()}


def _slow(seconds: float):
    def make(G, x, c):  # an export or a calibration that takes ``seconds``, then runs as fp32 does
        time.sleep(seconds)
        return fp32(G, x, c)
    return make


def _cpu(monkeypatch, flags: set[str], cap: str | None = None) -> None:
    monkeypatch.setattr("stargan_core.edit.inference.cpu_flags", lambda: flags)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    if cap:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    else:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)


AMX = {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"}


def test_where_amx_does_bf16_the_cheap_candidates_are_tried_first(monkeypatch, one_thread):
    _cpu(monkeypatch, AMX)
    torch.manual_seed(0)
    G = build_generator(replace(TINY, g_repeat_num=2)).eval()  # 2 residual blocks: one for int8-blocks to quantise
    tried: list[str] = []
    choice = choose_path(G, 32, budget_s=120, paths=_noting(tried, dict(reversed(PATHS.items()))))  # order: the CPU's
    assert tried == ["bf16-weights", "bf16-channels-last", "onnxruntime-int8", "onnxruntime-int8-blocks",
                     "onnxruntime"]
    assert set(choice.seconds) == set(PATHS) and choice.error["bf16-weights"] < 1  # every one built and measured
    # the machine: the export and calibration outlast the budget, and the cheap candidates are measured anyway
    tried.clear()
    slow_exports = {n: _slow(0.4) for n in EXPORTED}
    choice = choose_path(G, 32, budget_s=0.5, paths=_noting(tried, {**slow_exports, **PATHS, **slow_exports}))
    assert tried == ["bf16-weights", "bf16-channels-last", "onnxruntime-int8"]
    assert {"bf16-weights", "bf16-channels-last"} <= set(choice.seconds)
    assert choice.dropped["onnxruntime"] == "not tried: it would not end within the 0.5 s budget"


def test_a_cpu_without_bf16_tries_int8_first_and_falls_back_cleanly(monkeypatch, one_thread):
    _cpu(monkeypatch, {"avx2", "fma"})
    assert inference.bf16_hardware() == ""
    assert inference.candidate_order(list(PATHS))[:2] == ["fp32", "onnxruntime-int8"]
    torch.manual_seed(0)
    G = build_generator(replace(TINY, g_repeat_num=2)).eval()

    def no_bf16(G, x, c):
        raise RuntimeError("bf16 convolution is not supported on this CPU")

    tried: list[str] = []
    paths = _noting(tried, {**dict(reversed(PATHS.items())), "bf16-weights": no_bf16, "bf16-channels-last": no_bf16})
    choice = choose_path(G, 32, budget_s=120, paths=paths)
    assert tried == ["onnxruntime-int8", "onnxruntime-int8-blocks", "onnxruntime", "bf16-weights",
                     "bf16-channels-last"]
    assert choice.dropped["bf16-weights"] == "failed: RuntimeError: bf16 convolution is not supported on this CPU"
    assert choice.name in {"fp32", *EXPORTED} and set(EXPORTED) <= set(choice.seconds)
    x, c = torch.rand(3, 3, 32, 32) * 2 - 1, torch.eye(5)[:3]
    with torch.no_grad():
        assert mean_error(choice.run(x, c), G(x, c)) <= MAX_ERROR
    # a bf16 forward that would crawl (emulated kernels) costs the start-up nothing: int8 has used the budget
    choice = choose_path(G, 32, budget_s=0.5, paths={"fp32": fp32, "bf16-weights": _slow(30),
                                                     "onnxruntime-int8": _slow(0.3)})
    assert "onnxruntime-int8" in choice.seconds and choice.took < 0.5 + 0.3
    assert choice.dropped["bf16-weights"] == "not tried: it would not end within the 0.5 s budget"


def test_onednn_s_isa_cap_hides_amx_and_bf16_from_the_order(monkeypatch):
    for cap, seen in ((None, "amx"), ("ALL", "amx"), ("AVX512_CORE_AMX", "amx"), ("AVX512_CORE_BF16", "avx512_bf16"),
                      ("avx512_core_vnni", ""), ("AVX2", "")):
        _cpu(monkeypatch, AMX, cap)
        assert inference.bf16_hardware() == seen, cap
    _cpu(monkeypatch, AMX - {"amx_bf16"})
    assert inference.bf16_hardware() == "avx512_bf16"
    assert inference.candidate_order(list(PATHS), "avx512_bf16") == ["fp32", "onnxruntime-int8", "bf16-weights",
                                                           "bf16-channels-last", "onnxruntime-int8-blocks",
                                                           "onnxruntime"]
    assert inference.candidate_order(["slow too", "onnxruntime", "slow", "bf16-weights"], "amx") == [
        "bf16-weights", "onnxruntime", "slow too", "slow"]  # unknown names keep their order, after the known ones


def test_preload_exporters_imports_what_the_exported_candidates_need_in_the_background():
    """In a fresh interpreter: none of ONNX's modules before, all of them once the thread is joined (app.py starts it
    before Gradio's import, so that ml_dtypes' import is not paid inside the race's budget)."""
    import subprocess
    import sys

    code = ("import sys\nfrom stargan_core.edit.inference import preload_exporters\n"
            "names = ['onnx', 'onnxruntime', 'onnxruntime.quantization', 'torch.onnx', 'ml_dtypes']\n"
            "print([n in sys.modules for n in names])\nt = preload_exporters()\nt.join()\n"
            "print(t.daemon, [n in sys.modules for n in names])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1]).stdout.split("\n")
    assert out[:2] == ["[False, False, False, False, False]", "True [True, True, True, True, True]"]



@pytest.mark.parametrize("cpu_max, want", [("max 100000", 2), ("150000 100000", 2), ("100000 100000", 1)])
def test_cpu_budget_reads_the_cgroup_quota(tmp_path, monkeypatch, cpu_max, want):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(2)))  # 2 visible cores
    (tmp_path / "cpu.max").write_text(cpu_max + "\n")
    assert cpu_budget(tmp_path) == want
    assert cpu_budget(tmp_path / "nowhere") == 2
