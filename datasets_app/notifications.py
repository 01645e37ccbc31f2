"""E-mails of the governance workflow.

Messages are rendered here, in the transaction that decided them, and handed to
a Celery task after commit, so a rolled-back decision never sends mail and a
slow mail server never slows a reviewer down.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.template.loader import render_to_string
from django.urls import reverse

from datasets_app.models import AccessRequest, Grant
from portal.validators import one_line

User = get_user_model()


def _absolute(path: str) -> str:
    return settings.PORTAL_BASE_URL + path


def _send(*, to: list[str], template: str, context: dict) -> None:
    from datasets_app.tasks import send_email

    recipients = sorted({address for address in to if address})
    if not recipients:
        return
    context = {**context, "portal_name": settings.PORTAL_NAME, "my_access_url": _absolute(reverse("my_access"))}
    # Names are checked for line breaks where they are typed, but one stored before that check (or
    # set by other means) must not cost the message: Django refuses to send a subject that has one.
    subject = one_line(render_to_string(f"datasets_app/email/{template}_subject.txt", context))
    body = render_to_string(f"datasets_app/email/{template}_body.txt", context)
    send_email.delay_on_commit(subject=f"[{settings.PORTAL_NAME}] {subject}", body=body, to=recipients)


def _reviewer_emails(resource) -> list[str]:
    reviewers = list(resource.reviewers.filter(is_active=True).values_list("email", flat=True))
    if not reviewers:
        # Nobody assigned yet: the administrators must hear of it, or the request waits forever.
        reviewers = list(User.objects.filter(is_superuser=True, is_active=True).values_list("email", flat=True))
    return reviewers


def request_submitted(*, access_request: AccessRequest) -> None:
    resource = access_request.resource
    review_url = _absolute(reverse("review_detail", kwargs={"pk": access_request.pk}))
    _send(to=_reviewer_emails(resource), template="request_submitted_reviewer",
          context={"access_request": access_request, "resource": resource, "review_url": review_url})
    _send(to=[access_request.user.email], template="request_submitted_applicant",
          context={"access_request": access_request, "resource": resource})


def request_decided(*, access_request: AccessRequest, grant: Grant | None) -> None:
    resource = access_request.resource
    request_url = _absolute(reverse("access_request", kwargs={"namespace": resource.namespace, "slug": resource.slug}))
    _send(to=[access_request.user.email], template=f"request_{access_request.status}",
          context={"access_request": access_request, "resource": resource, "grant": grant,
                   "resource_url": _absolute(resource.get_absolute_url()), "request_url": request_url})
    decider = access_request.decided_by
    if decider is None:
        return  # automatic approvals need nobody's attention
    # The rest of the committee hears of a decision too, so nobody opens a request already decided.
    others = [e for e in _reviewer_emails(resource) if e != decider.email]
    _send(to=others, template="request_decided_reviewer",
          context={"access_request": access_request, "resource": resource, "grant": grant,
                   "review_url": _absolute(reverse("review_detail", kwargs={"pk": access_request.pk}))})


def grant_created(*, grant: Grant) -> None:
    _send(to=[grant.user.email], template="grant_created",
          context={"grant": grant, "resource": grant.resource, "resource_url": _absolute(grant.resource.get_absolute_url())})


def grant_revoked(*, grant: Grant) -> None:
    _send(to=[grant.user.email], template="grant_revoked", context={"grant": grant, "resource": grant.resource})


def grant_expiring(*, grant: Grant) -> None:
    resource = grant.resource
    renew_url = _absolute(reverse("access_request", kwargs={"namespace": resource.namespace, "slug": resource.slug}))
    _send(to=[grant.user.email], template="grant_expiring", context={"grant": grant, "resource": resource, "renew_url": renew_url})


def license_changed(*, grant: Grant) -> None:
    reaccept_url = _absolute(reverse("grant_reaccept", kwargs={"pk": grant.pk}))
    _send(to=[grant.user.email], template="license_changed",
          context={"grant": grant, "resource": grant.resource, "license_version": grant.resource.license_version, "reaccept_url": reaccept_url})
