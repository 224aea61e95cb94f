"""The training path (``twin``, ``bmm`` or ``cmajor``) with the highest measured float32 rate
for the small CNN with warps at the largest group all of them measured, from ``bench_gpu.py
--json``'s output; ``fast`` (the engine's own choice) when the file lacks a row of each (a
case that failed, out of memory for one, has no rate).
``gpu_session.sh`` runs the improved learner's end-to-end run on it.

    python benchmarks/gpu_pick_path.py throughput.json
"""

from __future__ import annotations

import json
import sys

#: The candidates; a row's path is in its model name ("cnn_small + warps (bmm)"), none: twin.
PATHS = ("twin", "bmm", "cmajor")


def pick(report: dict) -> str:
    rates: dict[str, dict[int, float]] = {p: {} for p in PATHS}
    for r in report.get("throughput", []):
        if (r["model"].startswith("cnn_small + warps") and r["dtype"] == "float32"
                and "images_per_s" in r):  # a failed case's row has none
            path = next((p for p in PATHS if f"({p})" in r["model"]), "twin")
            rates[path][r["group"]] = r["images_per_s"]
    common = set.intersection(*(set(v) for v in rates.values()))
    if not common:
        return "fast"
    g = max(common)
    return max(PATHS, key=lambda p: rates[p][g])


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    ap.add_argument("report", help="bench_gpu.py --json's output file")
    args = ap.parse_args()
    try:
        with open(args.report) as f:
            report = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"gpu_pick_path.py: cannot read {args.report!r} as bench_gpu.py's JSON ({e})")
    print(pick(report))
