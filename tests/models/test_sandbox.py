"""The decode sandbox: real child processes, real files, real limits. A file that costs a decoder more processor
time, memory or wall-clock time than allowed is refused in words, the child that decoded it is replaced, and the
caller's process never waits longer than the limit."""

import io
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from models.data.imaging import ANALYSIS_SIDE, ImageError, analysis_copy, decode_image
from models.data.sandbox import DecodeSandbox, Limits, _ChildLost, _decoded_from
from settings import SAMPLE_DIR

LIMITS = {"max_bytes": 2**26, "max_pixels": 4096 * 4096}
CORPUS = Path(pydicom.__file__).parent / "data" / "test_files"


def costly_dicom() -> bytes:
    """A legal 4096 x 4096 MR slice of noise: the largest image the app accepts, and about the costliest to
    decode (its pixels are windowed in floats and stored as a PNG, and noise does not compress): about 2 s of
    processor time and 1 GB of address space on a 2-core AMD EPYC."""
    pixels = np.random.default_rng(0).integers(0, 4096, (4096, 4096), dtype=np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("noise.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Rows, ds.Columns = "MR", 4096, 4096
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept, ds.WindowCenter, ds.WindowWidth = 2, -100, 4000, 8000
    ds.PixelData = pixels.tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.fixture(scope="module")
def costly() -> bytes:
    return costly_dicom()


@pytest.fixture
def make_sandbox() -> Iterator[Callable[..., DecodeSandbox]]:
    """make_sandbox(**limits): a sandbox of two children under these Limits, stopped after the test."""
    made: list[DecodeSandbox] = []

    def make(**limits: float) -> DecodeSandbox:
        made.append(DecodeSandbox(Limits(**limits), processes=2))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for box in made:
        box.close()


@pytest.fixture
def sandbox(make_sandbox: Callable[..., DecodeSandbox]) -> DecodeSandbox:
    return make_sandbox()


def sample(n: int = 0) -> Path:
    return sorted(SAMPLE_DIR.rglob("*.jpg"))[n]


def assert_decodes_the_sample(sandbox: DecodeSandbox) -> None:
    """The sandbox decodes the first sample as the app's process does (after a refusal: the same child, or its
    replacement)."""
    data = sample().read_bytes()
    here, there = analysis_copy(decode_image(data, "next.jpg", **LIMITS)), sandbox.decode(data, "next.jpg", **LIMITS)
    assert (there.sha256, there.width, there.height) == (here.sha256, here.width, here.height)
    assert np.array_equal(there.rgb, here.rgb)


def children(box: DecodeSandbox) -> list[int]:
    return [child.process.pid for child in list(box._idle.queue)]


def test_a_file_decodes_in_the_child_exactly_as_in_the_process(sandbox: DecodeSandbox, dicom_bytes) -> None:
    for name, data in [(sample().name, sample().read_bytes()), ("scan.dcm", dicom_bytes(patient_mrn="P-7"))]:
        here = analysis_copy(decode_image(data, name, **LIMITS))
        there = sandbox.decode(data, name, **LIMITS)
        assert np.array_equal(there.rgb, here.rgb) and there.stored_bytes == here.stored_bytes
        assert (there.sha256, there.width, there.height, there.image_format) == (
            here.sha256,
            here.width,
            here.height,
            here.image_format,
        )
        assert (there.patient_mrn, there.modality, there.study_date, there.window) == (
            here.patient_mrn,
            here.modality,
            here.study_date,
            here.window,
        )
        # A grayscale DICOM's own values come back for window and level; a JPEG has none.
        assert (there.values is None) == (here.values is None) == (name.endswith(".jpg"))
        if here.values is not None:
            assert there.values is not None and there.values.dtype == np.float32
            assert np.array_equal(there.values, here.values)


def test_a_patient_id_comes_back_whole_for_the_rule_to_judge(sandbox: DecodeSandbox, dicom_bytes) -> None:
    long_id = "HOSP " + "7" * 70  # past DICOM's 64 characters: refused by the id rule, never cut to fit it
    assert sandbox.decode(dicom_bytes(patient_mrn=long_id), "long.dcm", **LIMITS).patient_mrn == long_id


def test_a_refusal_comes_back_in_the_readers_own_words(sandbox: DecodeSandbox) -> None:
    with pytest.raises(ImageError, match="cut.jpg: the image is truncated or damaged"):
        sandbox.decode(sample().read_bytes()[:300], "cut.jpg", **LIMITS)
    assert_decodes_the_sample(sandbox)  # the same child goes on


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_every_corpus_file_gets_the_same_answer_in_the_child(sandbox: DecodeSandbox) -> None:
    """The limits leave room for every real DICOM pydicom ships: decoded or refused exactly as in the process."""
    files = sorted(p for p in CORPUS.rglob("*.dcm") if p.is_file())
    assert len(files) > 50
    for path in files:
        data = path.read_bytes()
        try:
            here: object = analysis_copy(decode_image(data, path.name, **LIMITS)).sha256
        except ImageError as exc:
            here = str(exc)
        try:
            there: object = sandbox.decode(data, path.name, **LIMITS).sha256
        except ImageError as exc:
            there = str(exc)
        assert there == here, path.name


def test_a_file_that_costs_more_processor_time_than_allowed_is_refused_and_its_child_replaced(
    make_sandbox: Callable[..., DecodeSandbox], costly: bytes
) -> None:
    sandbox = make_sandbox(cpu_s=0.5, timeout_s=60)
    started = time.monotonic()
    with pytest.raises(
        ImageError, match=r"noise.dcm: the file was not decoded: decoding it used more than 0.5 s of pro"
    ):
        sandbox.decode(costly, "noise.dcm", **LIMITS)
    assert time.monotonic() - started < 15
    assert_decodes_the_sample(sandbox)


def test_a_file_that_needs_more_memory_than_allowed_is_refused(
    make_sandbox: Callable[..., DecodeSandbox], costly: bytes
) -> None:
    sandbox = make_sandbox(memory_mb=400, timeout_s=60)
    with pytest.raises(ImageError, match="400 MB") as refused:
        sandbox.decode(costly, "noise.dcm", **LIMITS)
    assert str(refused.value).startswith("noise.dcm: ")
    assert_decodes_the_sample(sandbox)


def test_a_file_that_takes_longer_than_the_timeout_is_refused_when_the_timeout_ends(
    make_sandbox: Callable[..., DecodeSandbox], costly: bytes
) -> None:
    sandbox = make_sandbox(cpu_s=60, timeout_s=1.0)
    sandbox.decode(sample().read_bytes(), "warm.jpg", **LIMITS)  # the child's start is not the file's time
    [pid] = children(sandbox)
    started = time.monotonic()
    with pytest.raises(ImageError, match="decoding it took longer than 1 s"):
        sandbox.decode(costly, "noise.dcm", **LIMITS)
    assert time.monotonic() - started < 5
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the child that overran is gone...
    assert_decodes_the_sample(sandbox)  # ...and another serves


def test_a_child_that_dies_mid_file_costs_that_file_a_message(sandbox: DecodeSandbox, costly: bytes) -> None:
    sandbox.decode(sample().read_bytes(), "warm.jpg", **LIMITS)
    [pid] = children(sandbox)
    threading.Timer(0.5, os.kill, (pid, signal.SIGSEGV)).start()
    with pytest.raises(ImageError, match=r"the decoder crashed on it \(SIGSEGV"):
        sandbox.decode(costly, "noise.dcm", **LIMITS)


class Cancelled(Exception):
    pass


def test_what_a_check_raises_stops_the_decode_at_once(sandbox: DecodeSandbox, costly: bytes) -> None:
    sandbox.decode(sample().read_bytes(), "warm.jpg", **LIMITS)
    asked_at = time.monotonic() + 1.0

    def check() -> None:
        if time.monotonic() > asked_at:
            raise Cancelled

    with pytest.raises(Cancelled):
        sandbox.decode(costly, "noise.dcm", **LIMITS, check=check)
    assert time.monotonic() - asked_at < 2
    assert children(sandbox) == []  # its child was stopped, not left decoding


def test_callers_that_overlap_each_get_a_child(sandbox: DecodeSandbox) -> None:
    data = sample().read_bytes()
    sandbox.decode(data, "warm.jpg", **LIMITS)
    barrier, errors = threading.Barrier(3), []

    def decode() -> None:
        barrier.wait()
        try:
            for _ in range(20):
                sandbox.decode(data, "a.jpg", **LIMITS)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=decode) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [] and len(children(sandbox)) == 2  # three callers, at most `processes` children


@pytest.mark.parametrize(
    "change",
    [
        {"shape": [ANALYSIS_SIDE + 1, 4, 3]},
        {"shape": [4, 4, 4]},
        {"stored_len": 10**6},
        {"image_format": "EXE"},
        {"stored_suffix": ".sh"},
        {"patient_mrn": "x" * 1025},
        {"shape": "4x4"},
        {"values_shape": [ANALYSIS_SIDE + 1, 4]},
        {"values_shape": [4, 4]},  # values the payload does not hold
    ],
    ids=lambda c: next(iter(c)),
)
def test_an_answer_out_of_protocol_is_not_believed(change: dict) -> None:
    header = {
        "shape": [4, 4, 3],
        "stored_len": 5,
        "stored_suffix": ".png",
        "width": 4,
        "height": 4,
        "image_format": "PNG",
    }
    payload = bytes(4 * 4 * 3) + b"12345"
    assert _decoded_from(header, payload).rgb.shape == (4, 4, 3)
    with pytest.raises(_ChildLost, match="out of protocol"):
        _decoded_from({**header, **change}, payload)
