"""The WSGI entry point: `gunicorn -c gunicorn.conf.py portal.wsgi`.

Requests from download tools take a lean handler: the same URLconf and views, behind
SecurityMiddleware only. Those are signed-link requests (wget, curl, aria2c, a download
manager splitting a file into ranges) and the Hub protocol's (huggingface_hub's HEAD and GET
of every file, its repo-info, tree and paths-info calls: datasets_app.hub_views, which
authenticate by `Authorization: Bearer` token alone). Sessions, CSRF, authentication,
messages and allauth's middleware have nothing to do on such a cookie-less request, yet cost
about as much per request as the redemption's own Python, and a client fetching a file in 32
ranges, or a snapshot of 200 files in 400 requests, pays them every time. The lean handler
sets request.user to the anonymous user (no session cookie, no account) for a token to replace.
A request that carries the session cookie (a browser) goes through the full stack, where the
view checks the link against the signed-in account; so does a path that only looks like the
Hub's but resolves to another view. Both handlers answer HEAD with headers only (gunicorn
would send a refusal's body).
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
django.setup(set_prefix=False)

import re  # noqa: E402

from django.conf import settings  # noqa: E402  (settings need django.setup() first)
from django.contrib.auth.models import AnonymousUser  # noqa: E402
from django.core.handlers.exception import convert_exception_to_response  # noqa: E402
from django.core.handlers.wsgi import WSGIHandler, get_path_info, get_str_from_wsgi  # noqa: E402
from django.http.cookie import parse_cookie  # noqa: E402
from django.middleware.security import SecurityMiddleware  # noqa: E402
from django.urls import Resolver404, resolve  # noqa: E402

DOWNLOAD_PREFIX = "/d/"
# The Hub protocol's URL shapes (datasets_app.hub_urls); a path matching one still goes lean only
# if it resolves to a Hub view (a portal page can share a shape: /review/resources/<ns>/...).
HUB_PATH = re.compile(r"/api/(?:models|datasets)/|/api/whoami-v2$|/[^/]+/[^/]+/resolve/|/datasets/[^/]+/[^/]+/resolve/")
HUB_VIEWS = "datasets_app.hub_views"


def headers_only(request, response):
    """A HEAD answer without its body. gunicorn sends whatever the application returns, HEAD or not: a refusal's
    text after the headers would be read as the start of the next response on a kept-alive connection (the Hub
    clients send a HEAD before every file). Content-Length stays the body's, as for a GET."""
    if request.method == "HEAD" and not response.streaming and response.content:
        response.content = b""
    return response


class PortalHandler(WSGIHandler):
    """Django's WSGI handler, every middleware, HEAD answered with headers only."""

    def get_response(self, request):
        return headers_only(request, super().get_response(request))


class DownloadHandler(WSGIHandler):
    """Django's WSGI handler with SecurityMiddleware as its only middleware."""

    def load_middleware(self, is_async=False):
        self._view_middleware, self._template_response_middleware, self._exception_middleware = [], [], []

        def allowed_host_only(request):
            request.user = AnonymousUser()  # no session cookie: nobody is signed in (a Hub token replaces it)
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
        return headers_only(request, response)


class PortalApplication:
    """Routes cookie-less signed-link and Hub-protocol requests to the lean handler, everything else to Django's."""

    def __init__(self):
        self.portal, self.downloads = PortalHandler(), DownloadHandler()

    def is_tool_download(self, environ) -> bool:
        path = environ.get("PATH_INFO", "")
        if not path.startswith(DOWNLOAD_PREFIX) and not (HUB_PATH.match(path) and self.is_hub_view(environ)):
            return False
        # Parsed with the parser that fills request.COOKIES: the view loads the signed-in
        # account whenever it sees the session cookie there, and only the full stack has one.
        # A substring test disagreed with it on `sessionid =x` and sent such a request here (500).
        return settings.SESSION_COOKIE_NAME not in parse_cookie(get_str_from_wsgi(environ, "HTTP_COOKIE", ""))

    @staticmethod
    def is_hub_view(environ) -> bool:
        try:  # the path as the handler will resolve it
            return resolve(get_path_info(environ)).func.__module__ == HUB_VIEWS
        except Resolver404:
            return False  # the full stack answers with the portal's 404 page

    def __call__(self, environ, start_response):
        handler = self.downloads if self.is_tool_download(environ) else self.portal
        return handler(environ, start_response)


application = PortalApplication()
