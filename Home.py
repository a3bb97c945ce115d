"""The app shell: one page config, one disclaimer, the database check, sign-in, and the pages a role may open.

Until someone signs in, the only page is the sign-in form, whatever URL was opened; after, the pages of the
user's role (the page objects are made once, in ui/nav.py). Every page also checks the signed-in user itself
(ui.auth.require), and the services check the session and the role again where the work is done.

server.py serves it (`python server.py`, what `make run` starts), behind the check that keeps Streamlit's
upload, media and metrics routes from anyone without a session; each page is a script under views/ run by
st.navigation. (Not pages/: Streamlit runs a folder of that name beside the entrypoint as its legacy multipage
app, where a page's URL runs the page without this shell.)
"""

import logging

import streamlit as st
from sqlalchemy.engine import make_url

from db.migrate import schema_problem
from domain import DISCLAIMER
from settings import get_settings
from ui.auth import account_box, behind_server, cookie_ready, session_watch, signed_in
from ui.nav import pages

log = logging.getLogger(__name__)

st.set_page_config(page_title="Brain MRI classification", page_icon=":material/neurology:", layout="wide")


@st.cache_data(ttl=30, show_spinner=False)
def _schema_problem(url: str) -> str | None:
    # Checked at most every 30 s per URL: once migrated, the app needs no restart to notice.
    problem = schema_problem(url)
    if problem:
        # The URL goes to the server's log, not to the page: whoever opens the app may not run it.
        log.error("the database at %s is not ready: %s", make_url(url).render_as_string(hide_password=True), problem)
    return problem


app_pages = pages()
if not behind_server():
    st.navigation(list(app_pages.sign_in), position="hidden")
    st.error(
        "This app was started without its web server's session check: start it with `make run` "
        "(or `python server.py`), not `streamlit run`."
    )
    st.stop()
settings = get_settings()
problem = _schema_problem(settings.database_url)
if problem:
    st.navigation(list(app_pages.sign_in), position="hidden")
    st.error(
        f"The database is not ready: {problem}. Run `make migrate` (or `make run`, which migrates first) and "
        "reload this page."
    )
    st.stop()
actor = signed_in()
if actor is None:
    page = st.navigation(list(app_pages.sign_in), position="hidden")
elif not cookie_ready(actor):
    st.navigation(list(app_pages.sign_in), position="hidden")
    st.stop()
else:
    page = st.navigation(app_pages.for_role(is_admin=actor.is_admin))
    account_box(actor)
    session_watch()
st.warning(DISCLAIMER, icon="⚕️")
page.run()
