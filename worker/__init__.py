"""Background jobs: the Celery app, its tasks, the job lifecycle and the functions pages submit through."""
