"""Typed and carried text renders as itself in the app."""

import pytest
from streamlit.testing.v1 import AppTest

from ui.text import literal

HOSTILE = "**x**<img src=x onerror=alert(1)> :red[y] $z$ _w_ [l](http://e)"


def test_literal_text_renders_exactly_as_written() -> None:
    def page() -> None:
        import streamlit as st

        from ui.text import literal

        st.markdown(literal("**x**<img src=x onerror=alert(1)> :red[y] $z$ _w_ [l](http://e)"))

    at = AppTest.from_function(page, default_timeout=30).run()
    assert not at.exception
    # The markdown source keeps every character, escaped; nothing in it can become markup.
    source = at.markdown[0].value
    assert source.replace("\\", "") == HOSTILE
    assert literal("P-001_a.b") == "P\\-001\\_a\\.b"


@pytest.mark.slow
def test_refusals_and_job_errors_are_shown_as_written(db_url) -> None:
    import io
    import warnings
    import zipfile

    from db.jobs import create_job, finish_job
    from db.session import session_scope
    from settings import ROOT
    from tests.users import signed_in

    with session_scope() as session:
        job_id = create_job(session=session, kind="batch", params={"source": "folder"}).id
        finish_job(session=session, job_id=job_id, status="failed", error=f"a worker said {HOSTILE}")

    def panel() -> None:
        from ui.jobs import job_panel

        job_panel(1, key="t")  # the only job of this database

    at = AppTest.from_function(panel, default_timeout=30).run()
    assert not at.exception
    assert [e.value for e in at.error] == [literal(f"a worker said {HOSTILE}")]

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name, which is the point
        name = "**x** <b>:red[y]</b> $z$ _w_ [l](e).png"
        for _ in range(2):
            archive.writestr(name, b"x")
    at = signed_in(AppTest.from_file(str(ROOT / "views" / "2_Batch.py"), default_timeout=60)).run()
    at.radio(key="batch_source").set_value("An uploaded .zip").run()
    at.file_uploader(key="batch_zip").set_value(("scans.zip", buffer.getvalue(), "application/zip")).run()
    assert not at.exception
    [refusal] = [e.value for e in at.error if e.value.startswith("The zip was refused")]
    assert refusal == literal(f"The zip was refused: it holds '{name}' twice.")
