#!/usr/bin/env python3
"""Download benchmark: signed-link downloads against nginx serving the same file statically.

One run, one machine, loopback only, one client (curl; wrk or a Python client for
request rates). Paths compared, all on the same published file:

  nginx static     nginx sends the stored object directly: the baseline (the limit)
  gunicorn         `gunicorn -c gunicorn.conf.py portal.wsgi` (gthread workers) redeems the link and sends
                   the bytes itself (FileResponse -> sendfile)
  nginx+X-Accel    nginx proxies to gunicorn (DOWNLOAD_ACCEL_REDIRECT=/_protected/),
                   which authorizes and answers X-Accel-Redirect; nginx sends the bytes
  floor            the same proxying to floor_app.py, a WSGI app under the same gunicorn that
                   authorizes nothing: what any Python backend behind nginx costs here

plus signed-link redemptions per second against a no-op Django view on the same
gunicorn server (bench/downloads/bench_urls.py adds it; nothing in portal/ does).

Everything it creates (a PostgreSQL database, a temp dir with the file, MEDIA_ROOT
and PORTAL_VAR_DIR, the servers) is removed on exit, also on Ctrl-C and on timeout.

    python bench/downloads/run.py            # full run (1 GiB), writes bench/results/downloads.json
    python bench/downloads/run.py --quick    # smoke run (64 MiB), prints only
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import platform
import random
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
GUNICORN = REPO / ".venv" / "bin" / "gunicorn"
RESOURCE = "bigscience/roots-udhr"
USER = "researcher"
FLOOR = "nginx+X-Accel, no authorization (floor)"
GOALS = {"x-accel_vs_nginx": 0.95, "gunicorn_vs_nginx": 0.7, "redemption_vs_noop": 0.5, "errors": 0}
GB = 1e9  # throughput is in decimal GB/s (10^9 bytes per second)


@dataclass(frozen=True)
class Profile:
    size: int
    single_repeats: int
    parallel: int
    parallel_repeats: int
    ttfb_requests: int
    ttfb_bytes: int
    rate_rounds: int
    rate_seconds: float
    rate_connections: int
    workers: int
    deadline_s: int


FULL = Profile(size=2**30, single_repeats=5, parallel=32, parallel_repeats=3, ttfb_requests=200, ttfb_bytes=4096,
               rate_rounds=3, rate_seconds=8, rate_connections=8, workers=4, deadline_s=570)
QUICK = Profile(size=64 * 2**20, single_repeats=2, parallel=32, parallel_repeats=1, ttfb_requests=40, ttfb_bytes=4096,
                rate_rounds=1, rate_seconds=2, rate_connections=8, workers=4, deadline_s=240)


# --- Processes and clean-up --------------------------------------------------------------------


class Cleanup:
    """Everything this run started or created, undone in reverse order exactly once."""

    def __init__(self):
        self._undo: list[tuple[str, callable]] = []
        self._lock = threading.Lock()

    def push(self, what: str, fn) -> None:
        self._undo.append((what, fn))

    def run(self) -> None:
        with self._lock:
            while self._undo:
                what, fn = self._undo.pop()
                try:
                    fn()
                except Exception as error:  # keep undoing the rest
                    print(f"clean-up: {what} failed: {error}", file=sys.stderr)


def stop_process(proc: subprocess.Popen, *, sig=signal.SIGTERM, grace: float = 5.0) -> None:
    """Stop a server we started in its own session (its pgid is its pid), children included."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers (workers) in the same group
    except ProcessLookupError:
        pass
    proc.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{tail(log)}")
        try:
            opener.open(url, timeout=2).read()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s:\n{tail(log)}")


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- Server memory and CPU -------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _proc_table() -> list[tuple[int, int, str]]:
    """(pid, ppid, title) of every process."""
    table = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                title = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        table.append((int(entry), ppid, title))
    return table


def process_tree(roots: list[int], table=None) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid, _ in table or _proc_table():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
    return total


def cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime
    except (OSError, IndexError, ValueError):
        return None


class ServerMeter:
    """Samples server processes in a thread while a measurement runs.

    peak: the largest summed RSS of the servers' process trees (masters and workers).
    cpu: CPU seconds those trees used meanwhile, plus the PostgreSQL backends serving
    our database (matched by their process title), which do part of each redemption.
    """

    def __init__(self, roots: list[int], *, db_name: str | None = None, interval: float = 0.05):
        self.roots, self.db_name, self.interval = roots, db_name, interval
        self.peak, self._first, self._last = 0, {}, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _pids(self) -> tuple[list[int], list[int]]:
        table = _proc_table()
        servers = process_tree(self.roots, table)
        backends = [pid for pid, _, title in table if self.db_name and title.startswith("postgres:") and f" {self.db_name} " in title]
        return servers, backends

    def _take(self, servers: list[int], backends: list[int]) -> None:
        self.peak = max(self.peak, rss_bytes(servers))
        for pid in servers + backends:
            used = cpu_seconds(pid)
            if used is not None:
                self._first.setdefault(pid, used)
                self._last[pid] = used

    def _sample(self) -> None:
        (servers, backends), refreshed = self._pids(), time.monotonic()
        while True:
            self._take(servers, backends)
            if self._stop.wait(self.interval):
                return
            if time.monotonic() - refreshed > 0.5:  # workers and database connections may be replaced
                (servers, backends), refreshed = self._pids(), time.monotonic()

    @property
    def cpu(self) -> float:
        return sum(self._last[pid] - self._first[pid] for pid in self._last)

    def __enter__(self):
        self._take(*self._pids())
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._take(*self._pids())


# --- Set-up ---------------------------------------------------------------------------------------


def make_file(path: Path, size: int) -> str:
    """Random bytes (incompressible, nothing to dedupe); returns the sha256."""
    digest = hashlib.sha256()
    chunk = 8 * 2**20
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(chunk, left))
            digest.update(block)
            f.write(block)
            left -= len(block)
    return digest.hexdigest()


def manage(env: dict, *args: str, timeout: float = 300) -> str:
    result = subprocess.run([str(VENV_PYTHON), "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result.stdout


def create_database(admin_url: str, name: str, cleanup: Cleanup) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop():
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    cleanup.push(f"drop database {name}", drop)


def count_downloads(db_url: str) -> int:
    import psycopg

    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT count(*) FROM datasets_app_downloadevent").fetchone()[0]


def portal_env(*, tmp: Path, db_url: str, base_url: str, secret: str, accel: str = "", settings: str = "portal.settings") -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("S3_", "CELERY_", "EMAIL_", "CACHE_", "DOWNLOAD_", "DJANGO_")) and k.lower() not in
           ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    env.update({
        "DJANGO_SETTINGS_MODULE": settings,
        "DATABASE_URL": db_url,
        "PORTAL_VAR_DIR": str(tmp / "var"),
        "MEDIA_ROOT": str(tmp / "media"),
        "DEBUG": "0",
        "SECRET_KEY": secret,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "0",
        "PORTAL_BASE_URL": base_url,
        "DOWNLOAD_ACCEL_REDIRECT": accel,
        "LOG_LEVEL": "WARNING",
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    return env


def start_gunicorn(*, name: str, env: dict, port: int, workers: int, tmp: Path, cleanup: Cleanup,
                   app: str = "portal.wsgi", probe: str = "/", access_log: str = "/dev/null") -> subprocess.Popen:
    log = tmp / f"{name}.log"
    # The production configuration (gunicorn.conf.py: gthread workers, sendfile), only
    # the worker count and the port set here; the access log is off as for nginx, unless
    # a benchmark counts requests from it (bench/hub).
    cmd = [str(GUNICORN), "-c", str(REPO / "gunicorn.conf.py"), app, "--workers", str(workers),
           "--bind", f"127.0.0.1:{port}", "--chdir", str(REPO), "--access-logfile", access_log]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    # SIGINT is gunicorn's quick shutdown (SIGTERM waits for requests up to 30 s).
    cleanup.push(f"stop {name}", lambda: stop_process(proc, sig=signal.SIGINT))
    wait_http(f"http://127.0.0.1:{port}{probe}", proc, log)
    return proc


# The start of every nginx.conf the benchmarks write (this one, bench/hub's static Hub): run in the
# foreground from a prefix in the temp dir, static files by sendfile, no access log.
NGINX_PROLOGUE = """\
{user}worker_processes auto;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
daemon off;
events {{ worker_connections 1024; }}
http {{
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {tmp}/nginx-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
"""

NGINX_CONF = NGINX_PROLOGUE + """\
    include {mime_types};
    # Kept-alive upstream connections: no TCP handshake with gunicorn per request.
    upstream portal {{ server 127.0.0.1:{upstream}; keepalive 32; }}
    upstream floor {{ server 127.0.0.1:{floor}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{port};
        # The baseline: the same stored object, no authorization.
        location /static-files/ {{ alias {media}/; }}
        # As in README.md's deployment section.
        location /_protected/ {{ internal; alias {media}/; }}
        # The floor: the same proxying to a WSGI app that authorizes nothing (floor_app.py).
        location /floor/ {{
            proxy_pass http://floor;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }}
        location / {{
            proxy_pass http://portal;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
}}
"""


def start_nginx(*, port: int, upstream: int, floor: int, media: Path, tmp: Path, cleanup: Cleanup) -> subprocess.Popen:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    prefix = tmp / "nginx"
    prefix.mkdir()
    mime = Path("/etc/nginx/mime.types")
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(
        # Workers must read MEDIA_ROOT inside a 0700 temp dir.
        user="user root;\n" if os.geteuid() == 0 else "", tmp=prefix, port=port, upstream=upstream, floor=floor, media=media,
        mime_types=mime if mime.exists() else prefix / "mime.types",
    ))
    if not mime.exists():
        (prefix / "mime.types").write_text("types { application/octet-stream bin; }\n")
    log = prefix / "nginx-stderr.log"
    proc = subprocess.Popen([nginx, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "nginx-error.log")],
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    cleanup.push("stop nginx", lambda: stop_process(proc, sig=signal.SIGTERM))
    wait_http(f"http://127.0.0.1:{port}/static-files/", proc, prefix / "nginx-error.log")
    return proc


# --- Client: curl ---------------------------------------------------------------------------------

CURL_FORMAT = r"%{http_code} %{size_download} %{time_starttransfer} %{time_total}\n"


def curl_args(*extra: str) -> list[str]:
    return ["curl", "-sS", "--noproxy", "*", "--max-time", "120", "-o", "/dev/null", "-w", CURL_FORMAT, *extra]


@dataclass
class Fetch:
    status: int
    size: int
    ttfb: float
    total: float


def parse_fetch(line: str) -> Fetch:
    code, size, ttfb, total = line.split()
    return Fetch(int(code), int(size), float(ttfb), float(total))


def curl_one(url: str, byte_range: str | None = None) -> Fetch:
    args = curl_args(*(["-r", byte_range] if byte_range else []), url)
    result = subprocess.run(args, capture_output=True, text=True, timeout=150)
    try:
        return parse_fetch(result.stdout)
    except ValueError:
        return Fetch(0, 0, math.nan, math.nan)


def curl_parallel(url: str, ranges: list[tuple[int, int]]) -> tuple[float, list[Fetch]]:
    """Start one curl per range, hold them at a barrier (each waits for its URL on stdin), release
    them together; returns the wall time from release to the last exit, and each result."""
    procs = [subprocess.Popen(curl_args("-r", f"{a}-{b}", "-K", "-"), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True) for a, b in ranges]
    try:
        time.sleep(0.5)  # every curl has started and blocks reading its config from stdin
        start = time.perf_counter()
        for proc in procs:
            proc.stdin.write(f'url = "{url}"\n')
            proc.stdin.close()
        outputs = [proc.stdout.read() for proc in procs]
        for proc in procs:
            proc.wait()
        wall = time.perf_counter() - start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    fetches = []
    for out in outputs:
        try:
            fetches.append(parse_fetch(out))
        except ValueError:
            fetches.append(Fetch(0, 0, math.nan, math.nan))
    return wall, fetches


def curl_bytes(url: str, start: int, end: int) -> bytes:
    result = subprocess.run(["curl", "-sS", "--noproxy", "*", "--max-time", "60", "-r", f"{start}-{end}", url],
                            capture_output=True, timeout=90)
    return result.stdout


# --- Client: request rate (wrk, else a Python client) ---------------------------------------------


@dataclass
class Rate:
    requests: int
    seconds: float
    errors: int
    p50_ms: float | None = None
    p99_ms: float | None = None

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(number) * _UNITS[unit]


def wrk_rate(url: str, *, seconds: float, connections: int, headers: dict) -> Rate:
    args = ["wrk", "-t", "2", "-c", str(connections), "-d", f"{max(1, round(seconds))}s", "--latency"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    out = subprocess.run(args + [url], capture_output=True, text=True, timeout=seconds + 60).stdout
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s)", out)
    if not done:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    requests = int(done.group(1))
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return Rate(requests - (int(non2xx.group(1)) if non2xx else 0), _ms(done.group(2) + done.group(3)) / 1e3, errors,
                _ms(p50.group(1)) if p50 else None, _ms(p99.group(1)) if p99 else None)


def python_rate(url: str, *, seconds: float, connections: int, headers: dict) -> Rate:
    """Fallback when wrk is not installed: threads, one new connection per request (as gunicorn's sync workers close them)."""
    import http.client

    parts = urllib.parse.urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    stop_at = time.perf_counter() + seconds
    counts, latencies, lock = {"ok": 0, "err": 0}, [], threading.Lock()

    def worker():
        ok = err = 0
        mine = []
        while time.perf_counter() < stop_at:
            began = time.perf_counter()
            try:
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
                conn.request("GET", target, headers=headers)
                response = conn.getresponse()
                response.read()
                conn.close()
                ok, err = (ok + 1, err) if 200 <= response.status < 300 else (ok, err + 1)
                mine.append((time.perf_counter() - began) * 1e3)
            except OSError:
                err += 1
        with lock:
            counts["ok"] += ok
            counts["err"] += err
            latencies.extend(mine)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latencies.sort()
    return Rate(counts["ok"], time.perf_counter() - started, counts["err"],
                percentile(latencies, 50) if latencies else None, percentile(latencies, 99) if latencies else None)


# --- Statistics -----------------------------------------------------------------------------------


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest rank: the smallest value with at least p% of the values at or below it."""
    return sorted_values[max(0, math.ceil(p / 100 * len(sorted_values)) - 1)]


@dataclass
class PathResult:
    name: str
    url: str
    roots: list[int]  # server processes whose trees serve this path (for RSS and CPU)
    single: list[float] = field(default_factory=list)  # GB/s per repeat
    parallel: list[float] = field(default_factory=list)  # aggregate GB/s per repeat
    ttfb: list[float] = field(default_factory=list)  # seconds
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    # Per scenario ("1x", "32x", "ttfb"): peak summed RSS, server CPU seconds, and bytes or requests served.
    peak_rss: dict = field(default_factory=dict)
    cpu: dict = field(default_factory=dict)
    served: dict = field(default_factory=dict)

    def account(self, scenario: str, meter: "ServerMeter", served: int) -> None:
        self.peak_rss[scenario] = max(self.peak_rss.get(scenario, 0), meter.peak)
        self.cpu[scenario] = self.cpu.get(scenario, 0.0) + meter.cpu
        self.served[scenario] = self.served.get(scenario, 0) + served

    def _cpu_per(self, scenario: str, unit: float, digits: int):
        return round(self.cpu[scenario] / (self.served[scenario] / unit), digits) if self.served.get(scenario) else None

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what)

    def summary(self, baseline: "PathResult | None") -> dict:
        ttfb = sorted(self.ttfb)
        out = {
            "single_gbps": round(statistics.median(self.single), 3),
            "single_gbps_runs": [round(v, 3) for v in self.single],
            "parallel_gbps": round(statistics.median(self.parallel), 3),
            "parallel_gbps_runs": [round(v, 3) for v in self.parallel],
            "ttfb_ms": {"p50": round(percentile(ttfb, 50) * 1e3, 2), "p99": round(percentile(ttfb, 99) * 1e3, 2),
                        "min": round(ttfb[0] * 1e3, 2), "max": round(ttfb[-1] * 1e3, 2), "n": len(ttfb)},
            "errors": self.errors,
            "error_samples": self.error_samples,
            "peak_rss_mib": round(max(self.peak_rss.values()) / 2**20, 1),
            "peak_rss_mib_by_scenario": {k: round(v / 2**20, 1) for k, v in self.peak_rss.items()},
            # CPU of the server processes (and, for signed links, PostgreSQL backends): clock-tick (10 ms) resolution.
            "server_cpu_s_per_gb": {"1x": self._cpu_per("1x", GB, 3), "32x": self._cpu_per("32x", GB, 3)},
            "server_cpu_ms_per_ttfb_request": round(self._cpu_per("ttfb", 1, 6) * 1e3, 2) if self.served.get("ttfb") else None,
        }
        if baseline is not None:
            out["single_ratio"] = round(out["single_gbps"] / statistics.median(baseline.single), 3)
            out["parallel_ratio"] = round(out["parallel_gbps"] / statistics.median(baseline.parallel), 3)
        return out


# --- Measurements -----------------------------------------------------------------------------------


def check_content(path: PathResult, data_file: Path, size: int) -> None:
    """A few ranges compared byte for byte with the file: the start, the end, odd offsets, a slice boundary."""
    slice_len = size // 32
    probes = [(0, 4095), (size - 4096, size - 1), (12345, 12345 + 65535), (slice_len - 100, slice_len + 99),
              (size // 2 + 7, size // 2 + 7 + 1_000_000)]
    with open(data_file, "rb") as f:
        for start, end in probes:
            f.seek(start)
            expected = f.read(end - start + 1)
            got = curl_bytes(path.url, start, end)
            if got != expected:
                path.error(f"content of bytes {start}-{end}: got {len(got)} bytes, not the file's")


def measure_single(path: PathResult, size: int) -> int:
    fetch = curl_one(path.url)
    if fetch.status != 200 or fetch.size != size:
        path.error(f"full download: HTTP {fetch.status}, {fetch.size} bytes")
    if fetch.size:
        path.single.append(fetch.size / fetch.total / GB)
    return fetch.size


def measure_parallel(path: PathResult, size: int, n: int) -> int:
    bounds = [i * size // n for i in range(n + 1)]
    ranges = [(bounds[i], bounds[i + 1] - 1) for i in range(n)]
    wall, fetches = curl_parallel(path.url, ranges)
    received = 0
    for (a, b), fetch in zip(ranges, fetches):
        received += fetch.size
        if fetch.status != 206 or fetch.size != b - a + 1:
            path.error(f"range {a}-{b}: HTTP {fetch.status}, {fetch.size} bytes")
    path.parallel.append(received / wall / GB)
    return received


def measure_ttfb(path: PathResult, offsets: list[int], length: int) -> None:
    for start in offsets:
        fetch = curl_one(path.url, f"{start}-{start + length - 1}")
        if fetch.status != 206 or fetch.size != length:
            path.error(f"ttfb range at {start}: HTTP {fetch.status}, {fetch.size} bytes")
        if not math.isnan(fetch.ttfb):
            path.ttfb.append(fetch.ttfb)


def machine_info() -> dict:
    def first(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return None

    cpu = mem = None
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
        mem = round(int(next(line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal"))) / 2**20, 1)
    except (OSError, StopIteration):
        pass
    nginx = subprocess.run([shutil.which("nginx") or "/usr/sbin/nginx", "-v"], capture_output=True, text=True).stderr.strip()
    versions = subprocess.run([str(VENV_PYTHON), "-c", "import django, gunicorn, psycopg; print(django.__version__, gunicorn.__version__, psycopg.__version__)"],
                              capture_output=True, text=True).stdout.split() + [None] * 3
    wrk = first(["sh", "-c", "wrk --version 2>&1"]) if shutil.which("wrk") else None
    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem, "kernel": platform.release(),
        "os": first(["sh", "-c", ". /etc/os-release; echo $PRETTY_NAME"]), "python": platform.python_version(),
        "django": versions[0], "gunicorn": versions[1], "psycopg": versions[2],
        "postgresql": first(["psql", "--version"]), "nginx": nginx.split("/")[-1] if nginx else None,
        "curl": (first(["curl", "--version"]) or " ?").split()[1], "wrk": wrk.split(" [")[0] if wrk else None,
    }


# --- The run ----------------------------------------------------------------------------------------


class Deadline(Exception):
    pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 64 MiB file, fewer repeats, prints only")
    parser.add_argument("--out", help="JSON results file (default: bench/results/downloads.json; none with --quick)")
    parser.add_argument("--size-mib", type=int, help="file size (default 1024, quick 64)")
    parser.add_argument("--workers", type=int, help="gunicorn workers (default 4), gthread as in gunicorn.conf.py")
    parser.add_argument("--single-repeats", type=int, help="full downloads per path (default 5, quick 2)")
    parser.add_argument("--parallel-repeats", type=int, help="rounds of 32 ranged downloads per path (default 3, quick 1)")
    parser.add_argument("--admin-db-url", default=os.environ.get("BENCH_ADMIN_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
                        help="PostgreSQL URL allowed to CREATE/DROP DATABASE (env BENCH_ADMIN_DATABASE_URL)")
    args = parser.parse_args()
    profile = QUICK if args.quick else FULL
    overrides = {"size": args.size_mib and args.size_mib * 2**20, "workers": args.workers,
                 "single_repeats": args.single_repeats, "parallel_repeats": args.parallel_repeats}
    profile = replace(profile, **{k: v for k, v in overrides.items() if v})
    out = Path(args.out).resolve() if args.out else (None if args.quick else REPO / "bench" / "results" / "downloads.json")
    missing = [tool for tool in ("curl",) if not shutil.which(tool)] + ([] if GUNICORN.exists() else [str(GUNICORN)])
    if missing:
        sys.exit(f"missing: {', '.join(missing)}")

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
    started, load_before = time.monotonic(), os.getloadavg()
    try:
        report = run(profile, args.admin_db_url, cleanup)
        report["mode"] = "quick" if args.quick else "full"
        report["setup"]["overrides"] = {k: v for k, v in overrides.items() if v}
    except (Deadline, KeyboardInterrupt) as error:
        print(f"stopped: {error}", file=sys.stderr)
        return 1
    finally:
        signal.alarm(0)
        cleanup.run()
    from bench.release import write_report

    write_report(report, out, started=started, load_before=load_before, markdown=markdown, repo=REPO)
    return 0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(profile: Profile, admin_db_url: str, cleanup: Cleanup) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-downloads-"))
    cleanup.push(f"remove {tmp}", lambda: shutil.rmtree(tmp, ignore_errors=True))
    (tmp / "media").mkdir()
    (tmp / "var").mkdir()
    source = tmp / "source"
    source.mkdir()

    db_name = f"bench_downloads_{os.getpid()}"
    db_url = urllib.parse.urlsplit(admin_db_url)._replace(path=f"/{db_name}").geturl()
    create_database(admin_db_url, db_name, cleanup)
    port_plain, port_accel, port_nginx, port_rate = free_port(), free_port(), free_port(), free_port()
    secret = secrets.token_urlsafe(64)
    env_plain = portal_env(tmp=tmp, db_url=db_url, base_url=f"http://127.0.0.1:{port_plain}", secret=secret)

    log(f"generating {profile.size / 2**20:.0f} MiB of random bytes in {tmp}")
    file_name = f"bench-{profile.size // 2**20}MiB.bin"
    sha256 = make_file(source / file_name, profile.size)
    log("migrating a fresh PostgreSQL database, loading the demo, publishing, granting")
    manage(env_plain, "migrate", "--noinput")
    manage({**env_plain, "DEBUG": "1"}, "load_demo")  # the demo refuses a production profile; its data is what is measured
    version = "bench-v1"
    manage(env_plain, "publish_version", RESOURCE, version, str(source))
    manage(env_plain, "grant_access", RESOURCE, USER)
    link = manage(env_plain, "download_urls", RESOURCE, version, USER).strip().splitlines()[0]
    link_path = urllib.parse.urlsplit(link).path
    storage_key = f"objects/sha256/{sha256[:2]}/{sha256[2:4]}/{sha256}"
    stored = tmp / "media" / storage_key
    if not stored.exists() or stored.stat().st_size != profile.size:
        raise RuntimeError(f"published object not found at {stored}")
    (source / file_name).unlink()  # the stored object is the one every path serves
    with open(stored, "rb") as f:  # warm the page cache: every path reads memory, not disk
        while f.read(16 * 2**20):
            pass

    with ExitStack() as servers:
        phase = Cleanup()
        servers.callback(phase.run)
        log("starting gunicorn (plain), gunicorn (X-Accel) and nginx")
        plain = start_gunicorn(name="gunicorn-plain", env=env_plain, port=port_plain, workers=profile.workers, tmp=tmp, cleanup=phase)
        env_accel = portal_env(tmp=tmp, db_url=db_url, base_url=f"http://127.0.0.1:{port_nginx}", secret=secret, accel="/_protected/")
        accel = start_gunicorn(name="gunicorn-accel", env=env_accel, port=port_accel, workers=profile.workers, tmp=tmp, cleanup=phase)
        port_floor = free_port()
        env_floor = {**env_accel, "BENCH_FLOOR_REDIRECT": "/_protected/" + storage_key}
        floor = start_gunicorn(name="gunicorn-floor", env=env_floor, port=port_floor, workers=profile.workers, tmp=tmp,
                               cleanup=phase, app="bench.downloads.floor_app")
        nginx = start_nginx(port=port_nginx, upstream=port_accel, floor=port_floor, media=tmp / "media", tmp=tmp, cleanup=phase)

        paths = [
            PathResult("nginx static", f"http://127.0.0.1:{port_nginx}/static-files/{storage_key}", [nginx.pid]),
            PathResult("gunicorn", f"http://127.0.0.1:{port_plain}{link_path}", [plain.pid]),
            PathResult("nginx+X-Accel", f"http://127.0.0.1:{port_nginx}{link_path}", [nginx.pid, accel.pid]),
            PathResult(FLOOR, f"http://127.0.0.1:{port_nginx}/floor/{file_name}", [nginx.pid, floor.pid]),
        ]
        for path in paths:
            check_content(path, stored, profile.size)
            # Warm-up: every gunicorn thread has served a request (imported, connected to the
            # database, statement prepared), as on a server that has been up for a while.
            for _ in range(2):
                curl_parallel(path.url, [(0, 0)] * profile.parallel)

        def metered(path: PathResult) -> ServerMeter:
            return ServerMeter(path.roots, db_name=None if path.name in (paths[0].name, FLOOR) else db_name)

        # Paths take turns within each repeat, so drift in the machine's load hits them alike.
        log(f"single downloads x{profile.single_repeats}")
        for _ in range(profile.single_repeats):
            for path in paths:
                with metered(path) as meter:
                    received = measure_single(path, profile.size)
                path.account("1x", meter, received)
        log(f"{profile.parallel} concurrent ranged downloads x{profile.parallel_repeats}")
        for _ in range(profile.parallel_repeats):
            for path in paths:
                with metered(path) as meter:
                    received = measure_parallel(path, profile.size, profile.parallel)
                path.account("32x", meter, received)
        log(f"time to first byte, {profile.ttfb_requests} ranged requests of {profile.ttfb_bytes} bytes")
        rng = random.Random(1234)
        offsets = [rng.randrange(0, profile.size - profile.ttfb_bytes) for _ in range(profile.ttfb_requests)]
        batches = 4
        for i in range(batches):
            for path in paths:
                with metered(path) as meter:
                    measure_ttfb(path, offsets[i::batches], profile.ttfb_bytes)
                path.account("ttfb", meter, len(offsets[i::batches]))

    # Redemptions on a server of their own with the bench urlconf (noop/); the transfer servers are stopped.
    with ExitStack() as servers:
        phase = Cleanup()
        servers.callback(phase.run)
        env_rate = portal_env(tmp=tmp, db_url=db_url, base_url=f"http://127.0.0.1:{port_rate}", secret=secret,
                              settings="bench.downloads.bench_settings")
        rate_server = start_gunicorn(name="gunicorn-rate", env=env_rate, port=port_rate, workers=profile.workers, tmp=tmp, cleanup=phase)
        client = wrk_rate if shutil.which("wrk") else python_rate
        client_name = client.__name__.split("_")[0]
        headers = {"Range": "bytes=0-0"}  # the same request for both: one byte from the link, "ok" from noop
        noop_url, link_url = f"http://127.0.0.1:{port_rate}/noop/", f"http://127.0.0.1:{port_rate}{link_path}"
        log(f"request rates with {client_name}: no-op view vs signed link, {profile.rate_rounds} x {profile.rate_seconds}s each")
        client(noop_url, seconds=1, connections=profile.rate_connections, headers=headers)  # warm-up
        client(link_url, seconds=1, connections=profile.rate_connections, headers=headers)
        audited_before = count_downloads(db_url)
        runs: dict[str, list[tuple[Rate, float]]] = {"noop": [], "link": []}
        rate_rss = 0
        for _ in range(profile.rate_rounds):
            for kind, url in (("noop", noop_url), ("link", link_url)):
                with ServerMeter([rate_server.pid], db_name=db_name) as meter:
                    rate = client(url, seconds=profile.rate_seconds, connections=profile.rate_connections, headers=headers)
                runs[kind].append((rate, meter.cpu))
                rate_rss = max(rate_rss, meter.peak)
        time.sleep(0.5)  # requests in flight when the client stopped finish
        audited = count_downloads(db_url) - audited_before
    # What the periodic task does with them: seal the download records into the audit chain.
    started = time.perf_counter()
    sealed = manage(env_plain, "seal_downloads").strip()
    seal_seconds = time.perf_counter() - started
    verify = manage(env_plain, "verify_audit").strip()

    baseline = paths[0]
    results = {p.name: p.summary(None if p is baseline else baseline) for p in paths}

    def rate_json(kind):
        return [{"per_second": round(r.per_second, 1), "requests": r.requests, "errors": r.errors, "p50_ms": r.p50_ms,
                 "p99_ms": r.p99_ms, "server_cpu_ms_per_request": round(cpu / r.requests * 1e3, 3) if r.requests else None}
                for r, cpu in runs[kind]]

    def median_rate(kind):
        return statistics.median(r.per_second for r, _ in runs[kind])

    def cpu_per_request(kind):
        requests = sum(r.requests for r, _ in runs[kind])
        return round(sum(cpu for _, cpu in runs[kind]) / requests * 1e3, 3) if requests else None

    noop, redeem = median_rate("noop"), median_rate("link")
    link_ok = sum(r.requests for r, _ in runs["link"])
    errors = sum(r.errors for kind in runs for r, _ in runs[kind])
    redemption = {
        "client": client_name, "connections": profile.rate_connections, "seconds_per_run": profile.rate_seconds,
        "request": "GET with Range: bytes=0-0 (the link answers 206 with one byte; noop answers 200 'ok')",
        "noop_per_second": round(noop, 1), "redemptions_per_second": round(redeem, 1), "ratio": round(redeem / noop, 3),
        # gunicorn master and workers plus the PostgreSQL backends of the bench database; not the client.
        "server_cpu_ms_per_noop": cpu_per_request("noop"), "server_cpu_ms_per_redemption": cpu_per_request("link"),
        "noop_runs": rate_json("noop"), "redemption_runs": rate_json("link"), "errors": errors,
        "audit_events_written": audited, "successful_redemptions_counted": link_ok,
        # Each redemption writes one event; the server may finish a few in flight after the client stops counting.
        "every_redemption_audited": link_ok <= audited <= link_ok + profile.rate_connections * 2 * profile.rate_rounds,
        "sealed": sealed, "seal_seconds_incl_process_start": round(seal_seconds, 2),
        "audit_chain": verify, "peak_rss_mib": round(rate_rss / 2**20, 1),
    }
    accel_r, guni_r = results["nginx+X-Accel"], results["gunicorn"]
    total_errors = sum(r["errors"] for r in results.values()) + errors
    goals = {
        "x-accel >= 0.95x nginx (1x and 32x)": min(accel_r["single_ratio"], accel_r["parallel_ratio"]) >= GOALS["x-accel_vs_nginx"],
        "gunicorn >= 0.7x nginx (1x and 32x)": min(guni_r["single_ratio"], guni_r["parallel_ratio"]) >= GOALS["gunicorn_vs_nginx"],
        "zero errors": total_errors == 0 and redemption["every_redemption_audited"],
        "redemptions >= 0.5x no-op view": redemption["ratio"] >= GOALS["redemption_vs_noop"],
    }
    return {
        "benchmark": "downloads",
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "mode": None,  # set by main()
        "machine": machine_info(),
        "setup": {
            "file_bytes": profile.size, "gunicorn_workers": profile.workers, "gunicorn_worker_class": "gthread",
            "single_repeats": profile.single_repeats, "parallel_downloads": profile.parallel,
            "parallel_repeats": profile.parallel_repeats, "ttfb_requests": profile.ttfb_requests, "ttfb_range_bytes": profile.ttfb_bytes,
            "throughput_unit": "GB/s = 1e9 bytes/s; 1x from curl's time_total, 32x = bytes / wall time from release to last exit",
            "client": "curl 1 process per download, loopback; server CPU = server process trees (+ PostgreSQL backends of the bench database)",
        },
        "paths": results,
        "redemption": redemption,
        "goals": goals,
    }


def markdown(report: dict) -> str:
    size = report["setup"]["file_bytes"]
    n = report["setup"]["parallel_downloads"]
    load = report["machine"].get("load_average_1m", {})
    rows = [f"File {size / 2**20:.0f} MiB; {report['machine']['cores']} cores, load average {load.get('start')} -> {load.get('end')}; "
            f"{report['mode']} run, {report['timestamp']}.", "",
            f"| path | 1× GB/s | ratio | {n}× GB/s | ratio | TTFB p50 / p99 ms | errors | peak RSS MiB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in report["paths"].items():
        rows.append(f"| {name} | {r['single_gbps']:.2f} | {r.get('single_ratio', 1.0):.2f} | {r['parallel_gbps']:.2f} | "
                    f"{r.get('parallel_ratio', 1.0):.2f} | {r['ttfb_ms']['p50']:.2f} / {r['ttfb_ms']['p99']:.2f} | {r['errors']} | {r['peak_rss_mib']:.0f} |")
    red = report["redemption"]
    rows += ["", f"Signed-link redemptions: {red['redemptions_per_second']:.0f}/s vs no-op view {red['noop_per_second']:.0f}/s "
                 f"on the same gunicorn (ratio {red['ratio']:.2f}; {red['client']}, {red['connections']} connections, errors {red['errors']}).",
             f"Server CPU per request: redemption {red['server_cpu_ms_per_redemption']} ms, no-op {red['server_cpu_ms_per_noop']} ms "
             f"(gunicorn + PostgreSQL backends). {red['audit_events_written']} audit events for {red['successful_redemptions_counted']} "
             f"counted redemptions; {red['audit_chain']}", "", "Goals:"]
    rows += [f"- {'met' if ok else 'MISSED'}: {goal}" for goal, ok in report["goals"].items()]
    rows += ["", f"Run took {report.get('run_seconds', '?')} s."]
    return "\n".join(rows)


if __name__ == "__main__":
    # Run under the project's virtualenv (psycopg, gunicorn) whatever python started us.
    if VENV_PYTHON.exists() and Path(sys.prefix).resolve() != (REPO / ".venv").resolve():
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), __file__, *sys.argv[1:]])
    sys.exit(main())
