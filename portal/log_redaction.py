"""Secrets in URLs, cut out of every log line the portal writes.

A signed download link (/d/<token>/<path>), a grant manifest's link (/m/<token>/manifest.json)
and allauth's e-mail confirmation and password reset keys are credentials: whoever reads
them in a log can use them. gunicorn's access and error lines (gunicorn.conf.py's
logger_class) and Django's own lines (django.request's "Forbidden: /d/...", runserver's
request lines; the filter in settings.LOGGING) keep the path with the secret replaced.
README.md's nginx log_format applies the same rule with a map.
"""

from __future__ import annotations

import logging
import re

from gunicorn.glogging import Logger as GunicornLogger

REDACTED = "[redacted]"

# The URL prefixes whose next segment is a secret (portal/urls.py, datasets_app/urls.py, allauth's
# account URLs). Repeated slashes are allowed: `//d/<token>/...` still reaches the view.
SECRET_SEGMENT = re.compile(
    r"(?P<keep>/+(?:d|m|accounts/confirm-email|accounts/password/reset/key)/+)[^/?#\s\"'<>\\]+"
)


def redact(text: str) -> str:
    """`text` with the secret segment of every signed link or account key in it replaced."""
    if "/" not in text:
        return text
    return SECRET_SEGMENT.sub(lambda match: match.group("keep") + REDACTED, text)


class RedactSecretsFilter(logging.Filter):
    """A handler filter: formats the record's message (and traceback) once, with secrets cut out."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg, record.args = redact(message), ()
        if record.exc_info and not record.exc_text:
            # An exception's text can quote the URL (a resolver's 404, a view's error): format it here.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class RedactingLogger(GunicornLogger):
    """gunicorn's logger with secrets cut out of its access lines (request line, path, referer,
    any header a format names) and error lines (a bad request line is quoted in its warning)."""

    def setup(self, cfg):
        super().setup(cfg)
        # On the loggers, not their handlers: a handler from --log-config or syslog is covered too.
        for log in (self.error_log, self.access_log):
            if not any(isinstance(f, RedactSecretsFilter) for f in log.filters):
                log.addFilter(RedactSecretsFilter())
