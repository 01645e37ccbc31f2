"""The production settings plus the benchmark's no-op view (bench_urls); nothing else changes."""

from portal.settings import *  # noqa: F401,F403

ROOT_URLCONF = "bench.downloads.bench_urls"
