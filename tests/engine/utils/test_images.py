"""Image inputs of every mode become the same RGB pixels; bad images give readable errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from sam_demo import SamPredictor
from sam_demo.engine.utils.images import ImageTooLargeError, decode_image_bytes, to_rgb_array
from tests.support.photos import asset


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def test_modes_convert_to_rgb():
    rgb = asset("chelsea.png")
    pil = Image.fromarray(rgb)
    assert np.array_equal(to_rgb_array(pil), rgb)
    assert np.array_equal(to_rgb_array(pil.convert("RGBA")), rgb)
    gray = pil.convert("L")
    out = to_rgb_array(gray)
    assert (
        out.shape == rgb.shape
        and np.array_equal(out[..., 0], np.asarray(gray))
        and np.array_equal(out[..., 2], out[..., 0])
    )
    assert to_rgb_array(pil.convert("P")).shape == rgb.shape
    assert np.array_equal(to_rgb_array(np.asarray(gray)), out)  # HxW array


def test_16_bit_images_scale_to_8_bit():
    values = np.array([[0, 257, 65535]], dtype=np.uint16)
    assert to_rgb_array(values)[0, :, 0].tolist() == [0, 1, 255]
    png16 = decode_image_bytes(encode(Image.fromarray(values)))
    assert to_rgb_array(png16)[0, :, 0].tolist() == [0, 1, 255]


def test_exif_orientation_is_applied(engine):
    rgb = asset("chelsea.png")  # 451 wide, 300 high
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    jpeg = decode_image_bytes(encode(Image.fromarray(rgb), "JPEG", exif=exif, quality=95))
    assert jpeg.size == (451, 300)
    upright = to_rgb_array(jpeg)
    assert upright.shape == (451, 300, 3)
    predictor = SamPredictor(engine)
    predictor.set_image(jpeg)
    assert predictor.original_size == (451, 300)


def test_bad_bytes_and_bombs_are_refused():
    with pytest.raises(ValueError, match="not an image"):
        decode_image_bytes(b"definitely not an image")
    with pytest.raises(ValueError, match="empty"):
        decode_image_bytes(b"")
    png = encode(Image.fromarray(asset("chelsea.png")))
    with pytest.raises(ValueError, match="damaged or truncated"):
        decode_image_bytes(png[: len(png) // 2])
    with pytest.raises(ImageTooLargeError, match="megapixels"):
        decode_image_bytes(encode(Image.new("L", (2000, 2000))), max_pixels=1_000_000)
    with pytest.raises(ValueError, match="shape"):
        to_rgb_array(np.zeros((4, 4, 2), dtype=np.uint8))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"])
def test_the_formats_read(fmt):
    assert decode_image_bytes(encode(Image.new("RGB", (8, 6)), fmt)).size == (8, 6)


@pytest.mark.parametrize("fmt", ["DDS", "SGI", "TGA", "PCX", "PPM", "IM"])
def test_formats_pillow_opens_but_this_app_does_not_are_refused_by_name(fmt):
    """Pillow's rarely used decoders are attack surface (a damaged DDS raised NotImplementedError: a
    500 from /score); the message lists the formats that are read."""
    with pytest.raises(ValueError, match="not an image this app reads .*send a PNG, JPEG, WebP, BMP, GIF or TIFF"):
        decode_image_bytes(encode(Image.new("RGB", (8, 6)), fmt))


@pytest.mark.parametrize("error", [NotImplementedError, IndexError, ZeroDivisionError, OSError])
def test_a_decoder_failing_in_any_way_is_a_damaged_image(monkeypatch, error):
    def fail(self):
        raise error("decoder gave up")

    data = encode(Image.new("RGB", (8, 6)))
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", fail)
    with pytest.raises(ValueError, match="the image is damaged or truncated: decoder gave up"):
        decode_image_bytes(data)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.0, 0.5, 1.0], [0, 128, 255]),  # the usual float convention
        ([0.0, 100.0, 255.0], [0, 100, 255]),  # Pillow's "F" images, as a float TIFF writes them
        ([0.0, 1000.0, 4000.0], [0, 64, 255]),  # past 255: scaled to the largest value
        ([-5.0, 0.25, 0.5], [0, 64, 128]),
    ],
    ids=["unit", "byte-range", "wider", "negative"],
)
def test_float_images_keep_their_content(values, expected):
    """A float TIFF of 0-255 values came out all white (clipped to [0, 1])."""
    array = np.array([values], dtype=np.float32)
    assert to_rgb_array(array)[0, :, 0].tolist() == expected
    pil = Image.fromarray(array, mode="F")
    assert to_rgb_array(decode_image_bytes(encode(pil, "TIFF")))[0, :, 0].tolist() == expected
