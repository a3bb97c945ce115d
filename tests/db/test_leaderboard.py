"""The leaderboard's rows come from finished runs, best first, with the report's rows marked as reference."""

import pytest

from db.leaderboard import REFERENCE_SOURCE, dataset_options, leaderboard_rows, run_details
from db.session import session_scope
from tests.seed_runs import seed_run


@pytest.fixture
def seeded(db_url: str) -> dict[str, int]:
    return {
        "torch_good": seed_run("torch", 0.97, test_accuracy=0.94),
        "keras_mid": seed_run("keras", 0.93),
        "torch_low": seed_run("torch", 0.80, fingerprint="e" * 64),
        "failed": seed_run("torch", None),
    }


def test_rows_are_finished_runs_best_first_among_the_reference_rows(seeded: dict[str, int]) -> None:
    with session_scope() as session:
        rows = leaderboard_rows(session=session)
    order = [row["run_id"] if not row["reference"] else row["framework"] for row in rows]
    assert order == [seeded["torch_good"], "torch", seeded["keras_mid"], "keras", seeded["torch_low"]]
    references = [row for row in rows if row["reference"]]
    assert {(r["source"], r["accuracy"], r["inference_ms"]) for r in references} == {
        (REFERENCE_SOURCE, 0.9539, 87.0),
        (REFERENCE_SOURCE, 0.9131, 63.0),
    }


def test_a_row_carries_the_runs_figures(seeded: dict[str, int]) -> None:
    with session_scope() as session:
        [row] = [r for r in leaderboard_rows(session=session) if r["run_id"] == seeded["torch_good"]]
    assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((0.96, 0.95, 0.94))
    assert row["test_accuracy"] == 0.94 and row["memory_mb"] == 900.0 and row["model_size_mb"] == 4.2
    assert row["epochs"] == 2 and row["fingerprint"] == "f" * 64 and row["duration_s"] is not None
    assert (row["temperature"], row["ece_before"], row["ece_after"], row["nll_after"]) == (1.4, 0.08, 0.02, 0.4)


def test_filters_narrow_the_runs_and_keep_the_matching_reference_row(seeded: dict[str, int]) -> None:
    with session_scope() as session:
        by_dataset = leaderboard_rows(session=session, fingerprint="e" * 64, include_reference=False)
        by_framework = leaderboard_rows(session=session, framework="keras")
        options = dataset_options(session=session)
    assert [row["run_id"] for row in by_dataset] == [seeded["torch_low"]]
    assert [(row["run_id"], row["reference"]) for row in by_framework] == [(seeded["keras_mid"], False), (None, True)]
    assert options == [("f" * 64, "/data/brain", 2), ("e" * 64, "/data/brain", 1)]


def test_run_details_hold_curves_and_final_metrics_in_the_order_asked(seeded: dict[str, int]) -> None:
    wanted = [seeded["keras_mid"], 10_000, seeded["torch_good"]]
    with session_scope() as session:
        details = run_details(session=session, run_ids=wanted)
    assert [d.run_id for d in details] == [seeded["keras_mid"], seeded["torch_good"]]
    assert [row["epoch"] for row in details[0].epochs] == [1, 2]
    assert details[1].metrics["test"]["accuracy"] == 0.94
