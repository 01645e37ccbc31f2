"""Researcher-facing pages: catalogue, resource, access request, my access."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from datasets_app.authz import can_download, can_request_access, downloadable_resources, grant_covers, restricted_configs
from datasets_app.forms import AccessRequestForm
from datasets_app.overview import sample_rows, version_overview
from datasets_app.models import AccessRequest, Grant, Resource
from datasets_app.services import GovernanceError, access_request_submit, grant_reaccept


def catalogue(request):
    resources = Resource.objects.select_related("license_version__license").order_by("kind", "namespace", "slug")
    kind = request.GET.get("kind")
    if kind in Resource.Kind.values:
        resources = resources.filter(kind=kind)
    return render(request, "datasets_app/catalogue.html", {
        "resources": resources, "kind": kind, "kinds": Resource.Kind.choices,
        "downloadable_ids": set(downloadable_resources(request.user).values_list("pk", flat=True)),
    })


def resource_detail(request, namespace, slug):
    resource = get_object_or_404(Resource.objects.select_related("license_version__license"), namespace=namespace, slug=slug)
    decision = can_download(request.user, resource)
    versions = list(resource.versions.filter(published_at__isnull=False).order_by("-published_at"))
    overview = version_overview(versions[0]) if versions and resource.kind == Resource.Kind.DATASET else None
    sample_config, sample_configs, samples = "", [], []
    if overview is not None and decision and overview.configs:
        # Sample rows are content: only of the configs the grant covers.
        restricted = restricted_configs(resource) if decision.grant is not None else {}
        sample_configs = [name for name in overview.configs if grant_covers(decision.grant, name, restricted)]
    if sample_configs:
        largest = max(sample_configs, key=lambda name: (overview.configs[name]["rows"], name))
        sample_config = request.GET.get("config") if request.GET.get("config") in sample_configs else largest
        samples = sample_rows(overview.version, sample_config)
    return render(request, "datasets_app/resource_detail.html", {
        "resource": resource, "decision": decision, "versions": versions, "overview": overview,
        "sample_config": sample_config, "sample_configs": sample_configs, "samples": samples,
    })


@login_required
@require_http_methods(["GET", "POST"])
def access_request(request, namespace, slug):
    resource = get_object_or_404(Resource.objects.select_related("license_version__license"), namespace=namespace, slug=slug)
    allowed = can_request_access(request.user, resource)
    if not allowed:
        messages.info(request, allowed.message)
        return redirect(resource)
    profile = request.user.profile
    if not profile.is_complete:
        messages.info(request, "Complete your profile (name, affiliation, country, position) before requesting access.")
        return redirect(f"{reverse('profile')}?next={request.path}")
    pending = AccessRequest.objects.filter(user=request.user, resource=resource, status=AccessRequest.Status.PENDING).first()
    if pending is not None:
        messages.info(request, f"Your request for {resource.repo_id} is already waiting for review.")
        return redirect("my_access")
    open_request = AccessRequest.objects.filter(user=request.user, resource=resource, status=AccessRequest.Status.CHANGES_REQUESTED).first()
    initial = {"intended_use": open_request.intended_use} if open_request else {}
    form = AccessRequestForm(request.POST or None, resource=resource, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            all_configs, configs = form.scope()
            submitted, created = access_request_submit(
                user=request.user, resource=resource, intended_use=form.cleaned_data["intended_use"],
                answers=form.answers(), signature=form.cleaned_data["signature"], request=request,
                all_configs=all_configs, configs=configs,
            )
        except GovernanceError as error:
            form.add_error(error.field, str(error))
        else:
            if submitted.status == AccessRequest.Status.APPROVED:
                messages.success(request, f"Access to {resource.repo_id} approved: {submitted.decision_reason}")
                return redirect(resource)
            messages.success(request, f"Your request for {resource.repo_id} was sent to the reviewers." if created
                             else f"Your request for {resource.repo_id} is already waiting for review.")
            return redirect("my_access")
    return render(request, "datasets_app/access_request.html", {
        "resource": resource, "form": form, "license_version": resource.license_version,
        "changes_requested": open_request, "current": can_download(request.user, resource),
    })


@login_required
def my_access(request):
    return render(request, "datasets_app/my_access.html", {
        "requests": AccessRequest.objects.filter(user=request.user).select_related("resource", "license_version__license").order_by("-submitted_at"),
        "grants": Grant.objects.filter(user=request.user).select_related("resource__license_version", "license_version__license", "request").order_by("-created_at"),
    })


@login_required
@require_http_methods(["GET", "POST"])
def grant_reaccept_view(request, pk):
    grant = get_object_or_404(Grant.objects.select_related("resource__license_version__license", "license_version"), pk=pk, user=request.user)
    if request.method == "POST":
        if request.POST.get("accept") != "yes":
            messages.error(request, "Tick the box to accept the new license, or leave this page.")
        else:
            try:
                grant_reaccept(grant=grant, user=request.user, request=request)
            except GovernanceError as error:
                messages.error(request, str(error))
                return redirect("my_access")
            messages.success(request, f"Thank you. Downloads of {grant.resource.repo_id} are open again.")
            return redirect(grant.resource)
    return render(request, "datasets_app/grant_reaccept.html", {"grant": grant, "license_version": grant.resource.license_version})
