from allauth.account.models import EmailAddress
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from datasets_app.authz import downloadable_resources
from datasets_app.models import Resource
from datasets_app.services import GovernanceError
from portal.forms import ProfileForm
from portal.mail_limits import MailLimitReached
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
    status = 200
    if request.method == "POST" and form.is_valid():
        try:
            changed = profile_update(profile=profile, changes=form.cleaned_data, request=request)
        except MailLimitReached as error:
            form.add_error("institutional_email", f"Institutional email: {error} Nothing was saved; your changes are kept below.")
            status = 429
        except GovernanceError as error:
            form.add_error(None, str(error))
        else:
            if "institutional_email" in changed and profile.institutional_email and not _verified(request.user, profile.institutional_email):
                messages.info(request, f"We sent a verification link to {profile.institutional_email}.")
            messages.success(request, "Your profile was saved." if changed else "Nothing changed.")
            return redirect(request.GET.get("next") or "profile") if _safe_next(request) else redirect("profile")
    institutional_verified = bool(profile.institutional_email) and _verified(request.user, profile.institutional_email)
    return render(request, "portal/profile.html", {"form": form, "institutional_verified": institutional_verified},
                  status=status)


def _verified(user, email: str) -> bool:
    return EmailAddress.objects.filter(user=user, email__iexact=email, verified=True).exists()


def _safe_next(request) -> bool:
    from django.utils.http import url_has_allowed_host_and_scheme

    target = request.GET.get("next")
    return bool(target) and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure())
