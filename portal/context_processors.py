from django.conf import settings


def portal(request):
    from datasets_app.authz import reviewable_resources

    user = getattr(request, "user", None)
    is_reviewer = bool(user and user.is_authenticated and reviewable_resources(user).exists())
    return {"portal_name": settings.PORTAL_NAME, "is_reviewer": is_reviewer}
