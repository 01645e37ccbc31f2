#!/usr/bin/env python3
"""Hub-protocol download benchmark: snapshot_download through the portal against wget -i of the same files.

One run, one machine, loopback only, the same published dataset version (many shards of mixed sizes,
local storage) for every client, taking turns within each repeat:

  snapshot_download     huggingface_hub in a fresh client process with a fresh cache:
                        snapshot_download(repo, repo_type="dataset", local_dir=..., max_workers=8),
                        HF_ENDPOINT=<portal> HF_TOKEN=<portal read token>
  wget -i urls.txt      the README's recipe: `wget -c -x -nH --cut-dirs=2 -i urls.txt` (one file at a
                        time) on the version's signed-links manifest, fetched with the same token
                        (the baseline of the goal)
  aria2c -j 8           the README's parallel recipe, `aria2c -c -x 8 -i urls.aria2.txt` (urls.txt?client=aria2:
                        paths and sha256 that aria2 checks), with -j 8 to match max_workers=8

The portal runs as the README's deployment section starts it (`gunicorn -c gunicorn.conf.py portal.wsgi`:
2 x cores + 1 gthread workers of 8 threads, sendfile), on a PostgreSQL database of the run's own, with its
access log on (as in production) to count requests. Floors: the same wget and aria2c commands against
nginx serving the same files statically (no portal); the same snapshot_download call against nginx serving
a static emulation of the Hub protocol for the version (the portal's repo-info and tree answers saved as
files, the stored objects under .../resolve/<revision>/<path> with X-Repo-Commit and ETag headers: the
client's own floor on this machine); and `cp -r` of the stored files (the disk).

    python bench/hub/run.py            # full run: 200 files, 400 MiB, 5 repeats; writes bench/results/hub.json
    python bench/hub/run.py --quick    # smoke run: 40 files, 32 MiB, 2 repeats; prints only

`run.py --setup` is the portal set-up, run in a process of its own with the portal's settings.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import resource as rlimits
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.downloads.run import (  # noqa: E402 (the repository first on the path)
    NGINX_PROLOGUE, Cleanup, Deadline, ServerMeter, create_database, free_port, machine_info, make_file, manage, portal_env,
    start_gunicorn, start_nginx, stop_process, wait_http,
)

VENV_PYTHON = REPO / ".venv" / "bin" / "python"
DATASET = "bench/hub-shards"
VERSION = "v1"
GOAL = 0.8  # snapshot_download's throughput over wget -i's, from the issue
SNAPSHOT_FLOOR = "snapshot_download (nginx static Hub)"
MB = 1e6  # throughput in decimal MB/s
# Languages of the configs, most bytes first (the weights fall off as 1/rank, as a web corpus's do).
CONFIGS = ["en", "zh", "fr", "es", "ar", "pt", "hi", "id", "vi", "ur", "bn", "ca", "eu", "sw", "yo", "wo"]
SIMD_FLAGS = {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "fma", "sha_ni", "aes"}


@dataclass(frozen=True)
class Profile:
    files: int
    total: int  # bytes over every file
    repeats: int
    deadline_s: int


FULL = Profile(files=200, total=400 * 2**20, repeats=5, deadline_s=900)
QUICK = Profile(files=40, total=32 * 2**20, repeats=2, deadline_s=300)


# --- The release ------------------------------------------------------------------------------------


def release_layout(files: int, total: int, seed: int = 7) -> list[tuple[str, int]]:
    """(path, size) of a Hub-layout dataset: a README.md and files - 1 shards `data/<config>/train-i-of-n.parquet`
    over the CONFIGS, log-normal sizes (a few large shards, many mid-sized, a tail of small ones), `total` bytes."""
    rng = random.Random(seed)
    weights = [1 / rank for rank in range(1, len(CONFIGS) + 1)]
    shards = files - 1
    per_config: dict[str, int] = dict.fromkeys(CONFIGS, 0)
    for config in CONFIGS[:shards]:  # every config gets a shard before any gets a second
        per_config[config] += 1
    for config in rng.choices(CONFIGS, weights=weights, k=max(0, shards - len(CONFIGS))):
        per_config[config] += 1
    readme = 4096
    raw = [rng.lognormvariate(0, 1.0) for _ in range(shards)]
    scale = (total - readme) / sum(raw)
    sizes = [max(1024, int(r * scale)) for r in raw]
    sizes[sizes.index(max(sizes))] += (total - readme) - sum(sizes)  # exactly `total` in all
    layout, it = [("README.md", readme)], iter(sizes)
    for config, n in per_config.items():
        layout += [(f"data/{config}/train-{i:05d}-of-{n:05d}.parquet", next(it)) for i in range(n)]
    return layout


def write_release(source: Path, layout: list[tuple[str, int]]) -> dict[str, str]:
    """Random bytes (incompressible) at each path, the card a plain text; returns path -> sha256."""
    digests = {}
    for path, size in layout:
        target = source / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if path == "README.md":
            card = f"# Hub benchmark shards\n\n{len(layout) - 1} shards of random bytes in {len(CONFIGS)} configs.\n".encode()
            target.write_bytes(card.ljust(size, b"\n"))
            digests[path] = hashlib.sha256(target.read_bytes()).hexdigest()
        else:
            digests[path] = make_file(target, size)
    return digests


def portal_setup(source: Path) -> dict:
    """The gated dataset whose published version is `source`, granted to a researcher, and a read token."""
    import django

    django.setup()
    from bench.release import granted_release
    from datasets_app.models import Resource

    published, raw = granted_release(
        repo_id=DATASET, kind=Resource.Kind.DATASET, title="Benchmark shards", version=VERSION, source=source,
        license_slug="bench-data", license_title="Benchmark data license",
        license_text="Benchmark data license: download the shards for measurements only.",
        intended_use="Measuring downloads through the Hub protocol against wget.", scopes=["read"])
    files = {f.path: f.storage_key for f in published.files.all()}
    return {"token": raw, "revision": published.revision, "storage_keys": files}


# --- Clients --------------------------------------------------------------------------------------------

# Run in the client process: imports timed apart from the call, so both can be reported.
SNAPSHOT = """
import json, sys, time
started = time.perf_counter()
from huggingface_hub import __version__, snapshot_download
imported = time.perf_counter()
snapshot_download(sys.argv[1], repo_type="dataset", local_dir=sys.argv[2], max_workers=int(sys.argv[3]))
print("RESULT " + json.dumps({"import_s": imported - started, "call_s": time.perf_counter() - imported, "version": __version__}))
"""


def client_env(home: Path, *, endpoint: str = "", token: str = "") -> dict:
    """The environment of every client: no proxies, English messages; for huggingface_hub (as the hub tests run it)
    the caches under `home`, telemetry, progress bars and update checks off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_") and k.lower() not in
           ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy")}
    env.update({"LC_ALL": "C", "NO_PROXY": "*", "no_proxy": "*"})
    if endpoint:
        env.update({
            "HF_ENDPOINT": endpoint, "HF_TOKEN": token, "HF_HOME": str(home / "hf"), "HF_HUB_CACHE": str(home / "hf" / "hub"),
            "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1",
            "HF_HUB_OFFLINE": "0", "HF_HUB_ETAG_TIMEOUT": "120", "HF_HUB_DOWNLOAD_TIMEOUT": "120",
        })
    return env


@dataclass
class Outcome:
    wall_s: float
    returncode: int
    client_peak_rss: int  # bytes: the client's VmHWM, read every 10 ms while it runs
    client_cpu_s: float  # user + system, from wait4
    stderr: str
    extra: dict = field(default_factory=dict)


def high_water(pid: int) -> int:
    """VmHWM (peak RSS) of a live process in bytes; 0 once it has exited. Not ru_maxrss: that one keeps the
    forking parent's RSS (this benchmark's Python) from before the client's exec."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_client(args: list[str], *, cwd: Path, env: dict, timeout: float) -> Outcome:
    """Run one client to completion: wall time from start to exit, peak RSS and CPU time."""
    stderr_path = cwd.parent / f"{cwd.name}.stderr"
    peak, sampled = 0, 0.0
    with open(stderr_path, "wb") as err, open(cwd.parent / f"{cwd.name}.stdout", "wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            now = time.perf_counter()
            if now > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            if now - sampled >= 0.01:
                peak, sampled = max(peak, high_water(proc.pid)), now
            time.sleep(0.001)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    stdout = (cwd.parent / f"{cwd.name}.stdout").read_text(errors="replace")
    extra = {}
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            extra = json.loads(line[len("RESULT "):])
    return Outcome(wall, proc.returncode, peak, usage.ru_utime + usage.ru_stime, stderr_path.read_text(errors="replace")[-2000:], extra)


# --- The client's floor: the Hub protocol as static files -------------------------------------------------

# The calls snapshot_download (huggingface_hub 2.4) makes, answered by nginx from files: the repo info and
# the recursive tree (one page: the portal's own answers, saved once), then a HEAD and a GET per file under
# /datasets/<repo>/resolve/<revision>/<path>, the stored objects through hard links. The client needs
# X-Repo-Commit and an ETag on the HEAD (the file's "<sha256>", as the portal sends it; nginx's own is off)
# and the size, which Content-Length gives. No authorization, no records: what the client reaches when the
# server costs ~nothing.
HUB_STATIC_CONF = NGINX_PROLOGUE + """\
    map $hub_file $hub_etag {{
{etags}
    }}
    server {{
        listen 127.0.0.1:{port};
        location = /api/datasets/{repo} {{ default_type application/json; alias {static}/repo-info.json; }}
        location = /api/datasets/{repo}/revision/main {{ default_type application/json; alias {static}/repo-info.json; }}
        location ~ ^/api/datasets/{repo}/tree/[^/]+$ {{ default_type application/json; alias {static}/tree.json; }}
        location ~ ^/datasets/{repo}/resolve/(?:main|{sha})/(?<hub_file>.+)$ {{
            alias {files}/$hub_file;
            etag off;
            add_header X-Repo-Commit {sha};
            add_header ETag $hub_etag;
        }}
    }}
}}
"""


def start_hub_static(*, port: int, base: str, token: str, revision: str, digests: dict[str, str], files: Path, tmp: Path,
                     env: dict, cleanup: Cleanup) -> subprocess.Popen:
    """nginx answering snapshot_download's calls from files; the listings are the portal's answers, fetched once."""
    prefix = tmp / "hub-static"
    prefix.mkdir()
    listings = {"repo-info.json": f"{base}/api/datasets/{DATASET}/revision/main",
                "tree.json": f"{base}/api/datasets/{DATASET}/tree/{revision}?recursive=True&expand=False"}
    for name, url in listings.items():
        fetch_list(url, token, prefix / name, env)
    listed = {e["path"] for e in json.loads((prefix / "tree.json").read_text()) if e["type"] == "file"}
    if listed != set(digests):  # a second page (Link) would be lost here
        raise RuntimeError(f"the portal's tree lists {len(listed)} files in one page, not the version's {len(digests)}")
    etags = "\n".join(f"        \"{path}\" '\"{digest}\"';" for path, digest in sorted(digests.items()))
    conf = prefix / "nginx.conf"
    conf.write_text(HUB_STATIC_CONF.format(
        user="user root;\n" if os.geteuid() == 0 else "", tmp=prefix, port=port, repo=DATASET, sha=revision,
        static=prefix, files=files, etags=etags))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = subprocess.Popen([nginx, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "nginx-error.log")],
                            stdout=open(prefix / "nginx-stderr.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    cleanup.push("stop the static Hub's nginx", lambda: stop_process(proc, sig=signal.SIGTERM))
    wait_http(f"http://127.0.0.1:{port}/api/datasets/{DATASET}", proc, prefix / "nginx-error.log")
    return proc


# --- Counting requests ------------------------------------------------------------------------------------

# gunicorn's default access format: ... "METHOD PATH HTTP/1.1" STATUS BYTES ...
ACCESS = re.compile(r'"([A-Z]+) (\S+) HTTP/[\d.]+" (\d{3}) ')


def classify(method: str, path: str) -> str:
    path = urllib.parse.urlsplit(path).path
    if "/resolve/" in path:
        return f"resolve {method}"
    if path.startswith("/d/"):
        return f"link {method}"
    if re.fullmatch(r"/api/datasets/[^/]+/[^/]+(/revision/.+)?", path):
        return f"repo info {method}"
    if "/tree/" in path:
        return f"tree {method}"
    if "/paths-info/" in path:
        return f"paths-info {method}"
    return f"other {method} {path[:80]}"


def read_access(log: Path, offset: int) -> tuple[dict[str, int], dict[str, int], int]:
    """Requests logged since `offset`: counts by kind, non-2xx/3xx statuses by kind, and the new offset."""
    with open(log, "rb") as f:
        f.seek(offset)
        data = f.read()
    kinds: dict[str, int] = {}
    bad: dict[str, int] = {}
    for line in data.decode(errors="replace").splitlines():
        match = ACCESS.search(line)
        if not match:
            continue
        method, path, status = match.groups()
        kind = classify(method, path)
        kinds[kind] = kinds.get(kind, 0) + 1
        if not 200 <= int(status) < 400:
            bad[f"{kind} {status}"] = bad.get(f"{kind} {status}", 0) + 1
    return kinds, bad, offset + len(data)


def records(db_url: str, table: str, column: str, after: int) -> tuple[dict[str, int], int]:
    """Rows of the portal's `table` after id `after`, counted by `column`, and the last id: the download records
    (DownloadEvent, by method) and the audit trail's events (by action), which the server writes as it serves."""
    import psycopg

    with psycopg.connect(db_url) as conn:
        rows = conn.execute(f'SELECT "{column}", count(*), max(id) FROM "{table}" WHERE id > %s GROUP BY "{column}"',
                            (after,)).fetchall()
    return {key: count for key, count, _ in rows}, max([after] + [last for _, _, last in rows])


DOWNLOADS, AUDIT = ("datasets_app_downloadevent", "method"), ("portal_auditevent", "action")


# --- Checking bytes -------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def verify(folder: Path, expected: dict[str, str]) -> list[str]:
    """Every expected file present with its sha256, nothing else (client state such as huggingface_hub's
    .cache folder and aria2's control files aside); a list of what is wrong."""
    problems = []
    for path, digest in expected.items():
        got = folder / path
        if not got.is_file():
            problems.append(f"{path}: missing")
        elif sha256_file(got) != digest:
            problems.append(f"{path}: sha256 differs ({got.stat().st_size} bytes)")
    found = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and ".cache" not in p.relative_to(folder).parts}
    extra = sorted(found - set(expected))
    problems += [f"{path}: not in the version" for path in extra[:5]]
    return problems


# --- The run ----------------------------------------------------------------------------------------------


@dataclass
class Client:
    name: str
    source: str  # "portal" or a floor
    args: list[str]  # {out} is the output folder
    env: dict
    metered: list[int]  # server process roots
    db_name: str | None
    hub_endpoint: str = ""  # snapshot_download's HF_ENDPOINT (a fresh HF_HOME for every run)
    runs: list[dict] = field(default_factory=list)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def fetch_list(url: str, token: str, dest: Path, env: dict) -> float:
    """The README's `curl -fsSL -H "Authorization: Bearer $TOKEN" URL -o FILE`; its wall time."""
    started = time.perf_counter()
    result = subprocess.run(["curl", "-fsSL", "--noproxy", "*", "-H", f"Authorization: Bearer {token}", url, "-o", str(dest)],
                            capture_output=True, text=True, env=env, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"fetching {url.split('?')[0]} failed: {result.stderr.strip()}")
    return time.perf_counter() - started


def measure(client: Client, *, work: Path, expected: dict[str, str], total: int, access_log: Path, db_url: str,
            timeout: float) -> dict:
    out = work / f"{client.name.replace(' ', '_')}-{len(client.runs)}"
    out.mkdir()
    offset = access_log.stat().st_size
    (_, mark), (_, audit_mark) = records(db_url, *DOWNLOADS, 0), records(db_url, *AUDIT, 0)
    args = [a.replace("{out}", str(out)) for a in client.args]
    with ServerMeter(client.metered, db_name=client.db_name) as meter:
        outcome = run_client(args, cwd=out, env=client.env, timeout=timeout)
    time.sleep(0.3)  # gunicorn writes an access line after the response has gone
    kinds, bad, _ = read_access(access_log, offset)
    downloads, _ = records(db_url, *DOWNLOADS, mark)
    audited, _ = records(db_url, *AUDIT, audit_mark)
    problems = verify(out, expected) if outcome.returncode == 0 else [f"exit status {outcome.returncode}: {outcome.stderr[-500:]}"]
    shutil.rmtree(out, ignore_errors=True)
    for leftover in (work / f"{out.name}.stdout", work / f"{out.name}.stderr"):
        leftover.unlink(missing_ok=True)
    os.sync()  # the next client starts with no writeback of this one's bytes pending
    run = {
        "wall_s": round(outcome.wall_s, 3), "mb_per_s": round(total / MB / outcome.wall_s, 1),
        "client_peak_rss_mib": round(outcome.client_peak_rss / 2**20, 1), "client_cpu_s": round(outcome.client_cpu_s, 2),
        "server_peak_rss_mib": round(meter.peak / 2**20, 1), "server_cpu_s": round(meter.cpu, 2),
        "requests": dict(sorted(kinds.items())), "failed_requests": bad, "download_records": downloads,
        "audit_events": audited,
        "errors": problems[:10], "error_count": len(problems), "load_average_1m": round(os.getloadavg()[0], 2),
        **{k: round(v, 3) if isinstance(v, float) else v for k, v in outcome.extra.items()},
    }
    client.runs.append(run)
    return run


def summarize(client: Client, files: int) -> dict:
    runs = client.runs
    requests: dict[str, int] = {}
    for run in runs:
        for kind, n in run["requests"].items():
            requests[kind] = max(requests.get(kind, 0), n)
    http = [sum(run["requests"].values()) for run in runs]
    out = {
        "source": client.source, "command": " ".join(client.args).replace(str(REPO), "."),
        "wall_s": round(statistics.median(r["wall_s"] for r in runs), 3),
        "mb_per_s": round(statistics.median(r["mb_per_s"] for r in runs), 1),
        "client_peak_rss_mib": max(r["client_peak_rss_mib"] for r in runs),
        "client_cpu_s": round(statistics.median(r["client_cpu_s"] for r in runs), 2),
        "server_peak_rss_mib": max(r["server_peak_rss_mib"] for r in runs),
        "server_cpu_s": round(statistics.median(r["server_cpu_s"] for r in runs), 2),
        # Requests of the median run by kind (the same in every run for these clients; the largest shown).
        "requests": requests, "requests_per_file": round(statistics.median(http) / files, 2),
        "errors": sum(r["error_count"] for r in runs), "runs": runs,
    }
    if "call_s" in runs[0]:
        out["call_s"] = round(statistics.median(r["call_s"] for r in runs), 3)
        out["import_s"] = round(statistics.median(r["import_s"] for r in runs), 3)
    if client.source == "portal":
        audit: dict[str, int] = {}
        for run in runs:
            for action, n in run["audit_events"].items():
                audit[action] = max(audit.get(action, 0), n)
        out["audit_events"] = audit  # by action, the most of any run
        recorded = [sum(r["download_records"].values()) for r in runs]
        served = [sum(n for k, n in r["requests"].items() if k.startswith(("resolve", "link"))) for r in runs]
        out["every_request_recorded"] = recorded == served
    return out


def run(profile: Profile, args, cleanup: Cleanup) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-hub-"))
    cleanup.push(f"remove {tmp}", lambda: shutil.rmtree(tmp, ignore_errors=True))
    for sub in ("media", "var", "source", "work", "home"):
        (tmp / sub).mkdir()
    work = tmp / "work"
    db_name = f"bench_hub_{os.getpid()}"
    db_url = urllib.parse.urlsplit(args.admin_db_url)._replace(path=f"/{db_name}").geturl()
    create_database(args.admin_db_url, db_name, cleanup)
    port, port_nginx = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    env = portal_env(tmp=tmp, db_url=db_url, base_url=base, secret=secrets.token_urlsafe(64))
    # The README's deployment: gunicorn.conf.py's defaults, set explicitly so the environment cannot change them.
    env.update({"SOURCE_ROOTS": str(tmp / "source"), "GUNICORN_THREADS": str(args.threads), "WEB_CONCURRENCY": str(args.workers),
                "PYTHONPATH": str(REPO)})

    layout = release_layout(profile.files, profile.total)
    log(f"writing {len(layout)} files, {profile.total / 2**20:.0f} MiB of random bytes, in {tmp}")
    expected = write_release(tmp / "source", layout)
    log("migrating a fresh PostgreSQL database, publishing the version, granting it, issuing a read token")
    manage(env, "migrate", "--noinput")
    setup = subprocess.run([str(VENV_PYTHON), __file__, "--setup", str(tmp / "source")], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=600)
    if setup.returncode != 0:
        raise RuntimeError(f"set-up failed:\n{setup.stderr[-3000:]}")
    portal = json.loads(setup.stdout.strip().splitlines()[-1])
    token = portal["token"]
    shutil.rmtree(tmp / "source")  # the stored objects are what every path serves
    media = tmp / "media"
    # The floors serve the same stored objects under the version's paths: hard links, no copy.
    for path, key in portal["storage_keys"].items():
        (media / "tree" / path).parent.mkdir(parents=True, exist_ok=True)
        os.link(media / key, media / "tree" / path)
    for path in expected:  # every path reads the page cache, not the disk
        with open(media / "tree" / path, "rb") as f:
            while f.read(16 * 2**20):
                pass

    access_log = tmp / "access.log"
    access_log.touch()
    log(f"starting gunicorn ({args.workers} gthread workers x {args.threads} threads, access log on) and nginx")
    web = start_gunicorn(name="gunicorn", env=env, port=port, workers=args.workers, tmp=tmp, cleanup=cleanup,
                         access_log=str(access_log))
    nginx = start_nginx(port=port_nginx, upstream=port, floor=free_port(), media=media, tmp=tmp, cleanup=cleanup)

    lists_env = client_env(tmp / "home")
    version_base = f"{base}/resources/{DATASET}/versions/{VERSION}"
    urls, aria2_urls = tmp / "urls.txt", tmp / "urls.aria2.txt"
    list_times = {"urls.txt": [fetch_list(f"{version_base}/urls.txt", token, urls, lists_env)],
                  "urls.txt?client=aria2": [fetch_list(f"{version_base}/urls.txt?client=aria2", token, aria2_urls, lists_env)]}
    links = urls.read_text().split()
    linked = sorted(urllib.parse.unquote(urllib.parse.urlsplit(u).path).split("/", 3)[3] for u in links)
    if linked != sorted(expected):
        raise RuntimeError(f"urls.txt lists {len(linked)} files, not the version's {len(expected)}")
    static = f"http://127.0.0.1:{port_nginx}/static-files/tree"
    static_urls, static_aria2 = tmp / "static-urls.txt", tmp / "static-urls.aria2.txt"
    static_urls.write_text("".join(f"{static}/{p}\n" for p in expected))
    static_aria2.write_text("".join(f"{static}/{p}\n  out={p}\n  checksum=sha-256={d}\n" for p, d in expected.items()))
    port_hub_static = free_port()
    hub_static = start_hub_static(port=port_hub_static, base=base, token=token, revision=portal["revision"], digests=expected,
                                  files=media / "tree", tmp=tmp, env=lists_env, cleanup=cleanup)
    hub_static_base = f"http://127.0.0.1:{port_hub_static}"

    hub_env = client_env(tmp / "home", endpoint=base, token=token)
    wget = ["wget", "-q", "--no-proxy", "-c", "-x", "-nH", "--cut-dirs=2", "-i"]
    aria2 = ["aria2c", "-q", "-c", "-x", "8", "-j", str(args.max_workers), "-i"]
    portal_roots, nginx_roots = [web.pid], [nginx.pid]
    snapshot = [args.client_python, "-c", SNAPSHOT, DATASET, "{out}", str(args.max_workers)]
    clients = [
        Client("snapshot_download", "portal", snapshot, hub_env, portal_roots, db_name, hub_endpoint=base),
        Client("wget -i urls.txt", "portal", wget + [str(urls)], lists_env, portal_roots, db_name),
        Client("aria2c -j 8", "portal", aria2 + [str(aria2_urls)], lists_env, portal_roots, db_name),
        Client("wget -i (nginx static)", "floor", wget + [str(static_urls)], lists_env, nginx_roots, None),
        Client("aria2c -j 8 (nginx static)", "floor", aria2 + [str(static_aria2)], lists_env, nginx_roots, None),
        # The same call and client settings against the static Hub: the client's own floor on this machine.
        Client(SNAPSHOT_FLOOR, "floor", snapshot, hub_env, [hub_static.pid], None, hub_endpoint=hub_static_base),
        Client("cp -r (local disk)", "floor", ["cp", "-r", f"{media / 'tree'}/.", "{out}"], lists_env, [], None),
    ]
    # snapshot_download's fresh cache: a new HF_HOME for every run.
    homes = iter(range(10**6))

    def fresh_home(client: Client) -> None:
        if client.hub_endpoint:
            home = tmp / "home" / f"node-{next(homes)}"
            home.mkdir()
            client.env = client_env(home, endpoint=client.hub_endpoint, token=token)

    timeout = max(120.0, profile.total / 2**20)  # a client slower than 1 MiB/s has failed
    log("warm-up: each portal client once (every gunicorn thread has served, imports are cached)")
    for client in clients[:3]:
        fresh_home(client)
        warm = measure(client, work=work, expected=expected, total=profile.total, access_log=access_log, db_url=db_url, timeout=timeout)
        client.runs.clear()
        if warm["error_count"]:
            raise RuntimeError(f"{client.name} failed in the warm-up: {warm['errors'][:3]}")
    for repeat in range(profile.repeats):
        log(f"repeat {repeat + 1} of {profile.repeats}")
        list_times["urls.txt"].append(fetch_list(f"{version_base}/urls.txt", token, urls, lists_env))
        list_times["urls.txt?client=aria2"].append(fetch_list(f"{version_base}/urls.txt?client=aria2", token, aria2_urls, lists_env))
        for client in clients:  # clients take turns, so drift in the machine's load hits them alike
            fresh_home(client)
            r = measure(client, work=work, expected=expected, total=profile.total, access_log=access_log, db_url=db_url, timeout=timeout)
            log(f"  {client.name:<28} {r['wall_s']:7.2f} s {r['mb_per_s']:8.1f} MB/s  errors {r['error_count']}")

    results = {c.name: summarize(c, len(expected)) for c in clients}
    ours, wget_r, aria_r = results["snapshot_download"], results["wget -i urls.txt"], results["aria2c -j 8"]
    for name, r in results.items():
        r["throughput_vs_wget"] = round(r["mb_per_s"] / wget_r["mb_per_s"], 3)
    ours["throughput_vs_aria2c"] = round(ours["mb_per_s"] / aria_r["mb_per_s"], 3)
    # What the portal leaves of the client's floor (the same snapshot_download against the static Hub).
    ours["throughput_vs_client_floor"] = round(ours["mb_per_s"] / results[SNAPSHOT_FLOOR]["mb_per_s"], 3)
    # The call alone (no interpreter start, no import), against wget's whole process.
    ours["call_throughput_vs_wget"] = round(wget_r["wall_s"] / ours["call_s"], 3)
    sizes = sorted(size for _, size in layout)
    cpuinfo = Path("/proc/cpuinfo").read_text()
    flags = set(next((ln.split(":", 1)[1].split() for ln in cpuinfo.splitlines() if ln.startswith("flags")), []))
    versions = {tool: (subprocess.run([tool, "--version"], capture_output=True, text=True).stdout.splitlines() or ["?"])[0]
                for tool in ("wget", "aria2c", "cp")}
    total_errors = sum(r["errors"] for r in results.values())
    return {
        "benchmark": "hub",
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "mode": None,  # set by main()
        "machine": {**machine_info(), "cpu_flags": sorted(flags & SIMD_FLAGS), "huggingface_hub": ours["runs"][0].get("version"),
                    "wget": versions["wget"], "aria2c": versions["aria2c"], "cp": versions["cp"]},
        "setup": {
            "dataset": DATASET, "version": VERSION, "revision": portal["revision"], "files": len(layout), "bytes": profile.total,
            "configs": len(CONFIGS), "file_bytes": {"min": sizes[0], "median": int(statistics.median(sizes)), "max": sizes[-1]},
            "storage": "local (MEDIA_ROOT), page cache warm", "gunicorn_workers": args.workers, "gunicorn_threads": args.threads,
            "gunicorn_worker_class": "gthread", "gunicorn_access_log": "on (a file), as in production; counts the requests",
            "max_workers": args.max_workers, "repeats": profile.repeats,
            "throughput_unit": "MB/s = 1e6 bytes/s of files over the client process's wall time (start to exit)",
            "rss": "client: VmHWM of the client process, read every 10 ms until it exits; server: summed RSS of the server process tree, sampled every 50 ms",
            "server_cpu": "gunicorn master and workers plus the PostgreSQL backends of the bench database (portal); nginx (floors)",
            "list_fetch_s": {k: round(statistics.median(v), 3) for k, v in list_times.items()},
        },
        "clients": results,
        "goals": {f"snapshot_download >= {GOAL}x wget -i throughput": ours["throughput_vs_wget"] >= GOAL,
                  "every file's sha256 matches (all clients, all runs)": total_errors == 0,
                  "every portal request recorded (DownloadEvent = resolve and link requests in the access log)":
                      all(r.get("every_request_recorded", True) for r in results.values())},
    }


def markdown(report: dict) -> str:
    s, m = report["setup"], report["machine"]
    load = m.get("load_average_1m", {})
    rows = [f"{s['files']} files, {s['bytes'] / 2**20:.0f} MiB (median {s['file_bytes']['median'] / 2**20:.2f} MiB, "
            f"largest {s['file_bytes']['max'] / 2**20:.1f} MiB); gunicorn {s['gunicorn_workers']} x {s['gunicorn_threads']} gthread; "
            f"{m['cpu']}, {m['cores']} cores ({', '.join(m['cpu_flags'])}), load average {load.get('start')} -> {load.get('end')}; "
            f"{report['mode']} run, {report['timestamp']}, medians of {s['repeats']}.", "",
            "| client | from | wall s | MB/s | × wget | HTTP requests per file (HEAD / GET / listing) | client peak RSS MiB "
            "| server peak RSS MiB | client CPU s | server CPU s | sha256 errors |",
            "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for name, r in report["clients"].items():
        req = r["requests"]
        head = sum(n for k, n in req.items() if k.endswith(" HEAD"))
        get = sum(n for k, n in req.items() if k.startswith(("resolve GET", "link GET")))
        listing = sum(n for k, n in req.items() if k.startswith(("repo info", "tree", "paths-info")))
        per = f"{r['requests_per_file']:.2f} ({head} / {get} / {listing})" if r["source"] == "portal" else "n/a"
        rows.append(f"| {name} | {r['source']} | {r['wall_s']:.2f} | {r['mb_per_s']:.0f} | {r['throughput_vs_wget']:.2f} | {per} | "
                    f"{r['client_peak_rss_mib']:.0f} | {r['server_peak_rss_mib']:.0f} | {r['client_cpu_s']:.2f} | {r['server_cpu_s']:.2f} | {r['errors']} |")
    ours, floor = report["clients"]["snapshot_download"], report["clients"].get(SNAPSHOT_FLOOR)
    if floor:
        rows += ["", f"The client's floor: snapshot_download against the static Hub (nginx) reaches {floor['mb_per_s']:.0f} MB/s, "
                     f"{floor['throughput_vs_wget']:.2f}x wget -i through the portal, with {floor['client_cpu_s']:.2f} s of client CPU "
                     f"(the call alone {floor['call_s']:.2f} s); through the portal it reaches "
                     f"{ours['throughput_vs_client_floor']:.2f}x of that."]
    rows += ["", f"snapshot_download: the call alone {ours['call_s']:.2f} s (import {ours['import_s']:.2f} s), "
                 f"{ours['call_throughput_vs_wget']:.2f}x wget -i; {ours['throughput_vs_aria2c']:.2f}x aria2c's throughput. "
                 f"Fetching the lists: urls.txt {s['list_fetch_s']['urls.txt'] * 1e3:.0f} ms, "
                 f"?client=aria2 {s['list_fetch_s']['urls.txt?client=aria2'] * 1e3:.0f} ms (not in the wall times).",
             "Audit events written during one run (the most of any run): " + "; ".join(
                 f"{name}: {', '.join(f'{a} {n}' for a, n in sorted(r['audit_events'].items())) or 'none'}"
                 for name, r in report["clients"].items() if r["source"] == "portal") + ".", "", "Goals:"]
    rows += [f"- {'met' if ok else 'MISSED'}: {goal}" for goal, ok in report["goals"].items()]
    rows += ["", f"Run took {report.get('run_seconds', '?')} s."]
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 40 files, 32 MiB, 2 repeats, prints only")
    parser.add_argument("--files", type=int, help="files in the version, README.md included (default 200, quick 40)")
    parser.add_argument("--total-mib", type=int, help="their total size (default 400, quick 32)")
    parser.add_argument("--repeats", type=int, help="timed runs of every client (default 5, quick 2)")
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", 2 * (os.cpu_count() or 1) + 1)),
                        help="gunicorn workers (default: gunicorn.conf.py's, 2 x cores + 1)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("GUNICORN_THREADS", 8)),
                        help="threads per gunicorn worker (default: gunicorn.conf.py's, 8)")
    parser.add_argument("--max-workers", type=int, default=8, help="snapshot_download's max_workers and aria2c's -j (default 8)")
    parser.add_argument("--client-python", default=os.environ.get("HUB_CLIENT_PYTHON") or str(VENV_PYTHON),
                        help="the interpreter of the huggingface_hub client (env HUB_CLIENT_PYTHON; default the project's)")
    parser.add_argument("--out", help="JSON results file (default: bench/results/hub.json; none with --quick)")
    parser.add_argument("--admin-db-url", default=os.environ.get("BENCH_ADMIN_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
                        help="PostgreSQL URL allowed to CREATE/DROP DATABASE (env BENCH_ADMIN_DATABASE_URL)")
    parser.add_argument("--setup", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.setup:
        print(json.dumps(portal_setup(args.setup)))
        return 0
    profile = QUICK if args.quick else FULL
    overrides = {"files": args.files, "total": args.total_mib and args.total_mib * 2**20, "repeats": args.repeats}
    profile = replace(profile, **{k: v for k, v in overrides.items() if v})
    if profile.files < 2 or profile.total < profile.files * 8192 or profile.repeats < 1:
        sys.exit("Give at least 2 files, 8 KiB per file (--total-mib) and 1 repeat.")
    missing = [tool for tool in ("curl", "wget", "aria2c", "cp") if not shutil.which(tool)]
    missing += [] if (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()) else ["nginx"]
    missing += [] if shutil.which(args.client_python) else [f"{args.client_python} (--client-python)"]
    if missing:
        sys.exit(f"missing: {', '.join(missing)}; install them (apt-get install wget aria2 nginx curl) and run again.")
    out = Path(args.out).resolve() if args.out else (None if args.quick else REPO / "bench" / "results" / "hub.json")

    cleanup = Cleanup()

    def on_signal(signum, frame):
        for other in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(other, signal.SIG_IGN)  # a second signal must not interrupt the clean-up
        raise KeyboardInterrupt(f"signal {signum}")

    def on_alarm(signum, frame):
        raise Deadline(f"the run passed its {profile.deadline_s}s limit")

    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, on_signal)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(profile.deadline_s)
    # One client process per file would not run out of descriptors, but aria2c -x 8 -j 8 opens 64 sockets.
    soft, hard = rlimits.getrlimit(rlimits.RLIMIT_NOFILE)
    rlimits.setrlimit(rlimits.RLIMIT_NOFILE, (min(max(soft, 4096), hard), hard))
    started, load_before = time.monotonic(), os.getloadavg()
    try:
        report = run(profile, args, cleanup)
        report["mode"] = "quick" if args.quick else "full"
    except (Deadline, KeyboardInterrupt) as error:
        print(f"stopped: {error}", file=sys.stderr)
        return 1
    finally:
        signal.alarm(0)
        cleanup.run()
    from bench.release import write_report

    write_report(report, out, started=started, load_before=load_before, markdown=markdown, repo=REPO)
    return 0


if __name__ == "__main__":
    # Run under the project's virtualenv (psycopg, gunicorn, Django) whatever python started us.
    if VENV_PYTHON.exists() and Path(sys.prefix).resolve() != (REPO / ".venv").resolve():
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), __file__, *sys.argv[1:]])
    sys.exit(main())
