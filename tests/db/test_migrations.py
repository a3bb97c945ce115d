"""The Alembic migrations build exactly the schema of db/schema.py, and undo it."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from db.migrate import downgrade_to_base, upgrade_to_head
from db.schema import Base
from db.session import make_engine


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return set(inspect(connection).get_table_names())
    finally:
        engine.dispose()


def _differences(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()


def test_upgrade_builds_exactly_the_schema(any_db_url):
    assert _tables(any_db_url) == set(Base.metadata.tables) | {"alembic_version"}
    assert _differences(any_db_url) == []


def test_downgrade_drops_every_table_and_upgrade_rebuilds_them(any_db_url):
    downgrade_to_base(any_db_url)
    assert _tables(any_db_url) == {"alembic_version"}
    upgrade_to_head(any_db_url)
    assert _differences(any_db_url) == []


def test_upgrade_of_a_database_at_head_changes_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    upgrade_to_head(url)
    upgrade_to_head(url)
    assert _differences(url) == []


def _at(url: str, revision: str) -> None:
    from alembic import command

    from db.migrate import alembic_config

    command.upgrade(alembic_config(url), revision)


def _execute(url: str, *statements: str) -> list[tuple]:
    """Run `statements` in one transaction; the rows of the last one."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            for statement in statements[:-1]:
                connection.execute(text(statement))
            result = connection.execute(text(statements[-1]))
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


def test_rebuilding_tables_keeps_the_rows_of_the_tables_that_refer_to_them(tmp_path):
    """SQLite rebuilds a table to change it, dropping the old one: with foreign keys enforced that would empty
    every table referring to it (scans under patients, batch items under jobs)."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    _at(url, "0001")
    day = "'2024-01-02 03:04:05'"
    _execute(
        url,
        f"INSERT INTO patients (id, mrn, created_at) VALUES (1, 'P-1', {day})",
        "INSERT INTO jobs (id, kind, status, params, progress_current, progress_total, cancel_requested, attempts, "
        f"created_at) VALUES (1, 'batch', 'succeeded', '{{}}', 1, 1, 0, 1, {day})",
        "INSERT INTO scans (id, patient_id, sha256, file_path, original_name, source, job_id, width, height, "
        f"image_format, created_at) VALUES (1, 1, 'ab', '/s/ab.png', 'a.png', 'batch', 1, 8, 8, 'PNG', {day})",
        "INSERT INTO batch_items (id, job_id, rel_path, status, patient_mrn, scan_id, needs_review, created_at) "
        f"VALUES (1, 1, 'a.png', 'done', 'P-1', 1, 0, {day})",
    )
    _at(url, "0003")
    assert _execute(
        url,
        "SELECT (SELECT count(*) FROM patients), (SELECT count(*) FROM scans), (SELECT count(*) FROM batch_items), "
        "(SELECT job_id FROM scans)",
    ) == [(1, 1, 1, 1)]


def _downgrade(url: str, revision: str) -> None:
    from alembic import command

    from db.migrate import alembic_config

    command.downgrade(alembic_config(url), revision)


def _history_at_0003(url: str) -> None:
    """Patients (two of them twins but for case), scans and per-prediction reviews as they were before reads."""
    _at(url, "0003")
    day = "'2024-01-02 03:04:05'"
    predictions = [
        # id, scan, model version, label, status, reviewer label, reviewer, note, reviewed at
        (1, 1, 1, "glioma", "confirmed", "glioma", "dr-grey", "clear", "2024-01-03 10:00:00"),
        (2, 1, 2, "glioma", "corrected", "meningioma", "Dr Yang", None, "2024-01-04 10:00:00"),
        (3, 2, 1, "pituitary", "confirmed", "pituitary", "dr-grey", None, "2024-01-03 11:00:00"),
        (4, 2, 2, "notumor", "corrected", "pituitary", "dr-grey", None, "2024-01-05 11:00:00"),
        (5, 3, 1, "notumor", "pending", None, None, None, None),
    ]
    _execute(
        url,
        "INSERT INTO users (id, username, password_hash, role, disabled, created_at, password_changed_at) "
        f"VALUES (7, 'dr-grey', 'x', 'clinician', 0, {day}, {day})",
        f"INSERT INTO patients (id, mrn, created_at) VALUES (1, 'MRN-4711', {day}), (2, 'mrn-4711 ', {day}), "
        f"(3, 'Q-1', {day})",
        "INSERT INTO model_versions (id, framework, name, artifact_path, sha256, is_active, created_at) VALUES "
        f"(1, 'torch', 'cnn', '/c', 'a', 1, {day}), (2, 'keras', 'm', '/m', 'b', 1, {day})",
        *(
            "INSERT INTO scans (id, patient_id, sha256, file_path, original_name, source, width, height, "
            f"image_format, created_at) VALUES ({i}, {i}, 's{i}', '/s/{i}.png', '{i}.png', 'upload', 8, 8, 'PNG', {day})"
            for i in (1, 2, 3)
        ),
        *(
            "INSERT INTO predictions (id, scan_id, model_version_id, label, probabilities, confidence, needs_review, "
            "review_status, reviewer_label, reviewer, review_note, reviewed_at, source, created_at) VALUES "
            f"({pid}, {scan}, {model}, '{label}', '{{}}', 0.9, 0, '{status}', "
            + ", ".join("NULL" if v is None else f"'{v}'" for v in (reviewer_label, reviewer, note, at))
            + f", 'upload', {day})"
            for pid, scan, model, label, status, reviewer_label, reviewer, note, at in predictions
        ),
    )


def test_the_reviews_of_each_scan_become_its_reads_and_twins_wait_for_a_merge(tmp_path):
    url = f"sqlite:///{tmp_path / 'reviews.db'}"
    _history_at_0003(url)
    upgrade_to_head(url)
    reads = _execute(
        url, "SELECT scan_id, label, read_by, user_id, note, from_prediction_id FROM reads ORDER BY scan_id, read_at"
    )
    assert reads == [
        # Scan 1's reviews disagree (glioma, meningioma): both kept, oldest first, so the newer one is current.
        (1, "glioma", "dr-grey", 7, "clear", 1),
        (1, "meningioma", "Dr Yang", None, None, 2),
        # Scan 2's agree on pituitary: one read, the latest.
        (2, "pituitary", "dr-grey", 7, None, 4),
    ]
    assert _execute(url, "SELECT id, mrn, mrn_key FROM patients ORDER BY id") == [
        (1, "MRN-4711", "mrn-4711"),
        (2, "mrn-4711 ", None),  # a twin: listed for an admin to merge, never matched by a typed id
        (3, "Q-1", "q-1"),
    ]
    # The scan whose reviews disagreed waits in the review queue for a new read, as does the unreviewed one.
    from sqlalchemy.orm import Session

    from db.session import make_engine
    from db.worklist import QueueFilters, review_queue

    engine = make_engine(url)
    try:
        with Session(engine) as session:
            queue = review_queue(session=session, filters=QueueFilters())
    finally:
        engine.dispose()
    assert [(e.scan_id, e.reason) for e in queue] == [(1, "conflicting_reads"), (3, "none")]

    _downgrade(url, "0003")
    assert _execute(url, "SELECT id, review_status, reviewer_label, reviewer FROM predictions ORDER BY id") == [
        (1, "corrected", "meningioma", "Dr Yang"),
        (2, "corrected", "meningioma", "Dr Yang"),
        (3, "confirmed", "pituitary", "dr-grey"),
        (4, "corrected", "pituitary", "dr-grey"),
        (5, "pending", None, None),
    ]
