import re

import pytest
from playwright.sync_api import expect

from scripts.harness import RESULT_TIMEOUT_MS, App
from settings import SAMPLE_DIR

pytestmark = pytest.mark.e2e

SAMPLE_IMAGES = sum(1 for _ in SAMPLE_DIR.glob("*/*.jpg"))


def test_a_batch_over_the_sample_folder_runs_to_done_and_fills_the_results_table(app: App) -> None:
    app.open("Batch")
    main = app.main()
    expect(main.get_by_text("No batch has been run yet.")).to_be_visible()
    app.click(main.get_by_role("button", name="Use the shipped sample folder"))
    expect(
        main.get_by_text(f"{SAMPLE_IMAGES} image(s) to predict, {SAMPLE_IMAGES} of them in class folders")
    ).to_be_visible()

    app.click(main.get_by_role("button", name="Start the batch"))
    # The job panel redraws itself from the jobs table until the job is done, then the results appear.
    panel = main.get_by_text(re.compile(r"^Job \d+ · batch · "))
    expect(panel).to_be_visible()
    expect(panel).to_have_text(re.compile("finished$"), timeout=RESULT_TIMEOUT_MS)
    expect(main.get_by_test_id("stProgress")).to_contain_text(f"{SAMPLE_IMAGES}/{SAMPLE_IMAGES}")
    app.settle()
    predicted = main.get_by_test_id("stMetric").filter(has_text="Predicted")
    expect(predicted.get_by_test_id("stMetricValue")).to_have_text(str(SAMPLE_IMAGES))
    expect(main.get_by_text(f"{SAMPLE_IMAGES} of {SAMPLE_IMAGES} files")).to_be_visible()
    table = main.get_by_test_id("stDataFrame")
    expect(table).to_be_visible()
    # The grid draws on a canvas; its accessible copy, a table, tells the rows.
    grid = table.get_by_role("grid", include_hidden=True)
    # The table shows its rows a page of 50 at a time, each with its scan's thumbnail.
    expect(grid).to_have_attribute("aria-rowcount", str(min(SAMPLE_IMAGES, 50) + 1))
    expect(main.get_by_test_id("stPagination")).to_be_visible()
    expect(table.get_by_test_id(re.compile(r"^glide-cell-\d+-0$")).filter(has_text="done")).to_have_count(1)
    app.screenshot("batch", show=main.get_by_role("heading", name="Batch jobs"))
