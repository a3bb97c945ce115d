"""Text a person typed or a file carried, shown exactly as written in Streamlit's markdown."""

import re

# Markdown and Streamlit's own syntax (:red[...], :material/icon:, $math$), and HTML's angle brackets.
_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~:$&])")


def literal(value: object) -> str:
    """`value` as text: every character that markdown or Streamlit would read as markup is escaped."""
    return _SPECIAL.sub(r"\\\1", str(value)).replace("\n", "  \n")
