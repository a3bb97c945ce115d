"""Every DICOM file pydicom ships as its test corpus, and DICOM files built to hurt: each is decoded or refused
with a reason in words, within a time and memory bound; none for want of a codec, none with a crash."""

import io
import signal
import time
import tracemalloc
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian

from models.data.imaging import DICOM_MAGIC, DICOM_MAGIC_OFFSET, MAX_INFLATED_BYTES, ImageError, decode_image

CORPUS = Path(pydicom.__file__).parent / "data" / "test_files"
LIMITS = {"max_bytes": 2**27, "max_pixels": 40_000_000}
SECONDS, PEAK_MB = 20.0, 512


def _is_dicom(path: Path) -> bool:
    head = path.read_bytes()[: DICOM_MAGIC_OFFSET + 4]
    return head[DICOM_MAGIC_OFFSET:] == DICOM_MAGIC or path.suffix.lower() == ".dcm"


FILES = sorted(p for p in CORPUS.rglob("*") if p.is_file() and _is_dicom(p))


def _decode(data: bytes, name: str) -> tuple[str, float, float]:
    """("decoded" or the refusal's message, seconds, peak MB traced)."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about the oddities the corpus is made of
            decode_image(data, name, **LIMITS)
        outcome = "decoded"
    except ImageError as exc:
        outcome = str(exc)
    finally:
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return outcome, seconds, peak


def test_the_corpus_is_there() -> None:
    assert len(FILES) >= 75


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_each_corpus_file_is_decoded_or_refused_in_words(path: Path) -> None:
    outcome, seconds, peak = _decode(path.read_bytes(), path.name if path.suffix else path.name + ".dcm")
    assert seconds < SECONDS and peak < PEAK_MB
    if outcome != "decoded":
        assert "no decoder for its compression" not in outcome and "Traceback" not in outcome
        assert any(
            reason in outcome
            for reason in ("holds no image", "not a readable DICOM", "cut short", "damaged", "image size", "2-D")
        ), outcome


def test_the_compressed_transfer_syntaxes_all_decode() -> None:
    """JPEG baseline, extended and lossless, JPEG-LS lossless and near-lossless, JPEG 2000 and RLE."""
    decoded = set()
    for path in FILES:
        try:
            syntax = pydicom.dcmread(path, stop_before_pixels=True, force=True).file_meta.TransferSyntaxUID
        except Exception:
            continue
        if syntax.is_compressed and _decode(path.read_bytes(), path.name)[0] == "decoded":
            decoded.add(syntax.name)
    for family in (
        "JPEG Baseline",
        "JPEG Extended",
        "JPEG Lossless",
        "JPEG-LS Lossless",
        "JPEG-LS Lossy",
        "JPEG 2000",
        "RLE",
    ):
        assert any(name.startswith(family) for name in decoded), (family, sorted(decoded))


def _as_deflated(dicom: bytes) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(dicom))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_a_small_deflated_dicom_decodes(dicom_bytes) -> None:
    assert _decode(_as_deflated(dicom_bytes()), "deflated.dcm")[0] == "decoded"


def _meta_end(dicom: bytes) -> int:
    """Where the dataset starts in an honestly written file: after the meta group, by its own length element."""
    return (
        DICOM_MAGIC_OFFSET + 4 + 12 + int.from_bytes(dicom[DICOM_MAGIC_OFFSET + 12 : DICOM_MAGIC_OFFSET + 16], "little")
    )


def _bomb_stream(inflated_mb: int) -> bytes:
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(2**20)
    return b"".join(deflater.compress(zeros) for _ in range(inflated_mb)) + deflater.flush()


def _assert_refused_as_a_bomb(bomb: bytes) -> None:
    outcome, seconds, peak = _decode(bomb, "bomb.dcm")
    assert "inflates to more than 64 MB" in outcome and peak < 16 and seconds < SECONDS, (outcome, peak, seconds)


def test_a_deflated_dicom_that_would_inflate_past_the_cap_is_refused_without_inflating_it(dicom_bytes) -> None:
    small = _as_deflated(dicom_bytes())
    bomb = small[: _meta_end(small)] + _bomb_stream(4 * MAX_INFLATED_BYTES // 2**20)
    assert len(bomb) < 2**20  # well under a megabyte on disk
    _assert_refused_as_a_bomb(bomb)


def test_a_deflate_bomb_with_a_forged_meta_group_length_is_refused(dicom_bytes) -> None:
    """The meta group's length element points past the end of the file; pydicom reads the group element by
    element regardless, and would inflate the 256 MB behind it."""
    small = _as_deflated(dicom_bytes())
    bomb = bytearray(small[: _meta_end(small)] + _bomb_stream(256))
    bomb[DICOM_MAGIC_OFFSET + 12 : DICOM_MAGIC_OFFSET + 16] = len(bomb).to_bytes(4, "little")
    assert len(bomb) < 300 * 2**10
    _assert_refused_as_a_bomb(bytes(bomb))


def test_a_deflate_bomb_whose_transfer_syntax_sits_past_byte_640_is_refused(dicom_bytes) -> None:
    """A long File Meta Information Version (0002,0001), legal in form, pushes the transfer syntax UID far
    into the file."""
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes()))
    ds.file_meta.FileMetaInformationVersion = b"\x00\x01" + bytes(1000)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    small = out.getvalue()
    assert small.index(DeflatedExplicitVRLittleEndian.encode()) > 640
    bomb = small[: _meta_end(small)] + _bomb_stream(256)
    _assert_refused_as_a_bomb(bomb)


def _blank_deflated_slice(index: int) -> bytes:
    """A 1024 x 1024 slice, black but for one bright rectangle of a size that varies with `index`, written by
    pydicom deflated: a few KB, as an ordinary mostly-black MR slice compresses."""
    pixels = np.zeros((1024, 1024), np.uint16)
    pixels[300 + index : 600, 200 : 700 + 3 * index] = 1000 + index
    return _as_deflated(_mr_slice(pixels))


def _mr_slice(pixels: np.ndarray) -> bytes:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("slice.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Rows, ds.Columns = "MR", *pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.astype("<u2").tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


class _TookTooLong(Exception):
    pass


def _within(seconds: float, call: Callable[[], object]) -> object:
    """`call`'s result, or _TookTooLong once it has run `seconds` (the check it tests once looped for ever)."""

    def expire(_signum: int, _frame: object) -> None:
        raise _TookTooLong

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return call()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_forty_ordinary_deflated_1024_slices_all_decode() -> None:
    """18 of these end their deflate stream so that the pad byte pydicom adds after it stayed in zlib's
    unconsumed input, and the size check looped on it for ever (one 4 KB upload pinned a core)."""
    slices = [_blank_deflated_slice(i) for i in range(40)]
    assert all(len(s) < 8 * 2**10 for s in slices)
    outcomes = []
    for i, data in enumerate(slices):
        try:
            decoded = _within(10.0, lambda data=data, i=i: decode_image(data, f"slice{i}.dcm", **LIMITS))
            outcomes.append((decoded.width, decoded.height, decoded.rgb.max()))
        except _TookTooLong:
            outcomes.append("took over 10 s")
    assert outcomes == [(1024, 1024, 255)] * 40


def test_pixel_data_beyond_what_the_header_declares_is_refused(dicom_bytes) -> None:
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(pixels=np.full((32, 32), 500, np.uint16))))
    ds.PixelData = ds.PixelData * 3  # two undeclared frames
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    outcome, _, _ = _decode(out.getvalue(), "extra.dcm")
    assert "more than the 2,048 its header declares" in outcome
