"""Where the person is: MediaPipe's Selfie Segmentation (Apache-2.0, Google), converted to ONNX
(``checkpoints/segmenter``), run by onnxruntime on each aligned crop. A hair colour stops where the backdrop begins,
which colour alone cannot tell when hair and backdrop share a colour (dark hair on a dark wall).
"""
from __future__ import annotations

import functools
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

MODEL = Path(__file__).resolve().parents[2] / "checkpoints" / "segmenter" / "selfie_segmentation.onnx"
SIZE = 256  # the model's input side


@functools.cache
def session():
    """The onnxruntime session (made once, on first use), or None (with a warning) if the model file is missing or
    unreadable: edits then go through their regions alone, as before the segmenter."""
    try:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, torch.get_num_threads())
        return ort.InferenceSession(str(MODEL), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - any failure to load means: no segmenter, say so once
        warnings.warn(f"person segmenter unavailable ({MODEL.name}: {e}); hair edits are not stopped at the backdrop",
                      stacklevel=2)
        return None


def person(x: torch.Tensor) -> torch.Tensor | None:
    """(N, 1, s, s) in [0, 1]: how likely each pixel of the crops ``x`` (N, 3, s, s) in [-1, 1] shows the person
    (hair, face, neck, clothes) rather than the backdrop; None without the model."""
    model = session()
    if model is None or len(x) == 0:
        return None
    size = x.shape[-1]
    inp = F.interpolate((x.float().clamp(-1, 1) + 1) / 2, size=(SIZE, SIZE), mode="bilinear", align_corners=False,
                        antialias=True)
    out = torch.from_numpy(model.run(None, {"image": inp.contiguous().numpy()})[0])
    return F.interpolate(out, size=(size, size), mode="area") if size != SIZE else out
