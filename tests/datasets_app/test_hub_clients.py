"""The Hub protocol (datasets_app.hub_views) against the real clients, huggingface_hub and its `hf`
command, run as a researcher runs them: a separate Python process pointed at the live server with
HF_ENDPOINT and a portal token, its caches under the test's folder, nothing reaching the internet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from datasets_app import services
from datasets_app.models import AccessRequest, DownloadEvent
from datasets_app.tokens import access_token_create
from portal.models import AuditEvent
from tests.conftest import apply
from tests.datasets_app.conftest import last_seq
from tests.datasets_app.downloads import BIG_SIZE, download_mark, downloads_since, sha256_file

REPO = "test/corpus-a"
BIG = "data/fr/part-00000.parquet"
ROOT = Path(__file__).resolve().parents[2]
# The clients' interpreter: the project's own (the pinned pair of requirements-dev.txt), or, in CI's second
# run, a virtualenv of the older pair (requirements-hub-old.txt, `make test-hub-old`). The portal under test
# always runs in the project's.
CLIENT_PYTHON = os.environ.get("HUB_CLIENT_PYTHON") or sys.executable
HF = str(Path(CLIENT_PYTHON).with_name("hf"))


def client_version() -> tuple[int, ...]:
    """huggingface_hub's version in the client interpreter, for the few answers that changed between versions."""
    out = subprocess.run([CLIENT_PYTHON, "-c", "import huggingface_hub; print(huggingface_hub.__version__)"],
                         capture_output=True, text=True, check=True).stdout
    return tuple(int(part) for part in out.strip().split(".")[:2])

# Run in the client's process before the script: what every script reports with.
PRELUDE = """
import json
def report(**values):
    print("RESULT " + json.dumps(values, default=str))
def refusal(call):
    try:
        call()
    except Exception as error:
        response = getattr(error, "response", None)
        return {"type": type(error).__name__, "status": getattr(response, "status_code", None), "message": str(error),
                "server_message": getattr(error, "server_message", None)}
    return None
"""


def hub_python(script: str, *, endpoint: str, home: Path, token: str | None = None, timeout: float = 240,
               args: tuple = ()) -> dict:
    """Run `script` (or, with args, a command) as a client process; the values its report() printed."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("HF_")}
    env.update({
        "HF_ENDPOINT": endpoint, "HF_HOME": str(home / "hf"), "HF_HUB_CACHE": str(home / "hf" / "hub"),
        "HF_DATASETS_CACHE": str(home / "hf" / "datasets"), "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        # A loaded test machine answers slowly; the clients' default of 10 s is for the Hub.
        "HF_HUB_ETAG_TIMEOUT": "120", "HF_HUB_DOWNLOAD_TIMEOUT": "120", "NO_PROXY": "*", "no_proxy": "*",
        "PYTHONPATH": str(ROOT),
    })
    if token:
        env["HF_TOKEN"] = token
    command = list(args) if args else [CLIENT_PYTHON, "-c", PRELUDE + script]
    result = subprocess.run(command, cwd=home, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, f"{command[:3]} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    return json.loads(lines[-1][len("RESULT "):]) if lines else {"stdout": result.stdout, "stderr": result.stderr}


def read_token(user) -> str:
    return access_token_create(user=user, name="cluster", scopes=["read"], days=30)[1]



@pytest.fixture
def hub(live_server, tmp_path):
    home = tmp_path / "node"
    home.mkdir()

    def run(script: str, *, home: Path = home, **kwargs) -> dict:
        home.mkdir(exist_ok=True)
        return hub_python(script, endpoint=live_server.url, home=home, **kwargs)

    run.home, run.endpoint = home, live_server.url
    return run


def test_it_downloads_files_with_hf_hub_download_and_records_each_request(cast, published, hub, release_files):
    mark = download_mark()
    got = hub(f"""
from huggingface_hub import hf_hub_download
paths = {{name: hf_hub_download({REPO!r}, name, repo_type="dataset") for name in ("README.md", {BIG!r})}}
pinned = hf_hub_download({REPO!r}, "README.md", repo_type="dataset", revision={published.revision!r})
named = hf_hub_download({REPO!r}, "README.md", repo_type="dataset", revision="v1.0")
report(paths=paths, pinned=pinned, named=named)
""", token=read_token(cast.granted))

    assert Path(got["paths"]["README.md"]).read_bytes() == release_files["README.md"]
    assert Path(got["paths"][BIG]).read_bytes() == release_files[BIG] and len(release_files[BIG]) == BIG_SIZE
    # The cache files a version under its revision id, whichever name the client asked by.
    assert f"/snapshots/{published.revision}/" in got["pinned"] and f"/snapshots/{published.revision}/" in got["named"]
    records = downloads_since(mark)
    assert {(e.method, e.path) for e in records} >= {("HEAD", "README.md"), ("GET", "README.md"), ("HEAD", BIG), ("GET", BIG)}
    assert {(e.username, e.version, e.grant_id) for e in records} == {("granted", "v1.0", cast.grants["granted"].pk)}


def test_it_snapshots_a_dataset_listing_only_what_the_grant_covers(cast, published, hub, release_files):
    # pending asked for en only and is approved for it: fr's shard is not theirs to see.
    AccessRequest.objects.filter(pk=cast.requests["pending"].pk).update(all_configs=False, configs=["en"])
    services.access_request_approve(access_request=AccessRequest.objects.get(pk=cast.requests["pending"].pk),
                                    reviewer=cast.reviewer_a, expires_at=timezone.now() + timedelta(days=30))
    script = f"""
from huggingface_hub import HfApi, snapshot_download
api = HfApi()
folder = snapshot_download({REPO!r}, repo_type="dataset", local_dir="snapshot")
info = api.dataset_info({REPO!r})
tree = [f.path for f in api.list_repo_tree({REPO!r}, repo_type="dataset", recursive=True)]
top = [f.path for f in api.list_repo_tree({REPO!r}, repo_type="dataset")]
paths = [f.path for f in api.get_paths_info({REPO!r}, ["README.md", "data", "data/en/part-00000.jsonl"], repo_type="dataset")]
report(folder=folder, sha=info.sha, siblings=sorted(s.rfilename for s in info.siblings), tree=tree, top=top, paths=paths,
       fr=refusal(lambda: api.hf_hub_download({REPO!r}, {BIG!r}, repo_type="dataset")),
       fr_info=refusal(lambda: api.get_paths_info({REPO!r}, [{BIG!r}], repo_type="dataset")),
       fr_tree=refusal(lambda: list(api.list_repo_tree({REPO!r}, "data/fr", repo_type="dataset"))))
"""
    everything = hub(script, token=read_token(cast.granted))
    folder = Path(everything["folder"])
    assert {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts} == set(release_files)
    assert all((folder / name).read_bytes() == data for name, data in release_files.items())
    assert everything["sha"] == published.revision and everything["siblings"] == sorted(release_files)
    assert everything["tree"] == ["data", "data/en", "data/fr", "README.md", "data/en/part-00000.jsonl", BIG]
    assert everything["top"] == ["data", "README.md"] and everything["paths"] == ["data", "README.md", "data/en/part-00000.jsonl"]
    assert everything["fr"] is None and everything["fr_info"] is None and everything["fr_tree"] is None
    # The README's recipe: the hf command, pinned to the version by name.
    hub("", token=read_token(cast.granted), args=(HF, "download", REPO,
                                                 "--repo-type", "dataset", "--revision", "v1.0", "--local-dir", "cli"))
    assert all((hub.home / "cli" / name).read_bytes() == data for name, data in release_files.items())

    # Another machine: the client would otherwise answer from the files it cached above.
    partial = hub(script, token=read_token(cast.pending), home=hub.home / "elsewhere")
    assert partial["siblings"] == ["README.md", "data/en/part-00000.jsonl"]
    assert partial["tree"] == ["data", "data/en", "README.md", "data/en/part-00000.jsonl"]
    assert partial["paths"] == ["data", "README.md", "data/en/part-00000.jsonl"]
    assert {p.name for p in Path(partial["folder"]).rglob("*") if p.is_file() and ".cache" not in p.parts} == {"README.md", "part-00000.jsonl"}
    assert partial["fr"]["type"] == "GatedRepoError" and partial["fr"]["status"] == 403
    assert "does not cover the fr config" in partial["fr"]["message"]
    # Asked for by name, the fr config's files are refused with the same words, not reported missing.
    for asked in ("fr_info", "fr_tree"):
        assert partial[asked]["type"] == "GatedRepoError" and "does not cover the fr config" in partial[asked]["message"]


def refusals_script(tokens: dict[str, str], revision: str) -> str:
    return f"""
from huggingface_hub import HfApi, hf_hub_download
import itertools
tokens = {tokens!r}
caches = itertools.count()
def get(name="README.md", token=None, repo={REPO!r}, revision=None):
    # A cache of its own per call: a refused client falls back to a file another call cached.
    return lambda: hf_hub_download(repo, name, repo_type="dataset", token=token, revision=revision,
                                   cache_dir=f"cache-{{next(caches)}}")
report(
    anonymous=refusal(get(token=False)),
    bad_token=refusal(get(token="rpt_not-a-token")),
    **{{role: refusal(get(token=token)) for role, token in tokens.items()}},
    info=refusal(lambda: HfApi(token=tokens["stranger"]).dataset_info({REPO!r})),
    unknown_repo=refusal(get(token=tokens["granted"], repo="test/no-such-corpus")),
    unpublished=refusal(get(token=tokens["granted"], repo="test/corpus-b")),
    as_model=refusal(lambda: hf_hub_download({REPO!r}, "README.md", token=tokens["granted"])),
    unknown_revision=refusal(get(token=tokens["granted"], revision="v9")),
    branch=refusal(lambda: HfApi(token=tokens["granted"]).dataset_info({REPO!r}, revision="refs/pr/1")),
    unknown_file=refusal(get("no-such-file.txt", token=tokens["granted"])),
    pinned_ok=refusal(get(token=tokens["granted"], revision={revision!r})),
)
"""


def test_it_refuses_with_the_hub_errors_and_says_what_to_do(cast, published, hub, live_server):
    tokens = {role: read_token(cast.users[role]) for role in ("granted", "stranger", "pending", "revoked", "rejected")}
    seq = last_seq()

    got = hub(refusals_script(tokens, published.revision))

    request_url = f"{live_server.url}/resources/test/corpus-a/request/"
    assert got["anonymous"]["type"] == "GatedRepoError" and got["anonymous"]["status"] == 401
    assert f"{live_server.url}/access/tokens/" in got["anonymous"]["message"] and "HF_TOKEN" in got["anonymous"]["message"]
    assert got["bad_token"]["type"] == "GatedRepoError" and got["bad_token"]["status"] == 401
    assert "This access token is not valid" in got["bad_token"]["message"]
    assert got["granted"] is None and got["pinned_ok"] is None
    for role, words in {"stranger": "read its license and request access", "pending": "is waiting for review",
                        "revoked": "was revoked on", "rejected": "was not approved"}.items():
        assert got[role]["type"] == "GatedRepoError" and got[role]["status"] == 403, role
        assert words in got[role]["server_message"], (role, got[role])
    assert request_url in got["stranger"]["server_message"]
    assert got["info"]["type"] == "GatedRepoError" and got["info"]["status"] == 403
    # Nothing published under that name (or that kind, or yet: corpus-b has no version) is not found, for everyone.
    for missing in ("unknown_repo", "as_model", "unpublished"):
        assert got[missing]["type"] == "RepositoryNotFoundError" and "/catalogue/" in got[missing]["message"], missing
    assert got["unknown_revision"]["type"] == "RevisionNotFoundError" and "use main" in got["unknown_revision"]["message"]
    assert got["branch"]["type"] == "RevisionNotFoundError"
    # huggingface_hub 1.x split EntryNotFoundError into a remote and a local one.
    assert got["unknown_file"]["type"] == ("RemoteEntryNotFoundError" if client_version() >= (1, 0) else "EntryNotFoundError")
    # Refused downloads are in the audit trail like refused links, with the portal's reason.
    refused = AuditEvent.objects.filter(seq__gt=seq, action="download_refused")
    assert sorted(e.data["reason"] for e in refused) == [
        "login_required", "pending", "rejected", "request_required", "revoked", "unauthenticated"]
    assert {e.data["link"]["kind"] for e in refused} == {"hub"} and {e.resource for e in refused} == {REPO}


def test_it_tells_hf_auth_whoami_whose_token_it_is(cast, hub):
    # `--format json` came with huggingface_hub 1.x; older versions print the name on the first line.
    json_format = client_version() >= (1, 0)

    got = hub("", token=read_token(cast.granted), args=(HF, "auth", "whoami", *(("--format", "json") if json_format else ())))

    if json_format:
        assert json.loads(got["stdout"])["user"] == "granted"
    else:
        assert "granted" in got["stdout"].splitlines()[0]


def test_it_asks_to_reaccept_a_changed_license_at_its_page(cast, published, hub, live_server):
    token = read_token(cast.granted)
    services.license_version_publish(license=cast.license_version.license, version="2.0", text="New terms.", actor=cast.admin)

    got = hub(f"""
from huggingface_hub import hf_hub_download
report(only=refusal(lambda: hf_hub_download({REPO!r}, "README.md", repo_type="dataset")))
""", token=token)

    assert got["only"]["type"] == "GatedRepoError" and got["only"]["status"] == 403
    assert "changed to version 2.0" in got["only"]["server_message"]
    assert f"{live_server.url}/access/grants/{cast.grants['granted'].pk}/reaccept/" in got["only"]["server_message"]


def test_it_reads_ranges_through_hf_file_system(cast, published, hub, release_files):
    data = release_files[BIG]
    got = hub(f"""
from huggingface_hub import HfFileSystem
fs = HfFileSystem()
path = "datasets/{REPO}/{BIG}"
with fs.open(path, "rb", block_size=4096) as handle:
    handle.seek(1_000_000)
    middle = handle.read(300).hex()
    handle.seek(-100, 2)
    tail = handle.read().hex()
report(middle=middle, tail=tail, head=fs.cat_file(path, start=0, end=64).hex(), size=fs.info(path)["size"],
       ls=sorted(fs.ls("datasets/{REPO}/data", detail=False)))
""", token=read_token(cast.granted))

    assert bytes.fromhex(got["middle"]) == data[1_000_000:1_000_300]
    assert bytes.fromhex(got["tail"]) == data[-100:] and bytes.fromhex(got["head"]) == data[:64]
    assert got["size"] == len(data) and got["ls"] == [f"datasets/{REPO}/data/en", f"datasets/{REPO}/data/fr"]
    assert DownloadEvent.objects.filter(path=BIG, method="GET").exclude(byte_range="").exists()


def test_it_serves_ranges_and_refuses_past_the_end(cast, published, live_server, release_files):
    from tests.datasets_app.downloads import curl, parse_headers

    token = read_token(cast.granted)
    url = f"{live_server.url}/datasets/{REPO}/resolve/main/{BIG}"
    auth = f"Authorization: Bearer {token}"
    part = curl("-f", "-H", auth, "-r", "10-19", url).stdout
    status, headers = parse_headers(curl("-I", "-H", auth, url).stdout)
    past = parse_headers(curl("-D", "-", "-o", "/dev/null", "-H", auth, "-r", f"{BIG_SIZE}-", url).stdout)

    assert part == release_files[BIG][10:20]
    assert status == 200 and headers["x-repo-commit"] == published.revision and "location" not in headers
    assert headers["etag"] == f'"{published.files.get(path=BIG).sha256}"' and headers["content-length"] == str(BIG_SIZE)
    assert past[0] == 416 and past[1]["content-range"] == f"bytes */{BIG_SIZE}"


def test_it_downloads_a_gated_checkpoint_with_the_hf_command_and_the_engine_runs_it(cast, hub, local_storage, tmp_path):
    from datasets_app.models import Resource
    from datasets_app.publishing import version_publish
    from inference.engine.demo import make_demo_checkpoint

    checkpoint = make_demo_checkpoint(tmp_path / "tiny", shape="tiny", dtype="fp32", seed=1)
    resource = Resource.objects.create(namespace="test", slug="polyglot-tiny", kind=Resource.Kind.CHECKPOINT, title="Tiny",
                                       access_policy=Resource.Policy.GATED_MANUAL, license_version=cast.license_version)
    resource.reviewers.add(cast.reviewer_a)
    services.access_request_approve(access_request=apply(cast.granted, resource), reviewer=cast.reviewer_a,
                                    expires_at=timezone.now() + timedelta(days=30))
    version = version_publish(resource=resource, name="v1", source=str(checkpoint), actor=cast.admin)
    hub("", token=read_token(cast.granted), args=(HF, "download", "test/polyglot-tiny", "--local-dir", "ckpt"))
    ran = hub("", args=(sys.executable, "-m", "inference.engine", "generate", "--checkpoint", "ckpt", "--prompt", "Tous les",
                        "--max-new-tokens", "4", "--memory-budget", "1GiB", "--json"))

    fetched = hub.home / "ckpt"
    for file in version.files.all():
        assert sha256_file(fetched / file.path) == file.sha256, file.path
    completion = json.loads(ran["stdout"])["completions"][0]
    assert completion["prompt"] == "Tous les" and len(completion["token_ids"]) == 4


@pytest.mark.parametrize("namespace", ["d", "admin", "api", "resources", "datasets", "static"])
def test_it_refuses_a_namespace_that_is_a_path_of_the_portal_where_hub_urls_would_be_shadowed(cast, namespace):
    from django.core.exceptions import ValidationError

    from datasets_app.models import Resource

    resource = Resource(namespace=namespace, slug="model", kind=Resource.Kind.CHECKPOINT, title="M",
                        access_policy=Resource.Policy.OPEN)
    with pytest.raises(ValidationError, match=f"'{namespace}' is a path of the portal itself"):
        resource.full_clean()
    resource.namespace = "bigscience"
    resource.full_clean()


def test_it_pages_long_listings_and_the_clients_follow_the_link(cast, published, hub, release_files, settings, live_server):
    from tests.datasets_app.downloads import curl, parse_headers

    settings.HUB_TREE_PAGE_SIZE = 2
    token = read_token(cast.granted)
    got = hub(f"""
from huggingface_hub import HfApi, snapshot_download
api = HfApi()
report(tree=[f.path for f in api.list_repo_tree({REPO!r}, repo_type="dataset", recursive=True)],
       folder=snapshot_download({REPO!r}, repo_type="dataset", local_dir="paged"),
       commits=[(c.commit_id, c.title) for c in api.list_repo_commits({REPO!r}, repo_type="dataset")])
""", token=token)

    # Six entries, three pages of two, the same listing as unpaged.
    assert got["tree"] == ["data", "data/en", "data/fr", "README.md", "data/en/part-00000.jsonl", BIG]
    assert all((Path(got["folder"]) / name).read_bytes() == data for name, data in release_files.items())
    assert got["commits"] == [[published.revision, f"{REPO} v1.0"]]
    # A cursor the portal did not issue (or issued for another version) says to start again.
    auth = f"Authorization: Bearer {token}"
    first = parse_headers(curl("-D", "-", "-o", "/dev/null", "-H", auth,
                               f"{live_server.url}/api/datasets/{REPO}/tree/main?recursive=1").stdout)
    assert first[0] == 200 and 'rel="next"' in first[1]["link"] and "cursor=" in first[1]["link"]
    bad = parse_headers(curl("-D", "-", "-o", "/dev/null", "-H", auth,
                             f"{live_server.url}/api/datasets/{REPO}/tree/main?recursive=1&cursor=eyJvIjogMn0").stdout)
    assert bad[0] == 400 and "list the folder again" in bad[1]["x-error-message"]
