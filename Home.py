"""The app shell: one page config, one disclaimer, the database check, sign-in, and the pages a role may open.

Until someone signs in, the only page is the sign-in form, whatever URL was opened; after, the pages of the
user's role. Every page also checks the signed-in user itself (ui.auth.require), and the services check roles
again where the work is done.

`streamlit run Home.py` serves it; each page is a script under views/ run by st.navigation. (Not pages/:
Streamlit runs a folder of that name beside the entrypoint as its legacy multipage app, where a page's URL
runs the page without this shell.)
"""

import streamlit as st
from sqlalchemy.engine import make_url

from db.migrate import schema_problem
from domain import DISCLAIMER
from settings import get_settings
from ui.auth import account_box, idle_watch, signed_in

st.set_page_config(page_title="Brain MRI classification", page_icon=":material/neurology:", layout="wide")

HOME = st.Page("views/0_Overview.py", title="Home", icon=":material/home:", default=True)
DIAGNOSE = st.Page("views/1_Diagnose.py", title="Diagnose", icon=":material/radiology:", url_path="Diagnose")
BATCH = st.Page("views/2_Batch.py", title="Batch", icon=":material/folder_open:", url_path="Batch")
HISTORY = st.Page("views/3_History.py", title="History", icon=":material/history:", url_path="History")
REVIEW = st.Page("views/9_Review.py", title="Review queue", icon=":material/fact_check:", url_path="Review")
TRAIN = st.Page("views/4_Train.py", title="Train", icon=":material/model_training:", url_path="Train")
LEADERBOARD = st.Page(
    "views/5_Leaderboard.py", title="Leaderboard", icon=":material/leaderboard:", url_path="Leaderboard"
)
MODELS = st.Page("views/6_Models.py", title="Models", icon=":material/inventory_2:", url_path="Models")
USERS = st.Page("views/7_Users.py", title="Users", icon=":material/group:", url_path="Users")
AUDIT = st.Page("views/8_Audit.py", title="Audit log", icon=":material/policy:", url_path="Audit")
CLINICIAN_PAGES = {"": [HOME], "Clinic": [DIAGNOSE, BATCH, REVIEW, HISTORY]}
ADMIN_PAGES = {**CLINICIAN_PAGES, "Models": [TRAIN, LEADERBOARD, MODELS], "Administration": [USERS, AUDIT]}
# Signed out, every page's URL runs the sign-in form (a bookmark gets no "page not found"), and once signed in
# the same URL is the page that was asked for.
SIGN_IN = [
    st.Page("views/sign_in.py", title="Sign in", icon=":material/login:", default=url_path is None, url_path=url_path)
    for url_path in (None, "Diagnose", "Batch", "Review", "History", "Train", "Leaderboard", "Models", "Users", "Audit")
]


@st.cache_data(ttl=30, show_spinner=False)
def _schema_problem(url: str) -> str | None:
    # Checked at most every 30 s per URL: once migrated, the app needs no restart to notice.
    return schema_problem(url)


settings = get_settings()
problem = _schema_problem(settings.database_url)
if problem:
    st.navigation(SIGN_IN, position="hidden")
    database = make_url(settings.database_url).render_as_string(hide_password=True)
    st.error(
        f"The database at `{database}` is not ready: {problem}. Run `make migrate` (or `make run`, which "
        "migrates first) and reload this page."
    )
    st.stop()
actor = signed_in()
if actor is None:
    page = st.navigation(SIGN_IN, position="hidden")
else:
    page = st.navigation(ADMIN_PAGES if actor.is_admin else CLINICIAN_PAGES)
    account_box(actor)
    idle_watch()
st.warning(DISCLAIMER, icon="⚕️")
page.run()
