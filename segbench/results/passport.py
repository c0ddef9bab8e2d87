"""results.json's metric-passport records (part of segbench.results.schema, which imports them; read and written only
through it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from segbench.results.typed import extra_fields, json_field


@dataclass
class BoundaryScores:
    dilation_ratio: float  # band width as a share of the image diagonal
    dilation_pixels: list[int] = field(default_factory=list)  # the band widths d used (one per image size)
    intersection: list[int] = field(default_factory=list)  # per class, pixels in both bands
    union: list[int] = field(default_factory=list)  # per class, pixels in either band
    IoU: dict[str, float | None] = field(default_factory=dict)  # Boundary IoU per class; null: no band pixel
    extra_fields: dict[str, Any] = extra_fields()


@dataclass
class CalibrationHistogram:
    bins: int  # equal-width confidence bins over [0, 1]
    pixels: list[int] = field(default_factory=list)  # labelled pixels per bin
    confidence_sum: list[float] = field(default_factory=list)  # summed top-1 confidence per bin
    correct: list[int] = field(default_factory=list)  # correctly predicted pixels per bin
    extra_fields: dict[str, Any] = extra_fields()


@dataclass
class InstanceScores:
    classes: dict[str, float | None] = field(default_factory=dict)  # Cityscapes iIoU per instance class
    categories: dict[str, float | None] = field(default_factory=dict)  # iIoU of human and vehicle
    extra_fields: dict[str, Any] = extra_fields()


@dataclass
class SurfaceSettings:
    tolerance: float  # NSD tolerance
    unit: str = "pixels"  # pixels, or spacing (data.spacing units)
    spacing: list[float] | None = None  # physical pixel size (row, column)
    extra_fields: dict[str, Any] = extra_fields()


@dataclass
class CaseScores:
    name: str = json_field("class")  # foreground class (JSON key "class")
    case: int = json_field("case")  # index of the image in the evaluated split
    id: str | None = None  # the image's id
    Dice: float | None = None  # null: the class is in neither mask
    IoU: float | None = None
    HD95: float | None = None  # null: not measured, or a mask is empty
    NSD: float | None = None  # null: not measured, or both surfaces are empty
    extra_fields: dict[str, Any] = extra_fields()


@dataclass
class SavedPredictions:
    labels: str  # folder of label PNGs, relative to the output folder
    images: int = 0  # PNGs written
    encoding: str | None = None  # the data set's label encoding the PNGs use
    overlays: list[str] = field(default_factory=list)  # overlay PNGs, relative to the output folder
    extra_fields: dict[str, Any] = extra_fields()


@dataclass
class PassportDetails:
    """The metric passport's details; its headline numbers are in the model record's ``metrics``."""

    boundary: BoundaryScores | None = None  # Boundary IoU counts
    calibration: CalibrationHistogram | None = None  # the ECE histogram
    instances: InstanceScores | None = None  # Cityscapes iIoU (instance maps present)
    foreground: list[str] | None = None  # the foreground classes of fgIoU, fgDice and the per-case table
    per_case: list[CaseScores] = field(default_factory=list)  # one row per image and foreground class
    surface: SurfaceSettings | None = None  # HD95 / NSD settings, when measured
    predictions: SavedPredictions | None = None  # eval.save_predictions
    extra_fields: dict[str, Any] = extra_fields()


@dataclass
class MetricDefinition:
    definition: str  # what the number is
    convention: str  # accumulation and empty-case policy
    equals: str  # the tool whose number it reproduces
    unit: str = "fraction"  # fraction, or a distance unit
    higher_is_better: bool = True
    extra_fields: dict[str, Any] = extra_fields()
