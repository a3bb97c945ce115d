"""Train: check the dataset, start a training run as a background job, and watch the runs queued or training."""

from typing import Any

import streamlit as st

from domain import Role
from settings import get_settings
from ui.auth import require
from ui.text import literal
from views.train.form import train_form
from views.train.live_runs import live_view
from worker.submit import worker_status

require(Role.ADMIN)
st.title("Train a model")


@st.cache_data(ttl=15, show_spinner=False)
def _workers(redis_url: str) -> dict[str, Any]:
    # Keyed by the queue's URL; a ping waits for replies, so it is not repeated on every redraw.
    return worker_status(timeout_s=0.5)


status = _workers(get_settings().redis_url)
if not status["redis_ok"]:
    st.error(
        f"The job queue is unreachable ({literal(status['redis_error'])}): runs cannot be queued until it is back."
    )
elif not status["workers"]:
    st.warning("No worker is online: a queued run waits until one starts (`make worker`, or `make run`).")

train_form()
st.divider()
live_view()
