"""portal.urls plus /noop/: the floor a Django request costs on the same server.

noop/ comes first so that it pays for no failed URL matches; the signed link pays
one extra (failed) match against it, about a microsecond.
"""

from django.http import HttpResponse
from django.urls import include, path


def noop(request):
    return HttpResponse("ok", content_type="text/plain")


urlpatterns = [
    path("noop/", noop),
    path("", include("portal.urls")),
]
