"""A series' results as DICOM, made with highdicom: a Comprehensive SR holding the series answer (and, amended,
a clinician's read), and Secondary Captures of the heatmap overlays of its most suspicious slices.

Both go into the series' own study, each in a series of its own, and carry only the patient and study fields
the system keeps (README "The DICOM objects sent").
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import highdicom as hd
import numpy as np
from highdicom.sr import (
    CodeContentItem,
    CodedConcept,
    ComprehensiveSR,
    ContainerContentItem,
    DateTimeContentItem,
    ImageContentItem,
    NumContentItem,
    PnameContentItem,
    TextContentItem,
)
from highdicom.sr import RelationshipTypeValues as Rel
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ComprehensiveSRStorage, generate_uid
from pydicom.valuerep import PersonName

from domain import CLASSES, DISCLAIMER, TumorClass, framework_label
from models.data.imaging import jet_colormap

MANUFACTURER = "brainmri"
SCHEME = "99BRAINMRI"  # the system's own codes (DICOM reserves "99" designators for local schemes)
REPORT_SERIES_NUMBER = 990
CAPTURE_SERIES_NUMBER = 991
NOT_FOR_DIAGNOSIS = "DERIVED - NOT FOR DIAGNOSIS"
CAPTURE_SIDE = 384  # each panel of a capture, in pixels


def code(value: str, meaning: str) -> CodedConcept:
    return CodedConcept(value, SCHEME, meaning)


CLASS_CODES = {c: code(c, TumorClass(c).label) for c in CLASSES}
PROBABILITY = {c: code(f"p-{c}", f"Probability of {TumorClass(c).label.lower()}") for c in CLASSES}
NEEDS_REVIEW = code("needs-review", "Needs review")
REVIEW_REASON = code("review-reason", "Reason for review")
SERIES_RULE = code("series-rule", "Series rule")
MODEL = code("model", "Model")
MODEL_SHA256 = code("model-sha256", "Model file SHA-256")
ACCEPTED_SLICES = code("accepted-slices", "Slices accepted as brain MRI")
REFUSED_SLICES = code("refused-slices", "Slices refused as not brain MRI")
CLINICIAN_READ = code("clinician-read", "Clinician's read")
READ_AT = code("read-at", "Read at")
SLICES = CodedConcept("{slices}", "UCUM", "slices")


@dataclass(frozen=True)
class Instance:
    """A slice of the series the results refer to."""

    sop_class_uid: str
    sop_instance_uid: str
    frame: int
    multi_frame: bool


@dataclass(frozen=True)
class StudyRef:
    """What the results need of the series and its study, all of it kept by the system."""

    study_uid: str
    series_uid: str
    patient_id: str | None
    study_date: str | None  # YYYY-MM-DD as the series row keeps it
    instances: list[Instance]


@dataclass(frozen=True)
class ModelInfo:
    framework: str
    version_id: int
    name: str
    sha256: str


@dataclass(frozen=True)
class Read:
    """A clinician's read of the series, as the amended report states it."""

    label: str
    author: str
    at: datetime
    note: str | None = None


def person_name(user_name: str) -> PersonName:
    """A user name as a DICOM person name: one component, marked as meant to be one by its trailing caret."""
    text = "".join(ch for ch in user_name if ch not in "\\^=")[:63]
    return PersonName(f"{text}^")


def _evidence(ref: StudyRef) -> list[Dataset]:
    """One dataset per referenced instance, with the patient and study fields the results copy."""
    out, seen = [], set()
    for inst in ref.instances:
        if inst.sop_instance_uid in seen:
            continue
        seen.add(inst.sop_instance_uid)
        ds = Dataset()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = ref.study_uid, ref.series_uid
        ds.SOPInstanceUID, ds.SOPClassUID = inst.sop_instance_uid, inst.sop_class_uid
        ds.PatientID = ref.patient_id or ""
        # Type 2 patient and study fields the system does not keep: present and empty, as DICOM allows.
        ds.PatientName = ds.PatientBirthDate = ds.PatientSex = None
        ds.StudyDate = (ref.study_date or "").replace("-", "") if _is_date(ref.study_date) else None
        ds.StudyTime = ds.AccessionNumber = ds.ReferringPhysicianName = ds.StudyID = None
        ds.Modality = "MR"
        out.append(ds)
    return out


def _is_date(value: str | None) -> bool:
    digits = (value or "").replace("-", "")
    return len(digits) == 8 and digits.isdigit()


def _image(inst: Instance, name: Dataset | CodedConcept) -> ImageContentItem:
    return ImageContentItem(
        name=name,
        referenced_sop_class_uid=inst.sop_class_uid,
        referenced_sop_instance_uid=inst.sop_instance_uid,
        referenced_frame_numbers=inst.frame if inst.multi_frame else None,
        relationship_type=Rel.CONTAINS,
    )


def _answer_items(answer: Mapping[str, object], models: Sequence[ModelInfo], ref: StudyRef) -> list[Dataset]:
    probabilities = answer["probabilities"]
    assert isinstance(probabilities, Mapping)
    items: list[Dataset] = [
        CodeContentItem(name=codes.DCM.Finding, value=CLASS_CODES[str(answer["label"])], relationship_type=Rel.CONTAINS)
    ]
    items += [
        NumContentItem(
            name=PROBABILITY[c],
            value=round(float(probabilities[c]), 6),
            unit=codes.UCUM.NoUnits,
            relationship_type=Rel.CONTAINS,
        )
        for c in CLASSES
    ]
    flagged = bool(answer["flagged"])
    items.append(
        CodeContentItem(
            name=NEEDS_REVIEW, value=codes.SCT.Yes if flagged else codes.SCT.No, relationship_type=Rel.CONTAINS
        )
    )
    reasons = answer.get("reasons") or []
    assert isinstance(reasons, list)
    items += [TextContentItem(name=REVIEW_REASON, value=str(r)[:1024], relationship_type=Rel.CONTAINS) for r in reasons]
    for key, concept in (("accepted", ACCEPTED_SLICES), ("refused", REFUSED_SLICES)):
        count = answer.get(key)
        assert isinstance(count, int)
        items.append(NumContentItem(name=concept, value=count, unit=SLICES, relationship_type=Rel.CONTAINS))
    items.append(TextContentItem(name=SERIES_RULE, value=str(answer["rule"])[:1024], relationship_type=Rel.CONTAINS))
    per_model = answer.get("per_model") or {}
    assert isinstance(per_model, Mapping)
    for model in models:
        box = ContainerContentItem(name=MODEL, relationship_type=Rel.CONTAINS)
        box.ContentSequence = [
            TextContentItem(
                name=codes.DCM.AlgorithmName,
                value=f"{framework_label(model.framework)}: {model.name}"[:1024],
                relationship_type=Rel.CONTAINS,
            ),
            TextContentItem(
                name=codes.DCM.AlgorithmVersion,
                value=f"model version {model.version_id}",
                relationship_type=Rel.CONTAINS,
            ),
            TextContentItem(name=MODEL_SHA256, value=model.sha256, relationship_type=Rel.CONTAINS),
        ]
        if model.framework in per_model:
            box.ContentSequence.append(
                CodeContentItem(
                    name=codes.DCM.Finding,
                    value=CLASS_CODES[str(per_model[model.framework])],
                    relationship_type=Rel.CONTAINS,
                )
            )
        items.append(box)
    by_uid = {(i.sop_instance_uid, i.frame): i for i in ref.instances}
    deciding = answer.get("deciding_instances") or []
    assert isinstance(deciding, list)
    for uid, frame in deciding:
        if (uid, frame) in by_uid:
            items.append(_image(by_uid[(uid, frame)], codes.DCM.BestIllustrationOfFinding))
    return items


def series_report(
    ref: StudyRef,
    answer: Mapping[str, object],
    models: Sequence[ModelInfo],
    *,
    report_series_uid: str,
    instance_number: int,
    previous: Sequence[tuple[str, str]] = (),
    read: Read | None = None,
) -> ComprehensiveSR:
    """The series answer as a Comprehensive SR; with `read`, the amended report that adds a clinician's read and
    names the earlier reports (`previous`: their (series UID, SOP instance UID)) as its predecessors."""
    root = ContainerContentItem(name=codes.LN.MRIHeadReport)
    items = _answer_items(answer, models, ref)
    if read is not None:
        box = ContainerContentItem(name=CLINICIAN_READ, relationship_type=Rel.CONTAINS)
        box.ContentSequence = [
            CodeContentItem(name=codes.DCM.Finding, value=CLASS_CODES[read.label], relationship_type=Rel.CONTAINS),
            PnameContentItem(
                name=codes.DCM.PersonObserverName, value=person_name(read.author), relationship_type=Rel.CONTAINS
            ),
            DateTimeContentItem(name=READ_AT, value=read.at.replace(microsecond=0), relationship_type=Rel.CONTAINS),
        ]
        if read.note:
            box.ContentSequence.append(
                TextContentItem(name=codes.DCM.Comment, value=read.note[:1024], relationship_type=Rel.CONTAINS)
            )
        items.append(box)
    items.append(TextContentItem(name=codes.DCM.Comment, value=DISCLAIMER, relationship_type=Rel.CONTAINS))
    root.ContentSequence = items
    evidence = _evidence(ref)
    earlier = []
    for series_uid, sop_uid in previous:
        ds = Dataset()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = ref.study_uid, series_uid
        ds.SOPInstanceUID, ds.SOPClassUID = sop_uid, ComprehensiveSRStorage
        earlier.append(ds)
    sr = ComprehensiveSR(
        evidence=evidence,
        content=root,
        series_instance_uid=report_series_uid,
        series_number=REPORT_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        is_complete=True,
        previous_versions=earlier or None,
        series_description="BRAINMRI series answer (decision support)" + (", amended" if read else ""),
    )
    _declare_scheme(sr)
    return sr


def _declare_scheme(ds: Dataset) -> None:
    """Name the local coding scheme the object uses, as DICOM asks of a private designator."""
    item = Dataset()
    item.CodingSchemeDesignator = SCHEME
    item.CodingSchemeName = "Brain MRI classification codes"
    item.CodingSchemeResponsibleOrganization = MANUFACTURER
    ds.CodingSchemeIdentificationSequence = [item]


def colour_scale(height: int, width: int = 24) -> np.ndarray:
    """The heatmap's colour scale, high at the top, as HxWx3."""
    values = np.linspace(1.0, 0.0, height)[:, None].repeat(width, axis=1)
    return jet_colormap(values)


def capture_pixels(slice_rgb: np.ndarray, overlays: Sequence[tuple[str, np.ndarray]], caption: str) -> np.ndarray:
    """The slice beside each model's heatmap overlay, a colour scale, and the banner saying what it is."""
    panels = [Image.fromarray(slice_rgb).resize((CAPTURE_SIDE, CAPTURE_SIDE), Image.BILINEAR)]
    panels += [Image.fromarray(o).resize((CAPTURE_SIDE, CAPTURE_SIDE), Image.BILINEAR) for _, o in overlays]
    banner, scale_w, gap = 44, 56, 4
    width = len(panels) * (CAPTURE_SIDE + gap) + scale_w
    canvas = Image.new("RGB", (width, CAPTURE_SIDE + banner), (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=14)
    draw.text((6, 4), f"{NOT_FOR_DIAGNOSIS} | {caption}", fill=(255, 255, 0), font=font)
    labels = ["slice", *(name for name, _ in overlays)]
    for i, (panel, label) in enumerate(zip(panels, labels, strict=True)):
        x = i * (CAPTURE_SIDE + gap)
        canvas.paste(panel, (x, banner))
        draw.text((x + 4, 24), label, fill=(255, 255, 255), font=font)
    scale = Image.fromarray(colour_scale(CAPTURE_SIDE - 40))
    x = width - scale_w + 8
    canvas.paste(scale, (x, banner + 20))
    draw.text((x, banner + 2), "high", fill=(255, 255, 255), font=font)
    draw.text((x, banner + CAPTURE_SIDE - 18), "low", fill=(255, 255, 255), font=font)
    return np.asarray(canvas, dtype=np.uint8)


def heatmap_capture(
    ref: StudyRef, source: Instance, pixels: np.ndarray, *, capture_series_uid: str, instance_number: int
) -> hd.sc.SCImage:
    """One Secondary Capture of a slice and its heatmaps, derived from `source`, marked not for diagnosis."""
    reference = next(ds for ds in _evidence(ref) if ds.SOPInstanceUID == source.sop_instance_uid)
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=reference,
        pixel_array=pixels,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=capture_series_uid,
        series_number=CAPTURE_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        patient_orientation=("L", "P"),  # required by the call; emptied below
    )
    # Panels side by side have no one orientation: the Type 2 field stays present and empty.
    sc.PatientOrientation = None
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.BurnedInAnnotation = "YES"  # the banner: what the picture is and that it is not for diagnosis
    # The brain is not a paired part, so Laterality is left out (dciodvfy asks for it only of paired parts).
    sc.BodyPartExamined = "BRAIN"
    sc.SeriesDescription = f"BRAINMRI heatmaps ({NOT_FOR_DIAGNOSIS.lower()})"
    sc.ImageComments = (
        "Heatmaps of where each model looked, derived from the referenced MR slice, for decision support only; "
        "not for diagnosis."
    )
    sc.DerivationDescription = "Model heatmaps (HiResCAM, occlusion) blended over the slice"
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = source.sop_class_uid, source.sop_instance_uid
    if source.multi_frame:
        item.ReferencedFrameNumber = source.frame
    sc.SourceImageSequence = [item]
    return sc
