"""images.py: every upload kind (files, bytes, arrays, PIL images of every mode) decodes to upright RGB or fails with
one ImageError sentence, and an edit goes back to the upload's mode; tiny and blank images have no face but work whole.
"""
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import texture
from stargan_core.edit.blend import paste_back
from stargan_core.edit.geometry import align
from stargan_core.edit.images import ImageError, load_image, restore_mode


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


# ---------------------------------------------------------------- every upload kind (no data)

def _png_claiming(w: int, h: int) -> bytes:
    """A real 1x1 PNG whose header claims w x h: how decompression bombs announce themselves."""
    png = bytearray(_encode(Image.new("L", (1, 1)), "PNG"))
    png[16:24] = struct.pack(">II", w, h)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    return bytes(png)


def _exif_rotated() -> bytes:
    """A 40x20 JPEG, left half red, stored sideways with EXIF orientation 6 (display rotated 90 degrees clockwise)."""
    im = Image.new("RGB", (40, 20), "blue")
    im.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encode(im, "JPEG", exif=exif.tobytes(), quality=95)


UPLOADS = {  # name: (upload, expected (W, H), expected RGB at the centre or None)
    "rgb_png": (_encode(Image.new("RGB", (30, 20), (10, 200, 30)), "PNG"), (30, 20), (10, 200, 30)),
    "grayscale_L": (_encode(Image.new("L", (30, 20), 90), "PNG"), (30, 20), (90, 90, 90)),
    "rgba_transparent": (_encode(Image.new("RGBA", (30, 20), (255, 0, 0, 0)), "PNG"), (30, 20), (255, 255, 255)),
    "rgba_opaque": (_encode(Image.new("RGBA", (30, 20), (255, 0, 0, 255)), "PNG"), (30, 20), (255, 0, 0)),
    "LA": (_encode(Image.new("LA", (30, 20), (0, 128)), "PNG"), (30, 20), (127, 127, 127)),
    "palette_P": (_encode(Image.new("RGB", (30, 20), (0, 0, 255)).convert("P"), "GIF"), (30, 20), (0, 0, 255)),
    "palette_transparent": (_encode(Image.new("P", (30, 20), 0), "GIF", transparency=0), (30, 20), (255, 255, 255)),
    "cmyk_jpeg": (_encode(Image.new("CMYK", (30, 20), (0, 255, 255, 0)), "JPEG"), (30, 20), (255, 0, 0)),
    "png_16bit": (_encode(Image.fromarray(np.full((20, 30), 32896, np.uint16)), "PNG"), (30, 20), (128, 128, 128)),
    "int32_I": (_encode(Image.new("I", (30, 20), 65535), "TIFF"), (30, 20), (255, 255, 255)),
    "bilevel_1": (_encode(Image.new("1", (30, 20), 1), "PNG"), (30, 20), (255, 255, 255)),
    "exif_rotated": (_exif_rotated(), (20, 40), None),
    "tiny_1x1": (_encode(Image.new("RGB", (1, 1), (5, 6, 7)), "PNG"), (1, 1), (5, 6, 7)),
    "tiny_3x2_webp": (_encode(Image.new("RGB", (3, 2), (200, 0, 0)), "WEBP", lossless=True), (3, 2), (200, 0, 0)),
    "pil_image": (Image.new("L", (30, 20), 40), (30, 20), (40, 40, 40)),
    "array_uint8": (np.full((20, 30, 3), 70, np.uint8), (30, 20), (70, 70, 70)),
    "array_gray": (np.full((20, 30), 70, np.uint8), (30, 20), (70, 70, 70)),
    "array_float01": (np.full((20, 30, 3), 0.5), (30, 20), (128, 128, 128)),
    "array_uint16": (np.full((20, 30, 3), 65535, np.uint16), (30, 20), (255, 255, 255)),
    "array_rgba": (np.zeros((20, 30, 4), np.uint8), (30, 20), (255, 255, 255)),
}


@pytest.mark.parametrize("name", list(UPLOADS))
def test_every_upload_kind_decodes_to_upright_rgb(name):
    src, size, centre = UPLOADS[name]
    im = load_image(src)
    assert im.mode == "RGB" and im.size == size
    if centre is not None:
        np.testing.assert_allclose(im.getpixel((size[0] // 2, size[1] // 2)), centre, atol=3)
    if name == "exif_rotated":  # what was the left (red) half is now on top
        assert im.getpixel((10, 5))[0] > 200 and im.getpixel((10, 35))[2] > 200


BAD_UPLOADS = {
    "bomb_400mp_header": (_png_claiming(20_000, 20_000), "too large"),  # PIL's DecompressionBombError
    "100mp_header": (_png_claiming(10_000, 10_000), "too large"),  # PIL's DecompressionBombWarning
    "42mp_header": (_png_claiming(7_000, 6_000), "too large"),  # over our own cap only
    "truncated_jpeg": (_encode(texture(128, 128), "JPEG")[:-800], "damaged"),  # header intact, scan cut
    "truncated_png": (_encode(texture(128, 128), "PNG")[:-800], "damaged"),
    "random_bytes": (np.random.default_rng(0).bytes(3000), "not an image"),
    "empty_bytes": (b"", "not an image"),
    "text": (b"name,age\nada,36\n", "not an image"),
    "missing_file": ("/nonexistent/photo.jpg", "not an image"),
    "array_2_channels": (np.zeros((5, 5, 2), np.uint8), "not an image"),
    "array_1d": (np.zeros(10, np.uint8), "not an image"),
    "array_empty": (np.zeros((0, 5, 3), np.uint8), "not an image"),
}


@pytest.mark.parametrize("name", list(BAD_UPLOADS))
def test_bad_uploads_raise_one_clear_sentence(name):
    src, words = BAD_UPLOADS[name]
    with pytest.raises(ImageError, match=words) as err:
        load_image(src)
    assert str(err.value).endswith(".") and "\n" not in str(err.value)


def test_pixel_cap_applies_to_images_in_memory():
    with pytest.raises(ImageError, match=r"too large \(1 megapixels\); the limit is 0"):
        load_image(Image.new("L", (1000, 1000)), max_pixels=100_000)


def test_corrupted_files_raise_only_image_error():
    """Bytes flipped at random in real PNG, JPEG and GIF files: decoded or refused, never another exception."""
    rng = np.random.default_rng(0)
    for fmt in ("PNG", "JPEG", "GIF"):
        good = _encode(texture(48, 32), fmt)
        for _ in range(15):
            bad = bytearray(good)
            for i in rng.integers(0, len(bad), 4):
                bad[i] = rng.integers(0, 256)
            try:
                assert load_image(bytes(bad)).mode == "RGB"
            except ImageError:
                pass


@pytest.mark.parametrize("mode", ["L", "RGBA", "LA", "P", "CMYK", "I;16", "I", "1", "RGB"])
def test_restore_mode_gives_back_the_upload_mode(mode):
    if mode[0] == "I":  # a 16-bit grey level that 8 bits cannot hold
        like = Image.fromarray(np.full((20, 30), 40000, np.uint16)).convert(mode)
    else:
        like = texture(30, 20).convert("RGBA")
        like.putalpha(Image.linear_gradient("L").resize((30, 20)))  # an alpha ramp to get back
        like = like.convert(mode)
    out = restore_mode(load_image(like), like)
    assert out.mode == mode and out.size == like.size
    if "A" in mode:
        assert np.array_equal(np.asarray(out.getchannel("A")), np.asarray(like.getchannel("A")))
    if mode[0] == "I":
        assert abs(int(np.asarray(out).mean()) - 40000) < 257


def test_restore_mode_keeps_upright_size_of_exif_upload():
    like = Image.open(io.BytesIO(_exif_rotated()))
    assert restore_mode(load_image(_exif_rotated()), like).size == (20, 40)


def test_tiny_and_blank_images_have_no_face_but_work_whole(detector):
    assert detector.detect(Image.new("RGB", (300, 200), "gray")) == []
    for name in ("tiny_1x1", "tiny_3x2_webp"):
        tiny = load_image(UPLOADS[name][0])
        assert detector.detect(tiny) == []
        face = detector.whole_image(tiny, 32)
        x = align(tiny, [face], 32)
        assert x.shape == (1, 3, 32, 32) and paste_back(tiny, [face], -x).size == tiny.size
