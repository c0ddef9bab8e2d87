"""Reading and checking image/mask files: pairing, sizes, label values and truncated files, with a cache.

Cost: the cheap checks (pairing from the directory listing, sizes from the file headers) would be
enough to start a run, but label values and truncation need the file contents. Every mask is
decoded in full once (a Cityscapes mask takes about 10 ms); images are checked without decoding
their pixels (PNG: chunk CRCs via ``Image.verify``; JPEG: the end-of-image marker; other formats
are decoded). Files are checked on a thread pool (Pillow releases the GIL while decoding) and the
result of every pair is cached under ``$SEGBENCH_CACHE_DIR`` (default ``~/.cache/segbench``), keyed
by both paths, sizes and modification times and the label table: later runs only ``stat`` the files.

Images and masks are read as viewers show them: the EXIF orientation (from the file header; a PNG's
eXIf chunk after the pixel data is not looked at) is applied to both, and a 16-bit image is scaled from
its 0..65535 range to 0..255; 32-bit and floating-point images, whose range is unknown, are refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from segbench.core.files import atomic_write, cache_dir
from segbench.errors import UserError

if TYPE_CHECKING:
    from segbench.data.base import LabelMap, Sample

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MASK_MODES = ("L", "P", "1")  # single-channel 8-bit masks of label values (1-bit masks read as 0/1)
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")  # 16-bit grayscale: scaled from 0..65535 to 0..255
UNSUPPORTED_IMAGE_MODES = {"I": "32-bit integer", "F": "32-bit floating-point"}
CACHE_VERSION = 3  # 3: sizes after the EXIF orientation, 16-bit and 32-bit image modes
ORIENTATION_TAG = 0x0112
TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
             5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
             8: Image.Transpose.ROTATE_90}  # EXIF orientation -> the transposition that displays it upright
SHOWN = 3  # problems quoted in the error that refuses a data set


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class PairCheck:
    """What checking one image/mask pair found: the image size (height, width), the problems, and the raw
    values present in the mask."""

    size: tuple[int, int] | None
    problems: tuple[Problem, ...]
    values: tuple[int, ...] = ()


def orientation(image: Image.Image) -> int:
    """The EXIF orientation (1..8; 1 = upright) of a just-opened image, from the metadata read with its header."""
    try:
        value = Image.Image.getexif(image).get(ORIENTATION_TAG, 1)  # the base method: never decodes a PNG's pixels
    except Exception:  # damaged EXIF data: shown upright by viewers too
        return 1
    return value if value in TRANSPOSE else 1


def _sixteen_bit(mode: str, file_format: str | None) -> bool:
    """Whether an image is 16-bit grayscale (older Pillows open 16-bit PNGs as mode I; PNG has no 32-bit mode)."""
    return mode in SIXTEEN_BIT_MODES or (mode == "I" and file_format == "PNG")


def unsupported_image_mode(mode: str, file_format: str | None = None) -> str | None:
    """Why an image of Pillow ``mode`` cannot be read as RGB with its real range, or None when it can."""
    if mode not in UNSUPPORTED_IMAGE_MODES or _sixteen_bit(mode, file_format):
        return None
    return (f"image mode is {mode} ({UNSUPPORTED_IMAGE_MODES[mode]} values of unknown range); save it as an 8-bit "
            "or 16-bit image (e.g. PNG) with the range it should be shown with")


def read_image(path: Path) -> Image.Image:
    """An image file as an RGB PIL image, upright as its EXIF orientation says; 16-bit values are scaled from
    0..65535 to 0..255 (rounded), as viewers show them."""
    with Image.open(path) as image:
        turn = TRANSPOSE.get(orientation(image))
        if reason := unsupported_image_mode(image.mode, image.format):
            raise ValueError(reason)
        if _sixteen_bit(image.mode, image.format):
            levels = np.asarray(image).astype(np.float32) / 257.0  # 65535 / 255: 0 -> 0, 65535 -> 255
            rgb = Image.fromarray(np.rint(levels).astype(np.uint8)).convert("RGB")
        else:
            rgb = image.convert("RGB")
    return rgb.transpose(turn) if turn is not None else rgb


def read_mask(path: Path) -> np.ndarray:
    """A mask file as an HxW uint8 array of raw label values (palette PNGs give their indices), upright as its
    EXIF orientation says."""
    with Image.open(path) as mask:
        if mask.mode not in MASK_MODES:
            raise ValueError(f"mask mode is {mask.mode}; expected a single-channel 8-bit mask (L or P)")
        turn = TRANSPOSE.get(orientation(mask))
        values = np.asarray(mask.transpose(turn) if turn is not None else mask)
    return values.astype(np.uint8, copy=False)


@dataclass(frozen=True)
class Header:
    """What a file's header says: its displayed size (after the EXIF orientation), mode, orientation and format."""

    height: int
    width: int
    mode: str
    orientation: int
    format: str | None = None

    @property
    def size(self) -> tuple[int, int]:
        return self.height, self.width


def _header(path: Path, what: str, problems: list[Problem]) -> Header | None:
    """The file's header, or None after recording why it cannot be read."""
    try:
        with Image.open(path) as image:
            turn = orientation(image)
            height, width = (image.width, image.height) if turn >= 5 else (image.height, image.width)
            return Header(height, width, image.mode, turn, image.format)
    except Exception as exc:  # a damaged file can fail in any of Pillow's decoders
        problems.append(Problem(str(path), f"unreadable {what}: {describe_error(exc)}"))
        return None


def _shown(header: Header) -> str:
    """``WxH`` of a file as displayed, naming its EXIF orientation when it has one."""
    turned = f" after its EXIF orientation {header.orientation}" if header.orientation != 1 else ""
    return f"{header.width}x{header.height}{turned}"


def _check_image_data(path: Path) -> str | None:
    """Why the image's data is truncated or corrupt, or None; without decoding PNG or JPEG pixels."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".jpg", ".jpeg"):
            with open(path, "rb") as f:
                f.seek(max(0, os.path.getsize(path) - 1024))
                if b"\xff\xd9" not in f.read():
                    return "truncated image: the JPEG end-of-image marker is missing"
            return None
        with Image.open(path) as image:
            if suffix == ".png":
                image.verify()
            else:
                image.load()
    except Exception as exc:
        return f"truncated or corrupt image: {describe_error(exc)}"
    return None


def check_pair(image: Path, mask: Path, labels: "LabelMap") -> PairCheck:
    """Check one pair: both files readable and complete, equal sizes, every label value defined."""
    problems: list[Problem] = []
    present: tuple[int, ...] = ()
    image_header = _header(image, "image", problems)
    mask_header = _header(mask, "mask", problems)
    if image_header:
        reason = unsupported_image_mode(image_header.mode, image_header.format) or _check_image_data(image)
        if reason:
            problems.append(Problem(str(image), reason))
    if mask_header:
        if mask_header.mode not in MASK_MODES:
            problems.append(Problem(str(mask), f"mask mode is {mask_header.mode}; expected a single-channel 8-bit "
                                               "mask (L or P) of label values"))
        elif image_header and image_header.size != mask_header.size:
            problems.append(Problem(str(mask), f"mask is {_shown(mask_header)} but its image {image.name} is "
                                               f"{_shown(image_header)} (width x height as displayed)"))
        else:
            try:
                values = np.flatnonzero(np.bincount(read_mask(mask).ravel(), minlength=256))
            except Exception as exc:
                problems.append(Problem(str(mask), f"truncated or corrupt mask: {describe_error(exc)}"))
            else:
                present = tuple(int(v) for v in values)
                bad = [int(v) for v in values if not labels.defined[v]]
                if bad:
                    problems.append(Problem(str(mask), f"label values {_shorten(bad)} are neither classes "
                                                       f"nor ignored under {labels.name}"))
    return PairCheck(image_header.size if image_header else None, tuple(problems), present)


def check_layout(name: str, root: Path | None, env: str, hint: str, required: Callable[[Path], list[Path]]) -> None:
    """Raise a UserError, on one line, unless the data root is set, is a folder, and holds every path of
    ``required(root)``; ``hint`` says which layout is expected and where the data set is obtained."""
    if root is None:
        raise UserError(f"{name}: data.root is not set and {env} is empty (pass data.root=DIR or set {env}); {hint}")
    if root.exists() and not root.is_dir():
        raise UserError(f"{name}: data root {root} is a file, not a folder; {hint}")
    if not root.is_dir():
        raise UserError(f"{name}: data root {root} does not exist; {hint}")
    for path in required(root):
        if not path.exists():
            raise UserError(f"{name}: {path} is missing; {hint}")


def describe_error(exc: Exception) -> str:
    """The first line of an exception message (or its type when the message is empty)."""
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def _shorten(values: list[int], n: int = 8) -> str:
    text = ", ".join(map(str, values[:n]))
    return text + (f" (and {len(values) - n} more)" if len(values) > n else "")


def _stamp(path: Path) -> str:
    try:
        st = path.stat()
    except OSError:
        return f"{path}|missing"
    return f"{path}|{st.st_size}|{st.st_mtime_ns}"


def _cache_file(scope: str) -> Path:
    return cache_dir() / "checks" / f"{hashlib.sha256(scope.encode()).hexdigest()[:20]}.json"


def _load_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data.get("entries", {}) if data.get("version") == CACHE_VERSION else {}


def _save_cache(path: Path, entries: dict) -> None:
    """Write the cache atomically; a read-only or full disk only costs the next run a recheck."""
    try:
        atomic_write(path, json.dumps({"version": CACHE_VERSION, "entries": entries}))
    except OSError:
        pass


def _encode(result: PairCheck) -> dict:
    return {"size": result.size, "problems": [[p.path, p.message] for p in result.problems],
            "values": list(result.values)}


def _decode(entry: dict) -> PairCheck:
    size = tuple(entry["size"]) if entry["size"] else None
    return PairCheck(size, tuple(Problem(path, message) for path, message in entry["problems"]),
                     tuple(entry["values"]))


def check_samples(samples: list["Sample"], scope: str, workers: int | None = None,
                  desc: str = "checking data") -> list[PairCheck]:
    """Check every sample (cached per pair; ``scope`` names the cache file, e.g. data set, root and split)."""
    path = _cache_file(scope)
    cached = _load_cache(path)
    keys = [f"{_stamp(s.image)}|{_stamp(s.mask)}|{s.labels.digest}" for s in samples]
    todo = [i for i, key in enumerate(keys) if key not in cached]
    if todo:
        workers = workers or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(workers) as pool:
            jobs = pool.map(lambda i: check_pair(samples[i].image, samples[i].mask, samples[i].labels), todo)
            for i, result in zip(todo, tqdm(jobs, total=len(todo), desc=desc, leave=False,
                                            disable=True if len(todo) < 200 else None)):
                cached[keys[i]] = _encode(result)
        _save_cache(path, {key: cached[key] for key in keys})
    return [_decode(cached[key]) for key in keys]


def refusal(name: str, split: str, problems: list[Problem]) -> str:
    """The one-line error for a data set with problems: the count and the first few, each with its file."""
    shown = "; ".join(str(p) for p in problems[:SHOWN])
    more = f" (and {len(problems) - SHOWN} more)" if len(problems) > SHOWN else ""
    return (f"{name} {split}: {len(problems)} problem{'s' if len(problems) != 1 else ''} in the data: "
            f"{shown}{more}; fix them or set data.skip_bad=true to leave the bad samples out")
