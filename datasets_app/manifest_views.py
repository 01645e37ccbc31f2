"""Serving the manifest of the configs a grant covers, through its signed link (see datasets_app.manifests)."""

from __future__ import annotations

from django.http import HttpResponse, HttpResponseRedirect
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_safe

from datasets_app.authz import can_download, restricted_configs
from datasets_app.download_refusals import link_digest, link_refusal
from datasets_app.links import MANIFEST_LINK, LinkError, link_access_refused, link_claims, link_holder, link_path
from datasets_app.manifests import grant_manifest, stored_manifest
from datasets_app.models import Version
from portal.audit import audit_record
from portal.responses import text_refusal


@require_safe
def grant_manifest_view(request, token):
    try:
        claims = link_claims(token, kind=MANIFEST_LINK)
    except LinkError as error:
        return link_refusal(request, error, link={"kind": "manifest", "digest": link_digest(token)})
    version = Version.objects.select_related("resource").filter(pk=claims.target_id, published_at__isnull=False).first()
    try:
        if version is None:
            raise LinkError(404, "This link names a version that is not published. Copy it again from the download page.",
                            reason="unknown_version")
        user = link_holder(request, claims)
        decision = can_download(user, version.resource)
        if not decision:
            raise link_access_refused(request, user, decision)
    except LinkError as error:
        return link_refusal(request, error, claims=claims, resource=version.resource.repo_id if version else "",
                            link={"kind": "manifest", "version_id": claims.target_id})
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
