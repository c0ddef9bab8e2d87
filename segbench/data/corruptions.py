"""Corrupted views of a split's images: ImageNet-C's corruptions (Hendrycks & Dietterich 2019) at severities 1..5,
as packaged for any image size by Michaelis et al. 2019 (``imagecorruptions``; segbench uses its maintained fork
``imagecorruptions-imaug``, the ``robustness`` extra).

- **Names and groups.** The 19 corruptions in four groups: noise (gaussian, shot, impulse, speckle), blur (defocus,
  glass, motion, zoom, gaussian), weather (snow, frost, fog, spatter) and digital (brightness, contrast, saturate,
  pixelate, jpeg_compression). ``all`` is these 18. ``elastic_transform`` is in no group and only used when named:
  it moves pixels and the mask does not move with them, so a correct prediction would be scored as wrong.
- **The same image everywhere.** Randomised corruptions draw from numpy's global generator (and glass_blur and
  impulse_noise from a fresh one unless given a seed): each call runs with a seed derived from (image id,
  corruption, severity), under a lock, and numpy's global state is restored afterwards. The corrupted image is
  therefore the same in every run, model, process, shard and torchrun rank.
- **Computed once.** Corrupted images are cached as PNG files under ``cache_dir()/corruptions``, addressed by the
  sha256 of the image's pixels, the corruption, the severity, the package version and (for randomised ones) the
  seed key, and each carrying the sha256 of its own pixels: an entry whose pixels, size or digest do not match
  (damaged, swapped, resized) is recomputed and replaced. The least recently used files go when the cache
  outgrows ``$SEGBENCH_CORRUPTION_CACHE_GB`` (default 10; 0 turns the cache off; anything but a number >= 0 is
  refused). ``check_setup`` refuses, before any work, images under 32 x 32 and a cache setting that cannot work.
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from segbench.core.files import cache_dir
from segbench.errors import UserError, unknown

PACKAGE = "imagecorruptions-imaug"
GROUPS: dict[str, tuple[str, ...]] = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "gaussian_blur"),
    "weather": ("snow", "frost", "fog", "spatter"),
    "digital": ("brightness", "contrast", "saturate", "pixelate", "jpeg_compression"),
}
ALL = tuple(name for names in GROUPS.values() for name in names)  # 18: every corruption but elastic_transform
MOVES_PIXELS = ("elastic_transform",)  # never in a group: the mask would not move with the pixels
CORRUPTIONS = ALL + MOVES_PIXELS
DETERMINISTIC = ("brightness", "contrast", "saturate", "jpeg_compression", "pixelate", "defocus_blur",
                 "gaussian_blur", "zoom_blur")  # no random draw: the same output for any seed
SEEDED_BY_ARGUMENT = ("glass_blur", "impulse_noise")  # these take ``seed=`` (unseeded they ignore numpy's state)
SEVERITIES = (1, 2, 3, 4, 5)
MIN_SIDE = 32  # the package refuses smaller images
DEFAULT_LIMIT_GB = 10.0
LIMIT_VARIABLE = "SEGBENCH_CORRUPTION_CACHE_GB"
DIGEST = "segbench-sha256"  # the PNG text chunk that holds the sha256 of an entry's pixels
_RANDOM_LOCK = threading.Lock()  # numpy's global generator is shared by the threads of a process


def resolve(names: Sequence[str]) -> tuple[str, ...]:
    """The corruptions named by ``names`` (corruption names, group names or ``all``), in order, each once; an
    unknown name raises a UserError with the closest names."""
    out: list[str] = []
    for name in names:
        if name == "all":
            out += ALL
        elif name in GROUPS:
            out += GROUPS[name]
        elif name in CORRUPTIONS:
            out.append(name)
        else:
            raise unknown("corruption", name, [*CORRUPTIONS, *GROUPS, "all"])
    return tuple(dict.fromkeys(out))


def check_severity(severity: int) -> int:
    """``severity`` if it is one of 1..5, else a UserError."""
    if severity not in SEVERITIES:
        raise UserError(f"corruption severity {severity!r}: expected an integer from 1 to 5")
    return int(severity)


@cache
def _package() -> tuple[object, str]:
    """The ``imagecorruptions`` module and its distribution's version; a one-line UserError when it is missing."""
    try:
        import imagecorruptions
    except ImportError as exc:
        raise UserError(f"corruptions need the {PACKAGE} package, which is not installed ({exc}); install it with "
                        "pip install 'segbench[robustness]'") from None
    from importlib.metadata import PackageNotFoundError, version

    try:
        return imagecorruptions, version(PACKAGE)
    except PackageNotFoundError:  # an imagecorruptions installed some other way
        return imagecorruptions, f"imagecorruptions-{getattr(imagecorruptions, '__version__', 'unknown')}"


def package_version() -> str:
    """The installed corruption package's version (part of every cache key)."""
    return _package()[1]


def seed_for(seed_key: str, name: str, severity: int) -> int:
    """The 32-bit seed of one (image id, corruption, severity)."""
    digest = hashlib.sha256(f"{seed_key}\x00{name}\x00{severity}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


@contextmanager
def seeded_numpy(seed: int) -> Iterator[None]:
    """Run the block with numpy's global generator seeded with ``seed``; restore its state afterwards."""
    with _RANDOM_LOCK:
        state = np.random.get_state()
        np.random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(state)


def compute(image: np.ndarray, name: str, severity: int, seed_key: str) -> np.ndarray:
    """``image`` (HxWx3 uint8) under corruption ``name`` at ``severity``, seeded by (``seed_key``, name, severity);
    no cache."""
    module, _ = _package()
    check_severity(severity)
    if name not in CORRUPTIONS:
        raise unknown("corruption", name, CORRUPTIONS)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 image, got {image.dtype} {image.shape}")
    if min(image.shape[:2]) < MIN_SIDE:
        raise UserError(f"corruptions need images of at least {MIN_SIDE}x{MIN_SIDE} pixels, got one of "
                        f"{image.shape[1]}x{image.shape[0]} ({seed_key})")
    seed = seed_for(seed_key, name, severity)
    kwargs = {"seed": seed} if name in SEEDED_BY_ARGUMENT else {}
    with seeded_numpy(seed):
        return module.corrupt(image, severity=severity, corruption_name=name, **kwargs)


def cache_limit_bytes() -> int:
    """The corruption cache's size limit from ``$SEGBENCH_CORRUPTION_CACHE_GB`` (default 10 GB; 0: no cache); a
    UserError for anything but a finite number >= 0."""
    text = os.environ.get(LIMIT_VARIABLE, "").strip()
    if not text:
        return int(DEFAULT_LIMIT_GB * 1e9)
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value >= 0 and value != float("inf")):
        raise UserError(f"{LIMIT_VARIABLE}={text!r}: expected the corruption cache's size in GB, a number >= 0 (0 "
                        "turns the cache off)")
    return int(value * 1e9)


def check_setup(dataset: "Corruptible") -> None:
    """Raise a UserError, before any work, where corrupting ``dataset`` cannot work: images under 32 x 32 (the
    package refuses them), an unreadable cache size, a cache folder that is a file."""
    limit = cache_limit_bytes()
    sizes = list(getattr(dataset, "sizes", None) or [])
    if not sizes and len(dataset):
        sizes = [dataset.raw_image(0).shape[:2]]
    small = [(h, w) for h, w in sizes if min(h, w) < MIN_SIDE]
    if small:
        height, width = small[0]
        raise UserError(f"eval.corruptions: corruptions need images of at least {MIN_SIDE}x{MIN_SIDE} pixels, and "
                        f"{getattr(dataset, 'name', 'the data set')} {getattr(dataset, 'split', '')} has one of "
                        f"{width}x{height}")
    folder = cache_dir() / "corruptions"
    blocking = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if limit > 0 and blocking is not None:
        raise UserError(f"eval.corruptions: the corruption cache's folder {folder} cannot be made: '{blocking}' is a "
                        f"file (set SEGBENCH_CACHE_DIR to a folder, or {LIMIT_VARIABLE}=0 for no cache)")


def pixels_digest(image: np.ndarray, key: str) -> str:
    """The sha256 of a cache entry's address, shape and pixels: what the entry must hold to be trusted (an entry
    copied to another address does not match it)."""
    digest = hashlib.sha256(f"{key}|{image.shape}".encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


@dataclass
class CacheStats:
    """What this process's corruption cache did: corrupted images computed and read from the cache."""

    computed: int = 0
    hits: int = 0


STATS = CacheStats()


class CorruptionMeter:
    """What producing corrupted views cost, summed over every process that shares the meter (a DataLoader's
    workers inherit it): images computed, images read from the cache, and seconds spent producing them."""

    def __init__(self) -> None:
        self._totals = multiprocessing.Array("d", 3)  # computed, cache hits, seconds; shared memory with a lock

    def add(self, computed: int, hits: int, seconds: float) -> None:
        with self._totals.get_lock():
            self._totals[0] += computed
            self._totals[1] += hits
            self._totals[2] += seconds

    @property
    def computed(self) -> int:
        return int(self._totals[0])

    @property
    def hits(self) -> int:
        return int(self._totals[1])

    @property
    def seconds(self) -> float:
        return float(self._totals[2])


class CorruptionCache:
    """Corrupted images as PNG files under ``folder``, content-addressed, with a size limit (least recently used go
    first). Safe for several processes: files appear by atomic rename."""

    PRUNE_EVERY = 64  # writes between two looks at the cache's total size

    def __init__(self, folder: Path | None = None, limit_bytes: int | None = None) -> None:
        self.folder = Path(folder) if folder is not None else cache_dir() / "corruptions"
        self.limit_bytes = cache_limit_bytes() if limit_bytes is None else limit_bytes
        self._writes = 0

    def key(self, image: np.ndarray, name: str, severity: int, seed_key: str) -> str:
        """The address of ``image`` corrupted by ``name`` at ``severity``: pixels, corruption, severity, package
        version and, for a randomised corruption, the seed key."""
        digest = hashlib.sha256(f"{image.shape}|{name}|{severity}|{package_version()}".encode())
        digest.update(np.ascontiguousarray(image).data)
        if name not in DETERMINISTIC:
            digest.update(f"|{seed_key}".encode())
        return digest.hexdigest()

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.png"

    def get(self, key: str, shape: tuple[int, ...] | None = None) -> np.ndarray | None:
        """The cached image at ``key`` (marked as recently used), or None where there is none, or where its pixels
        are not those it was stored with (its sha256) or not of ``shape``."""
        path = self.path(key)
        try:
            with Image.open(path) as image:
                stated = image.info.get(DIGEST) if image.mode == "RGB" else None
                pixels = np.asarray(image.convert("RGB"))
            if stated != pixels_digest(pixels, key) or (shape is not None and pixels.shape != tuple(shape)):
                return None  # swapped, resized or written by another tool: computed again and replaced
            os.utime(path)
        except (OSError, ValueError, SyntaxError):  # absent, half-deleted by a prune, or damaged: compute again
            return None
        return pixels

    def put(self, key: str, image: np.ndarray) -> None:
        """Store ``image`` at ``key``; a full or read-only disk only costs a recomputation later."""
        if self.limit_bytes <= 0:
            return
        from PIL.PngImagePlugin import PngInfo

        buffer, info = io.BytesIO(), PngInfo()
        info.add_text(DIGEST, pixels_digest(image, key))
        Image.fromarray(image).save(buffer, format="PNG", compress_level=1, pnginfo=info)
        path = self.path(key)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(buffer.getvalue())
            os.replace(tmp, path)
        except OSError:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:  # its folder is not there (or is a file)
                pass
            return
        self._writes += 1
        if self._writes % self.PRUNE_EVERY == 1:
            self.prune()

    def prune(self) -> int:
        """Delete the least recently used files until the cache holds at most 90 % of its limit; return how many
        bytes it holds then."""
        files = []
        for path in self.folder.glob("??/*.png"):
            try:
                stat = path.stat()
            except OSError:
                continue
            files.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in files)
        if total <= self.limit_bytes:
            return total
        for _, size, path in sorted(files, key=lambda f: f[0]):
            if total <= 0.9 * self.limit_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
        return total


def corrupt(image: np.ndarray, name: str, severity: int, seed_key: str,
            store: CorruptionCache | None = None) -> np.ndarray:
    """``image`` (HxWx3 uint8) under corruption ``name`` at ``severity``, the same for the same ``seed_key`` (the
    image's id) in every run and process; read from ``store`` (default: the cache under segbench's cache folder)
    when it was computed before."""
    store = store if store is not None else CorruptionCache()
    key = store.key(image, name, severity, seed_key)
    if store.limit_bytes > 0 and (cached := store.get(key, image.shape)) is not None:
        STATS.hits += 1
        return cached
    corrupted = compute(image, name, severity, seed_key)
    STATS.computed += 1
    store.put(key, corrupted)
    return corrupted


class Corruptible(Protocol):
    """A data set whose images can be corrupted: each sample's raw pixels and the pair made from given pixels."""

    name: str
    split: str

    def __len__(self) -> int: ...

    def sample_id(self, index: int) -> str: ...

    def raw_image(self, index: int) -> np.ndarray: ...  # HxWx3 uint8, as read from disk (or generated)

    def with_image(self, index: int, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]: ...


class CorruptedView(Dataset):
    """The samples of ``base`` with their images corrupted by ``name`` at ``severity`` (masks unchanged), computed
    on access: in a DataLoader's worker processes, each image once per data set thanks to the cache."""

    def __init__(self, base: Corruptible, name: str, severity: int, store: CorruptionCache | None = None,
                 meter: CorruptionMeter | None = None) -> None:
        if resolve([name]) != (name,):
            raise UserError(f"corruption '{name}' is a group; make one view per corruption of resolve([name])")
        _package()  # a missing package is refused here, not in a worker process
        self.base, self.corruption, self.severity = base, name, check_severity(severity)
        self.store = store if store is not None else CorruptionCache()
        self.meter = meter
        self.name, self.split = base.name, base.split

    def __len__(self) -> int:
        return len(self.base)

    def __getattr__(self, attribute: str) -> object:  # sizes, samples, encoding, ...: those of the clean split
        if attribute == "base":
            raise AttributeError(attribute)
        return getattr(self.base, attribute)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        raw = self.base.raw_image(index)
        computed, hits, start = STATS.computed, STATS.hits, time.perf_counter()
        image = corrupt(raw, self.corruption, self.severity, self.base.sample_id(index), self.store)
        if self.meter is not None:
            self.meter.add(STATS.computed - computed, STATS.hits - hits, time.perf_counter() - start)
        return self.base.with_image(index, image)
