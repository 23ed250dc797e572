"""The demo's scenarios and how each is run, measured and drawn (see the package docstring)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import SetupError
from ..eval.hazard import TruthView, cell_scores, clear_sites, random_sites, truth_cells
from ..geometry.grid import Grid, world_to_cell
from ..geometry.hazard import auto_stride, project_to_plane
from ..msgs.anomaly import parse_tags
from ..msgs.geometry import msg_to_grid
from ..pipeline import fit_images, hold_out
from ..replay.run import GraphExtras, ReplayConfig, replay
from ..scenarios import Scenario, catalog
from ..scenarios.bagfile import scenario_bag
from ..transport.bag import BagReader
from ..vad.detector import detector_for_model
from ..vad.registry import CommonOptions, save_model
from ..vad.vae import CRACK_OPTIONS

NS = 1_000_000_000
Say = Callable[[str], None]
CHANCE = 0.6  # an AUROC below this is reported as no better than chance, not as a success


@dataclass(frozen=True)
class DemoConfig:
    data_root: Path
    out: Path
    scenarios: tuple[str, ...] = ("crack_wall", "lunar_orbit")
    seed: int = 0


@dataclass(frozen=True)
class Recipe:
    """One scenario as the demo runs it: the scene, the model fitted on a clean pass of the
    same kind of scene, and the surface the hazard grid lies on."""

    name: str
    title: str
    clean: Callable[[Path], list[np.ndarray]]  # frames of a clean pass, to fit on
    fit_on: str  # what that clean pass is, for the report
    method: str
    common: CommonOptions
    options: dict[str, Any]
    plane: tuple[float, float, float, float]  # the surface in map: n_x n_y n_z d
    origin: tuple[float, ...]  # grid corner pose: x y z roll pitch yaw
    resolution: float
    size_m: tuple[float, float]  # grid extent along the origin's x and y
    footprint_m: float  # landing site / stand-off footprint radius
    default_defect_m: float  # a defect's diameter when the truth gives none
    detector: dict[str, Any] = field(default_factory=dict)
    hazard: dict[str, Any] = field(default_factory=dict)  # more hazard-map parameters
    overrides: dict[str, Any] = field(default_factory=dict)
    budget: float = 0.05  # the downlink window, a share of the pass's raw bytes
    max_fit: int = 200  # clean frames fitted on at most (spread over the pass)


def _clean_frames(name: str, **overrides: Any) -> Callable[[Path], list[np.ndarray]]:
    def frames(data_root: Path) -> list[np.ndarray]:
        scan = catalog.load(name, data_root, **overrides)
        return [v.image for v in scan.views() if not v.truth.anomalous]

    return frames


RECIPES: dict[str, Recipe] = {
    "crack_wall": Recipe(
        name="crack_wall",
        title="Crack inspection: a UAV along a concrete wall (CrackForest)",
        clean=_clean_frames("crack_wall", anomalous_fraction=0.0, seed=1),
        fit_on="a clean pass along another wall of uncracked CrackForest photos (seed 1)",
        method="vae",
        common=CommonOptions(size=64, seed=0),
        options={**CRACK_OPTIONS, "epochs": 8},
        max_fit=36,  # 29 frames of about 35 tiles each: 1000 tiles, as on CrackForest
        plane=(1.0, 0.0, 0.0, -2.0),  # the wall x = 2 m
        origin=(2.0, -2.6, 1.0, np.pi / 2, 0.0, np.pi / 2),  # grid x along map y, y along z
        resolution=0.01,
        size_m=(2.7, 0.55),
        footprint_m=0.04,
        default_defect_m=0.05,
        detector={"tag_radius_m": 0.05, "min_region_px": 24},
    ),
    "lunar_orbit": Recipe(
        name="lunar_orbit",
        title="Lunar orbit pass: hazard map and landing sites over LROC NAC strips",
        clean=_clean_frames("lunar_orbit", split="train"),
        fit_on="a clean pass over the train-split strips (other sites), frames without a "
        "crater of 50 m or more",
        method="patchcore",
        common=CommonOptions(backbone="mobilenet_v2", size=128, seed=0),
        options={},
        plane=(0.0, 0.0, 1.0, 0.0),
        origin=(0.0, -500.0, 0.0, 0.0, 0.0, 0.0),
        resolution=2.0,
        size_m=(4000.0, 500.0),
        footprint_m=25.0,
        default_defect_m=50.0,
        detector={"tag_radius_m": 25.0, "min_region_px": 32},
        # each point of the strips is seen about twice (64 m along track per frame, a 128 m
        # swath): one frame's evidence makes a cell half known, two make it known
        hazard={"prior": 1.0, "site_max_anomaly": 0.35},
    ),
}


@dataclass
class ScenarioResult:
    recipe: Recipe
    report: dict[str, Any]
    worst: list[Any]
    best: list[Any]
    hazard: dict[str, Any]
    recorder: dict[str, Any]
    images: dict[str, Path]
    seconds: dict[str, float]


def run_scenario(recipe: Recipe, config: DemoConfig, say: Say) -> ScenarioResult:
    out = config.out / recipe.name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    scan = catalog.load(recipe.name, config.data_root, **recipe.overrides)
    bag = scenario_bag(recipe.name, config.data_root, config.out / "bags", recipe.overrides)
    seconds["bag"] = time.perf_counter() - t
    say(f"{recipe.name}: bag {bag} ({scan.frame_count} frames)")

    t = time.perf_counter()
    frames = recipe.clean(config.data_root)
    if len(frames) > recipe.max_fit:
        frames = [frames[i] for i in np.linspace(0, len(frames) - 1, recipe.max_fit).astype(int)]
    train, held = hold_out(frames, config.seed)
    say(f"{recipe.name}: fitting {recipe.method} on {len(train)} clean frames "
        f"(+{len(held)} to calibrate)")  # fmt: skip
    model, fit = fit_images(recipe.method, train, held, recipe.common, **recipe.options)
    model_path = save_model(model, out / "model.vad", fit.calibration)
    level = _pixel_level(model, fit.calibration, held)
    seconds["fit"] = time.perf_counter() - t

    t = time.perf_counter()
    say(f"{recipe.name}: player, detector, hazard map and recorder over DDS")
    report, worst, best, extras = _run_graph(recipe, bag, model_path, out, scan, level, say)
    seconds["graph"] = time.perf_counter() - t
    report["fit"] = {"method": recipe.method, "frames": len(train), "calibration": len(held),
                     "seconds": round(fit.fit_seconds, 1), "on": recipe.fit_on,
                     "hazard_threshold": level[0], "hazard_softness": level[1]}  # fmt: skip

    t = time.perf_counter()
    hazard, images = _hazard(recipe, scan, extras, out)
    recorder = _recorder(out / "downlink", bag, extras)
    seconds["score"] = time.perf_counter() - t
    return ScenarioResult(recipe, report, worst, best, hazard, recorder, images, seconds)


def _pixel_level(model: Any, calibration: Any, held: Sequence[np.ndarray]) -> tuple[float, float]:
    """Where the hazard map starts counting a pixel as anomalous evidence: the 99th percentile
    of the detector's normalised map over the held-out clean frames (a pixel-level threshold;
    PatchCore's and PaDiM's maps share the image score's scale, where 0.5 is a frame's peak at
    its threshold, which few defect pixels reach), and a softness from the 90th to it."""
    detector = detector_for_model(model, calibration)
    values = np.concatenate([detector(image).heat[::4, ::4].ravel() for image in held])
    q90, q99 = (float(v) for v in np.quantile(values, [0.9, 0.99]))
    return round(q99, 4), round(max((q99 - q90) / 2, 0.01), 4)


def _run_graph(recipe: Recipe, bag: Path, model: Path, out: Path, scan: Scenario,
               level: tuple[float, float], say: Say
               ) -> tuple[dict[str, Any], list[Any], list[Any], GraphExtras]:  # fmt: skip
    plane = [float(v) for v in recipe.plane]
    frame_bytes = int(np.prod(next(iter(scan.views())).image.shape))
    window = max(int(recipe.budget * frame_bytes * scan.frame_count), 4096)
    hazard = {
        "autostart": True, "map_frame": "map", "resolution": recipe.resolution,
        "origin": [float(v) for v in recipe.origin], "width_m": recipe.size_m[0],
        "height_m": recipe.size_m[1], "plane": plane, "use_sim_time": False,
        "footprint_radius_m": recipe.footprint_m, "publish_period_s": 0.5, "stride_px": 0,
        "threshold": level[0], "softness": level[1], **recipe.hazard,
    }  # fmt: skip
    recorder = {
        "autostart": True, "store_dir": str(out / "store"), "downlink_dir": str(out / "downlink"),
        "sync": "always", "window_period_s": 0.0, "window_bytes": window,
        "routine_period_s": 2.0, "pre_event_s": 0.5, "post_event_s": 0.5,
    }  # fmt: skip
    extras = GraphExtras(
        nodes=(
            ("hazard_map", hazard, {"camera_info": "/camera/camera_info"}),
            ("recorder", recorder, {"image": "/camera/image_raw"}),
        ),
        ready=(("/hazard_map/grid", "nav_msgs/msg/OccupancyGrid"),
               ("/recorder/status", "diagnostic_msgs/msg/DiagnosticArray")),
        keep=(("/hazard_map/landing_sites", "geometry_msgs/msg/PoseArray"),),
        end_service="/recorder/downlink",
        settle_s=1.5,
    )  # fmt: skip
    detector = {"plane_frame": "map", "plane": plane, "target_frame": "map", "use_depth": False,
                **recipe.detector}  # fmt: skip
    config = ReplayConfig(bag=bag, model=model, transport="dds", detector_params=tuple(
        detector.items()), match_radius_m=recipe.default_defect_m)  # fmt: skip
    done = [0]

    def progress(scored: int, total: int) -> None:
        if scored >= done[0] + max(total // 4, 1) or (scored == total and done[0] < total):
            done[0] = scored
            say(f"{recipe.name}: {scored}/{total} frames scored")

    report, worst, best = replay(config, progress, extras)
    if extras.logs:
        report["caveats"] += [f"{name} exited early: {log[-300:]}" for name, log in
                              extras.logs.items()]  # fmt: skip
    return report, worst, best, extras


def _views_in_map(scan: Scenario) -> list[tuple[Any, np.ndarray]]:
    optical = scan.base_from_optical()
    return [(v, v.world_from_base @ optical) for v in scan.views()]


def _defects(scan: Scenario, recipe: Recipe) -> list[tuple[float, float, float, float]]:
    mpp = float(scan.summary().get("mpp") or 0.0)
    out = []
    for d in scan.defects:
        size = d.size_m or (max(d.box[2], d.box[3]) * mpp if mpp else recipe.default_defect_m)
        out.append((*map(float, d.position), float(size)))
    return out


def _hazard(recipe: Recipe, scan: Scenario, extras: GraphExtras, out: Path
            ) -> tuple[dict[str, Any], dict[str, Path]]:  # fmt: skip
    grid_msg = extras.last.get("/hazard_map/grid")
    if grid_msg is None:
        return {"error": "no hazard grid received"}, {}
    grid = msg_to_grid(grid_msg)
    plane = (np.asarray(recipe.plane[:3]), float(recipe.plane[3]))
    views = _views_in_map(scan)
    truth, seen = truth_cells(
        grid, (TruthView(v.truth.mask, scan.camera, pose) for v, pose in views
               if v.truth.mask is not None), plane)  # fmt: skip
    scores = cell_scores(grid.grid, truth, seen)
    poses = extras.last.get("/hazard_map/landing_sites")
    sites = [(p.position.x, p.position.y, p.position.z) for p in (poses.poses if poses else [])]
    defects = _defects(scan, recipe)
    clear = clear_sites(sites, recipe.footprint_m, defects)
    known = grid.grid >= 0
    drawn = random_sites(grid, known, recipe.footprint_m, 2000, seed=0)
    random_clear = clear_sites(drawn, recipe.footprint_m, defects)
    figures = {
        "cells": {k: v for k, v in scores.__dict__.items()},
        "cells_known": int(known.sum()), "cells_total": int(known.size),
        "cells_lethal": int((grid.grid == 100).sum()),
        "sites": [{"x": x, "y": y, "z": z, "clear": c} for (x, y, z), c in zip(sites, clear,
                                                                             strict=True)],
        "top5_clear": (sum(clear[:5]) / len(clear[:5])) if clear else None,
        "random_clear": (sum(random_clear) / len(random_clear)) if random_clear else None,
        "random_sites": len(drawn), "defects": len(defects),
        "footprint_m": recipe.footprint_m, "resolution_m": grid.resolution,
        "maps_placed": _int(extras.statuses.get("/hazard_map", {}).get("maps_placed")),
        "frames": scan.frame_count,
    }  # fmt: skip
    image = out / "hazard.png"
    cv2.imwrite(str(image), _picture(grid, views, plane, scan, truth, sites, clear, defects,
                                     recipe))  # fmt: skip
    return figures, {"hazard": image}


MAX_PICTURE_PX = 2400  # the picture's long side at most


def _int(text: str | None) -> int | None:
    return None if text is None else int(text)


def _picture(grid: Grid, views: Sequence[tuple[Any, np.ndarray]], plane: Any, scan: Scenario,
             truth: np.ndarray, sites: Sequence[tuple[float, float, float]],
             clear: Sequence[bool], defects: Sequence[tuple[float, float, float, float]],
             recipe: Recipe) -> np.ndarray:  # fmt: skip
    """The terrain as the camera saw it, projected onto the surface at up to ``k`` times the
    grid's resolution (grey), hazard cells in red (by probability), unknown ground dimmed, true
    defect cells outlined in yellow, landing sites in green (clear) or magenta (a defect inside),
    ranked. BGR, the grid's +y up."""
    rows, cols = grid.shape
    k = max(1, MAX_PICTURE_PX // max(rows, cols))
    k = min(k, 8)
    fine = Grid(np.zeros((rows * k, cols * k), np.int8), grid.resolution / k, grid.origin,
                grid.frame_id, 0)  # fmt: skip
    size = rows * k * cols * k
    total, count = np.zeros(size), np.zeros(size)
    for view, pose in views[:: max(len(views) // 150, 1)]:
        gray = view.image if view.image.ndim == 2 else view.image[:, :, :3].mean(axis=2)
        height, width = gray.shape
        step = auto_stride(scan.camera, pose, plane, (width, height), fine.resolution)
        points, values = project_to_plane(gray.astype(np.float32), scan.camera, pose, plane, step)
        r, c = world_to_cell(fine, points)
        inside = (r >= 0) & (r < rows * k) & (c >= 0) & (c < cols * k)
        flat = r[inside] * cols * k + c[inside]
        total += np.bincount(flat, weights=values[inside], minlength=size)
        count += np.bincount(flat, minlength=size)
    terrain = np.divide(total, count, out=np.zeros(size), where=count > 0)
    terrain = terrain.reshape(rows * k, cols * k)
    picture = np.repeat(np.clip(terrain, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
    cells = np.repeat(np.repeat(grid.grid, k, axis=0), k, axis=1)
    picture[cells < 0] = (picture[cells < 0] * 0.35).astype(np.uint8)
    hazard = np.clip((cells.astype(np.float32) - 50) / 50, 0, 1)[:, :, None]
    red = np.zeros_like(picture)
    red[:, :, 2] = 255
    picture = (picture * (1 - 0.6 * hazard) + red * 0.6 * hazard).astype(np.uint8)
    edges = cv2.dilate(truth.astype(np.uint8), np.ones((3, 3), np.uint8)) - truth.astype(np.uint8)
    picture[np.repeat(np.repeat(edges, k, axis=0), k, axis=1) > 0] = (0, 220, 255)
    radius = max(int(recipe.footprint_m / fine.resolution), 3)
    thick = max(2, radius // 8)
    for (x, y, z), ok in zip(sites, clear, strict=True):
        r, c = world_to_cell(fine, [(x, y, z)])
        centre = (int(c[0]), int(r[0]))
        colour = (60, 200, 60) if ok else (200, 0, 200)
        cv2.circle(picture, centre, radius, colour, thick)
    picture = np.ascontiguousarray(picture[::-1])  # rows grow along +y: flip so +y is up
    for rank, (x, y, z) in enumerate(sites):  # labels after the flip, so they read upright
        r, c = world_to_cell(fine, [(x, y, z)])
        at = (int(c[0]) + radius, rows * k - 1 - int(r[0]))
        cv2.putText(picture, str(rank + 1), at, cv2.FONT_HERSHEY_SIMPLEX, 0.6, (60, 200, 60), 2)
    return picture


def _recorder(downlink: Path, bag: Path, extras: GraphExtras) -> dict[str, Any]:
    """What the end-of-pass window sent: items and forms, bytes against the budget, and the
    share of the pass's distinct defects and anomalous frames it carries (forms other than
    metadata), from the window bag itself read back."""
    truth = json.loads(bag.with_name(bag.name + ".truth.json").read_text())
    frames = {int(f["stamp_ns"]): f for f in truth["frames"]}
    defects = {d for f in truth["frames"] for d in f.get("defects", [])}
    anomalous = {s for s, f in frames.items() if f["anomalous"]}
    sent: list[dict[str, str]] = []
    stamps: list[int] = []
    for path in sorted(downlink.glob("window_*")):
        with BagReader(path) as reader:
            for message in reader.messages(["/downlink/meta"]):
                for values in parse_tags(message.decode()).values():
                    sent.append(values)
                    stamps.append(message.timestamp_ns)
    shown = {s for s, v in zip(stamps, sent, strict=True) if v.get("form") != "meta"}
    reply = extras.reply
    return {
        "windows": len(list(downlink.glob("window_*"))),
        "reply": getattr(reply, "message", "no reply"),
        "items": len(sent),
        "forms": {f: sum(v.get("form") == f for v in sent) for f in {v.get("form") for v in sent}},
        "defects_delivered": (len({d for s in shown for d in frames.get(s, {}).get("defects", [])}
                                  & defects) / len(defects)) if defects else None,
        "distinct_defects": len(defects),
        "anomalous_delivered": len(shown & anomalous) / len(anomalous) if anomalous else None,
        "anomalous_frames": len(anomalous),
        "frames": len(frames),
    }  # fmt: skip


def run_demo(config: DemoConfig) -> int:
    """Every scenario, then the report; prints where things are and the headline figures."""
    from .page import write_page

    unknown = [s for s in config.scenarios if s not in RECIPES]
    if unknown:
        raise SetupError(f"no demo for {', '.join(unknown)}; choose from {', '.join(RECIPES)}")
    start = time.perf_counter()

    def say(text: str) -> None:
        print(f"[{time.perf_counter() - start:5.0f} s] {text}", flush=True)

    config.out.mkdir(parents=True, exist_ok=True)
    results = []
    for k, name in enumerate(config.scenarios):
        say(f"scenario {k + 1}/{len(config.scenarios)}: {RECIPES[name].title}")
        results.append(run_scenario(RECIPES[name], config, say))
    page = write_page(config.out, results, time.perf_counter() - start)
    print(headline(results))
    print(
        f"report {page}\nbags   {config.out / 'bags'}\nrun    {config.out}/<scenario>/ "
        f"(model.vad, store/, downlink/, hazard.png)\ntotal  {time.perf_counter() - start:.0f} s"
    )
    return 0


def _f(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def verdict(result: ScenarioResult) -> str:
    """Detection working, or not better than chance, said in words."""
    m = result.report["metrics"]
    image, pixel = m.get("image_auroc"), m.get("pixel_auroc")
    best = max(v for v in (image, pixel, 0.0) if v is not None)
    if best < CHANCE:
        return (f"no better than chance: image AUROC {_f(image)}, pixel AUROC {_f(pixel)} "
                "(seeded random weights, no pretrained backbone here)")  # fmt: skip
    return f"detects: image AUROC {_f(image)}, pixel AUROC {_f(pixel)}"


def headline(results: Sequence[ScenarioResult]) -> str:
    lines = []
    for r in results:
        h, rec = r.hazard, r.recorder
        cells = h.get("cells", {})
        lines.append(
            f"{r.recipe.name}: {verdict(r)}\n"
            f"  hazard cells: precision {_f(cells.get('precision'))}, recall "
            f"{_f(cells.get('recall'))} ({h.get('cells_known')} of {h.get('cells_total')} known); "
            f"top-5 sites clear {_f(h.get('top5_clear'), 2)} vs random "
            f"{_f(h.get('random_clear'), 2)}\n"
            f"  downlink ({100 * r.recipe.budget:.0f} % of the pass): {rec.get('items')} items, "
            f"defects delivered {_f(rec.get('defects_delivered'), 2)}, anomalous frames "
            f"{_f(rec.get('anomalous_delivered'), 2)}\n"
            f"  time: " + ", ".join(f"{k} {v:.0f} s" for k, v in r.seconds.items())
        )  # fmt: skip
    return "\n".join(lines)
