"""Takedowns: the public request form, and the custodians' queue and decisions.

The form is open to everyone, signed in or not, so it is limited per address; the
queue is protected like the access review pages (assigned reviewers, second factor).
"""

from __future__ import annotations

from django.contrib import messages
from django.core.cache import cache
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from datasets_app.authz import reviewable_resources
from datasets_app.models import Resource, Takedown
from datasets_app.review_views import reviewer_required
from datasets_app.services import GovernanceError
from portal.client import client_ip
from portal.mail_limits import MailLimitReached
from datasets_app.takedown_forms import (
    TakedownAcceptForm,
    TakedownForm,
    TakedownRejectForm,
)
from datasets_app.takedowns import (
    MATCH_LIMIT,
    published_versions,
    takedown_accept,
    takedown_reject,
    takedown_submit,
    versions_containing,
    versions_without_urls,
)

RATE_LIMIT = 10  # requests accepted per address and RATE_WINDOW
RATE_WINDOW = 3600
SHOWN_MATCHES = 50  # record ids listed per version on the detail page
SESSION_KEY = "takedown_received"


def _rate_key(ip: str) -> str:
    return f"takedown-rate:{ip}"


@require_http_methods(["GET", "POST"])
def takedown_form(request):
    ip = client_ip(request) or ""
    if request.method != "POST":
        return render(request, "datasets_app/takedown/form.html",
                      {"form": TakedownForm(initial={"dataset": request.GET.get("resource", "")})})
    form = TakedownForm(request.POST)
    if cache.get(_rate_key(ip), 0) >= RATE_LIMIT:
        form.is_valid()  # show what was typed, so nothing is lost
        form.add_error(None, f"This address has sent {RATE_LIMIT} takedown requests in the last hour, the most we accept. "
                             "Your text is kept below: send it again in an hour.")
        return render(request, "datasets_app/takedown/form.html", {"form": form}, status=429)
    if form.is_valid():
        try:
            takedown = takedown_submit(
                resource=form.resource, record_id=form.cleaned_data["record_id"], url=form.cleaned_data["url"],
                excerpt=form.cleaned_data["excerpt"], contact_name=form.cleaned_data["contact_name"],
                contact_email=form.cleaned_data["contact_email"], reason=form.cleaned_data["reason"], ip=ip or None,
            )
        except MailLimitReached as error:
            form.add_error(None, f"{error} Your text is kept below.")
            return render(request, "datasets_app/takedown/form.html", {"form": form}, status=429)
        except GovernanceError as error:
            form.add_error(error.field, str(error))
        else:
            # A fixed window from the first request: add() starts it, incr() counts without a race.
            cache.add(_rate_key(ip), 0, RATE_WINDOW)
            cache.incr(_rate_key(ip))
            request.session[SESSION_KEY] = takedown.pk
            return redirect("takedown_received")
    return render(request, "datasets_app/takedown/form.html", {"form": form})


def takedown_received(request):
    """The confirmation, with the reference; only for the browser that sent the request."""
    takedown = Takedown.objects.filter(pk=request.session.get(SESSION_KEY) or 0).select_related("resource").first()
    if takedown is None:
        return redirect("takedown_form")
    return render(request, "datasets_app/takedown/received.html", {"takedown": takedown})


@reviewer_required
def takedown_queue(request):
    takedowns = Takedown.objects.filter(resource__in=reviewable_resources(request.user)).select_related("resource", "decided_by")
    status = request.GET.get("status", Takedown.Status.RECEIVED)
    if status in Takedown.Status.values:
        takedowns = takedowns.filter(status=status)
    resource_id = request.GET.get("resource", "")
    if resource_id.isdigit():
        takedowns = takedowns.filter(resource_id=int(resource_id))
    page = Paginator(takedowns.order_by("created_at", "pk"), 50).get_page(request.GET.get("page"))
    # Open requests naming a URL that some published version cannot be searched for (its records keep none).
    url_unsearched = {item.pk for item in page if item.url and item.status == Takedown.Status.RECEIVED
                      and versions_without_urls(takedown=item)}
    return render(request, "datasets_app/takedown/queue.html", {
        "page": page, "url_unsearched": url_unsearched, "status": status, "statuses": Takedown.Status.choices, "resource_id": resource_id,
        "resources": reviewable_resources(request.user).filter(kind=Resource.Kind.DATASET).order_by("namespace", "slug"),
    })


@reviewer_required
@require_http_methods(["GET", "POST"])
def takedown_detail(request, pk):
    takedown = get_object_or_404(
        Takedown.objects.filter(resource__in=reviewable_resources(request.user)).select_related("resource", "decided_by"), pk=pk,
    )
    accept_form, reject_form = TakedownAcceptForm(), TakedownRejectForm()
    if request.method == "POST":
        action = request.POST.get("action")
        try:
            if action == "accept":
                accept_form = TakedownAcceptForm(request.POST)
                if accept_form.is_valid():
                    takedown_accept(takedown=takedown, reviewer=request.user, note=accept_form.cleaned_data["note"])
                    flagged = takedown.affected_versions.count()
                    messages.success(request, f"Accepted takedown #{takedown.pk}: its content is on the exclusion list; "
                                              f"{flagged} published version{'s' if flagged != 1 else ''} flagged.")
                    return redirect("takedown_queue")
            elif action == "reject":
                reject_form = TakedownRejectForm(request.POST)
                if reject_form.is_valid():
                    takedown_reject(takedown=takedown, reviewer=request.user, reason=reject_form.cleaned_data["reason"])
                    messages.success(request, f"Rejected takedown #{takedown.pk}; the requester was told why.")
                    return redirect("takedown_queue")
            else:
                messages.error(request, "Unknown action: use the Accept or Reject buttons.")
        except GovernanceError as error:
            messages.error(request, str(error))
            return redirect("takedown_detail", pk=pk)
    found, without_urls = versions_containing(takedown=takedown), versions_without_urls(takedown=takedown)
    scan = [(version, found.get(version, []), version in without_urls) for version in published_versions(takedown.resource)]
    return render(request, "datasets_app/takedown/detail.html", {
        "takedown": takedown, "resource": takedown.resource, "scan": scan, "shown": SHOWN_MATCHES,
        "url_unsearchable": bool(without_urls) and len(without_urls) == len(scan),
        "match_limit": MATCH_LIMIT, "accept_form": accept_form, "reject_form": reject_form,
        "exclusions": takedown.exclusions.all(),
    })
