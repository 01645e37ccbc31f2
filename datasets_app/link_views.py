"""My access: invalidate every download link at once, and sign out everywhere."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from datasets_app.links import links_revoke_all
from portal.sessions import user_sessions_end_all


@login_required
@require_POST
def links_revoke(request):
    links_revoke_all(user=request.user, actor=request.user, reason="requested", request=request)
    messages.success(request, "Every download link you were given so far now fails, in the browser and in scripts "
                              "(wget, aria2c, urls.txt lists). Get fresh links from each version's download page.")
    return redirect("my_access")


@login_required
@require_POST
def sign_out_everywhere(request):
    ended = user_sessions_end_all(request=request)
    messages.success(request, f"Signed out of {ended} session(s), this one included, and every download link you were "
                              "given so far now fails. Sign in again to get fresh links. Access tokens still work: "
                              "revoke them on the Access tokens page if they may be known to someone else.")
    return redirect("account_login")
