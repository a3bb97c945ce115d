"""Whatever bytes are uploaded, the three readers decode them or refuse them in words, quickly and in bounded memory.

JPEG, PNG and DICOM go through `decode_image`, zips through `zip_source`. The inputs are real files cut short or
with bytes overwritten, one format under another's name or magic, random bytes, headers declaring far more pixels
than the file holds, DICOM headers that disagree with their pixel data, and zips with damaged members and unsafe
names. Every call must end in a decoded image (an HxWx3 uint8 array) or in the reader's own error with a message
(`ImageError`, `BatchInputError`): any other exception would reach the person as a crash.
"""

import io
import resource
import shutil
import struct
import time
import tracemalloc
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hypothesis
import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    MRImageStorage,
    RLELossless,
    generate_uid,
)

from models.data.imaging import DecodedImage, ImageError, decode_image
from services.batch_input import BatchInputError, zip_source
from settings import SAMPLE_DIR, Settings

# The app's own limits: the memory a refused file may cost is measured against what the app really allows.
LIMITS = {
    "max_bytes": Settings.model_fields["max_upload_mb"].default * 2**20,
    "max_pixels": Settings.model_fields["max_image_pixels"].default,
}
TIME_LIMIT_S = 5.0
MEMORY_LIMIT_BYTES = 300 * 2**20
# Reproducible in CI: the same examples every run, and no example database left in the checkout.
FUZZ = hypothesis.settings(
    max_examples=250,
    derandomize=True,
    database=None,
    deadline=None,  # the time bound is asserted per call below, generously, not per example
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Damaged inputs make pydicom and Pillow warn on the way to the refusal; the refusal is what is tested.
pytestmark = pytest.mark.filterwarnings(
    "ignore::UserWarning", "ignore::DeprecationWarning", "ignore::PIL.Image.DecompressionBombWarning"
)


def bounded(call: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    """Run `call`, returning (result, exception), after checking it stayed within the time and memory bounds.

    tracemalloc sees Python's and numpy's allocations; the process's peak RSS (a high-water mark) also catches a
    call that raises it by the bound through Pillow's, libjpeg's or zlib's own allocations.
    """
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    started = time.monotonic()
    result, error = None, None
    try:
        result = call()
    except BaseException as exc:  # judged by the caller: only the reader's own error type is allowed
        if isinstance(exc, KeyboardInterrupt):
            raise
        error = exc
    finally:
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    assert elapsed < TIME_LIMIT_S, f"took {elapsed:.1f} s"
    assert peak < MEMORY_LIMIT_BYTES, f"allocated {peak / 2**20:.0f} MB"
    assert rss_growth < MEMORY_LIMIT_BYTES, f"grew the process by {rss_growth / 2**20:.0f} MB"
    return result, error


def check_decode(data: bytes, filename: str) -> None:
    decoded, error = bounded(lambda: decode_image(data, filename, **LIMITS))
    # What each case came to, for --hypothesis-show-statistics.
    hypothesis.event("decoded" if error is None else str(error).split(": ", 1)[-1][:40])
    if error is not None:
        if not isinstance(error, ImageError):
            raise AssertionError(f"{type(error).__name__} instead of ImageError: {error}") from error
        assert str(error).strip()
        return
    assert isinstance(decoded, DecodedImage)
    assert decoded.rgb.ndim == 3 and decoded.rgb.shape[2] == 3 and decoded.rgb.dtype == np.uint8
    assert decoded.rgb.shape[:2] == (decoded.height, decoded.width) and min(decoded.rgb.shape[:2]) >= 2


# --- Real files, made once ------------------------------------------------------------------------------------


def _png(array: np.ndarray, **params: Any) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", **params)
    return buffer.getvalue()


def _jpeg(image: Image.Image, **params: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **params)
    return buffer.getvalue()


SAMPLE_JPEG = sorted((SAMPLE_DIR / "glioma").glob("*.jpg"))[0].read_bytes()
SLICE = np.asarray(Image.open(io.BytesIO(SAMPLE_JPEG)).convert("L").resize((48, 40)), dtype=np.uint8)


def _dataset(pixels: np.ndarray, syntax: str = ExplicitVRLittleEndian) -> FileDataset:
    """A 16-bit MR slice (or frames) with rescale and window, as the app's DICOM tests write them."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = FileDataset("scan.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.StudyDate, ds.Modality = "P-0042", "20240131", "MR"
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 2, -100
    ds.WindowCenter, ds.WindowWidth = 2000, 4000
    ds.PixelData = pixels.astype("<u2").tobytes()
    return ds


def _written(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _compressed(syntax: str) -> bytes:
    ds = _dataset(SLICE.astype(np.uint16) * 16)
    ds.compress(syntax)
    return _written(ds)


def _jpeg_in_dicom() -> bytes:
    """A DICOM whose pixel data is the sample JPEG, as a scanner's JPEG-baseline export holds it."""
    ds = _dataset(SLICE, JPEGBaseline8Bit)
    gray = Image.fromarray(SLICE)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = encapsulate([_jpeg(gray)])
    ds["PixelData"].VR = "OB"
    return _written(ds)


REAL_FILES: dict[str, bytes] = {
    "sample.jpg": SAMPLE_JPEG,
    "progressive.jpg": _jpeg(Image.fromarray(SLICE).convert("RGB"), progressive=True, quality=80),
    "gray.png": _png(SLICE),
    "rgba.png": _png(np.dstack([np.dstack([SLICE] * 3), SLICE[::-1]])),
    "deep.png": _png(SLICE.astype(np.uint16) * 257),
    "palette.png": _png(SLICE // 64, transparency=0),
    "native.dcm": _written(_dataset(SLICE.astype(np.uint16) * 16)),
    "frames.dcm": _written(_dataset(np.stack([SLICE, SLICE[::-1], SLICE[:, ::-1]]).astype(np.uint16))),
    "deflated.dcm": _written(_dataset(SLICE.astype(np.uint16), DeflatedExplicitVRLittleEndian)),
    "rle.dcm": _compressed(RLELossless),
    "jpegls.dcm": _compressed(JPEGLSLossless),
    "jpeg-baseline.dcm": _jpeg_in_dicom(),
}
NAMES = ["scan.jpg", "scan.jpeg", "scan.png", "scan.dcm", "scan.DCM", "scan", "scan.txt"]
MAGICS = [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"\0" * 128 + b"DICM", b""]


def test_every_real_file_decodes() -> None:
    # The fuzzing below starts from these: each must be a good file to begin with.
    for name, data in REAL_FILES.items():
        decoded = decode_image(data, name, **LIMITS)
        assert decoded.rgb.shape[2] == 3, name


# --- Images ---------------------------------------------------------------------------------------------------


@st.composite
def damaged_files(draw: st.DrawFn) -> tuple[bytes, str]:
    """A real file cut short, with bytes overwritten, or both; under its own name or another format's."""
    name = draw(st.sampled_from(sorted(REAL_FILES)))
    data = bytearray(REAL_FILES[name])
    for _ in range(draw(st.integers(0, 8))):
        at = draw(st.integers(0, len(data) - 1))
        data[at] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data), draw(st.sampled_from([name, *NAMES]))


@st.composite
def foreign_files(draw: st.DrawFn) -> tuple[bytes, str]:
    """Random bytes, or one format's body behind another's magic, named as anything."""
    magic = draw(st.sampled_from(MAGICS))
    if draw(st.booleans()):
        body = draw(st.binary(max_size=2048))
    else:
        source = REAL_FILES[draw(st.sampled_from(sorted(REAL_FILES)))]
        body = source[draw(st.sampled_from([0, 3, 8, 132])) :]
    return magic + body, draw(st.sampled_from(NAMES))


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


@st.composite
def pngs_declaring(draw: st.DrawFn) -> bytes:
    """A PNG whose header declares any size and pixel layout, followed by little or no image data."""
    width, height = draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**32 - 1))
    if draw(st.booleans()):
        width, height = draw(st.sampled_from([(60000, 60000), (6000, 6000), (40_000_000, 1), (2, 20_000_000)]))
    depth, color = draw(st.sampled_from([(8, 0), (16, 0), (8, 2), (16, 2), (8, 3), (8, 4), (8, 6), (16, 6), (1, 0)]))
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, draw(st.sampled_from([0, 1])))
    idat = zlib.compress(bytes(draw(st.integers(0, 4096))))
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


@st.composite
def jpegs_declaring(draw: st.DrawFn) -> bytes:
    """The sample JPEG with its frame header (SOF0) declaring another size."""
    data = bytearray(SAMPLE_JPEG)
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, draw(st.integers(0, 65535)), draw(st.integers(0, 65535)))
    return bytes(data)


@given(damaged_files())
@FUZZ
@pytest.mark.slow
def test_a_damaged_real_file_is_decoded_or_refused_in_words(case: tuple[bytes, str]) -> None:
    check_decode(*case)


@given(foreign_files())
@FUZZ
def test_random_bytes_and_wrong_magic_are_decoded_or_refused_in_words(case: tuple[bytes, str]) -> None:
    check_decode(*case)


@given(st.one_of(pngs_declaring(), jpegs_declaring()), st.sampled_from(["big.png", "big.jpg"]))
@hypothesis.settings(FUZZ, max_examples=150)
def test_a_header_declaring_more_pixels_than_the_file_holds_is_refused_cheaply(data: bytes, name: str) -> None:
    check_decode(data, name)


# --- DICOM headers that disagree with their pixel data ---------------------------------------------------------

# Each as long as "1.2.840.10008.1.2.1" padded to an even length: implicit VR, big endian, RLE (the pixel data
# is not encapsulated), a transfer syntax that does not exist, and a UID that is no transfer syntax at all.
OTHER_SYNTAXES = [
    b"1.2.840.10008.1.2\0\0",
    b"1.2.840.10008.1.2.2\0",
    b"1.2.840.10008.1.2.5\0",
    b"1.2.840.10008.1.2.7\0",
    b"1.2.840.10008.1.1\0\0\0",
]


@st.composite
def dicom_headers(draw: st.DrawFn) -> tuple[bytes, str]:
    """A small native DICOM whose size, layout, colour, rescale, window, palette and encoding fields are drawn
    independently of its pixel data, so most of them disagree with it."""
    ds = _dataset(SLICE.astype(np.uint16))
    # Often the size of the pixel data held, so that the colour, rescale and window fields get applied.
    side = st.sampled_from([SLICE.shape[0], SLICE.shape[1]]) | st.integers(0, 80) | st.integers(0, 65535)
    ds.Rows, ds.Columns = draw(side), draw(side)
    if draw(st.booleans()):
        ds.NumberOfFrames = draw(st.one_of(st.integers(-2, 4), st.integers(0, 2**31 - 1)))
    ds.SamplesPerPixel = draw(st.sampled_from([1, 1, 1, 3, 4, 0]))
    ds.BitsAllocated = draw(st.sampled_from([16, 16, 16, 8, 1, 32, 12, 0]))
    ds.BitsStored = draw(st.sampled_from([12, 16, 8, 1, 32, 0, 40]))
    ds.HighBit = max(int(ds.BitsStored) - 1, 0)
    ds.PixelRepresentation = draw(st.sampled_from([0, 1]))
    ds.PhotometricInterpretation = draw(
        st.sampled_from(["MONOCHROME2", "MONOCHROME1", "RGB", "PALETTE COLOR", "YBR_FULL", "YBR_FULL_422", "CMYK", ""])
    )
    if draw(st.booleans()):
        ds.PlanarConfiguration = draw(st.sampled_from([0, 1, 2]))
    numbers = st.floats(-1e6, 1e6, allow_nan=False) | st.sampled_from([0.0, -1.0, 1e300, -1e300])
    if draw(st.booleans()):
        ds.RescaleSlope, ds.RescaleIntercept = draw(numbers), draw(numbers)
    if draw(st.booleans()):
        ds.WindowCenter, ds.WindowWidth = draw(numbers), draw(numbers)
    if draw(st.booleans()):
        ds.VOILUTFunction = draw(st.sampled_from(["LINEAR", "LINEAR_EXACT", "SIGMOID", "BOGUS"]))
    if draw(st.booleans()):
        descriptor = [draw(st.integers(0, 32767)), draw(st.integers(0, 32767)), draw(st.sampled_from([8, 16, 0, 7]))]
        for colour in ("Red", "Green", "Blue"):
            setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", descriptor)
            if draw(st.booleans()):
                setattr(ds, f"{colour}PaletteColorLookupTableData", draw(st.binary(max_size=64)))
    if draw(st.booleans()):
        item = pydicom.Dataset()
        item.LUTDescriptor = [draw(st.integers(0, 300)), draw(st.integers(0, 10)), draw(st.sampled_from([8, 16]))]
        item.LUTData = np.array(draw(st.lists(st.integers(0, 65535), max_size=300)), "<u2").tobytes()
        ds.VOILUTSequence = [item]
    if draw(st.integers(0, 3)) == 0:
        ds.PixelData = draw(st.binary(min_size=1, max_size=2 * SLICE.size + 64))
    data = _written(ds)
    if draw(st.booleans()):
        # The pixel data written natively, its encoding named as another (or one that does not exist); as long
        # as the real one once padded, so the file meta group's length stays right.
        data = data.replace(ExplicitVRLittleEndian.encode() + b"\0", draw(st.sampled_from(OTHER_SYNTAXES)), 1)
    return data, draw(st.sampled_from(["scan.dcm", "scan"]))


@given(dicom_headers())
@hypothesis.settings(FUZZ, max_examples=400)
@pytest.mark.slow
def test_a_dicom_header_that_disagrees_with_its_pixels_is_decoded_or_refused_in_words(case: tuple[bytes, str]) -> None:
    check_decode(*case)


# --- Zips -----------------------------------------------------------------------------------------------------

ZIP_NAMES = [
    "a.jpg",
    "P-1/a.jpg",
    "glioma/b.png",
    "scan.dcm",
    "a",
    "a/b.jpg",
    "a/",
    "../evil.jpg",
    "a/../../evil.jpg",
    "..\\evil.jpg",
    "/etc/evil.jpg",
    "C:/evil.jpg",
    "C:evil.jpg",
    "./a.jpg",
    "a//b.jpg",
    "",
    ".",
    "__MACOSX/._a.jpg",
    ".hidden.jpg",
    "x" * 300 + ".jpg",
    "/".join(["y" * 200] * 30) + ".jpg",
    "é/ü.jpg",
    "nul\0.jpg",
]
COMPRESSIONS = [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA]


@st.composite
def zips(draw: st.DrawFn) -> bytes:
    """A zip of up to 8 members with any of ZIP_NAMES (an entry `a` beside `a/b.jpg`, '..', absolute, too long)
    holding real, truncated or random bytes; then the whole archive possibly cut short or overwritten in places."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for _ in range(draw(st.integers(0, 8))):
            name = draw(st.sampled_from(ZIP_NAMES) | st.text(min_size=1, max_size=20))
            if draw(st.booleans()):
                real = REAL_FILES[draw(st.sampled_from(sorted(REAL_FILES)))]
                content = real[: draw(st.integers(0, len(real)))]
            else:
                content = draw(st.binary(max_size=512))
            info = zipfile.ZipInfo()
            info.filename = name  # set after construction, which would cut the name at a NUL: written as drawn
            info.compress_type = draw(st.sampled_from(COMPRESSIONS))
            archive.writestr(info, content)
    data = bytearray(buffer.getvalue())
    if draw(st.booleans()):
        for _ in range(draw(st.integers(1, 6))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.integers(0, 3)) == 0:
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@pytest.fixture(scope="module")
def zip_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    # Deep under the temporary folder: a member that escapes the upload folder would land somewhere visible.
    top = tmp_path_factory.mktemp("zips")
    return Settings(
        upload_dir=top / "a" / "b" / "scans", allowed_data_roots=[top / "root"], max_zip_mb=1, max_zip_files=6
    )


def _files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() or p.is_symlink()]


@given(zips() | st.binary(max_size=2048) | st.binary(max_size=512).map(lambda b: b"PK\x03\x04" + b))
@hypothesis.settings(FUZZ, max_examples=300)
@pytest.mark.slow
def test_a_damaged_or_unsafe_zip_is_unpacked_or_refused_in_words(zip_settings: Settings, data: bytes) -> None:
    top = zip_settings.upload_dir.parents[2]
    batches = zip_settings.upload_dir / "batches"
    try:
        params, error = bounded(lambda: zip_source(data, "upload.zip", settings=zip_settings))
        hypothesis.event("unpacked" if error is None else str(error)[:50])
        if error is not None:
            if not isinstance(error, BatchInputError):
                raise AssertionError(f"{type(error).__name__} instead of BatchInputError: {error}") from error
            assert str(error).strip()
            # A refused zip leaves nothing behind, not even half of its files.
            assert _files_under(top) == []
        else:
            folder = batches / params["upload"]
            assert folder.is_dir()
            # Every unpacked file lies in the zip's own folder.
            assert all(p.is_relative_to(folder) for p in _files_under(top))
    finally:
        shutil.rmtree(top, ignore_errors=True)
        top.mkdir()
