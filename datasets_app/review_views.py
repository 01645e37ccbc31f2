"""The reviewers' side: queue, decisions, revocations, access reports.

Every view here needs an assigned reviewer who passed a second factor in this
session; what each reviewer sees is limited to the resources they review.
"""

from __future__ import annotations

import csv
import json
from datetime import timedelta
from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import transaction
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.views.decorators.http import require_http_methods, require_POST

from datasets_app.authz import restricted_configs, reviewable_resources
from datasets_app.forms import ApproveForm, BulkForm, ReasonForm
from datasets_app.models import AccessRequest, Grant
from datasets_app.services import (
    GovernanceError,
    access_request_approve,
    access_request_reject,
    access_request_request_changes,
    grant_revoke,
    requested_configs,
    resource_configs,
)
from datasets_app.templatetags.catalogue import config_scope
from portal.audit import audit_record
from portal.mfa import has_totp, session_used_mfa


def reviewer_required(view):
    @login_required
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not reviewable_resources(request.user).exists():
            raise PermissionDenied("You are not a reviewer of any resource. Ask an administrator to assign you.")
        if not has_totp(request.user):
            messages.warning(request, "Reviewers must use two-factor authentication. Set up an authenticator app to continue.")
            return redirect(f"{reverse('mfa_activate_totp')}?{urlencode({'next': request.get_full_path()})}")
        if not session_used_mfa(request):
            messages.info(request, "Enter a code from your authenticator app to continue reviewing.")
            return redirect(f"{reverse('mfa_reauthenticate')}?{urlencode({'next': request.get_full_path()})}")
        return view(request, *args, **kwargs)

    return wrapper


def _reviewable_requests(user):
    return AccessRequest.objects.filter(resource__in=reviewable_resources(user)).select_related(
        "user__profile", "resource", "license_version__license"
    )


def _filtered(request, queryset, statuses, default_status):
    """Apply the list pages' ?status= and ?resource= filters ("all" shows every status)."""
    status = request.GET.get("status", default_status)
    if status in statuses.values:
        queryset = queryset.filter(status=status)
    resource_id = request.GET.get("resource", "")
    if resource_id.isdigit():
        queryset = queryset.filter(resource_id=int(resource_id))
    return queryset, status, resource_id


@reviewer_required
def review_queue(request):
    requests, status, resource_id = _filtered(request, _reviewable_requests(request.user), AccessRequest.Status, AccessRequest.Status.PENDING)
    page = Paginator(requests.order_by("submitted_at", "pk"), 50).get_page(request.GET.get("page"))
    return render(request, "datasets_app/review/queue.html", {
        "page": page, "status": status, "statuses": AccessRequest.Status.choices, "resource_id": resource_id,
        "resources": reviewable_resources(request.user).order_by("namespace", "slug"),
        "bulk_form": BulkForm(queryset=AccessRequest.objects.none()),
    })


@reviewer_required
@require_http_methods(["GET", "POST"])
def review_detail(request, pk):
    access_request = get_object_or_404(_reviewable_requests(request.user), pk=pk)
    resource = access_request.resource
    default_expiry = timezone.localdate() + timedelta(days=resource.default_grant_days)
    asked = requested_configs(access_request) if access_request.is_open else []
    approve_form = ApproveForm(initial={"expires_on": default_expiry}, asked=asked)
    reason_form = ReasonForm()
    action = request.POST.get("action")
    if request.method == "POST":
        try:
            if action == "approve":
                approve_form = ApproveForm(request.POST, asked=asked)
                if approve_form.is_valid():
                    narrowed = approve_form.narrowed_configs()
                    access_request_approve(access_request=access_request, reviewer=request.user, configs=narrowed,
                                           expires_at=approve_form.expires_at(), note=approve_form.cleaned_data["note"])
                    only = f" (only {', '.join(narrowed)})" if narrowed else ""
                    messages.success(request, f"Approved {access_request.user} for {resource.repo_id}{only} until {approve_form.cleaned_data['expires_on']:%d %B %Y}.")
                    return redirect("review_queue")
            elif action in ("reject", "changes"):
                reason_form = ReasonForm(request.POST)
                if reason_form.is_valid():
                    reason = reason_form.cleaned_data["reason"]
                    if action == "reject":
                        access_request_reject(access_request=access_request, reviewer=request.user, reason=reason)
                        messages.success(request, f"Rejected the request of {access_request.user} for {resource.repo_id}.")
                    else:
                        access_request_request_changes(access_request=access_request, reviewer=request.user, message=reason)
                        messages.success(request, f"Asked {access_request.user} for changes.")
                    return redirect("review_queue")
            else:
                messages.error(request, "Unknown action: use the Approve, Reject or Ask for changes buttons.")
        except GovernanceError as error:
            messages.error(request, str(error))
            return redirect("review_detail", pk=pk)
    # The applicant's history on other committees' resources (their decisions, their reasons) is not this reviewer's to see.
    reviewable = reviewable_resources(request.user)
    history = AccessRequest.objects.filter(user=access_request.user, resource__in=reviewable).exclude(pk=pk).select_related("resource", "decided_by").order_by("-submitted_at")
    grants = Grant.objects.filter(user=access_request.user, resource__in=reviewable).select_related("resource").order_by("-created_at")
    return render(request, "datasets_app/review/detail.html", {
        "access_request": access_request, "resource": resource, "profile": access_request.user.profile,
        "history": history, "grants": grants, "approve_form": approve_form, "reason_form": reason_form,
        "grant": Grant.objects.filter(request=access_request).first(),  # what was approved, which may be less than asked
        "verified_emails": access_request.user.emailaddress_set.filter(verified=True),
        # "asks for 3 of 430 configs": how much of the resource the request reaches.
        "asked_count": len(requested_configs(access_request)),
        "config_total": len(set(resource_configs(resource)) | set(restricted_configs(resource))),
    })


@reviewer_required
@require_POST
def review_bulk(request):
    form = BulkForm(request.POST, queryset=_reviewable_requests(request.user).filter(status=AccessRequest.Status.PENDING))
    if not form.is_valid():
        for errors in form.errors.values():
            for error in errors:
                messages.error(request, error)
        return redirect("review_queue")
    action, reason, done, failed = form.cleaned_data["action"], form.cleaned_data["reason"], 0, []
    for access_request in form.cleaned_data["requests"]:
        try:
            with transaction.atomic():
                if action == "approve":
                    expires_at = timezone.now() + timedelta(days=access_request.resource.default_grant_days)
                    access_request_approve(access_request=access_request, reviewer=request.user, expires_at=expires_at)
                else:
                    access_request_reject(access_request=access_request, reviewer=request.user, reason=reason)
            done += 1
        except GovernanceError as error:
            failed.append(f"{access_request.user}: {error}")
    verb = "Approved" if action == "approve" else "Rejected"
    messages.success(request, f"{verb} {done} request{'s' if done != 1 else ''}.")
    for failure in failed:
        messages.error(request, failure)
    return redirect("review_queue")


@reviewer_required
def review_grants(request):
    grants = Grant.objects.filter(resource__in=reviewable_resources(request.user)).select_related("user__profile", "resource", "license_version", "request")
    grants, status, resource_id = _filtered(request, grants, Grant.Status, Grant.Status.ACTIVE)
    page = Paginator(grants.order_by("expires_at", "pk"), 50).get_page(request.GET.get("page"))
    return render(request, "datasets_app/review/grants.html", {
        "page": page, "status": status, "statuses": Grant.Status.choices, "resource_id": resource_id,
        "resources": reviewable_resources(request.user).order_by("namespace", "slug"),
    })


@reviewer_required
@require_http_methods(["GET", "POST"])
def review_revoke(request, pk):
    grant = get_object_or_404(Grant.objects.filter(resource__in=reviewable_resources(request.user)).select_related("user__profile", "resource"), pk=pk)
    form = ReasonForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            grant_revoke(grant=grant, revoked_by=request.user, reason=form.cleaned_data["reason"])
        except GovernanceError as error:
            messages.error(request, str(error))
        else:
            messages.success(request, f"Revoked the access of {grant.user} to {grant.resource.repo_id}.")
        return redirect("review_grants")
    return render(request, "datasets_app/review/revoke.html", {"grant": grant, "form": form})


REPORT_COLUMNS = [
    "username", "full_name", "email", "affiliation", "country", "orcid", "request_status", "submitted_at",
    "decided_at", "decided_by", "decision_reason", "grant_status", "grant_expires_at", "license_version",
    "license_sha256", "intended_use", "answers", "configs_asked", "configs_approved",
]


@reviewer_required
def review_report(request, namespace, slug):
    resource = get_object_or_404(reviewable_resources(request.user), namespace=namespace, slug=slug)
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d")
    response["Content-Disposition"] = f'attachment; filename="access-report-{resource.namespace}-{resource.slug}-{stamp}.csv"'
    writer = csv.writer(response)
    writer.writerow(REPORT_COLUMNS)
    requests = AccessRequest.objects.filter(resource=resource).select_related("user__profile", "decided_by", "license_version__license").order_by("submitted_at")
    grants_by_request = {g.request_id: g for g in Grant.objects.filter(resource=resource, request__isnull=False)}
    rows = 0
    for item in requests:
        profile, grant = item.user.profile, grants_by_request.get(item.pk)
        writer.writerow(_csv_safe([
            item.user.get_username(), profile.full_name, item.user.email, profile.affiliation, profile.country.code,
            profile.orcid, item.status, item.submitted_at.isoformat(), item.decided_at.isoformat() if item.decided_at else "",
            item.decided_by.get_username() if item.decided_by else ("system" if item.auto_approved else ""),
            item.decision_reason, grant.status if grant else "", grant.expires_at.isoformat() if grant else "",
            str(item.license_version) if item.license_version else "", item.license_sha256, item.intended_use,
            json.dumps(item.answers, ensure_ascii=False), config_scope(item), config_scope(grant) if grant else "",
        ]))
        rows += 1
    for grant in Grant.objects.filter(resource=resource, request__isnull=True).select_related("user__profile", "granted_by", "license_version__license"):
        profile = grant.user.profile
        writer.writerow(_csv_safe([
            grant.user.get_username(), profile.full_name, grant.user.email, profile.affiliation, profile.country.code,
            profile.orcid, "granted_directly", grant.created_at.isoformat(), grant.created_at.isoformat(),
            grant.granted_by.get_username() if grant.granted_by else "", grant.reason, grant.status,
            grant.expires_at.isoformat(), str(grant.license_version) if grant.license_version else "",
            grant.license_version.sha256 if grant.license_version else "", "", "[]", "", config_scope(grant),
        ]))
        rows += 1
    audit_record(action="report_exported", actor=request.user, target=resource, resource=resource.repo_id, request=request, data={"rows": rows})
    return response


def _csv_safe(values: list) -> list[str]:
    # A cell starting with = + - @ is a formula in spreadsheets; applicants write these fields.
    return ["'" + v if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r") else v for v in values]
