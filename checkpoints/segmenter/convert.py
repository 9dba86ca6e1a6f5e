"""Re-create ``selfie_segmentation.onnx`` from MediaPipe's Selfie Segmentation model (Apache-2.0, Google; the
general 256x256 model that the ``mediapipe`` 0.10 wheels bundle as
``mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite``).

No converter reads it whole: ``tflite2onnx`` and ``tf2onnx`` stop at MediaPipe's custom op
``Convolution2DTransposeBias`` (a transposed convolution with a bias). This script reads the graph with the
``tflite`` package's flatbuffer bindings, runs each of its eleven kinds of operator as the matching ``torch``
function, and lets ``torch.onnx.export`` trace that into ONNX for onnxruntime. Dev-only:

    pip install tflite && pip download mediapipe==0.10.14 --no-deps -d /tmp/mp
    cd checkpoints/segmenter && python convert.py /tmp/mp/mediapipe-0.10.14-*.whl selfie_segmentation.onnx

Checked against MediaPipe itself (``mediapipe`` 0.10.14's ``solutions.selfie_segmentation``, model 0, on three shared
photos resized to 256x256): the largest difference of the person probability is 1e-4.
"""
from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

MEMBER = "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite"


def read_tflite(path: str) -> bytes:
    """The model's bytes from a .tflite file or from a mediapipe wheel that bundles it."""
    if path.endswith(".whl"):
        with zipfile.ZipFile(path) as z:
            return z.read(MEMBER)
    return Path(path).read_bytes()


class TFLiteGraph(torch.nn.Module):
    """The graph's operators in order, on NCHW tensors; input (N, 3, 256, 256) RGB in [0, 1], output (N, 1, 256,
    256): how likely each pixel is the person (hair and clothes included) rather than the backdrop."""

    def __init__(self, buf: bytes):
        import tflite

        super().__init__()
        self.t = tflite
        m = tflite.Model.GetRootAsModel(buf, 0)
        g = m.Subgraphs(0)
        self.model, self.graph = m, g
        self.inputs, self.outputs = g.InputsAsNumpy().tolist(), g.OutputsAsNumpy().tolist()
        self.consts: dict[int, torch.Tensor] = {}
        for i in range(g.TensorsLength()):
            tensor = g.Tensors(i)
            data = m.Buffers(tensor.Buffer()).DataAsNumpy()
            if isinstance(data, np.ndarray) and data.size:
                dtype = {tflite.TensorType.FLOAT16: np.float16, tflite.TensorType.FLOAT32: np.float32,
                         tflite.TensorType.INT32: np.int32}[tensor.Type()]
                self.consts[i] = torch.from_numpy(data.view(dtype).reshape(tensor.ShapeAsNumpy()).astype(
                    np.float32 if dtype != np.int32 else np.int64))
        self.ops = []
        for k in range(g.OperatorsLength()):
            op = g.Operators(k)
            code = m.OperatorCodes(op.OpcodeIndex())
            name = code.CustomCode().decode() if code.CustomCode() else tflite.opcode2name(
                max(code.BuiltinCode(), code.DeprecatedBuiltinCode()))
            self.ops.append((name, op.InputsAsNumpy().tolist(), op.OutputsAsNumpy().tolist(), op))

    def _options(self, op, cls):
        o = cls()
        table = op.BuiltinOptions()
        o.Init(table.Bytes, table.Pos)
        return o

    def _act(self, x, fused: int):
        return {0: lambda v: v, 1: F.relu, 3: lambda v: v.clamp(0, 6)}[fused](x)

    @staticmethod
    def _same_pad(x, k: int, stride: int):
        """TensorFlow's SAME padding: the extra pixel of an odd total goes to the bottom and right."""
        h = x.shape[-1]
        out = -(-h // stride)
        total = max((out - 1) * stride + k - h, 0)
        return F.pad(x, (total // 2, total - total // 2, total // 2, total - total // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, v = self.t, dict(self.consts)
        v[self.inputs[0]] = x
        for name, ins, outs, op in self.ops:
            a = [v.get(i) for i in ins]
            if name == "DEQUANTIZE":
                y = a[0]
            elif name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                o = self._options(op, t.Conv2DOptions if name == "CONV_2D" else t.DepthwiseConv2DOptions)
                s, w = o.StrideH(), a[1]
                assert o.StrideW() == s and o.DilationHFactor() == 1
                if name == "CONV_2D":
                    w, groups = w.permute(0, 3, 1, 2), 1  # (out, kh, kw, in) -> (out, in, kh, kw)
                else:
                    w, groups = w.permute(3, 0, 1, 2), w.shape[3]  # (1, kh, kw, C) -> (C, 1, kh, kw)
                xin = self._same_pad(a[0], w.shape[-1], s) if o.Padding() == t.Padding.SAME else a[0]
                y = self._act(F.conv2d(xin, w, a[2], stride=s, groups=groups), o.FusedActivationFunction())
            elif name == "Convolution2DTransposeBias":  # custom options: padding, stride_w, stride_h (int32)
                pad, sw, sh = np.frombuffer(bytes(op.CustomOptionsAsNumpy()), np.int32)[:3]
                assert pad == 1 and sw == sh  # VALID
                w = a[1].permute(3, 0, 1, 2)  # (out, kh, kw, in) -> (in, out, kh, kw)
                y = F.conv_transpose2d(a[0], w, a[2], stride=int(sw))
            elif name == "AVERAGE_POOL_2D":
                o = self._options(op, t.Pool2DOptions)
                assert o.Padding() == t.Padding.VALID
                y = F.avg_pool2d(a[0], (o.FilterHeight(), o.FilterWidth()), (o.StrideH(), o.StrideW()))
            elif name == "RESIZE_BILINEAR":
                o = self._options(op, t.ResizeBilinearOptions)
                size = [int(s) for s in a[1].tolist()]
                assert o.HalfPixelCenters() or o.AlignCorners() is False
                y = F.interpolate(a[0], size=size, mode="bilinear", align_corners=bool(o.AlignCorners()))
            elif name in ("ADD", "MUL"):
                o = self._options(op, t.AddOptions if name == "ADD" else t.MulOptions)
                y = self._act(a[0] + a[1] if name == "ADD" else a[0] * a[1], o.FusedActivationFunction())
            elif name == "HARD_SWISH":
                y = F.hardswish(a[0])
            elif name == "RELU":
                y = F.relu(a[0])
            elif name == "LOGISTIC":
                y = torch.sigmoid(a[0])
            else:
                raise NotImplementedError(name)
            v[outs[0]] = y
        return v[self.outputs[0]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", help="selfie_segmentation.tflite, or a mediapipe 0.10 wheel that bundles it")
    p.add_argument("out", help="the .onnx to write")
    args = p.parse_args()
    net = TFLiteGraph(read_tflite(args.source)).eval()
    torch.onnx.export(net, (torch.rand(1, 3, 256, 256),), args.out, input_names=["image"], output_names=["person"],
                      dynamic_axes={"image": {0: "n"}, "person": {0: "n"}}, opset_version=17, dynamo=False)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
