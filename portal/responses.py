"""Refusals as every client reads them, in one place.

A download tool shows little of a refused response: `wget` prints the status line's reason phrase,
`curl -f` and `aria2c` only the status. So a refusal carries its reason three ways: the body (the
whole message, UTF-8), the `X-Error-Code` / `X-Error-Message` headers (as the Hugging Face Hub
sends them; `curl -w '%header{x-error-message}'` prints it), and the reason phrase. A browser that
follows a link gets the site's page with the same message instead of bare text.
"""

from __future__ import annotations

import unicodedata

from django.http import HttpResponse
from django.shortcuts import render

REASON_PHRASE_LENGTH = 300  # a status line is not a place for a page of text
TITLES = {401: "Sign in to use this link", 403: "This link does not work for you", 404: "Nothing here",
          410: "This link has expired", 503: "Try again in a moment"}


def header_text(message: str) -> str:
    """The plain ASCII, one-line form of a message: header values and the status line are Latin-1 on
    the wire, and Django MIME-encodes anything else, which no client decodes."""
    ascii_text = unicodedata.normalize("NFKD", message.replace("…", "...")).encode("ascii", "ignore").decode()
    return " ".join(ascii_text.split())


def error_headers(response: HttpResponse, *, code: str, message: str) -> HttpResponse:
    response["X-Error-Code"] = code
    response["X-Error-Message"] = header_text(message)
    if response.status_code == 401:
        response["WWW-Authenticate"] = 'Bearer realm="portal"'
    return response


def wants_page(request) -> bool:
    """A browser navigating (it asks for HTML first), not a download tool or a script (they send */*)."""
    return "text/html" in request.headers.get("Accept", "")


def text_refusal(status: int, message: str, *, code: str, request=None) -> HttpResponse:
    """A refusal in words: plain text for scripts, the site's page for a browser (given `request`)."""
    if request is not None and wants_page(request):
        response = render(request, "refused.html", {"title": TITLES.get(status, "Refused"), "message": message},
                          status=status)
    else:
        response = HttpResponse(message + "\n", status=status, content_type="text/plain; charset=utf-8")
    phrase = header_text(message)
    response.reason_phrase = phrase if len(phrase) <= REASON_PHRASE_LENGTH else phrase[:REASON_PHRASE_LENGTH - 3] + "..."
    return error_headers(response, code=code, message=message)
