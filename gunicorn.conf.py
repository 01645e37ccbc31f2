"""gunicorn settings for the portal: `gunicorn -c gunicorn.conf.py portal.wsgi`.

Every value can be overridden from the environment or the command line.
"""

import multiprocessing
import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2 + 1))
# Threaded workers: a sync worker is killed once a request runs past `timeout`, even
# while it is sending a file, which would cut every download slower than size/timeout.
# A gthread worker's main loop keeps its heartbeat while threads stream.
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = 30
keepalive = 5
# No `sendfile` line: gunicorn reads any value given here, True included, as
# --no-sendfile. Left unset, files go out with sendfile(2).
accesslog = "-"
# Signed links and account keys in request lines are credentials: logged with the secret cut out.
logger_class = "portal.log_redaction.RedactingLogger"
