"""What every way of starting the app inherits from .streamlit/config.toml."""

import tomllib

from streamlit.testing.v1 import AppTest

from settings import ROOT


def test_the_app_listens_on_this_machine_only_and_watches_no_files() -> None:
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"
    assert config["server"]["fileWatcherType"] == "none"


def test_an_unexpected_error_shows_no_traceback_or_server_path() -> None:
    def page() -> None:
        raise RuntimeError("could not open /srv/brainmri/var/secret.db")

    at = AppTest.from_function(page, default_timeout=30).run()
    [error] = at.exception
    assert "/srv/brainmri" not in error.value and not error.stack_trace
    assert "encountered an error" in error.value
