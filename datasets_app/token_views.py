from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from datasets_app.models import AccessToken
from datasets_app.services import GovernanceError
from datasets_app.tokens import access_token_create, access_token_revoke

LIFETIMES = [(30, "30 days"), (90, "90 days"), (365, "1 year")]


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, label="Name", help_text="Where it will be used, e.g. 'jean-zay login node'.",
                           error_messages={"required": "Name: say where the token will be used.",
                                           "max_length": "Name: keep it to %(limit_value)d characters (it has %(show_value)d)."})
    scopes = forms.MultipleChoiceField(choices=AccessToken.Scope.choices, widget=forms.CheckboxSelectMultiple, initial=["read"],
                                       error_messages={"required": "Scopes: choose at least one.",
                                                       "invalid_choice": "Scopes: %(value)s is not a scope; choose among those listed."})
    days = forms.TypedChoiceField(choices=LIFETIMES, coerce=int, initial=90, label="Expires after",
                                  error_messages={"invalid_choice": "Expires after: choose one of the offered lifetimes."})

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["days"].choices = [(d, label) for d, label in LIFETIMES if d <= settings.ACCESS_TOKEN_MAX_DAYS] or [(settings.ACCESS_TOKEN_MAX_DAYS, f"{settings.ACCESS_TOKEN_MAX_DAYS} days")]


@login_required
@never_cache  # the response that shows a new token must not sit in any cache
@require_http_methods(["GET", "POST"])
def token_list(request):
    form = TokenForm(request.POST or None)
    new_token = None
    if request.method == "POST" and form.is_valid():
        try:
            _, new_token = access_token_create(user=request.user, name=form.cleaned_data["name"], scopes=form.cleaned_data["scopes"],
                                               days=form.cleaned_data["days"], request=request)
        except GovernanceError as error:
            form.add_error(None, str(error))
        else:
            form = TokenForm()
    return render(request, "datasets_app/tokens.html", {
        "form": form, "new_token": new_token, "tokens": AccessToken.objects.filter(user=request.user),
    })


@login_required
@require_POST
def token_revoke(request, pk):
    token = get_object_or_404(AccessToken, pk=pk, user=request.user)
    access_token_revoke(token=token, actor=request.user, request=request)
    messages.success(request, f"Revoked the token {token.name} ({token.prefix}…). Scripts using it now get a 401, "
                              "and the download links fetched with it no longer work.")
    return redirect("token_list")
