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
    with open(sys.argv[1]) as f:
        print(pick(json.load(f)))
