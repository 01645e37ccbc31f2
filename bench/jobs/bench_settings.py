"""The production settings, with the inference runner's messages on the benchmark's own queue
(BENCH_JOBS_QUEUE), so that no other worker on the same broker takes them; nothing else changes."""

import os

from portal.settings import *  # noqa: F401,F403
from portal.settings import CELERY_TASK_ROUTES

CELERY_TASK_ROUTES = {**CELERY_TASK_ROUTES, "inference.tasks.inference_run": {"queue": os.environ["BENCH_JOBS_QUEUE"]}}
