"""The one error of the jobs core: what went wrong, in words, with the HTTP status an API answers it with."""

from __future__ import annotations

from datasets_app.services import GovernanceError

_CODES = {400: "invalid", 401: "unauthenticated", 403: "forbidden", 404: "not_found", 409: "conflict", 429: "limit"}


class JobError(GovernanceError):
    """A refused job request. A GovernanceError too, so the admin and commands that catch refusals of
    the services catch these as well; the APIs read `status`, `code` and `retry_after` (seconds)."""

    def __init__(self, status: int, message: str, *, code: str | None = None, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.code = code or _CODES.get(status, "error")
        self.message = message
        self.retry_after = retry_after
