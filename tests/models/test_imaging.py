import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from models.data.imaging import ImageError, decode_image, jet_colormap, make_overlay
from settings import SAMPLE_DIR

LIMITS = {"max_bytes": 5 * 2**20, "max_pixels": 40_000_000}


def sample_jpeg() -> tuple[str, bytes]:
    path = sorted((SAMPLE_DIR / "glioma").glob("*.jpg"))[0]
    return path.name, path.read_bytes()


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_sample_jpeg_decodes_to_rgb_and_keeps_its_bytes():
    name, data = sample_jpeg()
    decoded = decode_image(data, name, **LIMITS)
    assert decoded.rgb.shape == (decoded.height, decoded.width, 3) and decoded.rgb.dtype == np.uint8
    assert (decoded.image_format, decoded.stored_suffix, decoded.stored_bytes) == ("JPEG", ".jpg", data)
    assert decoded.patient_mrn is None


@pytest.mark.parametrize(
    "array",
    [
        np.full((20, 30), 128, np.uint8),
        np.dstack([np.full((20, 30, 3), 200, np.uint8), np.zeros((20, 30), np.uint8)]),
        np.linspace(1000, 5000, 600).reshape(20, 30).astype(np.uint16),
    ],
    ids=["grayscale", "rgba-transparent", "16-bit"],
)
def test_png_of_any_mode_becomes_rgb_uint8(array):
    decoded = decode_image(png_bytes(array), "slice.png", **LIMITS)
    assert decoded.rgb.shape == (20, 30, 3) and decoded.rgb.dtype == np.uint8
    assert decoded.image_format == "PNG"


def test_transparent_png_areas_are_black_and_16_bit_is_stretched():
    transparent = np.dstack([np.full((4, 4, 3), 200, np.uint8), np.zeros((4, 4), np.uint8)])
    assert decode_image(png_bytes(transparent), "a.png", **LIMITS).rgb.max() == 0
    deep = np.array([[1000, 5000], [3000, 3000]], np.uint16)
    assert decode_image(png_bytes(deep), "d.png", **LIMITS).rgb[:, :, 0].tolist() == [[0, 255], [128, 128]]


def test_dicom_goes_through_modality_and_window_luts(dicom_bytes):
    # Stored s -> value 2s - 100; window 1000 +- 500: 200 stored (300) is below, 1200 (2300) above, 550 (1000) mid.
    stored = np.array([[200, 1200], [550, 550]], np.uint16)
    decoded = decode_image(dicom_bytes(pixels=stored, center=1000, width=1000), "scan.dcm", **LIMITS)
    gray = decoded.rgb[:, :, 0]
    assert gray[0, 0] == 0 and gray[0, 1] == 255 and abs(int(gray[1, 0]) - 128) <= 1
    assert decoded.image_format == "DICOM"


def test_dicom_header_fields_are_read_and_the_stored_png_holds_no_header(dicom_bytes):
    decoded = decode_image(dicom_bytes(), "scan.dcm", **LIMITS)
    assert (decoded.patient_mrn, decoded.study_date, decoded.modality, decoded.series_description) == (
        "P-0042",
        "2024-01-31",
        "MR",
        "AX T1 POST",
    )
    assert decoded.stored_suffix == ".png" and decoded.stored_bytes.startswith(b"\x89PNG")
    assert b"Doe" not in decoded.stored_bytes and b"1970" not in decoded.stored_bytes
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(decoded.stored_bytes)).convert("RGB")), decoded.rgb)


def test_jpeg_metadata_naming_a_person_is_not_stored_and_the_pixels_are_untouched():
    name, data = sample_jpeg()
    with Image.open(io.BytesIO(data)) as img:
        exif = img.getexif()
        exif[0x013B] = "Jane Doe"  # Artist
        exif[0x010E] = "born 1970-01-01"  # ImageDescription
        buffer = io.BytesIO()
        img.save(buffer, format="JPEG", quality=95, exif=exif, comment=b"patient Jane Doe")
    tagged = buffer.getvalue()
    assert b"Jane Doe" in tagged
    decoded = decode_image(tagged, name, **LIMITS)
    assert (
        decoded.stored_suffix == ".jpg" and b"Doe" not in decoded.stored_bytes and b"1970" not in decoded.stored_bytes
    )
    # The coded image is copied as it is, so the stored file decodes to exactly the pixels the models saw.
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(decoded.stored_bytes)).convert("RGB")), decoded.rgb)
    assert decode_image(tagged, name, **LIMITS).sha256 == decoded.sha256


def test_png_text_chunks_are_not_stored():
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Jane Doe")
    info.add_itxt("Comment", "born 1970-01-01", zip=True)
    buffer = io.BytesIO()
    Image.fromarray(np.arange(600, dtype=np.uint8).reshape(20, 30)).save(buffer, format="PNG", pnginfo=info)
    decoded = decode_image(buffer.getvalue(), "slice.png", **LIMITS)
    assert b"Doe" not in decoded.stored_bytes and b"Author" not in decoded.stored_bytes
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(decoded.stored_bytes)).convert("RGB")), decoded.rgb)


def test_a_rotated_jpeg_is_stored_as_the_pixels_the_models_saw():
    array = np.zeros((20, 30, 3), np.uint8)
    array[:5, :, 0] = 255  # a red band along the top
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=100, exif=exif)
    decoded = decode_image(buffer.getvalue(), "rotated.jpg", **LIMITS)
    assert decoded.rgb.shape == (30, 20, 3) and decoded.rgb[:, -3:, 0].mean() > 200  # the band is now on the right
    assert decoded.image_format == "JPEG" and decoded.stored_suffix == ".png"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(decoded.stored_bytes)).convert("RGB")), decoded.rgb)


def test_monochrome1_is_inverted(dicom_bytes):
    stored = np.array([[200, 1200], [550, 550]], np.uint16)
    mono2 = decode_image(dicom_bytes(pixels=stored), "a.dcm", **LIMITS).rgb
    mono1 = decode_image(dicom_bytes(pixels=stored, photometric="MONOCHROME1"), "b.dcm", **LIMITS).rgb
    assert np.array_equal(mono1, 255 - mono2)


def test_multiframe_dicom_uses_the_middle_frame_and_says_so(dicom_bytes):
    frames = np.stack([np.full((16, 16), 100 * (i + 1), np.uint16) for i in range(5)])
    frames[:, 0, 0] = 0  # a dark corner so that each frame has some contrast
    decoded = decode_image(dicom_bytes(pixels=frames, center=None), "series.dcm", **LIMITS)
    assert decoded.note == "middle frame 3 of 5"
    assert decoded.rgb.shape == (16, 16, 3) and decoded.rgb[5, 5, 0] == 255


@pytest.mark.parametrize(
    "name,make_data,message",
    [
        ("notes.jpg", lambda d: b"patient notes, not an image\n" * 10, "not a JPEG, PNG or DICOM image"),
        ("empty.png", lambda d: b"", "the file is empty"),
        ("cut.jpg", lambda d: sample_jpeg()[1][: len(sample_jpeg()[1]) // 2], "truncated or damaged"),
        ("big.jpg", lambda d: sample_jpeg()[1] + b"\0" * (6 * 2**20), "over the limit of 5 MB"),
        ("bomb.png", lambda d: png_declaring(100_000, 100_000), "decompression bomb"),
        ("large.png", lambda d: png_declaring(8_000, 8_000), "declares 8000 x 8000 pixels"),
        ("line.dcm", lambda d: d(pixels=np.arange(64, dtype=np.uint16).reshape(1, 64)), "not a 2-D slice"),
        ("garbage.dcm", lambda d: b"\0" * 128 + b"DICM" + bytes(range(256)) * 4, "holds no image"),
        ("short.dcm", lambda d: d()[:-100], "the file is cut short"),
    ],
    ids=["text", "empty", "truncated-jpeg", "over-size", "bomb", "over-pixel-limit", "not-2d", "unreadable", "short"],
)
def test_bad_file_is_refused_with_its_reason(dicom_bytes, name, make_data, message):
    with pytest.raises(ImageError, match=message) as caught:
        decode_image(make_data(dicom_bytes), name, **LIMITS)
    assert str(caught.value).startswith(name)


def test_overlay_blends_the_coloured_heatmap_at_the_given_opacity():
    rgb = np.full((8, 10, 3), 100, np.uint8)
    heat = np.linspace(0, 1, 80, dtype=np.float32).reshape(8, 10)
    assert np.array_equal(make_overlay(rgb, heat, 0.0), rgb)
    assert np.array_equal(make_overlay(rgb, heat, 1.0), jet_colormap(heat))
    half = make_overlay(rgb, heat, 0.5).astype(int)
    assert np.abs(half - (rgb.astype(int) + jet_colormap(heat).astype(int)) / 2).max() <= 1


def test_overlay_resamples_a_coarse_heatmap_to_the_image():
    rgb = np.zeros((30, 40, 3), np.uint8)
    coarse = np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)
    out = make_overlay(rgb, coarse, 1.0)
    assert out.shape == (30, 40, 3)
    cold, hot = jet_colormap(np.array([0.0, 1.0]))
    assert np.array_equal(out[0, 0], cold) and np.array_equal(out[0, 39], hot)


def test_jet_runs_from_blue_to_red():
    low, high = jet_colormap(np.array([0.0, 1.0]))
    assert low[2] > low[0] and high[0] > high[2]


def test_a_patient_id_of_several_values_keeps_dicoms_backslash_so_the_id_rule_refuses_it(dicom_bytes) -> None:
    data = dicom_bytes(patient_mrn="HOSP\\123")
    decoded = decode_image(data, "a.dcm", max_bytes=len(data), max_pixels=40_000_000)
    assert decoded.patient_mrn == "HOSP\\123"  # not pydicom's "['HOSP', '123']"
