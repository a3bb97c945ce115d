"""Every DICOM file pydicom ships as its test corpus, and DICOM files built to hurt: each is decoded or refused
with a reason in words, within a time and memory bound; none for want of a codec, none with a crash."""

import io
import time
import tracemalloc
import warnings
import zlib
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


def test_a_deflated_dicom_that_would_inflate_past_the_cap_is_refused_without_inflating_it(dicom_bytes) -> None:
    small = _as_deflated(dicom_bytes())
    meta_end = (
        DICOM_MAGIC_OFFSET + 4 + 12 + int.from_bytes(small[DICOM_MAGIC_OFFSET + 12 : DICOM_MAGIC_OFFSET + 16], "little")
    )
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(2**20)
    stream = b"".join(deflater.compress(zeros) for _ in range(4 * MAX_INFLATED_BYTES // 2**20)) + deflater.flush()
    bomb = small[:meta_end] + stream
    assert len(bomb) < 2**20  # well under a megabyte on disk
    outcome, seconds, peak = _decode(bomb, "bomb.dcm")
    assert "inflates to more than 64 MB" in outcome and peak < 16 and seconds < SECONDS


def test_pixel_data_beyond_what_the_header_declares_is_refused(dicom_bytes) -> None:
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(pixels=np.full((32, 32), 500, np.uint16))))
    ds.PixelData = ds.PixelData * 3  # two undeclared frames
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    outcome, _, _ = _decode(out.getvalue(), "extra.dcm")
    assert "more than the 2,048 its header declares" in outcome
