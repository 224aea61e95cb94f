"""The paper's CIFAR-10 experiment (issue 11, item 10) on GPU leases: the data staged in parts
one device call can carry, then the run, which a time limit may stop and a later call resume.

A device call carries at most 64 MiB of the checkout and the CIFAR-10 batch files are 184 MB,
so they travel in three parts of at most two batch files (58.6 MiB) each, staged one per call
into a folder outside the checkout (``STAGE``, /tmp/poisoncert_cifar) that lives as long as
the machine stays warm (calls must follow each other within ~30 s):

    # here, once: data/cifar_parts/{1,2,3}/ (git-ignored), the batch files of the archive
    python benchmarks/gpu_cifar10.py split
    # three device calls, call k carrying ["data/cifar_parts/k"]; the last one also runs
    python3 benchmarks/gpu_cifar10.py stage data/cifar_parts/1
    python3 benchmarks/gpu_cifar10.py stage data/cifar_parts/2
    python3 benchmarks/gpu_cifar10.py stage data/cifar_parts/3 && \\
        timeout -s INT -k 30 550 python3 benchmarks/gpu_cifar10.py run --out $OUT --pack \\
        --dtype bfloat16
    # a later call on the same warm machine resumes the run where the time limit stopped it
    timeout -s INT -k 30 550 python3 benchmarks/gpu_cifar10.py run --out $OUT --pack \\
        --dtype bfloat16

``timeout -s INT`` stops the run before the call's own limit kills it: the finished chunks are
kept and, with ``--pack``, the run's state comes back in ``$OUT``. Measured on one H200
(docs/benchmarks.md, session 18): the whole run, 500 ResNet-18s, trained in 374 s in
bfloat16, so one call holds it.

(``training.path: fast`` is, for this config on CUDA, the graphed loop: one plain module per
classifier with each step a replayed CUDA graph, ``--lanes`` classifiers at once (default
``graphed.CUDA_LANES``, 8; ``--nchw``: the plain layout, not channels-last),
``training.graphed``. ``--path twin`` trains the grouped twin. Every call of one run must
name the same path, precision and scheme: a run keeps the numerics it started with.)

A run longer than one lease goes on in the next one (a fresh machine): ``run --pack`` writes
the run's state (its directory without weights: the finished chunks' predictions, 4.7 MiB for
T = 500, and a record of each call: seconds, chunks, device) to ``$OUT/cifar_run.tar.gz``
whether the run finished or a time limit stopped it. Copy that file here into
``data/cifar_run/`` (git-ignored). On the next lease, carry it with the first part (part and
state are about 63 MiB with the checkout), copy it out of the checkout, stage the other parts,
and resume:

    # call 1, carrying ["data/cifar_parts/1", "data/cifar_run"]
    python3 benchmarks/gpu_cifar10.py stage data/cifar_parts/1 && cp data/cifar_run/*.tar.gz /tmp/
    # calls 2 and 3 stage parts 2 and 3; call 3 then resumes
    timeout -s INT -k 30 550 python3 benchmarks/gpu_cifar10.py run --out $OUT --pack \\
        --dtype bfloat16 --resume-from /tmp/cifar_run.tar.gz

``run`` trains ``experiments/cifar10_bagging.yaml`` (ResNet-18, ns = 1000, T = 500, 400 steps,
bagging) into ``--run-dir`` with a line per finished chunk (classifiers so far, seconds, rate;
a chunk is rounded up to whole groups, so what a time limit loses is at most one chunk),
certifies it once every classifier is trained, and writes to ``--out`` a summary
(``cifar10.json``: wall times, this call's and every call's training seconds, the device,
group size, path, precision, accuracies, the certified accuracy per radius) with the run's
manifest; the run's weights are not kept (``training.save_weights: false``: 500 ResNet-18s
are 22 GB).

A finished run's state goes into the report with ``import``, here: it unpacks into
``runs/cifar10_SCHEME`` with a ``timing.json`` made of the record of calls, and
``python experiments/report.py --only cifar`` writes docs/results.md's CIFAR-10 section (the
bottom row of the paper's Figure 4) from it; ``--keep-absent`` keeps, as the report gives
them, the rows, figure and Summary entry of an earlier scheme's run whose state is not here
(the section says which). Such a run is the report's alone: it names the
lease's data folder, so ``experiments/run.py cifar10_gpu`` (which trains the same runs on a
machine with a GPU and its own data folder) refuses to resume it.

    python benchmarks/gpu_cifar10.py import data/cifar_run/cifar_run.tar.gz \\
        --summary data/cifar_run/cifar10.json

``--scheme without_replacement`` (or ``binomial``) trains the same experiment with another of
the paper's three selection schemes (Figure 4's other columns): its run directory, summary
and packed state are named ``..._SCHEME`` (``cifar_run_without_replacement.tar.gz``), and
every call of that run names the scheme. ``--quick --device cpu``: two classifiers of two
steps on 8 test images, the same wiring on the CPU (tests/test_engine.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

#: The paper's three schemes (Figure 4's columns); ``--scheme`` picks one.
from poisoncert.selection import SCHEMES  # noqa: E402

CONFIG = ROOT / "experiments" / "cifar10_bagging.yaml"
#: The config's own scheme (bagging with replacement): its runs' names have no suffix.
CONFIG_SCHEME = yaml.safe_load(CONFIG.read_text())["selection"]["scheme"]

#: The archive's batch files in their parts (each under a device call's 64 MiB).
PARTS = (("data_batch_1.bin", "data_batch_2.bin"), ("data_batch_3.bin", "data_batch_4.bin"),
         ("data_batch_5.bin", "test_batch.bin", "batches.meta.txt"))
FOLDER = "cifar-10-batches-bin"
#: Most bytes one part may hold: a device call carries at most 64 MiB of the checkout.
PART_LIMIT = 64 * 2**20
STAGE = Path("/tmp/poisoncert_cifar")
ARCHIVE = ROOT.parent / "shared" / "data" / "cifar10" / "cifar-10-binary.tar.gz"


def checkout_bytes(root: Path = ROOT) -> int | None:
    """Bytes of the files a device call carries besides a part: the tracked files and the
    untracked ones git does not ignore (None where ``root`` is not a git checkout)."""
    try:
        names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                                "--exclude-standard"], cwd=root, capture_output=True,
                               check=True).stdout.split(b"\0")
    except (OSError, subprocess.CalledProcessError):
        return None
    files = (root / os.fsdecode(n) for n in names if n)
    return sum(f.stat().st_size for f in files if f.is_file() and not f.is_symlink())


def split(archive: Path, into: Path) -> list[Path]:
    """The archive's batch files, in ``PARTS``, under ``into/1``, ``into/2``, ``into/3``."""
    if not archive.is_file():
        raise SystemExit(f"split: the archive '{archive}' does not exist (--archive: the "
                         "CIFAR-10 binary version, cifar-10-binary.tar.gz)")
    wanted = {n: str(k + 1) for k, names in enumerate(PARTS) for n in names}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            name = Path(member.name).name
            if member.isfile() and name in wanted:
                dest = into / wanted.pop(name) / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out)
    if wanted:
        raise SystemExit(f"split: {', '.join(sorted(wanted))} not in {archive}")
    parts = [into / str(k + 1) for k in range(len(PARTS))]
    checkout = checkout_bytes() or 0
    for part in parts:
        size = sum(f.stat().st_size for f in part.iterdir())
        if size + checkout > PART_LIMIT:
            raise SystemExit(f"split: {part} holds {size / 2**20:.1f} MiB and the checkout "
                             f"{checkout / 2**20:.1f} MiB: over a call's "
                             f"{PART_LIMIT / 2**20:.0f} MiB (make the checkout smaller)")
        print(f"{part}: {size / 2**20:.1f} MiB ({(size + checkout) / 2**20:.1f} MiB with the "
              f"checkout, of a call's {PART_LIMIT / 2**20:.0f})")
    return parts


def stage(part: Path, stage_dir: Path) -> Path:
    """Copy one part's files into ``stage_dir/cifar-10-batches-bin``."""
    if not part.is_dir():
        raise SystemExit(f"stage: the part '{part}' is not a folder (carry it with the call)")
    dest = stage_dir / FOLDER
    dest.mkdir(parents=True, exist_ok=True)
    for f in sorted(part.iterdir()):
        shutil.copyfile(f, dest / f.name)
    have = sorted(p.name for p in dest.iterdir())
    print(f"staged {part} -> {dest}: {', '.join(have)}")
    return dest


#: The packed state's name in ``--out``, and the record of every call's training inside it.
PACKED, CALLS = "cifar_run.tar.gz", "calls.json"
#: Most bytes of a file a device call brings back from ``$OUT``.
OUT_FILE_LIMIT = 16 * 2**20


def _calls_file(run_dir: Path) -> Path:
    """Where a run's record of calls lives: beside its directory (the run's own files stay
    the library's)."""
    return run_dir.parent / f"{run_dir.name}_{CALLS}"


def _suffix(scheme: str | None) -> str:
    """What a run of another scheme adds to its names (run directory, summary, packed
    state): ``_without_replacement``, say; nothing for the config's own."""
    return f"_{scheme}" if scheme and scheme != CONFIG_SCHEME else ""


def _chunks_done(run_dir: Path) -> int:
    return len(list((run_dir / "chunks").glob("*.npz"))) if run_dir.is_dir() else 0


def timing(calls: list[dict], n_chunks: int, certify_s: float, command: str) -> dict:
    """A finished run's record of calls as the ``timing.json`` that ``experiments/run.py``
    writes and ``experiments/report.py`` reads: one session per call, its training seconds
    (a call a time limit stopped included: its last chunk's lost work is part of the wall
    time) and the chunks it trained and found trained. A call recorded before calls counted
    chunks (one at most) trained the chunks the others did not."""
    unknown = [c for c in calls if "chunks_trained" not in c]
    if len(unknown) > 1:
        raise SystemExit(f"import: {len(unknown)} calls of the run do not say which chunks "
                         "they trained")
    rest = n_chunks - sum(c["chunks_trained"] for c in calls if c not in unknown)
    sessions, done = [], 0
    for c in calls:
        trained = c.get("chunks_trained", rest)
        sessions.append({"train_s": c["train_s"], "chunks_trained": trained,
                         "chunks_skipped": c.get("chunks_skipped", done),
                         "finished": c["finished"]})
        done += trained
    if done != n_chunks:
        raise SystemExit(f"import: the calls trained {done} chunks, the run has {n_chunks}")
    return {"sessions": sessions, "train_s": round(sum(c["train_s"] for c in calls), 2),
            "certify_s": certify_s, "cpus": calls[-1].get("cpus") if calls else None,
            "workers": 1, "command": command,
            "devices": sorted({c["device"] for c in calls if c.get("device")})}


def _peek(packed: Path, wanted: tuple[str, ...], who: str) -> tuple[set[str], dict]:
    """A packed state's member names and the bytes of the ``wanted`` members it holds, read in
    one pass; a file that is no gzip'd tar is one clear line."""
    try:
        with tarfile.open(packed, "r:gz") as tar:
            got = {}
            for m in tar:
                if m.name in wanted and m.isfile():
                    got[m.name] = tar.extractfile(m).read()
            return set(tar.getnames()), got
    except (tarfile.TarError, OSError, EOFError) as e:
        raise SystemExit(f"{who}: '{packed}' is not a packed run state (a .tar.gz that "
                         f"'run --pack' wrote): {e}") from None


def import_run(packed: Path, runs_dir: Path, summary: Path | None = None,
               device_name: str = "") -> Path:
    """A finished run's packed state as ``runs_dir/cifar10_SCHEME`` (the name
    ``experiments/run.py``'s group ``cifar10_gpu`` gives it), with a ``timing.json`` made of
    its record of calls, for ``experiments/report.py``. The certification and its time are
    the lease's: a state packed before the record held the certify time needs the lease's
    ``summary`` (``cifar10.json``). ``device_name``: what the calls trained on, for a record
    made before calls named it (the device tool's reply says)."""
    from poisoncert.runs import RunDir

    who = "import"
    if not packed.is_file():
        raise SystemExit(f"{who}: '{packed}' is not a file (the {PACKED} that a lease's "
                         "'run --pack' brought back)")
    said = {}
    if summary is not None:
        try:
            said = json.loads(summary.read_text())
            said["certify_s"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"{who}: --summary '{summary}' is not the lease's cifar10.json "
                             f"(a JSON file with certify_s): {e!r}") from None
    names, got = _peek(packed, ("run/config.yaml", CALLS), who)
    if "run/config.yaml" not in got:
        raise SystemExit(f"{who}: '{packed}' holds no run (no run/config.yaml)")
    scheme = yaml.safe_load(got["run/config.yaml"])["selection"]["scheme"]
    dest = runs_dir / f"cifar10_{scheme}"
    if dest.exists():
        raise SystemExit(f"{who}: '{dest}' exists (remove it to import '{packed}')")
    if not {"run/votes.npy", "run/certified_accuracy.csv"} <= names:
        done = sum(n.startswith("run/chunks/") and n.endswith(".npz") for n in names)
        raise SystemExit(f"{who}: the run in '{packed}' is not finished ({done} chunk(s) "
                         "trained, not certified): resume it on a lease first")
    calls = json.loads(got.get(CALLS, b"[]"))
    certify_s = calls[-1].get("certify_s") if calls else None
    if certify_s is None:
        certify_s = said.get("certify_s")
    if certify_s is None:
        raise SystemExit(f"{who}: '{packed}' records no certify time (packed before calls "
                         "recorded one): give the lease's summary, --summary cifar10.json")
    named = sorted({c["device"] for c in calls if c.get("device")})
    device_name = device_name or said.get("device", "")
    if device_name and named and named != [device_name]:
        raise SystemExit(f"{who}: --device-name '{device_name}', but the record of calls "
                         f"names {', '.join(named)}")
    if device_name and not named:
        calls = [{**c, "device": device_name} for c in calls]
    runs_dir.mkdir(parents=True, exist_ok=True)
    tmp = runs_dir / ".cifar10-import"
    shutil.rmtree(tmp, ignore_errors=True)
    _calls_file(tmp).unlink(missing_ok=True)
    unpack(packed, tmp, who=who, quiet=True)
    try:
        cfg = RunDir(tmp).load_config()
        n_chunks = _chunks_done(tmp)  # all of them: the run is finished (checked above)
        flag = "" if scheme == CONFIG_SCHEME else f" --scheme {scheme}"
        record = timing(calls, n_chunks, certify_s, "python benchmarks/gpu_cifar10.py run "
                        f"--dtype {cfg.training.dtype}{flag} (device calls: see the script)")
        (tmp / "timing.json").write_text(json.dumps(record, indent=1) + "\n")
        tmp.replace(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        _calls_file(tmp).unlink(missing_ok=True)
    print(f"imported {packed} -> {dest} ({record['train_s']} s of training in "
          f"{len(record['sessions'])} call(s), certify {record['certify_s']} s)")
    return dest


def pack(run_dir: Path, out: Path, suffix: str = "") -> Path | None:
    """The run's state, its directory (no weights; not its lock) and the record of calls,
    as ``out/cifar_run{suffix}.tar.gz`` (at most what a device call brings back)."""
    if not (run_dir / "config.yaml").is_file():  # stopped before the run was created
        print(f"pack: no run in {run_dir} yet, nothing packed")
        return None
    out.mkdir(parents=True, exist_ok=True)
    dest = out / PACKED.replace(".tar", f"{suffix}.tar")
    tmp = dest.with_name(dest.name + ".part")
    with tarfile.open(tmp, "w:gz") as tar:
        for f in sorted(run_dir.rglob("*")):
            if f.is_file() and f.name != ".lock":
                tar.add(f, arcname=str(Path("run") / f.relative_to(run_dir)))
        if _calls_file(run_dir).is_file():
            tar.add(_calls_file(run_dir), arcname=CALLS)
    size = tmp.stat().st_size
    if size > OUT_FILE_LIMIT:
        tmp.unlink()
        raise SystemExit(f"pack: the run's state is {size} bytes, over the {OUT_FILE_LIMIT} "
                         "a device call brings back")
    tmp.replace(dest)
    print(f"packed {run_dir} -> {dest} ({size / 2**20:.1f} MiB)")
    return dest


def unpack(packed: Path, run_dir: Path, *, who: str = "run", quiet: bool = False) -> bool:
    """A packed state into ``run_dir``, which must not exist (a warm machine's own run is
    newer: then nothing is unpacked, and False). ``who`` names the caller in errors."""
    if not packed.is_file():
        raise SystemExit(f"run: --resume-from '{packed}' is not a file (carry the folder "
                         "holding it with the call)")
    if run_dir.exists():
        print(f"{run_dir} exists: resuming it, not {packed}")
        return False
    tmp = run_dir.with_name(run_dir.name + ".unpacking")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with tarfile.open(packed, "r:gz") as tar:
            names = tar.getnames()
            if any(not (n == CALLS or n.startswith("run/")) or ".." in Path(n).parts
                   for n in names):
                raise SystemExit(f"{who}: '{packed}' is not a packed run state (members "
                                 f"{names[:3]}...)")
            tar.extractall(tmp, filter="data")
    except (tarfile.TarError, OSError, EOFError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SystemExit(f"{who}: '{packed}' is not a packed run state (a .tar.gz that "
                         f"'run --pack' wrote): {e}") from None
    if not (tmp / "run" / "config.yaml").is_file():
        shutil.rmtree(tmp)
        raise SystemExit(f"{who}: '{packed}' holds no run (no run/config.yaml)")
    if (tmp / CALLS).is_file():
        (tmp / CALLS).replace(_calls_file(run_dir))
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    (tmp / "run").replace(run_dir)
    shutil.rmtree(tmp)
    if not quiet:
        print(f"unpacked {packed} -> {run_dir}")
    return True


@contextlib.contextmanager
def _interrupts_ignored():
    """Within (in the main thread): SIGINT ignored, the handler before it restored after.
    What runs within takes seconds, inside the 30 s that ``timeout -s INT -k 30`` leaves."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    keep = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, keep)


def run(args) -> dict:
    from bench_gpu import _print_progress

    from poisoncert.config import load_config
    from poisoncert.experiment import certify_run, train_run

    data = Path(args.data)
    over = {"training.device": args.device, "training.save_weights": False,
            "data.data_dir": str(data)}
    if args.scheme:
        over["selection.scheme"] = args.scheme
    if args.path:
        over["training.path"] = args.path
    if args.dtype:
        over["training.dtype"] = args.dtype
    if args.group_size:
        over["training.group_size"] = args.group_size
    if args.chunk_size:
        over["run.chunk_size"] = args.chunk_size
    from poisoncert.training import graphed

    if args.lanes:  # not part of the numerics (tests/test_engine.py): a resumed run may differ
        graphed.CUDA_LANES = args.lanes
    if args.nchw:  # not part of the numerics either: the layout of the captured steps
        graphed.CUDA_CHANNELS_LAST = False
    if args.quick:
        over.update({"selection.T": 2, "selection.ns": 40, "training.steps": 2,
                     "training.batch_size": 4, "data.test_limit": 8, "run.chunk_size": 1})
    try:  # a bad option (--dtype bfloat16 with --device cpu, say) is one line, not a traceback
        cfg = load_config(CONFIG, over)
    except ValueError as e:  # ConfigError included
        raise SystemExit(f"run: {e}") from None
    missing = [n for names in PARTS for n in names
               if n.endswith(".bin") and not (data / FOLDER / n).is_file()]
    if missing:
        raise SystemExit(f"run: {', '.join(missing)} not staged in {data / FOLDER} (stage "
                         "every part first, on the same warm machine)")
    sfx = _suffix(args.scheme)
    run_dir = Path(args.run_dir or STAGE / f"run{sfx}")
    if args.resume_from:
        unpacked = unpack(Path(args.resume_from), run_dir)
    else:
        unpacked = False
    calls_file = _calls_file(run_dir)
    calls = json.loads(calls_file.read_text()) if calls_file.is_file() else []
    before = _chunks_done(run_dir)
    from poisoncert.runmanifest import device_name

    device = device_name(args.device)

    def record(seconds: float, finished: bool, **more) -> None:
        calls.append({"train_s": round(seconds, 2), "finished": finished,
                      "chunks_trained": _chunks_done(run_dir) - before,
                      "chunks_skipped": before, "cpus": os.cpu_count(), "device": device,
                      **more})
        calls_file.parent.mkdir(parents=True, exist_ok=True)
        calls_file.write_text(json.dumps(calls, indent=1) + "\n")

    t0 = time.perf_counter()
    from poisoncert.runs import RunError

    try:
        res = train_run(cfg, run_dir, progress=_print_progress)
    except RunError as e:  # another run's folder: one line, and what this call unpacked goes
        if unpacked:
            shutil.rmtree(run_dir, ignore_errors=True)
            _calls_file(run_dir).unlink(missing_ok=True)
        raise SystemExit(f"run: {e} (every call of one run names the same --scheme, --dtype "
                         "and --path)") from None
    except KeyboardInterrupt:  # a time limit (timeout -s INT): finished chunks are kept
        with _interrupts_ignored():  # and packed, whatever else comes before the KILL
            record(time.perf_counter() - t0, False)
            done = _chunks_done(run_dir)
            print(f"stopped by the time limit after {calls[-1]['train_s']} s: {done} chunk(s) "
                  f"of the run are finished and kept")
            if args.pack and args.out:
                pack(run_dir, Path(args.out), sfx)
        return {"run": "stopped", "train_s_this_call": calls[-1]["train_s"], "chunks": done}
    # trained: certifying (0.25 s at the paper's scale) and packing finish even if the time
    # limit's INT comes now (timeout -k leaves 30 s before its KILL); an INT here used to
    # end the call with every chunk trained and nothing packed
    with _interrupts_ignored():
        t1 = time.perf_counter()
        cert = certify_run(run_dir, plot=False)
        t2 = time.perf_counter()
        record(t1 - t0, True, certify_s=round(t2 - t1, 2))
        manifest = json.loads((run_dir / "manifest.json").read_text())
        engine = manifest.get("engine", {})
        label = ("CIFAR-10, ResNet-18, T = 2, 2 steps (quick)" if args.quick
                 else "CIFAR-10, ResNet-18, ns = 1000, T = 500, 400 steps")
        if _suffix(args.scheme):
            label += f", {args.scheme}"
        out = {"run": label, "train_s_this_call": round(t1 - t0, 2),
            "train_s_every_call": [c["train_s"] for c in calls],
            "certify_s": round(t2 - t1, 2), "device": device,
            "group_size": engine.get("group_size"),
            "path": engine.get("path"), "dtype": cfg.training.dtype,
            "vote_accuracy": round(res.accuracy, 4), "base_accuracy": round(res.base_accuracy, 4),
            "certified_accuracy": {str(r): round(a, 4) for r, a in cert.table.rows()}}
        print("\n| run | path | dtype | group | train s (this call) | certify s | vote acc | "
              "base acc |")
        print("|---|---|---|---:|---:|---:|---:|---:|")
        print(f"| {out['run']} | {out['path']} | {out['dtype']} | {out['group_size']} | "
              f"{out['train_s_this_call']} | {out['certify_s']} | {out['vote_accuracy']} | "
              f"{out['base_accuracy']} |")
        print("\n| rho | " + " | ".join(out["certified_accuracy"]) + " |")
        print("|---|" + "---:|" * len(out["certified_accuracy"]))
        print("| certified accuracy | " + " | ".join(str(a) for a in
                                                    out["certified_accuracy"].values()) + " |")
        if args.out:
            dest = Path(args.out)
            dest.mkdir(parents=True, exist_ok=True)
            (dest / f"cifar10{sfx}.json").write_text(json.dumps(out, indent=1) + "\n")
            shutil.copyfile(run_dir / "manifest.json", dest / f"cifar10{sfx}_manifest.json")
            if args.pack:
                pack(run_dir, dest, sfx)
        return out


def main(argv=None):
    first = " ".join(__doc__.split("\n\n")[0].split())
    p = argparse.ArgumentParser(description=first + " Details: this script's docstring.")
    sub = p.add_subparsers(dest="what", required=True)
    text = "here: the archive's batch files in three parts, each under a call's 64 MiB"
    s = sub.add_parser("split", help=text, description=text)
    s.add_argument("--archive", default=str(ARCHIVE), help="the CIFAR-10 binary version, "
                   "cifar-10-binary.tar.gz (default: %(default)s)")
    s.add_argument("--into", default=str(ROOT / "data" / "cifar_parts"),
                   help="where the parts 1, 2 and 3 go (default: %(default)s)")
    text = "on the device: copy one carried part out of the checkout into the staging folder"
    st = sub.add_parser("stage", help=text, description=text)
    st.add_argument("part", help="a part's folder, data/cifar_parts/K, carried by the call")
    st.add_argument("--stage", default=str(STAGE), help="the staging folder (default: "
                    "%(default)s)")
    text = ("train (or resume) and certify experiments/cifar10_bagging.yaml; every call of "
            "one run names the same --scheme, --dtype and --path")
    r = sub.add_parser("run", help=text, description=text)
    r.add_argument("--data", default=str(STAGE), help=f"the folder holding {FOLDER} "
                   "(default: %(default)s)")
    r.add_argument("--run-dir", default="", help=f"default: {STAGE}/run, or "
                   f"{STAGE}/run_SCHEME with another --scheme")
    r.add_argument("--scheme", default=None, choices=SCHEMES,
                   help=f"selection.scheme (default: the config's, {CONFIG_SCHEME}; the "
                   "paper's Figure 4 has all three); another scheme's names end in _SCHEME")
    r.add_argument("--device", default="cuda", help="training.device (default: %(default)s)")
    r.add_argument("--path", default="", help="training.path (default: the config's, fast)")
    r.add_argument("--dtype", default="", help="training.dtype (default: the config's, "
                   "float32; the measured runs used bfloat16)")
    r.add_argument("--lanes", type=int, default=0,
                   help="training.path graphed: classifiers trained at once (default: "
                        "graphed.CUDA_LANES)")
    r.add_argument("--nchw", action="store_true",
                   help="training.path graphed: the plain layout on CUDA, not channels-last")
    r.add_argument("--group-size", type=int, default=0, help="default: auto")
    r.add_argument("--chunk-size", type=int, default=0,
                   help="classifiers per chunk, the unit a resumed run skips (default: the "
                   "config's 16; rounded up to a multiple of the group)")
    r.add_argument("--out", default="", help="where the summary and the manifest go")
    r.add_argument("--quick", action="store_true", help="two classifiers of two steps")
    r.add_argument("--pack", action="store_true", help="also write the run's state to --out "
                   f"as {PACKED}, finished or stopped by a time limit (for the next lease)")
    r.add_argument("--resume-from", default="", help=f"a {PACKED} an earlier lease packed: "
                   "the run resumes from it (where the run directory does not exist yet)")
    text = ("here: a finished run's packed state into runs/cifar10_SCHEME for "
            "experiments/report.py --only cifar")
    im = sub.add_parser("import", help=text, description=text)
    im.add_argument("packed", help=f"a {PACKED} (or _SCHEME) that a lease brought back")
    im.add_argument("--runs-dir", default=str(ROOT / "runs"),
                    help="the report's run directories (default: %(default)s)")
    im.add_argument("--summary", default="", help="the lease's cifar10.json, for the certify "
                    "time of a state packed before the record of calls held it")
    im.add_argument("--device-name", default="", help="the device the calls trained on, for "
                    "a state packed before the record of calls named it (e.g. 'NVIDIA H200')")
    args = p.parse_args(argv)
    if args.what == "split":
        return split(Path(args.archive), Path(args.into))
    if args.what == "import":
        return import_run(Path(args.packed), Path(args.runs_dir),
                          Path(args.summary) if args.summary else None, args.device_name)
    if args.what == "stage":
        return stage(Path(args.part), Path(args.stage))
    return run(args)


if __name__ == "__main__":
    main()
