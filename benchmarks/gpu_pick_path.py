"""The training path (``twin`` or ``bmm``) with the higher measured float32 rate for the small
CNN with warps at the largest group, from ``bench_gpu.py --json``'s output; ``fast`` (the
engine's own choice) when the file lacks either row. ``gpu_session.sh`` runs the improved
learner's end-to-end run on it.

    python benchmarks/gpu_pick_path.py throughput.json
"""

from __future__ import annotations

import json
import sys


def pick(report: dict) -> str:
    rows = [r for r in report.get("throughput", [])
            if r["model"].startswith("cnn_small + warps") and r["dtype"] == "float32"]
    best: dict[str, tuple[int, float]] = {}
    for r in rows:
        path = "bmm" if "(bmm)" in r["model"] else "twin"
        best[path] = max(best.get(path, (0, 0.0)), (r["group"], r["images_per_s"]))
    if {"twin", "bmm"} <= best.keys() and best["bmm"][0] == best["twin"][0]:
        return "bmm" if best["bmm"][1] > best["twin"][1] else "twin"
    return "fast"


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        print(pick(json.load(f)))
