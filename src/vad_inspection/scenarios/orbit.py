"""A lunar orbit pass: a nadir camera sweeping over LROC NAC strips, craters as the truth.

The strips of one split are laid side by side along track on the plane ``z = 0`` of ``map`` (the
local surface, flat over a few kilometres), each pixel ``mpp`` metres (the NAC's 0.5 m). The
orbiter flies at ``altitude`` over it at ``ground_speed``; its camera looks straight down with
focal length ``altitude / mpp`` px, as the NAC's 10 microradian pixels do, so each frame is an
exact crop of the strips (the surface scan's geometry, see :mod:`.surface`). ``passes`` > 1 flies
adjacent ground tracks, ascending and descending in turn, to cover the strips' width.

Truth comes from the crater tables: every crater at least ``min_crater_m`` across is a defect (a
hazard for a lander, a target for a scientist) with its centre on the surface as 3-D position
and its inscribed ellipse in the mask; smaller craters are ordinary terrain. Strips of different
heights are cropped to the smallest (craters whose centre is cut off are dropped).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..data.imageio import read_image
from ..data.lroc_nac import list_strips, read_crater_table
from ..data.types import DatasetError
from .surface import Mosaic, SurfaceConfig, SurfaceScan
from .types import DefectTruth, ScenarioError


@dataclass(frozen=True)
class OrbitConfig:
    name: str
    split: str = "test"
    strips: tuple[str, ...] = ()  # strip names to lay (in this order); empty: all of the split
    min_crater_m: float = 32.0  # craters this wide or wider are the anomalies
    mpp: float = 0.5  # LROC NAC
    altitude: float = 50_000.0  # m: LRO's mapping orbit
    ground_speed: float = 1_600.0  # m/s: about a 50 km lunar orbit's
    width: int = 256
    height: int = 256
    rate_hz: float = 25.0  # with the speed: 64 m (128 px) along track per frame
    passes: int = 1
    seed: int = 0
    optical_frame: str = "nac_optical"


def _ellipse(mask: np.ndarray, cx: float, cy: float, w: float, h: float) -> None:
    """A filled inscribed ellipse, drawn at 1/16 px precision."""
    centre = (round(cx * 16), round(cy * 16))
    cv2.ellipse(mask, centre, (round(w / 2 * 16), round(h / 2 * 16)), 0, 0, 360, 1, -1, shift=4)


class OrbitPass(SurfaceScan):
    """The scenario (pure: no transport); ``root`` is the ``lroc_nac`` dataset folder."""

    def __init__(self, root: str, config: OrbitConfig) -> None:
        try:
            strips = list_strips(root, config.split)
        except DatasetError as error:
            raise ScenarioError(f"{config.name}: {error}") from None
        if config.strips:
            by_name = {s.name: s for s in strips}
            missing = [n for n in config.strips if n not in by_name]
            if missing:
                raise ScenarioError(
                    f"{config.name}: no strip(s) {missing} in split {config.split!r}; "
                    f"strips: {sorted(by_name)}"
                )
            strips = [by_name[n] for n in config.strips]
        images = [read_image(s.image, channels=1)[:, :, 0] for s in strips]
        height = min(i.shape[0] for i in images)
        mosaic = np.concatenate([i[:height] for i in images], axis=1)
        mask = np.zeros(mosaic.shape, np.uint8)
        defects: list[DefectTruth] = []
        self.craters_in_tables = 0
        offset = 0
        for strip, image in zip(strips, images, strict=True):
            craters = read_crater_table(strip.table)
            self.craters_in_tables += len(craters)
            for crater in craters:
                if crater.diameter * config.mpp < config.min_crater_m or crater.cy >= height:
                    continue
                col = offset + crater.cx
                _ellipse(mask, col, crater.cy, crater.w, crater.h)
                defects.append(
                    DefectTruth(
                        id=f"C{len(defects) + 1:04d}",
                        position=(col * config.mpp, -crater.cy * config.mpp, 0.0),
                        mosaic_rc=(crater.cy, col),
                        box=(
                            round(offset + crater.x),
                            round(crater.y),
                            round(crater.w),
                            round(crater.h),
                        ),
                        area_px=round(np.pi * crater.w * crater.h / 4),
                        size_m=crater.diameter * config.mpp,
                        source=f"{strip.name}#{crater.id}",
                    )
                )
            offset += image.shape[1]
        self.orbit = config
        self.strips = [s.name for s in strips]
        surface = SurfaceConfig(
            name=config.name, mpp=config.mpp, distance=config.altitude, width=config.width,
            height=config.height, speed=config.ground_speed, rate_hz=config.rate_hz,
            seed=config.seed, mount="down", optical_frame=config.optical_frame,
            passes=config.passes,
        )  # fmt: skip
        super().__init__(None, surface, Mosaic(mosaic, mask.astype(bool)), defects)

    def summary(self) -> dict[str, object]:
        c = self.orbit
        covered = {d.id for r0, c0 in self.origins() for d in self.defects_in_view(r0, c0)}
        return {
            **super().summary(), "kind": "orbit", "strips": self.strips,
            "altitude_m": c.altitude, "ground_speed_m_s": c.ground_speed,
            "min_crater_m": c.min_crater_m, "craters_in_tables": self.craters_in_tables,
            "craters_counted": len(self.defects), "craters_in_view": len(covered),
            "swath_m": c.width * c.mpp,
        }  # fmt: skip
