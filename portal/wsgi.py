"""The WSGI entry point: `gunicorn -c gunicorn.conf.py portal.wsgi`.

Signed-link requests from download tools (wget, curl, aria2c, a download manager
splitting a file into ranges) take a lean handler: the same URLconf and view, behind
SecurityMiddleware only. Sessions, CSRF, authentication, messages and allauth's
middleware have nothing to do on a cookie-less GET of a signed link, yet cost about as
much per request as the redemption's own Python, and a client fetching a file in 32
ranges pays them 32 times. A request that carries the session cookie (a browser) goes
through the full stack, where the view checks the link against the signed-in account.
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
django.setup(set_prefix=False)

from django.conf import settings  # noqa: E402  (settings need django.setup() first)
from django.core.handlers.exception import convert_exception_to_response  # noqa: E402
from django.core.handlers.wsgi import WSGIHandler, get_str_from_wsgi  # noqa: E402
from django.http.cookie import parse_cookie  # noqa: E402
from django.middleware.security import SecurityMiddleware  # noqa: E402

DOWNLOAD_PREFIX = "/d/"


class DownloadHandler(WSGIHandler):
    """Django's WSGI handler with SecurityMiddleware as its only middleware."""

    def load_middleware(self, is_async=False):
        self._view_middleware, self._template_response_middleware, self._exception_middleware = [], [], []

        def allowed_host_only(request):
            request.get_host()  # ALLOWED_HOSTS, which CommonMiddleware checks on every other request: 400 if not
            return self._get_response(request)

        inner = convert_exception_to_response(allowed_host_only)
        self._middleware_chain = convert_exception_to_response(SecurityMiddleware(inner))

    def get_response(self, request):
        response = super().get_response(request)
        # What CommonMiddleware does on the full stack: resuming clients need the length of
        # small ranges and refusals too, and gunicorn would otherwise send them chunked.
        if not response.streaming and not response.has_header("Content-Length"):
            response.headers["Content-Length"] = str(len(response.content))
        return response


class PortalApplication:
    """Routes cookie-less signed-link requests to the lean handler, everything else to Django's."""

    def __init__(self):
        self.portal, self.downloads = WSGIHandler(), DownloadHandler()

    def is_tool_download(self, environ) -> bool:
        # Parsed with the parser that fills request.COOKIES: the view loads the signed-in
        # account whenever it sees the session cookie there, and only the full stack has one.
        # A substring test disagreed with it on `sessionid =x` and sent such a request here (500).
        if not environ.get("PATH_INFO", "").startswith(DOWNLOAD_PREFIX):
            return False
        return settings.SESSION_COOKIE_NAME not in parse_cookie(get_str_from_wsgi(environ, "HTTP_COOKIE", ""))

    def __call__(self, environ, start_response):
        handler = self.downloads if self.is_tool_download(environ) else self.portal
        return handler(environ, start_response)


application = PortalApplication()
