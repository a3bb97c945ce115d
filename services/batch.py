"""Batch prediction: every image of a folder through each chosen model, into each patient's record.

Restart-safe: a job run again starts after the files it already did (docs/design/jobs.md).
"""

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.batches import (
    BatchRow,
    add_batch_item,
    batch_counts,
    batch_models,
    batch_rows,
    deleted_paths,
    job_output_counts,
    recorded_paths,
)
from db.session import session_scope
from domain import CLASSES, UserError
from models.data.imaging import DecodedImage, ImageError
from models.evaluation.metrics import classification_report
from models.inference.predictor import Predictor
from services.batch_input import (
    BatchInputError,
    BatchParams,
    Listing,
    check_patient_mode,
    dicom_patient,
    discard_upload,
    folder_patient,
    list_folder,
    read_listed_file,
    source_root,
    true_label,
)
from services.decoding import decode_untrusted
from services.diagnosis import (
    ModelResult,
    PairRule,
    SavedScan,
    model_result,
    save_scan_with_predictions,
    versions_rule,
)
from services.ood import OodGate, OodVerdict, gate_for, header_verdicts
from services.predictors import ModelFileProblem, loaded_predictor
from settings import get_settings

log = logging.getLogger(__name__)

BATCH_SIZE = 32  # images decoded, predicted and committed together
# A cancel is looked for before each file and while one decodes, at most this often (each look reads the jobs table).
CANCEL_CHECK_S = 0.5


@dataclass(frozen=True)
class BatchModel:
    """A model version a job predicts with, loaded."""

    version_id: int
    framework: str
    name: str
    predictor: Predictor
    artifact_path: str
    sha256: str


@dataclass
class BatchFile:
    """One file after reading: the image and whose it is, or why it cannot be used."""

    rel_path: str
    image: DecodedImage | None = None
    patient_mrn: str | None = None
    note: str | None = None
    error: str | None = None
    refused: str | None = None  # why the out-of-distribution check says it is not a brain MRI slice


@dataclass
class FileRules:
    """How a job treats its files: whose they are, when to flag them, and the limits a file must meet."""

    patient_mode: str
    patient_mrn: str | None
    threshold: float
    max_bytes: int
    max_pixels: int
    # How the pair's answers make one and when it is flagged, where their pair report applies (else `threshold`).
    pair: PairRule | None = None


Progress = Callable[[int, int, str], None]
# What else a job records of each file, in the transaction that records the file: its outcome, and its saved scan
# when it was predicted (a series job keeps its slices beside the batch items this way).
Recorder = Callable[[Session, BatchFile, SavedScan | None], None]


def load_models(version_ids: list[int] | None) -> list[BatchModel]:
    """The job's model versions, loaded; a missing or altered model file fails the job with the reason."""
    with session_scope() as session:
        try:
            chosen = batch_models(session=session, version_ids=version_ids)
        except LookupError as exc:
            raise UserError(str(exc)) from exc
        versions = [(v.id, v.framework, v.name, v.artifact_path, v.sha256) for v in chosen]
    models = []
    for version_id, framework, name, path, sha256 in versions:
        try:
            predictor = loaded_predictor(framework, path, sha256)
        except ModelFileProblem as exc:
            # The reason names the file on the server: it goes to the job's details, which admins read.
            raise UserError(
                f"Model {name} (version {version_id}) cannot be used: its {exc.what} is missing or not the one registered. "
                "An admin can see the details on this job."
            ) from exc
        except (OSError, ValueError) as exc:
            raise UserError(
                f"Model {name} (version {version_id}) could not be loaded. An admin can see the details on this job."
            ) from exc
        models.append(BatchModel(version_id, framework, name, predictor, path, sha256))
    return models


def models_rule(models: Sequence[BatchModel]) -> PairRule | None:
    """The pair rule of a job's models, where their pair report applies (services.diagnosis.versions_rule)."""
    return versions_rule({m.framework: m.version_id for m in models})


def run_batch(
    job_id: int, params: dict[str, Any], *, progress: Progress, check_cancel: Callable[[], None]
) -> dict[str, Any]:
    """The job: check the input again, load the models, predict every file not yet done.

    A problem with the input or the models raises UserError with the reason.
    """
    settings = get_settings()
    batch = BatchParams.of(params)
    try:
        root = source_root(batch, settings=settings)
        patient_mrn = check_patient_mode(batch.patient_mode, batch.patient_mrn)
        listing = list_folder(root)
    except BatchInputError as exc:
        raise UserError(str(exc)) from exc
    if not listing.images:
        raise UserError(f"{batch.phrase.capitalize()} holds no JPEG, PNG or DICOM file to predict.")
    models = load_models(batch.model_version_ids)
    rules = FileRules(
        patient_mode=batch.patient_mode,
        patient_mrn=patient_mrn,
        threshold=settings.confidence_threshold,
        max_bytes=settings.max_upload_mb * 2**20,
        max_pixels=settings.max_image_pixels,
        pair=models_rule(models),
    )
    result = predict_listing(job_id, listing, models, rules, progress=progress, check_cancel=check_cancel)
    if batch.source == "zip":
        # Every file is in the record now, so the unpacked zip can go; a cancelled job keeps it for a re-run.
        discard_upload(str(batch.upload), settings=settings)
    return result


def predict_listing(
    job_id: int,
    listing: Listing,
    models: list[BatchModel],
    rules: FileRules,
    *,
    progress: Progress,
    check_cancel: Callable[[], None],
    record: Recorder | None = None,
) -> dict[str, Any]:
    """Record skipped files, then predict the images in batches; returns the job's result.

    An image the out-of-distribution check flags is recorded as skipped with the check's reason, not predicted.
    `record` is called for each file decoded now, in the transaction that saves it.
    """
    gate, gate_note = gate_for(models)
    with session_scope() as session:
        recorded = recorded_paths(session=session, job_id=job_id)
        # Files whose scans were deleted after an earlier attempt stay deleted: they count as done.
        recorded |= deleted_paths(
            session=session, job_id=job_id, paths=[*listing.images, *(p for p, _ in listing.skipped)]
        )
        for rel_path, reason in listing.skipped:
            if rel_path not in recorded:
                add_batch_item(session=session, job_id=job_id, rel_path=rel_path, status="skipped", error=reason)
    todo = [p for p in listing.images if p not in recorded]
    total = len(listing.images) + len(listing.skipped)
    finished = total - len(todo)
    progress(finished, total, f"{finished}/{total} files, starting")
    started, done_now = time.monotonic(), 0

    def saved(count: int) -> None:
        nonlocal done_now
        done_now += count
        rate = done_now / max(time.monotonic() - started, 1e-6)
        left = (len(todo) - done_now) / rate
        progress(
            finished + done_now, total, f"{finished + done_now}/{total} files, {rate:.1f} img/s, ~{left:.0f} s left"
        )

    # A pipeline on the cores the thread caps leave idle: the next batch is read and decoded (Pillow releases
    # the GIL) and the previous one written while this one is predicted, each framework in its own thread.
    with (
        ThreadPoolExecutor(1, thread_name_prefix="batch-decode") as decoder,
        ThreadPoolExecutor(len(models), thread_name_prefix="batch-predict") as predictors,
        ThreadPoolExecutor(1, thread_name_prefix="batch-save") as saver,
    ):
        saving: tuple[Future[None], int] | None = None
        for decoded in _prefetch(decoder, todo, listing.root, rules, _every(CANCEL_CHECK_S, check_cancel)):
            check_cancel()
            probabilities = _check_and_predict(predictors, gate, decoded, models)
            if saving is not None:
                saving[0].result()
                saved(saving[1])
            saving = saver.submit(_save_chunk, job_id, decoded, probabilities, models, rules, record), len(decoded)
        if saving is not None:
            saving[0].result()
            saved(saving[1])
    elapsed = time.monotonic() - started
    result = summarise(job_id, models, images_per_s=done_now / elapsed if done_now else None, duration_s=elapsed)
    # Images an earlier attempt of this job recorded (a re-run after its worker was lost) were not redone.
    return {**result, "done_before": len(listing.images) - len(todo), "ood_check": gate_note}


def _prefetch(
    pool: ThreadPoolExecutor, todo: list[str], root: Path, rules: FileRules, check_cancel: Callable[[], None]
) -> Iterator[list[BatchFile]]:
    chunks = [todo[i : i + BATCH_SIZE] for i in range(0, len(todo), BATCH_SIZE)]
    pending = pool.submit(_decode_chunk, chunks[0], root, rules, check_cancel) if chunks else None
    for position in range(len(chunks)):
        current = pending.result()
        nxt = position + 1
        pending = pool.submit(_decode_chunk, chunks[nxt], root, rules, check_cancel) if nxt < len(chunks) else None
        yield current


def _decode_chunk(
    rel_paths: list[str], root: Path, rules: FileRules, check_cancel: Callable[[], None]
) -> list[BatchFile]:
    decoded = []
    for rel_path in rel_paths:
        check_cancel()  # per file, and while each decodes: a cancel never waits for a whole chunk
        decoded.append(_decode_one(rel_path, root, rules, check_cancel))
    return decoded


def _decode_one(rel_path: str, root: Path, rules: FileRules, check_cancel: Callable[[], None]) -> BatchFile:
    """Read, decode (in the sandbox: a file that loops or balloons a decoder costs its own error row) and assign
    one file; every failure becomes the file's error text."""
    try:
        data = read_listed_file(root, rel_path, max_bytes=rules.max_bytes)
        # At analysis size, as the Diagnose page predicts it: one image gets one answer wherever it is predicted.
        image = decode_untrusted(
            data, rel_path, max_bytes=rules.max_bytes, max_pixels=rules.max_pixels, check=check_cancel
        )
        if rules.patient_mode == "dicom":
            mrn, note = dicom_patient(image.patient_mrn)
        elif rules.patient_mode == "folder":
            mrn, note = folder_patient(rel_path)
        else:
            mrn, note = rules.patient_mrn, None
    except (ImageError, BatchInputError) as exc:
        return BatchFile(rel_path, error=str(exc).removeprefix(f"{rel_path}: "))
    except OSError as exc:
        return BatchFile(rel_path, error=f"the file could not be read ({exc.strerror or exc}).")
    return BatchFile(rel_path, image=image, patient_mrn=mrn, note=note)


def _every(interval_s: float, check: Callable[[], None]) -> Callable[[], None]:
    """`check`, called at most once per `interval_s` however often this is."""
    last = float("-inf")

    def throttled() -> None:
        nonlocal last
        if time.monotonic() - last >= interval_s:
            check()
            last = time.monotonic()

    return throttled


def _check_and_predict(
    pool: ThreadPoolExecutor, gate: OodGate | None, decoded: list[BatchFile], models: list[BatchModel]
) -> dict[str, np.ndarray]:
    """Mark the images the check says are not brain MRI slices (they get its reason instead of a tumor class) and
    return each model's probabilities (N x classes) for the others.

    Where the check's CNN is one of the job's models, its features come from the same run as that model's
    probabilities, all models predicting every image at once, and the answers for refused images are dropped:
    each image then costs the models' predictions alone instead of a forward pass of the CNN more.
    """
    decodable = [item for item in decoded if item.image is not None]
    cnn = next((m for m in models if gate is not None and m.predictor is gate.predictor), None)
    if gate is None or cnn is None or not decodable:
        _check_chunk(gate, decodable)
        return _predict(pool, decoded, models)
    rgbs = [item.image.rgb for item in decodable if item.image is not None]
    futures = {
        m.framework: pool.submit(gate.predictor.predict_with_features if m is cnn else m.predictor.predict, rgbs)
        for m in models
    }
    answers = {framework: future.result() for framework, future in futures.items()}
    answers[cnn.framework], features = answers[cnn.framework]
    verdicts = gate.verdicts(features, [item.image.modality for item in decodable if item.image is not None])
    _mark_refused(decodable, verdicts)
    kept = [i for i, item in enumerate(decodable) if item.refused is None]
    return {framework: probs[kept] for framework, probs in answers.items()} if kept else {}


def _check_chunk(gate: OodGate | None, decodable: list[BatchFile]) -> None:
    """The check where there is one, else the DICOM header's word alone."""
    if not decodable:
        return
    images = [item.image for item in decodable if item.image is not None]
    modalities = [image.modality for image in images]
    verdicts = header_verdicts(modalities) if gate is None else gate.check([im.rgb for im in images], modalities)
    _mark_refused(decodable, verdicts)


def _mark_refused(decodable: list[BatchFile], verdicts: Sequence[OodVerdict | None]) -> None:
    for item, verdict in zip(decodable, verdicts, strict=True):
        if verdict is not None and verdict.flagged:
            item.refused = verdict.reason


def _to_predict(decoded: list[BatchFile]) -> list[BatchFile]:
    return [d for d in decoded if d.image is not None and d.refused is None]


def _predict(pool: ThreadPoolExecutor, decoded: list[BatchFile], models: list[BatchModel]) -> dict[str, np.ndarray]:
    """Each model's probabilities (N x classes) for the images of a batch that are to be predicted."""
    rgbs = [d.image.rgb for d in _to_predict(decoded) if d.image is not None]
    if not rgbs:
        return {}
    futures = {m.framework: pool.submit(m.predictor.predict, rgbs) for m in models}
    return {framework: future.result() for framework, future in futures.items()}


def _save_chunk(
    job_id: int,
    decoded: list[BatchFile],
    probabilities: dict[str, np.ndarray],
    models: list[BatchModel],
    rules: FileRules,
    record: Recorder | None = None,
) -> None:
    """Commit a batch's scans, predictions and items together: a worker lost mid-way leaves whole batches."""
    good = _to_predict(decoded)
    # Another delivery of this job, or another job saving the same image, may commit first: the second try
    # then finds their rows and adds only what is missing.
    for attempt in range(2):
        try:
            with session_scope() as session:
                paths = [d.rel_path for d in decoded]
                recorded = recorded_paths(session=session, job_id=job_id, paths=paths)
                recorded |= deleted_paths(session=session, job_id=job_id, paths=paths)
                for position, item in enumerate(good):
                    if item.rel_path not in recorded:
                        probs = {fw: p[position] for fw, p in probabilities.items()}
                        saved = _save_done(session, job_id, item, models, probs, rules)
                        if record is not None:
                            record(session, item, saved)
                for item in decoded:
                    if item.rel_path in recorded:
                        continue
                    if item.image is None:
                        add_batch_item(
                            session=session,
                            job_id=job_id,
                            rel_path=item.rel_path,
                            status="error",
                            patient_mrn=item.patient_mrn,
                            true_label=true_label(item.rel_path),
                            error=item.error,
                        )
                        if record is not None:
                            record(session, item, None)
                    elif item.refused is not None:
                        _save_scan(session, job_id, item, [], rules)
                        if record is not None:
                            record(session, item, None)
            return
        except IntegrityError:
            if attempt:
                raise
            log.warning("job %s: rows of this batch were written concurrently; retrying once", job_id)


def _save_done(
    session: Session,
    job_id: int,
    item: BatchFile,
    models: list[BatchModel],
    probs: dict[str, np.ndarray],
    rules: FileRules,
) -> SavedScan:
    results = [
        model_result(framework=m.framework, model_version_id=m.version_id, probabilities=probs[m.framework])
        for m in models
    ]
    return _save_scan(session, job_id, item, results, rules)


def _save_scan(
    session: Session, job_id: int, item: BatchFile, results: list[ModelResult], rules: FileRules
) -> SavedScan:
    """Store one image as a scan with the models' answers and record its row as done; an image the check refused
    is kept without any answer, with the check's reason, so a clinician sees it in the review queue, and its row
    is skipped with that reason."""
    assert item.image is not None
    saved = save_scan_with_predictions(
        session=session,
        decoded=item.image,
        patient_mrn=item.patient_mrn,
        source="batch",
        results=results,
        threshold=rules.threshold,
        original_name=item.rel_path,
        job_id=job_id,
        refusal=item.refused,
        rule=rules.pair,
    )
    add_batch_item(
        session=session,
        job_id=job_id,
        rel_path=item.rel_path,
        status="done" if item.refused is None else "skipped",
        # The patient's id as the record has it: a typed id matched an existing patient whatever its case.
        patient_mrn=saved.scan.patient.mrn if saved.scan.patient is not None else None,
        true_label=true_label(item.rel_path),
        scan_id=saved.scan.id,
        results={r["framework"]: {k: v for k, v in r.items() if k != "framework"} for r in results} or None,
        needs_review=saved.flagged and item.refused is None,
        error=item.refused or item.note,
    )
    return saved


def summarise(
    job_id: int, models: list[BatchModel], *, images_per_s: float | None = None, duration_s: float | None = None
) -> dict[str, Any]:
    """The job's result from all of its rows (not only those of the last run): counts, and metrics when labelled."""
    with session_scope() as session:
        counts = batch_counts(session=session, job_id=job_id)
        new_scans, new_predictions = job_output_counts(session=session, job_id=job_id)
        done = batch_rows(session=session, job_id=job_id, status="done")
    labelled = sum(1 for r in done if r.true_label)
    return {
        **counts,
        "total": counts["done"] + counts["error"] + counts["skipped"],
        "new_scans": new_scans,
        "new_predictions": new_predictions,
        "models": [{"framework": m.framework, "version_id": m.version_id, "name": m.name} for m in models],
        "labelled": labelled,
        "metrics": batch_metrics(rows=done, frameworks=[m.framework for m in models]),
        "images_per_s": images_per_s,
        "duration_s": duration_s,
        # What the review flag was judged against, so the results say why a file is flagged as it was then.
        "threshold": get_settings().confidence_threshold,
    }


def batch_metrics(*, rows: Iterable[BatchRow], frameworks: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per model, accuracy and confusion matrix (rows: truth) over the done files whose folder names a class."""
    labelled = [r for r in rows if r.status == "done" and r.true_label in CLASSES]
    metrics = {}
    for framework in frameworks:
        scored = [r for r in labelled if framework in r.results]
        if scored:
            y_true = np.array([CLASSES.index(r.true_label) for r in scored])
            y_pred = np.array([CLASSES.index(r.results[framework]["label"]) for r in scored])
            metrics[framework] = classification_report(y_true, y_pred)
    return metrics
