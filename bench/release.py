"""What the portal benchmarks set up alike, run in a process of their own with the portal's settings: a
gated resource (automatic approval) with one published version, a researcher granted it through the
governance services, and a token; and how each writes its report."""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path


def granted_release(*, repo_id: str, kind: str, title: str, version: str, source: Path, license_slug: str,
                    license_title: str, license_text: str, intended_use: str, scopes: list[str]):
    """(the published version, a raw token of `scopes` for the granted researcher)."""
    import django

    django.setup()
    from allauth.account.models import EmailAddress
    from django.contrib.auth import get_user_model

    from datasets_app.authz import can_download
    from datasets_app.models import License, LicenseVersion, Resource
    from datasets_app.publishing import version_publish
    from datasets_app.services import access_request_submit
    from datasets_app.tokens import access_token_create

    license = License.objects.create(slug=license_slug, title=license_title)
    license_version = LicenseVersion.objects.create(license=license, version="1.0", text=license_text,
                                                    sha256=LicenseVersion.digest(license_text))
    User = get_user_model()
    custodian = User.objects.create_superuser("custodian", "custodian@example.org", secrets.token_urlsafe(16))
    researcher = User.objects.create_user("researcher", "researcher@example.org", secrets.token_urlsafe(16))
    EmailAddress.objects.create(user=researcher, email=researcher.email, verified=True, primary=True)
    profile = researcher.profile
    profile.full_name, profile.affiliation, profile.country, profile.position = "Rosa Researcher", "Example University", "PT", "Researcher"
    profile.save()
    namespace, slug = repo_id.split("/")
    resource = Resource.objects.create(namespace=namespace, slug=slug, kind=kind, title=title,
                                       access_policy=Resource.Policy.GATED_AUTO, license_version=license_version,
                                       default_grant_days=30)
    published = version_publish(resource=resource, name=version, source=str(source), actor=custodian)
    access_request_submit(user=researcher, resource=resource, answers=[], signature=profile.full_name, intended_use=intended_use)
    assert can_download(researcher, resource), f"the researcher was not granted {repo_id}"
    _, raw = access_token_create(user=researcher, name="bench", scopes=scopes, days=1)
    return published, raw


def write_report(report: dict, out: Path | None, *, started: float, load_before: tuple, markdown, repo: Path) -> None:
    """Stamp the run's duration and the machine's load, print the table, write the JSON atomically."""
    report["run_seconds"] = round(time.monotonic() - started, 1)
    # Other work on a shared machine skews every number; this says how busy it was.
    report["machine"]["load_average_1m"] = {"start": round(load_before[0], 2), "end": round(os.getloadavg()[0], 2)}
    print(markdown(report))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(json.dumps(report, indent=1) + "\n")
        tmp.replace(out)
        print(f"\nwrote {out.relative_to(repo) if out.is_relative_to(repo) else out}")
