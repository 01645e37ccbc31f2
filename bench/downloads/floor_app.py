"""The floor for the X-Accel path: a WSGI app under the same gunicorn that authorizes nothing.

It answers every request with X-Accel-Redirect to the benchmark's stored object, so nginx
serves the same bytes as after a signed-link redemption. The gap between nginx static and
this path is what any Python backend behind nginx costs on the machine (the proxy hop,
gunicorn's request handling); the gap between this path and nginx+X-Accel is the portal's
own work (Django, the link check, the download record). Used by run.py only.
"""

import os

_HEADERS = [("Content-Type", "application/octet-stream"), ("Content-Length", "0"),
            ("X-Accel-Redirect", os.environ["BENCH_FLOOR_REDIRECT"])]


def application(environ, start_response):
    start_response("200 OK", list(_HEADERS))
    return [b""]
