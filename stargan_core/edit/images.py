"""Uploads: decode whatever a person gives us into an upright RGB image, and give results back the upload's mode.

Every failure is an ``ImageError`` whose message is one sentence a non-expert understands: a non-image, a damaged
file, a decompression bomb or a photo over ``MAX_PIXELS``. 16-bit, palette, CMYK, grayscale and transparent
images are converted faithfully (transparency onto white), ``restore_mode`` turns the edited RGB result back
into the upload's mode (grayscale stays grayscale, alpha is put back), and ``browser_ready`` gives any mode Pillow
decodes (CMYK, float, 32-bit integer) one that PNG stores and every browser shows.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps

MAX_PIXELS = 36_000_000  # uploads above this are refused (decompression bombs included)
BROWSER_MODES = {"1", "L", "LA", "P", "RGB", "RGBA", "I;16"}  # modes PNG stores and every browser displays


class ImageError(ValueError):
    """A bad upload; the message is one sentence a non-expert understands."""


def load_image(src: str | Path | bytes | Image.Image | np.ndarray, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode an upload into an upright (EXIF-rotated) RGB image; anything unreadable or too large -> ImageError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if isinstance(src, np.ndarray):
                src = _from_array(src)
            if isinstance(src, Image.Image):
                return _to_rgb(src, max_pixels)
            with Image.open(io.BytesIO(src) if isinstance(src, bytes | bytearray) else src) as im:
                return _to_rgb(im, max_pixels)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"This image is too large; the limit is {max_pixels / 1e6:.0f} megapixels.") from e
    except Exception as e:  # PIL's decoders raise a zoo of types (OSError, SyntaxError, struct.error...) on bad input
        raise ImageError("This file is not an image we can read.") from e


def _from_array(a: np.ndarray) -> Image.Image:
    """(H, W) or (H, W, 1|3|4) arrays: uint8 as is, uint16 scaled down, bool and floats in [0, 1] scaled up."""
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)) or 0 in a.shape:
        raise ImageError("This array is not an image (expected height x width x 3 numbers).")
    a = a[..., 0] if a.ndim == 3 and a.shape[2] == 1 else a
    if a.dtype == np.uint16:
        a = a / 257
    elif a.dtype.kind in "bf" and a.max() <= 1:
        a = a * 255.0
    return Image.fromarray(np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8))


def _to_rgb(im: Image.Image, max_pixels: int) -> Image.Image:
    if im.width * im.height > max_pixels:
        mp, cap = im.width * im.height / 1e6, max_pixels / 1e6
        raise ImageError(f"This image is too large ({mp:.0f} megapixels); the limit is {cap:.0f}.")
    try:
        im.load()
    except Exception as e:
        raise ImageError("This image file is damaged or incomplete.") from e
    im = ImageOps.exif_transpose(im)
    if im.mode[0] in "IF":  # 16-bit PNG ("I;16", "I") and float: PIL's convert would clip at 255, not scale
        a = np.asarray(im, np.float64) / (257 if im.mode[0] == "I" else 1)
        im = Image.fromarray(np.clip(a, 0, 255).round().astype(np.uint8))
    if "A" in im.mode or "transparency" in im.info:  # RGBA, LA, PA, P with a transparent colour: onto white
        return Image.alpha_composite(Image.new("RGBA", im.size, "white"), im.convert("RGBA")).convert("RGB")
    return im.convert("RGB")


def restore_mode(rgb_image: Image.Image, like: Image.Image) -> Image.Image:
    """Give an RGB result the (upright) size and the mode of the upload ``like``: L stays L, alpha is put back."""
    like = ImageOps.exif_transpose(like)
    out = rgb_image if rgb_image.size == like.size else rgb_image.resize(like.size, Image.Resampling.LANCZOS)
    if "A" in like.mode or "transparency" in like.info:
        out = out.convert("RGBA")
        out.putalpha(like.convert("RGBA").getchannel("A"))
        return out.convert("LA") if like.mode == "LA" else out
    if like.mode[0] == "I":  # back to 16 bits
        return Image.fromarray(np.asarray(out.convert("L"), np.uint16) * 257).convert(like.mode)
    if like.mode == "P":
        return out.convert("P", palette=Image.Palette.ADAPTIVE)
    try:
        return out.convert(like.mode)
    except ValueError:  # modes PIL cannot make from RGB (LAB, HSV): RGB is the honest answer
        return out


def browser_ready(image: Image.Image) -> Image.Image:
    """``image`` in a mode PNG stores and browsers show: float -> 8-bit gray (0..255, our float convention),
    32-bit integer -> 16-bit gray, CMYK/YCbCr/LAB/HSV -> RGB, other alpha modes -> RGBA."""
    if image.mode in BROWSER_MODES:
        return image
    if image.mode == "F":
        return Image.fromarray(np.clip(np.nan_to_num(np.asarray(image)), 0, 255).round().astype(np.uint8))
    if image.mode[0] == "I":  # "I" as restore_mode makes it (0..65535), big-endian "I;16B", ...
        return Image.fromarray(np.clip(np.asarray(image, np.int64), 0, 65535).astype(np.uint16))
    return image.convert("RGBA" if image.mode in ("PA", "RGBa") else "RGB")


def to_tensor(im: Image.Image) -> torch.Tensor:
    """An RGB image as a float tensor (3, H, W) in [0, 255]."""
    return torch.from_numpy(np.asarray(im, np.float32).copy()).permute(2, 0, 1)  # (3, H, W) in [0, 255]


def to_pil(x: torch.Tensor) -> list[Image.Image]:
    """Images (N, 3, H, W) in [-1, 1] -> N RGB images."""
    a = ((x.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(im) for im in a]


def grid(names: list[str], columns: list[torch.Tensor], scale: int = 1, label_h: int = 14) -> Image.Image:
    """The paper's figure: columns of images (each (N, 3, S, S) in [-1, 1]) side by side, one row per image, each
    pixel drawn ``scale`` x ``scale`` px, under a row of column names."""
    rows = np.concatenate([np.concatenate([np.asarray(im) for im in to_pil(c)], 0) for c in columns], 1)
    rows = np.repeat(np.repeat(rows, scale, 0), scale, 1) if scale > 1 else rows
    figure = Image.new("RGB", (rows.shape[1], rows.shape[0] + label_h), "white")
    figure.paste(Image.fromarray(rows), (0, label_h))
    draw, s = ImageDraw.Draw(figure), columns[0].shape[-1] * scale
    for j, name in enumerate(names):
        draw.text((j * s + 3, 1), name, fill="black")
    return figure
