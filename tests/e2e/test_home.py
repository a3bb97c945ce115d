import pytest
from playwright.sync_api import expect

from scripts.harness import App

pytestmark = pytest.mark.e2e


def test_an_admins_home_shows_the_worker_online_and_the_active_models(admin_app: App) -> None:
    admin_app.open()
    main = admin_app.main()
    expect(main.get_by_text("Worker online")).to_be_visible()
    expect(main.get_by_text("Redis reachable")).to_be_visible()
    expect(main.get_by_text("none active yet")).to_have_count(0)
    admin_app.screenshot("home-admin")


def test_a_clinicians_home_shows_their_own_work_and_nothing_of_the_server(app: App) -> None:
    app.open()
    main = app.main()
    expect(main.get_by_role("heading", name="Your recent patients")).to_be_visible()
    expect(main.get_by_role("heading", name="Your background jobs")).to_be_visible()
    expect(main.get_by_text("none active yet")).to_have_count(0)
    for server_detail in ("Worker online", "Redis", "Database", "sqlite"):
        expect(main.get_by_text(server_detail)).to_have_count(0)
    app.screenshot("home")
