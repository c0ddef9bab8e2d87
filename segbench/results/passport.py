"""results.json's metric-passport records (part of segbench.results.schema, which imports them; read and written only
through it)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from segbench.config.typed import Record


class BoundaryScores(Record):
    dilation_ratio: float  # band width as a share of the image diagonal
    dilation_pixels: list[int] = []  # the band widths d used (one per image size)
    intersection: list[int] = []  # per class, pixels in both bands
    union: list[int] = []  # per class, pixels in either band
    IoU: dict[str, float | None] = {}  # Boundary IoU per class; null: no band pixel


class CalibrationHistogram(Record):
    bins: int  # equal-width confidence bins over [0, 1]
    pixels: list[int] = []  # labelled pixels per bin
    confidence_sum: list[float] = []  # summed top-1 confidence per bin
    correct: list[int] = []  # correctly predicted pixels per bin


class InstanceScores(Record):
    classes: dict[str, float | None] = {}  # Cityscapes iIoU per instance class
    categories: dict[str, float | None] = {}  # iIoU of human and vehicle


class SurfaceSettings(Record):
    tolerance: float  # NSD tolerance
    unit: Literal["pixels", "spacing"] = "pixels"  # pixels, or spacing (data.spacing units)
    spacing: list[float] | None = None  # physical pixel size (row, column)


class CaseScores(Record):
    name: str = Field(alias="class")  # foreground class (JSON key "class")
    case: int  # index of the image in the evaluated split
    id: str | None = None  # the image's id
    Dice: float | None = None  # null: the class is in neither mask
    IoU: float | None = None
    HD95: float | None = None  # null: not measured, or a mask is empty
    NSD: float | None = None  # null: not measured, or both surfaces are empty


class SavedPredictions(Record):
    labels: str  # folder of label PNGs, relative to the output folder
    images: int = 0  # PNGs written
    encoding: str | None = None  # the data set's label encoding the PNGs use
    overlays: list[str] = []  # overlay PNGs, relative to the output folder


class PassportDetails(Record):
    """The metric passport's details; its headline numbers are in the model record's ``metrics``."""

    boundary: BoundaryScores | None = None  # Boundary IoU counts
    calibration: CalibrationHistogram | None = None  # the ECE histogram
    instances: InstanceScores | None = None  # Cityscapes iIoU (instance maps present)
    foreground: list[str] | None = None  # the foreground classes of fgIoU, fgDice and the per-case table
    per_case: list[CaseScores] = []  # one row per image and foreground class
    surface: SurfaceSettings | None = None  # HD95 / NSD settings, when measured
    predictions: SavedPredictions | None = None  # eval.save_predictions


class MetricDefinition(Record):
    definition: str  # what the number is
    convention: str  # accumulation and empty-case policy
    equals: str  # the tool whose number it reproduces
    unit: str = "fraction"  # fraction, or a distance unit
    higher_is_better: bool = True
    origin: dict[str, Any] | None = None  # a user's registered metric: module, file, sha256, package, version
