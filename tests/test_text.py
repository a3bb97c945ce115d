"""Typed and carried text renders as itself in the app."""

from streamlit.testing.v1 import AppTest

from ui.text import literal

HOSTILE = "**x**<img src=x onerror=alert(1)> :red[y] $z$ _w_ [l](http://e)"


def test_literal_text_renders_exactly_as_written() -> None:
    def page() -> None:
        import streamlit as st

        from ui.text import literal

        st.markdown(literal("**x**<img src=x onerror=alert(1)> :red[y] $z$ _w_ [l](http://e)"))

    at = AppTest.from_function(page).run()
    assert not at.exception
    # The markdown source keeps every character, escaped; nothing in it can become markup.
    source = at.markdown[0].value
    assert source.replace("\\", "") == HOSTILE
    assert literal("P-001_a.b") == "P\\-001\\_a\\.b"
