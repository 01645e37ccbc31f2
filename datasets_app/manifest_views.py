"""Serving the manifest of the configs a grant covers, through its signed link (see datasets_app.manifests)."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpResponse, HttpResponseRedirect
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_safe

from datasets_app.authz import can_download, restricted_configs
from datasets_app.download_refusals import download_refusal_record, link_digest
from datasets_app.links import OTHER_ACCOUNT, LinkError, link_account, link_path, link_revocation
from datasets_app.manifests import grant_manifest, manifest_link_claims, stored_manifest
from datasets_app.models import Version
from portal.audit import audit_record
from portal.responses import text_refusal


@require_safe
def grant_manifest_view(request, token):
    try:
        claims = manifest_link_claims(token)
    except LinkError as error:
        download_refusal_record(request=request, reason=error.reason, status=error.status,
                                link={"kind": "manifest", "digest": link_digest(token)})
        return text_refusal(error.status, str(error), code=error.reason, request=request)
    version = Version.objects.select_related("resource").filter(pk=claims.version_id, published_at__isnull=False).first()

    def refuse(status: int, message: str, reason: str):
        download_refusal_record(request=request, reason=reason, status=status, resource=version.resource.repo_id if version else "",
                                link={"kind": "manifest", "version_id": claims.version_id, "user_id": claims.user_id,
                                      "grant_id": claims.grant_id, "token_id": claims.token_id, "expires_at": claims.expires_at})
        return text_refusal(status, message, code=reason, request=request)

    if version is None:
        return refuse(404, "This link names a version that is not published. Copy it again from the download page.", "unknown_version")
    try:
        user = link_account(claims.user_id)
    except LinkError as error:
        return refuse(error.status, str(error), error.reason)
    if (settings.SESSION_COOKIE_NAME in request.COOKIES and request.user.is_authenticated
            and request.user.pk != claims.user_id):
        return refuse(403, OTHER_ACCOUNT, "other_account")
    revoked = link_revocation(user=user, token_id=claims.token_id, generation=claims.generation)
    if revoked is not None:
        return refuse(revoked.status, str(revoked), revoked.reason)
    decision = can_download(user, version.resource)
    if not decision:
        action = f" {request.build_absolute_uri(decision.action_url)}" if decision.action_url else ""
        return refuse(403 if user.is_authenticated else 401, decision.message + action, decision.code)
    manifest = grant_manifest(version=version, grant=decision.grant, restricted=restricted_configs(version.resource))
    if manifest is None:
        stored = stored_manifest(version)
        if stored is None:
            return text_refusal(404, f"{version} has no manifest of shards. Its download page lists its files.", code="no_manifest",
                                request=request)
        # Access now reaches every config (a wider grant since the link was issued): the stored manifest itself.
        return HttpResponseRedirect(link_path(file=stored, user=user, grant=decision.grant,
                                              token_id=claims.token_id, generation=claims.generation))
    audit_record(action="grant_manifest_served", actor=user, target=version, resource=version.resource.repo_id, request=request,
                 data={"version": version.name, "configs": list(manifest.covered), "sha256": manifest.sha256})
    response = HttpResponse(manifest.content, content_type="application/json")
    response["Content-Disposition"] = content_disposition_header(as_attachment=True, filename=manifest.filename)
    response["ETag"] = f'"{manifest.sha256}"'
    response["Cache-Control"] = "private, no-store"
    return response
