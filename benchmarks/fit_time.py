"""Fit time of the methods trained with torch on 200 normal images of 256 px, one method at a time.

    python benchmarks/fit_time.py                                  # all five, MobileNetV2
    python benchmarks/fit_time.py --methods cfa,rd4ad --train 200

Issue 17's target: each of STFPM, FastFlow, CFA, RD4AD and SimpleNet fits on 200 images of 256 px
in under 5 minutes (MobileNetV2, each method's defaults: at most 20 epochs with early stopping on
a held-out tenth, then the ONNX export). Each method is fitted in a fresh process, so one method's
allocations and threads do not weigh on the next; the report is rewritten after every method, so
a run stopped part-way keeps what it measured. Rows of methods not in ``--methods`` are kept
from the previous report, each with the date and load average of its own run. Seeded random
backbone weights (no pretrained weights can be downloaded here): the epochs early stopping
chooses may differ with real ones.

Writes ``benchmarks/results/fit_time.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 300.0

#: Run in a child process: fit one method, print one JSON line.
CHILD = """
import json, sys, time
import cv2
sys.path.insert(0, {src!r})
from vad_inspection.data import open_dataset
from vad_inspection.vad.registry import CommonOptions, create_model
normal = open_dataset("magnetic_tile:" + {data!r}).normal[: {train}]
images = [cv2.resize(s.image(), ({size}, {size}), interpolation=cv2.INTER_AREA) for s in normal]
model = create_model({method!r}, CommonOptions(size={size}))
start = time.perf_counter()
model.fit(images)
seconds = time.perf_counter() - start
s = model.summary
print(json.dumps({{"method": {method!r}, "fit_s": seconds, "epochs": s.epochs_run,
                  "best_epoch": s.best_epoch, "stopped_early": s.stopped_early,
                  "train_seconds": s.seconds, "images": len(images)}}))
"""


def report(rows: list[dict], args: argparse.Namespace, threads: str) -> str:
    lines = [
        "# Fit time of the methods trained with torch",
        "",
        f"`python benchmarks/fit_time.py {' '.join(sys.argv[1:])}` (latest run). {args.train} "
        f"normal magnetic-tile images at {args.size} px, MobileNetV2 with seeded random weights, "
        f"each method's defaults; one fresh process per method; torch threads: {threads}; "
        f"{os.cpu_count()} cores shared with other jobs (the load average when each method "
        f"finished, in its row). Target: under {TARGET_S:.0f} s.",
        "",
        "| method | fit s | epochs run | best epoch | stopped early | s per epoch | under target "
        "| measured | load |",
        "|---|---:|---:|---:|:---:|---:|:---:|---|---:|",
    ]
    for r in rows:
        per_epoch = r["train_seconds"] / max(r["epochs"], 1)
        lines.append(
            f"| {r['method']} | {r['fit_s']:.0f} | {r['epochs']} | {r['best_epoch']} | "
            f"{'yes' if r['stopped_early'] else 'no'} | {per_epoch:.1f} | "
            f"{'yes' if r['fit_s'] < TARGET_S else 'no'} | {r.get('measured', '-')} | "
            f"{r.get('load', '-')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/magnetic_tile"))
    parser.add_argument("--methods", default="cfa,rd4ad,simplenet,fastflow,stfpm")
    parser.add_argument("--train", type=int, default=200)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/fit_time")
    args = parser.parse_args()
    threads = os.environ.get("VAD_INSPECTION_THREADS", "2 (the default)")
    previous = args.out.with_suffix(".json")
    wanted = args.methods.split(",")
    rows: list[dict] = [
        r for r in (json.loads(previous.read_text()) if previous.exists() else [])
        if r["method"] not in wanted
    ]  # fmt: skip
    for method in wanted:
        code = CHILD.format(src=str(ROOT / "src"), data=args.data, train=args.train,
                            size=args.size, method=method)  # fmt: skip
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{method} failed after {time.perf_counter() - start:.0f} s:\n{done.stderr}")
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        row |= {"measured": time.strftime("%Y-%m-%d"), "load": round(os.getloadavg()[0], 2)}
        rows.append(row)
        print(f"{method}: fit {rows[-1]['fit_s']:.0f} s, {rows[-1]['epochs']} epochs", flush=True)
        text = report(rows, args, threads)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(text + "\n")
        args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    print(report(rows, args, threads))


if __name__ == "__main__":
    main()
