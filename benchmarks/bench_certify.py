"""Benchmark: what certifying a finished run costs, and the finish's checksums.

``poisoncert certify`` reads a run's votes, bounds every test point, verifies the run's files
(``verify``: the SHA-256 of each file the manifest lists, weights included) and writes
``certificates.csv``; a run's finish (``RunDir._checksums``) records those checksums. On a
copy of the finished run ``--run`` (the run itself is not touched), best of ``--repeats``:

- ``certify``: ``experiment.certify_run(copy, plot=False)``;
- ``checksums``: ``RunDir(copy)._checksums()``, what the finish records.

``--baseline-src`` measures another code's ``src`` folder (``git archive REV src | tar -x -C
DIR``; copy with ``cp -rL`` from a checkout, the demo config being a link) in a fresh process
beside this one's, alternated, on copies of the same run, and says whether the two wrote the
same ``certificates.csv`` and recorded the same checksums.

    python benchmarks/bench_certify.py --run runs/cifar10_cpu
    python benchmarks/bench_certify.py --run runs/cifar10_cpu --baseline-src /tmp/old/src
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _args import at_least  # benchmarks/_args.py


def measure(run: Path, repeats: int) -> dict:
    """Best-of-``repeats`` seconds of ``certify_run`` and ``_checksums`` on the run ``run``
    (a copy: certify rewrites its outputs), with what they produced."""
    from poisoncert.experiment import certify_run
    from poisoncert.runs import RunDir

    def best(fn):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        return min(times), times, out

    c, c_all, _ = best(lambda: certify_run(run, plot=False))
    s, s_all, sums = best(lambda: RunDir(run)._checksums())
    csv = hashlib.sha256((run / "certificates.csv").read_bytes()).hexdigest()
    return {"certify_s": c, "certify_all": c_all, "checksums_s": s, "checksums_all": s_all,
            "certificates_sha256": csv, "checksums": sums}


def _in_process(src: str | None, run: Path, repeats: int) -> dict:
    """``measure`` in a fresh process on ``src`` (None: this checkout's)."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = src
    out = subprocess.run([sys.executable, __file__, "--run", str(run), "--repeats",
                          str(repeats), "--measure-json"], env=env, capture_output=True,
                         text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"bench_certify: the measurement on {src or 'this code'} failed:\n"
                         f"{out.stderr.strip()}")
    return json.loads(out.stdout)


def _cpu_name() -> str:
    """The processor's model name (Linux's /proc/cpuinfo), else what platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="a finished run directory")
    ap.add_argument("--repeats", type=at_least(1), default=5, help="calls of each (best of)")
    ap.add_argument("--rounds", type=at_least(1), default=2,
                    help="with --baseline-src: the two codes alternated this many times")
    ap.add_argument("--baseline-src", help="another code's src folder, measured beside")
    ap.add_argument("--measure-json", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not (args.run / "manifest.json").is_file():
        ap.error(f"--run: '{args.run}' is not a run directory (no manifest.json)")
    if args.baseline_src is not None and not Path(args.baseline_src, "poisoncert").is_dir():
        ap.error(f"--baseline-src: '{args.baseline_src}' holds no poisoncert package")
    if args.measure_json:
        print(json.dumps(measure(args.run, args.repeats)))
        return
    codes = [("this code", None)]
    if args.baseline_src is not None:
        codes = [("baseline", args.baseline_src), *codes]
    with tempfile.TemporaryDirectory(prefix="bench_certify.") as tmp:
        results: dict[str, list[dict]] = {name: [] for name, _ in codes}
        for r in range(args.rounds if args.baseline_src else 1):
            for name, src in codes:
                copy = Path(tmp) / f"{r}-{name.replace(' ', '_')}"
                shutil.copytree(args.run, copy)
                results[name].append(_in_process(src, copy, args.repeats))
                shutil.rmtree(copy)
    size = sum(p.stat().st_size for p in args.run.rglob("*") if p.is_file())
    print(f"# {_cpu_name()}, {os.cpu_count()} CPUs, "
          f"run {args.run} ({size / 2**20:.0f} MiB), best of {args.repeats}")
    print("\n| code | round | certify s | checksums s |")
    print("|---|---:|---:|---:|")
    for name, rows in results.items():
        for i, m in enumerate(rows):
            print(f"| {name} | {i} | {m['certify_s']:.3f} | {m['checksums_s']:.3f} |")
    if args.baseline_src is not None:
        a, b = results["baseline"][0], results["this code"][0]
        same_csv = a["certificates_sha256"] == b["certificates_sha256"]
        same_sums = a["checksums"] == b["checksums"]
        print(f"\ncertificates.csv the same: {same_csv}; checksums the same: {same_sums}")


if __name__ == "__main__":
    main()
