"""Figures as people read them."""


def duration_text(seconds: float | None) -> str:
    """A short human reading of a duration: "45 s", "3 min 20 s", "2 h 05 min"."""
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
