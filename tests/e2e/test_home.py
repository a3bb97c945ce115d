import pytest
from playwright.sync_api import expect

from scripts.harness import App

pytestmark = pytest.mark.e2e


def test_home_shows_the_worker_online_and_the_active_models(app: App) -> None:
    app.open()
    main = app.main()
    expect(main.get_by_text("Worker online")).to_be_visible()
    expect(main.get_by_text("Redis reachable")).to_be_visible()
    expect(main.get_by_text("none active yet")).to_have_count(0)
    app.screenshot("home")
