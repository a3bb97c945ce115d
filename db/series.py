"""Query functions for DICOM series, their slices, and the results waiting to go back to the PACS."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db.history import PagedRows
from db.schema import DicomSend, DicomSeries, Patient, SeriesSlice, utcnow


def get_series(*, session: Session, series_id: int) -> DicomSeries | None:
    return session.get(DicomSeries, series_id)


def series_with_uid(*, session: Session, series_uid: str) -> DicomSeries | None:
    return session.scalar(select(DicomSeries).where(DicomSeries.series_uid == series_uid))


def find_slice(*, session: Session, series_id: int, sop_instance_uid: str, frame: int) -> SeriesSlice | None:
    return session.scalar(
        select(SeriesSlice).where(
            SeriesSlice.series_id == series_id,
            SeriesSlice.sop_instance_uid == sop_instance_uid,
            SeriesSlice.frame == frame,
        )
    )


def count_slices(*, session: Session, series_id: int) -> int:
    return session.scalar(select(func.count()).where(SeriesSlice.series_id == series_id)) or 0


def ordered_slices(*, session: Session, series_id: int) -> list[SeriesSlice]:
    """A series' slices in anatomical order: by position along its normal, then instance number, then frame."""
    return list(
        session.scalars(
            select(SeriesSlice)
            .where(SeriesSlice.series_id == series_id)
            .order_by(
                SeriesSlice.position.asc().nulls_last(),
                SeriesSlice.instance_number.asc().nulls_last(),
                SeriesSlice.sop_instance_uid,
                SeriesSlice.frame,
            )
        )
    )


def staged_slice(*, session: Session, series_id: int, staged_file: str) -> SeriesSlice | None:
    return session.scalar(
        select(SeriesSlice).where(SeriesSlice.series_id == series_id, SeriesSlice.staged_file == staged_file)
    )


def slices_to_predict(*, session: Session, series_id: int) -> list[SeriesSlice]:
    return [s for s in ordered_slices(session=session, series_id=series_id) if s.status == "received"]


def idle_series(*, session: Session, idle_s: float) -> list[DicomSeries]:
    """Series still receiving whose last instance came more than `idle_s` seconds ago: complete."""
    cutoff = utcnow() - timedelta(seconds=idle_s)
    query = select(DicomSeries).where(DicomSeries.status == "receiving", DicomSeries.last_received_at < cutoff)
    return list(session.scalars(query.order_by(DicomSeries.id)))


def set_series_status(*, session: Session, series_id: int, status: str, job_id: int | None = None) -> None:
    values: dict[str, Any] = {"status": status}
    if job_id is not None:
        values["job_id"] = job_id
    session.execute(update(DicomSeries).where(DicomSeries.id == series_id).values(**values))


@dataclass(frozen=True)
class SeriesSummary:
    """A series as the lists show it."""

    series_id: int
    patient_pk: int | None
    patient_mrn: str | None
    study_uid: str
    series_uid: str
    description: str | None
    study_date: str | None
    source: str
    sender: str | None
    status: str
    slices: int
    job_id: int | None
    label: str | None
    confidence: float | None
    flagged: bool | None
    first_received_at: datetime
    last_received_at: datetime


def _summaries(session: Session, series: list[DicomSeries]) -> list[SeriesSummary]:
    counts = dict(
        session.execute(
            select(SeriesSlice.series_id, func.count())
            .where(SeriesSlice.series_id.in_([s.id for s in series]))
            .group_by(SeriesSlice.series_id)
        ).all()
    )
    mrns = dict(
        session.execute(
            select(Patient.id, Patient.mrn).where(Patient.id.in_({s.patient_pk for s in series} - {None}))
        ).all()
    )
    return [
        SeriesSummary(
            series_id=s.id,
            patient_pk=s.patient_pk,
            patient_mrn=mrns.get(s.patient_pk) if s.patient_pk is not None else None,
            study_uid=s.study_uid,
            series_uid=s.series_uid,
            description=s.series_description,
            study_date=s.study_date,
            source=s.source,
            sender=s.sender,
            status=s.status,
            slices=counts.get(s.id, 0),
            job_id=s.job_id,
            label=(s.answer or {}).get("label"),
            confidence=(s.answer or {}).get("confidence"),
            flagged=(s.answer or {}).get("flagged"),
            first_received_at=s.first_received_at,
            last_received_at=s.last_received_at,
        )
        for s in series
    ]


def list_series(
    *, session: Session, patient_pk: int | None = None, limit: int = 25, offset: int = 0
) -> PagedRows[SeriesSummary]:
    """Series, the most recently received first; one patient's when `patient_pk` is given."""
    query = select(DicomSeries)
    if patient_pk is not None:
        query = query.where(DicomSeries.patient_pk == patient_pk)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = list(
        session.scalars(
            query.order_by(DicomSeries.last_received_at.desc(), DicomSeries.id.desc()).limit(limit).offset(offset)
        )
    )
    return PagedRows(_summaries(session, rows), total, limit, offset)


def series_summary(*, session: Session, series_id: int) -> SeriesSummary | None:
    series = session.get(DicomSeries, series_id)
    return _summaries(session, [series])[0] if series is not None else None


def series_of_scans(*, session: Session, scan_ids: list[int]) -> dict[int, int]:
    """scan id -> the id of the series it is a slice of, for the scans that are series slices."""
    if not scan_ids:
        return {}
    rows = session.execute(
        select(SeriesSlice.scan_id, SeriesSlice.series_id).where(SeriesSlice.scan_id.in_(scan_ids)).distinct()
    )
    return {scan_id: series_id for scan_id, series_id in rows}


def create_send(
    *, session: Session, series_id: int, what: str, destination: str, folder: str, objects: list[dict[str, Any]]
) -> DicomSend:
    send = DicomSend(
        series_id=series_id,
        what=what,
        destination=destination,
        folder=folder,
        objects=objects,
        status="pending",
        attempts=0,
    )
    session.add(send)
    session.flush()
    return send


def get_send(*, session: Session, send_id: int) -> DicomSend | None:
    return session.get(DicomSend, send_id)


def sends_of_series(*, session: Session, series_id: int) -> list[DicomSend]:
    return list(session.scalars(select(DicomSend).where(DicomSend.series_id == series_id).order_by(DicomSend.id)))


def mark_objects_sent(*, session: Session, send_id: int, sop_instance_uids: set[str]) -> None:
    send = session.get(DicomSend, send_id)
    if send is None:
        return
    # A new list: the JSON column notices a replaced value, not one changed in place.
    send.objects = [{**o, "sent": o.get("sent") or o["sop_instance_uid"] in sop_instance_uids} for o in send.objects]


def record_attempt(
    *,
    session: Session,
    send_id: int,
    attempt: int,
    error: str | None,
    next_attempt_at: datetime | None,
    gave_up: bool = False,
) -> DicomSend | None:
    """The outcome of delivery attempt number `attempt`: sent when `error` is None, else pending again (failed
    when given up)."""
    send = session.get(DicomSend, send_id)
    if send is None:
        return None
    send.attempts = attempt
    send.last_error = error
    send.next_attempt_at = next_attempt_at
    if error is None:
        send.status, send.sent_at = "sent", utcnow()
    else:
        send.status = "failed" if gave_up else "pending"
    return send


@dataclass(frozen=True)
class SliceRow:
    """One slice as the series page shows it, in series order (`number` counts from 1)."""

    slice_id: int
    number: int
    sop_instance_uid: str
    frame: int
    position: float | None
    status: str
    scan_id: int | None
    file_path: str | None
    sha256: str | None
    results: dict[str, Any]
    needs_review: bool
    error: str | None
    values_file: str | None
    values_scale: float | None
    values_offset: float | None
    window: tuple[float, float] | None


@dataclass(frozen=True)
class SendRow:
    send_id: int
    job_id: int | None
    what: str
    destination: str
    status: str
    attempts: int
    last_error: str | None
    next_attempt_at: datetime | None
    sent_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class SeriesDetail:
    summary: SeriesSummary
    answer: dict[str, Any] | None
    slices: list[SliceRow]
    sends: list[SendRow]


def series_detail(*, session: Session, series_id: int) -> SeriesDetail | None:
    """A series with its answer, every slice (with its scan's file) and its sends, for the series page."""
    from db.schema import Scan

    summary = series_summary(session=session, series_id=series_id)
    series = session.get(DicomSeries, series_id)
    if summary is None or series is None:
        return None
    slices = ordered_slices(session=session, series_id=series_id)
    scans = {
        s.id: (s.file_path, s.sha256)
        for s in session.scalars(select(Scan).where(Scan.id.in_({r.scan_id for r in slices} - {None})))
    }
    rows = [
        SliceRow(
            slice_id=r.id,
            number=n,
            sop_instance_uid=r.sop_instance_uid,
            frame=r.frame,
            position=r.position,
            status=r.status,
            scan_id=r.scan_id if r.scan_id in scans else None,
            file_path=scans.get(r.scan_id, (None, None))[0] if r.scan_id else None,
            sha256=scans.get(r.scan_id, (None, None))[1] if r.scan_id else None,
            results=dict(r.results or {}),
            needs_review=r.needs_review,
            error=r.error,
            values_file=r.values_file,
            values_scale=r.values_scale,
            values_offset=r.values_offset,
            window=(r.window_center, r.window_width) if r.window_center is not None and r.window_width else None,
        )
        for n, r in enumerate(slices, start=1)
    ]
    sends = [
        SendRow(
            s.id,
            s.job_id,
            s.what,
            s.destination,
            s.status,
            s.attempts,
            s.last_error,
            s.next_attempt_at,
            s.sent_at,
            s.created_at,
        )
        for s in sends_of_series(session=session, series_id=series_id)
    ]
    return SeriesDetail(summary, dict(series.answer) if series.answer else None, rows, sends)
