"""Per-image latency and footprint of the fitted engine models, as a detector node would run them.

    python benchmarks/latency.py                      # PatchCore and PaDiM, MobileNetV2, 256 px
    python benchmarks/latency.py --sizes 256,64 --backbones mobilenet_v2,resnet18
    python benchmarks/latency.py --methods stfpm,fastflow,cfa,rd4ad,simplenet --sizes 256 \
        --report trained                              # the methods trained with torch

Each model is fitted on the first ``--train`` normal magnetic-tile images (seeded random weights)
and saved; then, in one process, the models take turns in blocks of ``--block`` calls on single
uint8 images (preprocess + backbone + model + anomaly map, i.e. ``predict([image])``) until each
has run ``--calls`` times after a warm-up: the rotation spreads a disturbance over all of them, and
the blocks keep each model's arrays in cache as they would be in a detector serving one model
(alternating every call made each model pay for the others' cache misses). Reported: median
and p90 latency, the model file's size, and the process's resident-memory growth while loading
and running it.

Targets (issue 3): at most 25 ms per 256x256 image for MobileNetV2 PatchCore and PaDiM on the
2-core development machine; model files no larger than the planetary paper's (PaDiM 10.7 MB,
PatchCore 17.4 MB, CFA 5.7 MB with MobileNetV2). Issue 17: each method trained with torch fits
on 200 images of 256 px in under 5 minutes and scores a 256x256 frame in under 30 ms (fit
time includes the ONNX export; the defaults of each method, so early stopping decides the
epochs).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from vad_inspection.data import open_dataset  # noqa: E402
from vad_inspection.eval.resources import array_footprint  # noqa: E402
from vad_inspection.vad.registry import CommonOptions, create_model, load_model, save_model  # noqa: E402

PAPER_MB = {"patchcore": 17.4, "padim": 10.7, "cfa": 5.7}


def rss_bytes() -> int:
    """Resident memory of this process now (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/magnetic_tile"))
    parser.add_argument("--methods", default="patchcore,padim")
    parser.add_argument("--backbones", default="mobilenet_v2")
    parser.add_argument("--sizes", default="256,64")
    parser.add_argument("--train", type=int, default=200)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--block", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/latency")
    parser.add_argument("--report", default="latency", help="name of the .md/.json written")
    args = parser.parse_args()

    dataset = open_dataset(f"magnetic_tile:{args.data}")
    normal = dataset.normal[: args.train + 10]
    args.out.mkdir(parents=True, exist_ok=True)
    models, rows = {}, []
    for size in (int(s) for s in args.sizes.split(",")):
        images = [cv2.resize(s.image(), (size, size), interpolation=cv2.INTER_AREA) for s in normal]
        for backbone in args.backbones.split(","):
            for method in args.methods.split(","):
                common = CommonOptions(backbone=backbone, size=size)
                model = create_model(method, common)
                start = time.perf_counter()
                model.fit(images[: args.train])
                fit_s = time.perf_counter() - start
                summary = getattr(model, "summary", None)  # the methods trained with torch
                path = save_model(model, args.out / f"{method}_{backbone}_{size}.vad", None)
                del model
                gc.collect()
                before = rss_bytes()
                loaded, _ = load_model(path)
                loaded.predict(images[-10:-9])  # warm-up (and numba's first call)
                key = (method, backbone, size)
                models[key] = (loaded, images[-10:])
                row = {"method": method, "backbone": backbone, "size": size, "fit_s": fit_s}
                row["epochs"] = None if summary is None else summary.epochs_run
                row["file_mb"] = os.path.getsize(path) / 1e6
                row["arrays_mb"] = array_footprint(loaded) / 1e6
                row["load_rss_mb"] = (rss_bytes() - before) / 1e6
                row["times"] = []
                rows.append(row)
                print(f"fitted {method} {backbone} {size}px in {fit_s:.1f} s", flush=True)
    load = os.getloadavg()[0]
    for _ in range(-(-args.calls // args.block)):
        for row, (model, test) in zip(rows, models.values(), strict=True):
            for call in range(-3, args.block):  # three unmeasured calls re-warm the caches
                image = test[call % len(test)]
                start = time.perf_counter()
                model.predict([image])
                if call >= 0 and len(row["times"]) < args.calls:
                    row["times"].append(time.perf_counter() - start)
    lines = [
        "| method | backbone | input | fit s | epochs | latency ms median (p90) | file MB | "
        "paper MB | arrays MB | load+run RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        times = np.asarray(row.pop("times")) * 1000
        row["latency_ms_median"] = float(np.median(times))
        row["latency_ms_p90"] = float(np.percentile(times, 90))
        lines.append(
            f"| {row['method']} | {row['backbone']} | {row['size']} | {row['fit_s']:.1f} | "
            f"{'-' if row['epochs'] is None else row['epochs']} | "
            f"{row['latency_ms_median']:.1f} ({row['latency_ms_p90']:.1f}) | "
            f"{row['file_mb']:.1f} | "
            f"{PAPER_MB.get(row['method'], float('nan'))} | {row['arrays_mb']:.1f} | "
            f"{row['load_rss_mb']:.0f} |"
        )
    header = (
        f"`python benchmarks/latency.py {' '.join(sys.argv[1:])}`. "
        f"Fit on {args.train} normal magnetic-tile images, seeded random weights; latency of "
        f"single-image predict over {args.calls} calls per model, models in rotating blocks of "
        f"{args.block}; "
        f"{os.cpu_count()} cores, load average {load:.2f} at the start of timing."
    )
    text = "\n".join([header, "", *lines])
    print(text)
    (args.out.parent / f"{args.report}.md").write_text(text + "\n")
    (args.out.parent / f"{args.report}.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
