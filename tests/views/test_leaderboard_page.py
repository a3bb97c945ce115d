"""The Leaderboard page: runs best first among the report's marked rows, filters, and the comparison."""

import json

import pytest
from streamlit.testing.v1 import AppTest

from db.leaderboard import REFERENCE_SOURCE
from settings import ROOT
from tests.seed_runs import seed_run
from tests.users import signed_in

PAGE = str(ROOT / "views" / "5_Leaderboard.py")


@pytest.fixture
def seeded(db_url: str) -> dict[str, int]:
    return {
        "torch_best": seed_run("torch", 0.97, test_accuracy=0.94),
        "keras": seed_run("keras", 0.93, epochs=3),
        "other_dataset": seed_run("torch", 0.85, fingerprint="e" * 64),
        "failed": seed_run("keras", None),
    }


def open_page(**query: str) -> AppTest:
    at = signed_in(AppTest.from_file(PAGE, default_timeout=60))
    at.query_params.update(query)
    at.run()
    assert not at.exception
    return at


def table(at: AppTest):  # type: ignore[no-untyped-def]
    return at.dataframe[0].value


def test_runs_are_ranked_by_accuracy_among_the_marked_reference_rows(seeded: dict[str, int]) -> None:
    rows = table(open_page())
    assert list(rows["run"]) == [
        f"run {seeded['torch_best']} · torch · report",
        REFERENCE_SOURCE,
        f"run {seeded['keras']} · keras · report",
        REFERENCE_SOURCE,
        f"run {seeded['other_dataset']} · torch · report",
    ]
    assert list(rows["reference"]) == [False, True, False, True, False]
    assert list(rows["accuracy"]) == [0.97, 0.9539, 0.93, 0.9131, 0.85]
    assert rows["test accuracy"][0] == 0.94 and rows["fingerprint"][0] == "f" * 12
    assert (rows["ECE"][0], rows["ECE uncalibrated"][0], rows["temperature"][0]) == (0.02, 0.08, 1.4)


def test_a_dataset_filter_leaves_only_its_runs(seeded: dict[str, int]) -> None:
    at = open_page()
    at.selectbox(key="leaderboard_dataset").set_value("e" * 64)
    at.checkbox(key="leaderboard_reference").uncheck().run()
    assert list(table(at)["run"]) == [f"run {seeded['other_dataset']} · torch · report"]


def test_compare_overlays_curves_and_shows_each_runs_confusion_matrix(seeded: dict[str, int]) -> None:
    at = open_page(run=str(seeded["keras"]))
    at.multiselect(key="leaderboard_compare").select(seeded["torch_best"]).run()
    assert not at.exception
    figures = at.dataframe[1].value
    assert list(figures.columns) == [
        f"run {seeded['keras']} · keras · report",
        f"run {seeded['torch_best']} · torch · report",
    ]
    assert figures.loc["accuracy"].tolist() == [0.93, 0.97]
    charts = [json.loads(chart.proto.spec)["data"] for chart in at.get("plotly_chart")]
    # Two overlays (accuracy, loss) with a line per run, then a confusion matrix per run.
    assert [[len(trace["x"]) for trace in chart] for chart in charts[:2]] == [[3, 2], [3, 2]]
    assert [chart[0]["type"] for chart in charts[2:]] == ["heatmap", "heatmap"]
    per_class = at.dataframe[2].value
    assert list(per_class["class"]) == ["Glioma", "Meningioma", "No tumor", "Pituitary"]
