"""The hospital's DICOMweb server (DICOMWEB_URL): studies and series found by QIDO-RS, a series pulled by
WADO-RS into the same intake as the listener's, results stored by STOW-RS (services/dicom_send.py)."""

import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from pydicom.uid import UID
from retrying import RetryError

from domain import AuditAction, UserError
from services.auth import Actor, audit, require_signed_in
from settings import Settings, get_settings

MAX_RESULTS = 100
# What a QIDO search may be given: an id or a name with DICOM's wildcards (* and ?), nothing that ends a query.
SEARCH_TEXT = re.compile(r"[^\\\x00-\x1f]{0,64}")
MODALITIES = ("MR", "CT", "CR", "US", "PT", "NM", "OT", "SR")


class PacsUnavailable(UserError):
    """No DICOMweb server is configured, or it did not answer as one; the message says which."""


@dataclass(frozen=True)
class StudyRow:
    study_uid: str
    patient_id: str
    patient_name: str
    study_date: str
    description: str
    modalities: str
    series: int | None
    instances: int | None


@dataclass(frozen=True)
class SeriesRow:
    study_uid: str
    series_uid: str
    modality: str
    number: int | None
    description: str
    instances: int | None


class _WildcardSession(requests.Session):
    """dicomweb-client percent-encodes a search's values, DICOM's wildcards * and ? included. An encoded reserved
    character need not mean the character itself (RFC 3986), and servers (Orthanc among them) search for a
    literal %2A: the wildcards are put back as they are before the request goes out."""

    def request(self, method, url, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        head, mark, query = str(url).partition("?")
        if mark:
            url = head + mark + query.replace("%2A", "*").replace("%3F", "?")
        return super().request(method, url, *args, **kwargs)


def web_client(settings: Settings | None = None) -> DICOMwebClient:
    """A client for DICOMWEB_URL with its configured authentication; PacsUnavailable when none is configured."""
    settings = settings or get_settings()
    if not settings.dicomweb_url:
        raise PacsUnavailable("No DICOMweb server is configured: set DICOMWEB_URL (see README, Configuration).")
    session = _WildcardSession()
    if settings.dicomweb_token:
        session.headers["Authorization"] = f"Bearer {settings.dicomweb_token}"
    elif settings.dicomweb_username:
        session.auth = (settings.dicomweb_username, settings.dicomweb_password or "")
    client = DICOMwebClient(settings.dicomweb_url.rstrip("/"), session=session, timeout=settings.dicomweb_timeout_s)
    # The client's own default retries every failed request five times with waits doubling from 2 s: a server
    # that is down kept a clinician waiting 30 s for "did not answer". One more try, half a second later.
    client.set_http_retry_params(retry=True, max_attempts=2, wait_exponential_multiplier=250)
    return client


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        return int(ds.get(keyword))
    except (TypeError, ValueError):
        return None


def _status(exc: requests.HTTPError | RetryError) -> int | str:
    """The HTTP status of a refused request; RetryError is the client giving up on a busy server (503, 429...)."""
    response = exc.last_attempt.value if isinstance(exc, RetryError) else exc.response
    return getattr(response, "status_code", "?")


def _query(call: Callable[[], list[dict]]) -> list[Dataset]:
    try:
        return [Dataset.from_json(item) for item in call()]
    except (requests.HTTPError, RetryError) as exc:
        raise PacsUnavailable(f"The DICOMweb server answered the search with HTTP {_status(exc)}.") from exc
    except (requests.RequestException, OSError) as exc:
        raise PacsUnavailable(f"The DICOMweb server did not answer: {str(exc)[:200]}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise PacsUnavailable(f"The DICOMweb server's answer is not DICOM JSON ({str(exc)[:120]}).") from exc


def _search_text(value: str, what: str) -> str:
    text = value.strip()
    if not SEARCH_TEXT.fullmatch(text):
        raise UserError(
            f"The {what} to search for is at most 64 characters, without backslashes or control characters."
        )
    return text


def search_studies(
    actor: Actor | None,
    *,
    patient_id: str = "",
    patient_name: str = "",
    date_from: date | None = None,
    date_to: date | None = None,
    modality: str | None = "MR",
) -> list[StudyRow]:
    """Studies matching every filter given (QIDO-RS), at most MAX_RESULTS, newest first; the search is audited."""
    actor = require_signed_in(actor, "search the PACS")
    filters: dict[str, str] = {}
    if text := _search_text(patient_id, "patient id"):
        filters["PatientID"] = text
    if text := _search_text(patient_name, "patient name"):
        filters["PatientName"] = text
    if date_from or date_to:
        if date_from and date_to and date_from > date_to:
            raise UserError("The date range ends before it starts.")
        filters["StudyDate"] = f"{date_from:%Y%m%d}" if date_from else ""
        filters["StudyDate"] += "-" + (f"{date_to:%Y%m%d}" if date_to else "")
    if modality:
        if modality not in MODALITIES:
            raise UserError(f"Unknown modality {modality!r}; choose one of {', '.join(MODALITIES)}.")
        filters["ModalitiesInStudy"] = modality
    client = web_client()
    fields = ["StudyDescription", "ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"]
    found = _query(lambda: client.search_for_studies(search_filters=filters, fields=fields, limit=MAX_RESULTS))
    audit(
        actor,
        AuditAction.PACS_SEARCHED,
        patient_mrn=filters.get("PatientID"),
        detail=f"{len(found)} studies for {filters}",
    )
    rows = [
        StudyRow(
            study_uid=_text(ds, "StudyInstanceUID"),
            patient_id=_text(ds, "PatientID"),
            patient_name=_text(ds, "PatientName"),
            study_date=_text(ds, "StudyDate"),
            description=_text(ds, "StudyDescription"),
            modalities=_text(ds, "ModalitiesInStudy"),
            series=_int(ds, "NumberOfStudyRelatedSeries"),
            instances=_int(ds, "NumberOfStudyRelatedInstances"),
        )
        for ds in found
    ]
    return sorted(rows, key=lambda r: r.study_date, reverse=True)


def search_series(actor: Actor | None, *, study_uid: str) -> list[SeriesRow]:
    """The series of one study (QIDO-RS), by series number."""
    require_signed_in(actor, "search the PACS")
    client = web_client()
    fields = ["SeriesDescription", "SeriesNumber", "Modality", "NumberOfSeriesRelatedInstances"]
    found = _query(lambda: client.search_for_series(study_uid, fields=fields, limit=MAX_RESULTS))
    rows = [
        SeriesRow(
            study_uid=study_uid,
            series_uid=_text(ds, "SeriesInstanceUID"),
            modality=_text(ds, "Modality"),
            number=_int(ds, "SeriesNumber"),
            description=_text(ds, "SeriesDescription"),
            instances=_int(ds, "NumberOfSeriesRelatedInstances"),
        )
        for ds in found
    ]
    return sorted(rows, key=lambda r: (r.number is None, r.number or 0))


def check_pull(actor: Actor | None, *, study_uid: str, series_uid: str) -> dict[str, str]:
    """What a job that pulls this series is given, once the request is checked (a signed-in person, valid UIDs,
    a configured server): worker.submit.submit_pull queues it."""
    require_signed_in(actor, "send a PACS series to prediction")
    for value, what in ((study_uid, "study"), (series_uid, "series")):
        if not UID(value).is_valid:
            raise UserError(f"The {what} UID {value[:70]!r} is not a valid UID.")
    web_client()  # a server must be configured before anything is queued
    return {"study_uid": study_uid, "series_uid": series_uid}


def audit_pull(actor: Actor | None, job_id: int, pull: dict[str, str]) -> None:
    server = get_settings().dicomweb_url
    detail = f"series {pull['series_uid']} of study {pull['study_uid']} from {server}"
    audit(actor, AuditAction.SERIES_QUEUED, target=f"job {job_id}", detail=detail)


def pull_series(study_uid: str, series_uid: str, *, progress: Callable[[int], None]) -> tuple[int, int, list[str]]:
    """Retrieve a series by WADO-RS into the intake, instance by instance; returns (series id, instances
    received, why each refused one was refused). Raises UserError when nothing usable came."""
    from services.dicom_instances import InstanceRefused
    from services.dicom_intake import receive

    settings = get_settings()
    client = web_client(settings)
    series_id, received, refused = None, 0, []
    try:
        for count, ds in enumerate(client.iter_series(study_uid, series_uid), start=1):
            if count > settings.dicom_max_series_slices:
                refused.append(f"more than {settings.dicom_max_series_slices} instances: the rest were not pulled")
                break
            if str(ds.get("SeriesInstanceUID", "")) != series_uid:
                refused.append("the server sent an instance of another series")
                continue
            buffer = io.BytesIO()
            try:
                ds.save_as(buffer, enforce_file_format=True)
                got = receive(buffer.getvalue(), source="dicomweb", sender=settings.dicomweb_url, settings=settings)
            except InstanceRefused as exc:
                refused.append(str(exc))
                continue
            except (ValueError, AttributeError, TypeError) as exc:  # a dataset pydicom cannot write back
                refused.append(f"an instance could not be read ({str(exc)[:120]})")
                continue
            series_id, received = got.series_id, received + 1
            progress(received)
    except (requests.HTTPError, RetryError) as exc:
        raise PacsUnavailable(f"The DICOMweb server answered the retrieval with HTTP {_status(exc)}.") from exc
    except (requests.RequestException, OSError) as exc:
        raise PacsUnavailable(f"The DICOMweb server did not answer the retrieval: {str(exc)[:200]}") from exc
    if series_id is None:
        why = f": {refused[0]}" if refused else ""
        raise UserError(f"No usable MR instance came from the series {series_uid}{why}.")
    return series_id, received, refused
