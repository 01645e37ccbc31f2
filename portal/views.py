from allauth.account.models import EmailAddress
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from datasets_app.authz import downloadable_resources
from datasets_app.models import Resource
from portal.forms import ProfileForm
from portal.models import Profile
from portal.services import profile_update


def home(request):
    resources = Resource.objects.select_related("license_version__license").all()[:6]
    return render(request, "portal/home.html", {
        "resources": resources,
        "downloadable_ids": set(downloadable_resources(request.user).values_list("pk", flat=True)),
    })


@login_required
@require_http_methods(["GET", "POST"])
def profile(request):
    profile = request.user.profile
    # A ModelForm writes the submitted values onto its instance while validating; it gets
    # its own copy so that profile_update still sees the stored values and what changed.
    form = ProfileForm(request.POST or None, instance=Profile.objects.get(pk=profile.pk))
    if request.method == "POST" and form.is_valid():
        changed = profile_update(profile=profile, changes=form.cleaned_data, request=request)
        if "institutional_email" in changed and profile.institutional_email:
            messages.info(request, f"We sent a verification link to {profile.institutional_email}.")
        messages.success(request, "Your profile was saved." if changed else "Nothing changed.")
        return redirect(request.GET.get("next") or "profile") if _safe_next(request) else redirect("profile")
    institutional_verified = bool(profile.institutional_email) and EmailAddress.objects.filter(
        user=request.user, email__iexact=profile.institutional_email, verified=True
    ).exists()
    return render(request, "portal/profile.html", {"form": form, "institutional_verified": institutional_verified})


def _safe_next(request) -> bool:
    from django.utils.http import url_has_allowed_host_and_scheme

    target = request.GET.get("next")
    return bool(target) and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure())
