"""The Celery app: a training queue and a prediction queue over Redis, configured from settings."""

from celery import Celery
from celery.signals import worker_process_init
from kombu import Exchange, Queue

from db.session import reset_engine
from models.inference.threads import cap_threads
from settings import get_settings

# Task name -> queue. Training gets its own queue so a long run never holds up predictions.
TASK_QUEUES = {
    "brainmri.train": "training",
    "brainmri.batch_predict": "prediction",
    "brainmri.selfcheck": "prediction",
    "brainmri.sweep": "prediction",
    "brainmri.series_predict": "prediction",
    "brainmri.dicom_send": "prediction",
}
QUEUES = ("training", "prediction")
# Redis re-delivers an unacknowledged message after this long, so it must outlast the longest job.
VISIBILITY_TIMEOUT_S = 48 * 3600

celery_app = Celery("brainmri", include=["worker.tasks"])
_settings = get_settings()
celery_app.conf.update(
    broker_url=_settings.redis_url,
    result_backend=_settings.redis_url,
    # A Redis that is down is reported at once to whoever sends a job, not after kombu's retries (seconds).
    broker_transport_options={
        "visibility_timeout": VISIBILITY_TIMEOUT_S,
        "socket_connect_timeout": 2,
        "max_retries": 1,
        "interval_start": 0,
        "interval_step": 0.2,
        "interval_max": 0.2,
    },
    # One quick retry, then the caller decides: progress sent while Redis is down must not stall a job.
    result_backend_transport_options={
        "visibility_timeout": VISIBILITY_TIMEOUT_S,
        "socket_connect_timeout": 2,
        "retry_policy": {"max_retries": 1, "interval_start": 0, "interval_step": 0.5, "interval_max": 0.5},
    },
    broker_connection_retry_on_startup=True,
    # Each queue gets its own exchange and key; bare Queue(name)s would all bind to the default one.
    task_queues=[Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES],
    task_default_queue="prediction",
    task_default_exchange="prediction",
    task_default_routing_key="prediction",
    task_routes={name: {"queue": queue} for name, queue in TASK_QUEUES.items()},
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_track_started=True,
    # The jobs table is the record pages read; Celery's results are only a convenience.
    result_expires=7 * 24 * 3600,
    # One message at a time per process: a long job must not sit on messages another process could run.
    worker_prefetch_multiplier=1,
    worker_concurrency=_settings.worker_concurrency,
    # Every worker runs beat inside it (`-B`: `make worker`, `make run`, compose), so the sweep runs wherever a
    # worker does; the pages never write while rendering. A sweep not taken within its interval (every process
    # busy) expires: the next one does the same work. Beat keeps its schedule in memory (one interval, nothing to
    # resume), so no schedule file is shared between workers.
    beat_schedule={
        "settle-stale-jobs": {
            "task": "brainmri.sweep",
            "schedule": _settings.sweep_every_s,
            "options": {"expires": _settings.sweep_every_s},
        }
    },
    beat_scheduler="celery.beat:Scheduler",
    timezone="UTC",
    enable_utc=True,
)


@worker_process_init.connect
def _init_process(**_kwargs: object) -> None:
    # A forked child must not reuse the parent's database connections.
    reset_engine()
    settings = get_settings()
    cap_threads(settings.torch_threads, settings.tf_threads)
