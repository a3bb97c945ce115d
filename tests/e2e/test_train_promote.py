import re

import pytest
from playwright.sync_api import expect

from db.audit import AuditFilters, audit_page
from db.schema import utcnow
from db.session import session_scope
from scripts.harness import RESULT_TIMEOUT_MS, App

pytestmark = pytest.mark.e2e

EPOCHS = 2


def test_a_tiny_training_run_shows_its_curves_reaches_the_leaderboard_and_is_promoted(admin_app: App) -> None:
    app = admin_app
    app.open("Train")
    main = app.main()
    # The form opens on the CNN's report preset and the shipped sample folder; make it a quick run.
    app.fill(main.get_by_label("Epochs", exact=True), str(EPOCHS))
    app.click(main.get_by_test_id("stExpander").get_by_text("Advanced", exact=True))
    app.fill(main.get_by_label("Cap images per class", exact=True), "4")
    app.click(main.get_by_role("button", name="Start training"))
    queued = main.get_by_text(re.compile(r"^Run \d+ is queued \(job \d+\)"))
    expect(queued).to_be_visible()
    run_id = re.search(r"Run (\d+)", queued.inner_text()).group(1)

    # The live view follows the run until it ends, then keeps its curves and one table row per epoch; two epochs
    # on 16 images make no model for clinicians, and the result says so where a success would show.
    expect(main.get_by_text(re.compile(r"^Finished — not usable: its validation accuracy"))).to_be_visible(
        timeout=RESULT_TIMEOUT_MS
    )
    expect(
        main.get_by_text(re.compile(f"^Run {run_id} · Custom CNN \\(PyTorch\\) · report · .*: succeeded$"))
    ).to_be_visible()
    expect(main.get_by_text(f"Epochs of run {run_id} ({EPOCHS})")).to_be_visible()
    # The run's curves, beside the chosen folder's class chart of the dataset health check.
    expect(main.locator(f".st-key-train_curves_{run_id} .js-plotly-plot")).to_have_count(1)
    expect(main.locator(".st-key-health_class_chart .js-plotly-plot")).to_have_count(1)
    app.screenshot("train", show=main.get_by_role("heading", name="Training now"))

    app.click(main.get_by_role("link", name="Compare it on the leaderboard"))
    expect(main.get_by_role("heading", name="Leaderboard")).to_be_visible()
    label = f"run {run_id} · torch · report"
    board = main.get_by_test_id("stDataFrame").first
    expect(board.locator("td", has_text=label)).to_have_count(1)
    expect(board.locator("td", has_text="reference: the report (published)")).not_to_have_count(0)
    # The link opens the comparison on this run: its curves and its figures.
    expect(main.get_by_test_id("stMultiSelect").get_by_text(label)).to_be_visible()
    expect(main.locator("[data-testid=stPlotlyChart] .js-plotly-plot")).not_to_have_count(0)
    app.screenshot("leaderboard")

    promoting_a_worse_model_asks_for_a_reason_and_audits_it(app, run_id)


def promoting_a_worse_model_asks_for_a_reason_and_audits_it(app: App, run_id: str) -> None:
    started = utcnow()
    app.open("Models")
    main = app.main()
    active = main.get_by_text(re.compile(r"^Active: .+ \(version \d+\)$"))
    expect(active.first).to_be_visible()  # the CNN's section comes first
    before = active.first.inner_text()
    # The active version is the one chosen at first; the run's version is picked by hand.
    name = re.escape(before.removeprefix("Active: ").split(" (version")[0])
    chooser = main.get_by_role("combobox", name="Version").first
    expect(chooser).to_match_aria_snapshot(f'- combobox "Version": /version \\d+ · {name} \\(active\\)/')
    app.click(chooser)
    app.click(app.page.get_by_role("option", name=re.compile(f"· run {run_id} · report$")))
    expect(main.get_by_text(f"Trained by run {run_id} (report)", exact=False)).to_be_visible()
    # Its card is read before promoting it: above the button, with its per-class figures.
    card = main.get_by_role("heading", name=re.compile(f"^Model card: run {run_id} · report \\(version \\d+")).filter(
        visible=True
    )
    expect(card).to_have_count(1)
    # Two cards are open: this version's, and the active MobileNetV2's in its own section below.
    expect(main.get_by_role("heading", name="Validation results").filter(visible=True)).to_have_count(2)
    expect(main.get_by_role("button", name="Download the card (HTML)").filter(visible=True)).to_have_count(2)
    # What it would cost clinicians, and no way on without a reason.
    cost = main.get_by_test_id("stAlert").filter(has_text="the active model would cost clinicians").first
    expect(cost).to_contain_text("below the 80.0 % a model needs to be used")
    button = main.get_by_role("button", name="Make this version active").first
    expect(button).to_be_disabled()
    app.screenshot("models", show=cost)
    reason = "trying the tiny run on the demo machine"
    app.fill(main.get_by_role("textbox", name="Why make it active anyway? (kept in the audit log)").first, reason)
    expect(button).to_be_enabled()
    app.click(button)
    promoted = main.get_by_text(re.compile(r"^.+ \(version \d+\) is now the active Custom CNN \(PyTorch\) model\.$"))
    expect(promoted).to_be_visible()
    version = re.search(r"\(version (\d+)\) is now", promoted.inner_text()).group(1)
    expect(active.first).to_have_text(re.compile(f"\\(version {version}\\)$"))
    assert before != active.first.inner_text()

    with session_scope() as session:
        entries = audit_page(session=session, filters=AuditFilters(since=started), per_page=100)
    [entry] = [e for e in entries if e.action == "model_promoted"]
    assert (entry.username, entry.target) == (app.username, f"model version {version}")
    assert "below the 80.0 %" in entry.detail and entry.detail.endswith(f"reason: {reason}")
