"""Write an MR series as DICOM from slice images (JPEG/PNG): to try the listener, and for the tests and the bench.

    python -m scripts.make_series --out var/demo-series data/sample/notumor/*.jpg data/sample/pituitary/*.jpg
    storescu -aec BRAINMRI 127.0.0.1 11112 var/demo-series/*.dcm

Each image becomes one slice (12-bit values as a scanner writes them, a window in the header, positions 5 mm
apart), or with --multi-frame one Enhanced MR instance holds them all. The header names a made-up patient; its
name and birth date are there to show that the system does not keep them.
"""

import argparse
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import (
    UID,
    EnhancedMRImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

SLICE_GAP_MM = 5.0
ORIENTATION = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]  # axial
WINDOW = (2000.0, 4000.0)


def pixels_of(path: Path, size: int | None = None) -> np.ndarray:
    """An image as 12-bit grayscale values, optionally resized to size x size."""
    with Image.open(path) as image:
        gray = image.convert("L")
        if size is not None and gray.size != (size, size):
            gray = gray.resize((size, size), Image.BILINEAR)
        return np.asarray(gray, dtype=np.uint16) * 16


def _base(
    sop_class: UID, syntax: UID, *, patient_id: str, study_uid: str, series_uid: str, modality: str, description: str
) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
    # Written uncompressed; _encoded compresses to `syntax` once the pixels are in.
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("slice.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientBirthDate, ds.PatientSex, ds.PatientID = "Doe^Jane", "19700101", "F", patient_id
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20240131", "101500", "ACC-0001", "1"
    ds.ReferringPhysicianName, ds.InstitutionName = "Smith^John", "General Hospital"
    ds.Modality, ds.SeriesDescription, ds.SeriesNumber = modality, description, 3
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    return ds


def _encoded(ds: FileDataset, syntax: UID) -> bytes:
    if syntax.is_compressed:
        ds.compress(syntax)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def series_files(
    images: Sequence[Path],
    *,
    patient_id: str = "P-SERIES-1",
    study_uid: str | None = None,
    series_uid: str | None = None,
    description: str = "AX T1 POST",
    modality: str = "MR",
    sop_class: UID = MRImageStorage,
    syntax: UID = ExplicitVRLittleEndian,
    size: int | None = 224,
) -> list[bytes]:
    """One single-frame instance per image, in slice order."""
    study_uid, series_uid = study_uid or generate_uid(), series_uid or generate_uid()
    out = []
    for number, path in enumerate(images, start=1):
        pixels = pixels_of(path, size)
        ds = _base(
            sop_class,
            syntax,
            patient_id=patient_id,
            study_uid=study_uid,
            series_uid=series_uid,
            modality=modality,
            description=description,
        )
        ds.InstanceNumber = number
        ds.ImagePositionPatient = [0.0, 0.0, number * SLICE_GAP_MM]
        ds.ImageOrientationPatient = ORIENTATION
        ds.Rows, ds.Columns = pixels.shape
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        ds.WindowCenter, ds.WindowWidth = WINDOW
        ds.PixelData = pixels.astype("<u2").tobytes()
        out.append(_encoded(ds, syntax))
    return out


def enhanced_file(
    images: Sequence[Path],
    *,
    patient_id: str = "P-SERIES-1",
    study_uid: str | None = None,
    series_uid: str | None = None,
    description: str = "AX T2 3D",
    syntax: UID = ExplicitVRLittleEndian,
    size: int = 224,
) -> bytes:
    """One Enhanced MR instance holding every image as a frame, with per-frame positions."""
    study_uid, series_uid = study_uid or generate_uid(), series_uid or generate_uid()
    frames = np.stack([pixels_of(p, size) for p in images])
    ds = _base(
        EnhancedMRImageStorage,
        syntax,
        patient_id=patient_id,
        study_uid=study_uid,
        series_uid=series_uid,
        modality="MR",
        description=description,
    )
    ds.InstanceNumber, ds.NumberOfFrames = 1, len(frames)
    ds.Rows, ds.Columns = frames.shape[1:]
    shared = Dataset()
    orientation, measures, transform, voi = Dataset(), Dataset(), Dataset(), Dataset()
    orientation.ImageOrientationPatient = ORIENTATION
    measures.PixelSpacing, measures.SliceThickness = [1.0, 1.0], SLICE_GAP_MM
    transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = 1, 0, "US"
    voi.WindowCenter, voi.WindowWidth = WINDOW
    shared.PlaneOrientationSequence, shared.PixelMeasuresSequence = [orientation], [measures]
    shared.PixelValueTransformationSequence, shared.FrameVOILUTSequence = [transform], [voi]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for number in range(1, len(frames) + 1):
        item, position = Dataset(), Dataset()
        position.ImagePositionPatient = [0.0, 0.0, number * SLICE_GAP_MM]
        item.PlanePositionSequence = [position]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.PixelData = frames.astype("<u2").tobytes()
    return _encoded(ds, syntax)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--patient-id", default="P-SERIES-1")
    p.add_argument("--multi-frame", action="store_true", help="one Enhanced MR instance instead of one per slice")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.multi_frame:
        files = [enhanced_file(args.images, patient_id=args.patient_id)]
    else:
        files = series_files(args.images, patient_id=args.patient_id)
    for number, data in enumerate(files, start=1):
        (args.out / f"slice-{number:04d}.dcm").write_bytes(data)
    print(f"wrote {len(files)} file(s) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
