"""The app's pages, defined once: the shell registers the ones a role sees, pages link to each other by object."""

from dataclasses import dataclass

import streamlit as st

from settings import ROOT

VIEWS = ROOT / "views"


@dataclass(frozen=True)
class Pages:
    home: st.Page
    diagnose: st.Page
    batch: st.Page
    review: st.Page
    history: st.Page
    series: st.Page
    pacs: st.Page
    train: st.Page
    leaderboard: st.Page
    models: st.Page
    users: st.Page
    audit: st.Page
    # Signed out, every page's URL runs the sign-in form (a bookmark gets no "page not found"), and once signed
    # in the same URL is the page that was asked for.
    sign_in: tuple[st.Page, ...]

    def for_role(self, *, is_admin: bool) -> dict[str, list[st.Page]]:
        """The navigation's sections for a clinician, or for an admin."""
        sections = {
            "": [self.home],
            "Clinic": [self.diagnose, self.batch, self.review, self.history, self.series, self.pacs],
        }
        if is_admin:
            sections |= {
                "Models": [self.train, self.leaderboard, self.models],
                "Administration": [self.users, self.audit],
            }
        return sections


def _page(script: str, title: str, icon: str, url_path: str | None = None) -> st.Page:
    # An absolute path: the pages are made in whichever script first asks for them (the shell, or a page run on
    # its own in a test), and a relative one would be read from that script's folder.
    return st.Page(VIEWS / script, title=title, icon=f":material/{icon}:", url_path=url_path, default=url_path is None)


@st.cache_resource(show_spinner=False)
def pages() -> Pages:
    """The page objects, made once per process inside a script run (st.Page needs one)."""
    made = {
        "home": _page("0_Overview.py", "Home", "home"),
        "diagnose": _page("1_Diagnose.py", "Diagnose", "radiology", "Diagnose"),
        "batch": _page("2_Batch.py", "Batch", "folder_open", "Batch"),
        "review": _page("9_Review.py", "Review queue", "fact_check", "Review"),
        "history": _page("3_History.py", "History", "history", "History"),
        "series": _page("10_Series.py", "Series", "stacks", "Series"),
        "pacs": _page("11_PACS.py", "PACS", "cloud_sync", "PACS"),
        "train": _page("4_Train.py", "Train", "model_training", "Train"),
        "leaderboard": _page("5_Leaderboard.py", "Leaderboard", "leaderboard", "Leaderboard"),
        "models": _page("6_Models.py", "Models", "inventory_2", "Models"),
        "users": _page("7_Users.py", "Users", "group", "Users"),
        "audit": _page("8_Audit.py", "Audit log", "policy", "Audit"),
    }
    sign_in = tuple(
        _page("sign_in.py", "Sign in", "login", None if name == "home" else page.url_path)
        for name, page in made.items()
    )
    return Pages(**made, sign_in=sign_in)
