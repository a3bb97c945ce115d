"""One DICOM instance as it comes in: its header checked (an MR image this system can read), and its slices
(itself, or each frame of a multi-frame instance as a single-frame file of its own). Only the header is read;
pixels are decoded later, in the series job, through the path every upload takes."""

import io
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import get_decoder
from pydicom.uid import UID, AllTransferSyntaxes, DeflatedExplicitVRLittleEndian, EnhancedMRImageStorage, MRImageStorage

from domain import UserError
from models.data.imaging import MIN_SIDE, deflated_stream
from settings import Settings

ACCEPTED_SOP_CLASSES = (MRImageStorage, EnhancedMRImageStorage)
# Lifted from an Enhanced MR frame's functional groups into the single-frame file staged for it.
FRAME_GROUPS = {
    "PixelValueTransformationSequence": ("RescaleSlope", "RescaleIntercept", "RescaleType"),
    "FrameVOILUTSequence": ("WindowCenter", "WindowWidth", "VOILUTFunction"),
    "PixelMeasuresSequence": ("PixelSpacing", "SliceThickness"),
    "PlanePositionSequence": ("ImagePositionPatient",),
    "PlaneOrientationSequence": ("ImageOrientationPatient",),
}
MULTI_FRAME_ONLY = ("NumberOfFrames", "PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence", "PixelData")


def _decodable(uid: UID) -> bool:
    if not uid.is_compressed:
        return True
    try:
        return get_decoder(uid).is_available
    except NotImplementedError:
        return False


# The encodings the decode path reads (pydicom's decoders installed here), except deflate: a deflated dataset
# must be inflated whole before its first element can be read, the one place a small message becomes a large one.
TRANSFER_SYNTAXES = tuple(
    uid for uid in AllTransferSyntaxes if uid != DeflatedExplicitVRLittleEndian and _decodable(uid)
)


class InstanceRefused(UserError):
    """An instance that was not stored; the message says why. `out_of_resources` when the fault is ours."""

    def __init__(self, message: str, *, out_of_resources: bool = False) -> None:
        super().__init__(message)
        self.out_of_resources = out_of_resources


@dataclass(frozen=True)
class SliceFile:
    """One slice of an instance as it is staged: a single-frame DICOM file of its own."""

    frame: int  # 1-based
    data: bytes
    position: float | None
    instance_number: int | None


def read_instance(data: bytes, *, settings: Settings) -> Dataset:
    """The instance's dataset, once its header shows an MR image this system can read; InstanceRefused otherwise."""
    if len(data) > settings.max_upload_mb * 2**20:
        raise InstanceRefused(
            f"the instance is {len(data) / 2**20:.1f} MB, over the limit of {settings.max_upload_mb} MB"
        )
    try:
        # Found where pydicom's reader finds it (a forged meta length or a syntax far into the file hides nothing).
        deflated = deflated_stream(data) is not None
    except Exception as exc:  # pydicom raises many types on bad headers
        raise InstanceRefused(f"not a readable DICOM instance ({str(exc)[:160]})") from exc
    if deflated:
        raise InstanceRefused("the instance is deflated (Deflated Explicit VR Little Endian), which is not accepted")
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        # Every element converted now, so a malformed one is refused here rather than wherever it is first read.
        list(getattr(ds, "file_meta", ()))
        list(ds)
    except Exception as exc:  # pydicom raises many types on bad headers
        raise InstanceRefused(f"not a readable DICOM instance ({str(exc)[:160]})") from exc
    _check_header(ds, settings)
    return ds


def _uid(ds: Dataset, keyword: str) -> str:
    value = str(ds.get(keyword, "") or "").strip()
    if not UID(value).is_valid:
        raise InstanceRefused(f"its {keyword} {value[:70]!r} is missing or not a valid UID")
    return value


def _check_header(ds: Dataset, settings: Settings) -> None:
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if not sop_class:
        raise InstanceRefused("it names no SOP class: not a DICOM image instance")
    if sop_class not in ACCEPTED_SOP_CLASSES:
        name = UID(sop_class).name
        raise InstanceRefused(
            f"its SOP class is {name}; only MR Image Storage and Enhanced MR Image Storage are accepted"
        )
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality != "MR":
        raise InstanceRefused(f"its header gives the modality as {modality or 'nothing'}, not MR")
    syntax = getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID")
    if syntax not in TRANSFER_SYNTAXES:
        raise InstanceRefused(f"its transfer syntax {str(syntax or 'missing')[:64]} is not one this system decodes")
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        _uid(ds, keyword)
    if not ds.get("PixelData"):
        raise InstanceRefused("it holds no pixel data")
    try:
        rows, cols, frames = int(ds.Rows), int(ds.Columns), int(ds.get("NumberOfFrames") or 1)
    except (AttributeError, TypeError, ValueError) as exc:
        raise InstanceRefused("its header does not give the image size (Rows, Columns, NumberOfFrames)") from exc
    if min(rows, cols) < MIN_SIDE or frames < 1:
        raise InstanceRefused(f"its image is {cols} x {rows} pixels in {frames} frame(s), not a slice")
    if rows * cols > settings.max_image_pixels:
        raise InstanceRefused(f"its slices are {cols} x {rows} pixels, over the limit of {settings.max_image_pixels:,}")
    if frames > settings.dicom_max_series_slices:
        raise InstanceRefused(f"it has {frames} frames, more than the {settings.dicom_max_series_slices} a series may")


def _along_normal(position: object, orientation: object) -> float | None:
    """Where a slice lies along its plane's normal, from ImagePositionPatient and ImageOrientationPatient."""
    try:
        ipp = np.array([float(v) for v in position], dtype=np.float64)  # type: ignore[attr-defined]
        iop = np.array([float(v) for v in orientation], dtype=np.float64)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return None
    if ipp.shape != (3,) or iop.shape != (6,) or not np.isfinite([*ipp, *iop]).all():
        return None
    normal = np.cross(iop[:3], iop[3:])
    return float(ipp @ normal) if np.linalg.norm(normal) > 0.5 else None


def int_or_none(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def slices_of(ds: Dataset, data: bytes) -> list[SliceFile]:
    """The instance's slices: itself when single-frame; each frame as a file of its own when multi-frame."""
    number = int_or_none(ds.get("InstanceNumber"))
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames == 1:
        position = _along_normal(ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient"))
        return [SliceFile(1, data, position, number)]
    pixels = _frame_pixels(ds, frames)
    shared = (ds.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    out = []
    for index, frame_pixels in enumerate(pixels):
        single = _single_frame(ds, shared, per_frame[index] if index < len(per_frame) else Dataset(), frame_pixels)
        position = _along_normal(single.get("ImagePositionPatient"), single.get("ImageOrientationPatient"))
        buffer = io.BytesIO()
        single.save_as(buffer, enforce_file_format=True)
        out.append(SliceFile(index + 1, buffer.getvalue(), position, number))
    return out


def _frame_pixels(ds: Dataset, frames: int) -> list[bytes]:
    """Each frame's pixel data as it is encoded (native bytes, or the frame's compressed data)."""
    syntax = ds.file_meta.TransferSyntaxUID
    if syntax.is_compressed:
        try:
            encoded = list(generate_frames(ds.PixelData, number_of_frames=frames))
        except Exception as exc:  # pydicom raises ValueError, struct.error... on damaged encapsulation
            raise InstanceRefused(f"its compressed frames cannot be separated ({str(exc)[:120]})") from exc
        if len(encoded) != frames:
            raise InstanceRefused(f"it declares {frames} frames but its pixel data holds {len(encoded)}")
        return encoded
    samples = int(ds.get("SamplesPerPixel") or 1)
    size = int(ds.Rows) * int(ds.Columns) * samples * ((int(ds.get("BitsAllocated") or 8) + 7) // 8)
    if len(ds.PixelData) < size * frames:
        raise InstanceRefused(f"its pixel data is shorter than the {frames} frames its header declares")
    return [ds.PixelData[i * size : (i + 1) * size] for i in range(frames)]


def _single_frame(ds: Dataset, shared: Dataset, own: Dataset, pixels: bytes) -> Dataset:
    """A single-frame dataset of one frame, its functional groups (own before shared) lifted to the top level,
    where the decode path reads rescale and window."""
    single = Dataset()
    for element in ds:
        if element.keyword not in MULTI_FRAME_ONLY:
            single.add(element)
    for group, keywords in FRAME_GROUPS.items():
        for source in (shared, own):  # the frame's own values win
            item = (source.get(group) or [None])[0]
            for keyword in keywords if item is not None else ():
                if keyword in item:
                    setattr(single, keyword, item[keyword].value)
    single.PixelData = encapsulate([pixels]) if ds.file_meta.TransferSyntaxUID.is_compressed else pixels
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        single["PixelData"].VR = "OB"
    single.file_meta = FileMetaDataset(ds.file_meta)
    return single
