"""Shard build benchmark: our build against plain `datasets` (load_dataset("json") then
to_parquet) on the same generated JSONL corpus, at 1x and 4x, and at 4x again inside a
1.5 GiB memory cgroup. See README.md."""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
UDHR = ROOT / ".." / "shared" / "corpora" / "udhr" / "udhr.jsonl.gz"
CGROUP = ROOT / ".." / "shared" / "tools" / "in-memory-cgroup"
CGROUP_LIMIT = 1536 * 1024 * 1024
GIB = 1024**3
TAKEDOWN_IDS = 100
TAKEDOWN_TEXTS = 100


def generate(path_1x: Path, path_4x: Path | None, size_1x: int) -> dict:
    """UDHR repeated until the size is reached; each repeat has its own ids and a marker in
    every text, so deduplication keeps it. The 4x corpus starts with the 1x corpus."""
    with gzip.open(UDHR, "rt", encoding="utf-8") as lines:
        records = [json.loads(line) for line in lines]
    # One JSON template per record; filling it is much cheaper than json.dumps per line.
    templates = []
    for record in records:
        line = json.dumps(dict(record, id="@@ID@@", text="@@TEXT@@"), ensure_ascii=False)
        head, _, rest = line.partition('"@@ID@@"')
        middle, _, tail = rest.partition('"@@TEXT@@"')
        templates.append((head, json.dumps(record["id"])[1:-1], middle, json.dumps(record["text"], ensure_ascii=False)[1:-1], tail))
    written, repeat = 0, 0
    sizes = {"1x": 0, "4x": 0}
    target = size_1x * (4 if path_4x else 1)
    out_1x = open(path_1x, "w", encoding="utf-8")
    out_4x = open(path_4x, "w", encoding="utf-8") if path_4x else None
    try:
        while written < target:
            lines = "".join(f'{h}"{i}#r{repeat}"{m}"[r{repeat}] {t}"{tail}\n' for h, i, m, t, tail in templates)
            data = lines.encode()
            if out_1x is not None and written < size_1x:
                out_1x.write(lines)
                sizes["1x"] += len(data)
            if out_4x is not None:
                out_4x.write(lines)
                sizes["4x"] += len(data)
            written += len(data)
            repeat += 1
            if out_1x is not None and written >= size_1x:
                out_1x.close()
                out_1x = None
    finally:
        for handle in (out_1x, out_4x):
            if handle is not None:
                handle.close()
    return {"records_per_repeat": len(records), "repeats_4x": repeat, **sizes}


# --- the measured programs (run as children, one per measurement) -------------------


def worker_ours(source: Path, out: Path, work: Path) -> dict:
    from datasets_app.shards import BuildParams, SourceSpec, build_shards, text_sha256

    with gzip.open(UDHR, "rt", encoding="utf-8") as lines:
        records = [json.loads(line) for line in lines]
    # A takedown list that hits: ids of the first repeat, texts of the second.
    ids = frozenset(f"{r['id']}#r0" for r in records[:TAKEDOWN_IDS])
    texts = frozenset(text_sha256(f"[r1] {r['text']}") for r in records[1000:1000 + TAKEDOWN_TEXTS])
    del records  # the harness's copy of the UDHR is no part of the build's memory
    spec = SourceSpec(uri=str(source), id_column="id", language_column="lang")
    params = BuildParams(dedup=True, excluded_ids=ids, excluded_text_sha256=texts, work_dir=work)
    start = time.perf_counter()
    result = build_shards(sources=[spec], params=params, out_dir=out)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "records_read": result.records_read, "records_written": result.records_written,
            "dropped_by_takedown": result.dropped_by_takedown, "duplicates": result.duplicates,
            "configs": len(result.languages), "files": len(result.files), "output_bytes": sum(f.size for f in result.files)}


def worker_baseline(source: Path, out: Path, work: Path) -> dict:
    os.environ["HF_DATASETS_CACHE"] = str(work / "hf-cache")
    import datasets

    datasets.disable_progress_bars()
    start = time.perf_counter()
    dataset = datasets.load_dataset("json", data_files=str(source), split="train", cache_dir=str(work / "hf-cache"))
    dataset.to_parquet(str(out / "train.parquet"))
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "records_written": dataset.num_rows, "output_bytes": (out / "train.parquet").stat().st_size}


# --- measuring ------------------------------------------------------------------------


def _anon_rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def _tree(pid: int) -> list[int]:
    import psutil

    try:
        parent = psutil.Process(pid)
        return [pid] + [child.pid for child in parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def measure(kind: str, source: Path, tmp: Path, *, cgroup: bool = False) -> dict:
    out, work = tmp / f"out-{kind}", tmp / f"work-{kind}"
    out.mkdir()
    work.mkdir()
    command = [str(VENV_PYTHON), __file__, "--worker", kind, "--source", str(source), "--into", str(out), "--work", str(work)]
    if cgroup:
        command = [str(CGROUP), str(CGROUP_LIMIT)] + command
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONPATH=str(ROOT))
    load_before = os.getloadavg()[0]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, sum(_anon_rss(pid) for pid in _tree(process.pid)))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"{kind} failed ({process.returncode}):\n{stderr[-4000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result.update(peak_anon_rss=peak, source_bytes=source.stat().st_size, load_before=load_before, load_after=os.getloadavg()[0])
    result["mb_per_s"] = result["source_bytes"] / result["seconds"] / 1e6
    if cgroup:
        for line in stderr.splitlines():
            if line.startswith("cgroup_peak_bytes="):
                fields = dict(item.split("=") for item in line.split())
                result["cgroup_peak_bytes"] = int(fields["cgroup_peak_bytes"])
                result["cgroup_limit_hits"] = int(fields["limit_hits"])
    subprocess.run(["rm", "-rf", str(out), str(work)], check=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="64 MiB at 1x only, no cgroup, print only")
    parser.add_argument("--size-gib", type=float, default=2.0)
    parser.add_argument("--no-cgroup", action="store_true")
    parser.add_argument("--tmp", default=None, help="where to generate the corpus (needs ~40x the 1x size free)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "shards.json"))
    parser.add_argument("--worker", choices=["ours", "baseline"])
    parser.add_argument("--source")
    parser.add_argument("--into")
    parser.add_argument("--work")
    args = parser.parse_args()

    if args.worker:
        worker = worker_ours if args.worker == "ours" else worker_baseline
        print(json.dumps(worker(Path(args.source), Path(args.into), Path(args.work))))
        return
    # by the environment, not the binary: the venv's python is a link to the interpreter it was made from
    if Path(sys.prefix).resolve() != VENV_PYTHON.parents[1].resolve() and VENV_PYTHON.exists():
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), __file__] + sys.argv[1:])

    size = int((1 / 16 if args.quick else args.size_gib) * GIB)
    scales = ["1x"] if args.quick else ["1x", "4x"]
    with tempfile.TemporaryDirectory(prefix="bench-shards-", dir=args.tmp) as tmp_name:
        tmp = Path(tmp_name)
        start = time.perf_counter()
        corpus = generate(tmp / "corpus-1x.jsonl", None if args.quick else tmp / "corpus-4x.jsonl", size)
        print(f"generated {', '.join(f'{k}: {corpus[k] / GIB:.2f} GiB' for k in scales)} in {time.perf_counter() - start:.0f} s", flush=True)
        runs = []
        for scale in scales:
            source = tmp / f"corpus-{scale}.jsonl"
            for kind in ("baseline", "ours"):
                result = measure(kind, source, tmp)
                runs.append({"scale": scale, "kind": kind, "cgroup": False, **result})
                print(f"  {scale} {kind:8} {result['mb_per_s']:6.1f} MB/s  peak anon RSS {result['peak_anon_rss'] / GIB:.2f} GiB"
                      f"  load {result['load_before']:.1f}", flush=True)
            if scale == "4x" and not args.no_cgroup:
                result = measure("ours", source, tmp, cgroup=True)
                runs.append({"scale": scale, "kind": "ours", "cgroup": True, **result})
                print(f"  {scale} ours in 1.5 GiB cgroup {result['mb_per_s']:6.1f} MB/s  cgroup peak "
                      f"{result.get('cgroup_peak_bytes', 0) / GIB:.2f} GiB", flush=True)

    print()
    print("| scale | build | MB/s | vs baseline | peak anon RSS | load avg |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for run in runs:
        base = next(r for r in runs if r["scale"] == run["scale"] and r["kind"] == "baseline")
        name = "datasets load_dataset+to_parquet" if run["kind"] == "baseline" else ("ours, 1.5 GiB cgroup" if run["cgroup"] else "ours")
        print(f"| {run['scale']} | {name} | {run['mb_per_s']:.1f} | {run['mb_per_s'] / base['mb_per_s']:.2f}x | "
              f"{run['peak_anon_rss'] / GIB:.2f} GiB | {run['load_before']:.1f} |")
    if args.quick:
        return
    report = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}, "corpus": corpus, "runs": runs,
              "versions": _versions()}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")


def _versions() -> dict:
    import datasets
    import pyarrow

    return {"datasets": datasets.__version__, "pyarrow": pyarrow.__version__}


if __name__ == "__main__":
    main()
