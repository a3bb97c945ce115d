"""Fill a database with a realistic history (patients, scans, predictions of two models, reviews) for timing.

    .venv/bin/python -m scripts.seed_history --database-url sqlite:////tmp/history.db --predictions 10000

The database is migrated first, and seeding adds to whatever it holds.
"""

import argparse
import random
from datetime import timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.migrate import upgrade_to_head
from db.runs import get_active_model, register_model_version
from db.schema import CLASSES, FRAMEWORKS, ModelVersion, Patient, Prediction, Read, Scan, utcnow
from db.session import make_engine
from db.storage import store_scan_file
from models.data.imaging import decode_image
from services.diagnosis import model_result, review
from settings import SAMPLE_DIR, get_settings


def stored_samples() -> list[tuple[str, Path, str, int, int]]:
    """(sha256, stored path, original name, width, height) of every sample image, stored like an upload."""
    settings = get_settings()
    samples = []
    for path in sorted(SAMPLE_DIR.glob("*/*.jpg")):
        decoded = decode_image(path.read_bytes(), path.name, max_bytes=2**26, max_pixels=settings.max_image_pixels)
        stored = store_scan_file(data=decoded.stored_bytes, sha256=decoded.sha256, suffix=decoded.stored_suffix)
        samples.append((decoded.sha256, stored, path.name, decoded.width, decoded.height))
    return samples


def model_versions(session: Session) -> list[ModelVersion]:
    """The active model of each framework, or a placeholder version where there is none."""
    versions = []
    for framework in FRAMEWORKS:
        version = get_active_model(session=session, framework=framework) or register_model_version(
            session=session,
            framework=framework,
            name=f"seed-{framework}",
            artifact_path=f"/nonexistent/seed-{framework}",
            sha256="0" * 64,
        )
        versions.append(version)
    return versions


def seed(session: Session, *, predictions: int, patients: int, review_share: float, rng: random.Random) -> int:
    """Add about `predictions` predictions (one per model per scan); returns how many were added."""
    samples = stored_samples()
    versions = model_versions(session)
    existing = set(session.scalars(select(Patient.mrn)))
    mrns = [mrn for mrn in (f"SEED-{i:05d}" for i in range(patients * 2)) if mrn not in existing][:patients]
    rows = [Patient(mrn=mrn) for mrn in mrns]
    session.add_all(rows)
    session.flush()
    scans_wanted = predictions // len(versions)
    # A patient never has the same image twice (one scan per image and patient).
    per_patient = min(len(samples), -(-scans_wanted // len(rows)))
    now = utcnow()
    scans = []
    for patient in rows:
        for sha256, stored, name, width, height in rng.sample(samples, per_patient):
            if len(scans) == scans_wanted:
                break
            source = "batch" if rng.random() < 0.3 else "upload"
            created = now - timedelta(minutes=rng.randrange(365 * 24 * 60))
            scans.append(
                Scan(
                    patient_pk=patient.id,
                    sha256=sha256,
                    file_path=str(stored),
                    original_name=name,
                    source=source,
                    width=width,
                    height=height,
                    image_format="JPEG",
                    created_at=created,
                )
            )
    session.add_all(scans)
    session.flush()
    added: list[Prediction] = []
    reads: list[Read] = []
    for scan in scans:
        truth = rng.randrange(len(CLASSES))
        probs = {}
        for version in versions:
            alpha = np.full(len(CLASSES), 0.5)
            alpha[truth] = rng.choice((2.0, 8.0, 20.0))
            probs[version.framework] = np.random.default_rng(rng.randrange(2**32)).dirichlet(alpha)
        results = [
            model_result(framework=v.framework, model_version_id=v.id, probabilities=probs[v.framework])
            for v in versions
        ]
        flagged = review(results, get_settings().confidence_threshold).flagged
        if rng.random() < review_share:
            reads.append(Read(scan_id=scan.id, label=CLASSES[truth], read_by="dr-seed", read_at=scan.created_at))
        for version in versions:
            p = probs[version.framework]
            label = CLASSES[int(p.argmax())]
            added.append(
                Prediction(
                    scan_id=scan.id,
                    model_version_id=version.id,
                    label=label,
                    probabilities=dict(zip(CLASSES, map(float, p))),
                    confidence=float(p.max()),
                    needs_review=flagged,
                    source=scan.source,
                    created_at=scan.created_at,
                )
            )
    session.add_all([*added, *reads])
    session.flush()
    return len(added)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=get_settings().database_url)
    parser.add_argument("--predictions", type=int, default=10_000)
    parser.add_argument("--patients", type=int, default=500)
    parser.add_argument("--review-share", type=float, default=0.1, help="share of scans already reviewed")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    upgrade_to_head(args.database_url)
    engine = make_engine(args.database_url)
    with Session(engine) as session, session.begin():
        added = seed(
            session,
            predictions=args.predictions,
            patients=args.patients,
            review_share=args.review_share,
            rng=random.Random(args.seed),
        )
    engine.dispose()
    print(f"added {added} predictions for {args.patients} patients to {args.database_url}")


if __name__ == "__main__":
    main()
