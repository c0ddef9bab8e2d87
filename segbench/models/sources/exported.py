"""Exported model files as model sources: ``onnx:PATH`` (run by ONNX Runtime), ``torchscript:PATH``
(``torch.jit.load``) and ``export:PATH`` (a ``torch.export`` program saved as ``.pt2``, ``torch.export.load``).

A file is evaluated and timed as it will be deployed: nothing is re-exported. What the file states is read at
config time (``read``): its image input (one float input N x 3 x H x W), the axes it fixes (ONNX graph input dims;
a ``.pt2`` program's example input shape and range constraints; TorchScript states none), and its number of
outputs, from one forward pass of a zero image at the file's own size (or 64 x 64), which must agree with what
the file states (ONNX output dims, a ``.pt2`` program's output shape). The file carries no class names: the
suite's classes are assumed when the numbers agree, else ``eval.class_map`` names the outputs by index
(``"0": road``). Its input normalisation is ImageNet's, as segbench's own exports take, unless the suite states
``normalisation.MODEL``.
"""

from __future__ import annotations

import hashlib
import warnings
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segbench.errors import UserError
from segbench.models.normalisation import Normalisation
from segbench.models.sources.base import Resolved, Source

if TYPE_CHECKING:
    from segbench.config.schema import SuiteConfig

FORMATS = {"onnx": "an ONNX model", "torchscript": "a TorchScript archive (torch.jit.save)",
           "export": "a torch.export program (torch.export.save, .pt2)"}
PROBE_SIZE = 64  # height and width of the zero image a file is probed with where it fixes none
DYNAMIC_DIVISOR = 32  # what images are padded to for a file with dynamic height and width, as models built here


@dataclass(frozen=True)
class FileInfo:
    """What an exported file states about itself."""

    format: str  # onnx, torchscript or export
    path: Path
    input_shape: tuple[int | None, int | None, int | None, int | None]  # N, C, H, W; None: not fixed
    max_batch: int | None  # an upper bound of the batch axis (a .pt2 range constraint)
    num_outputs: int
    input_dtype: str  # float32 or float16
    names: tuple[str, str] = ("", "")  # ONNX: the image input's and the logits output's names
    program: Any = field(default=None, compare=False, repr=False)  # export: the program, loaded once
    sha256: str = ""  # export: of the bytes the program was read from

    @property
    def fixed_size(self) -> tuple[int | None, int | None] | None:
        """The height and width the file fixes (None for an axis it leaves free); None if it fixes neither."""
        height, width = self.input_shape[2:]
        return None if height is None and width is None else (height, width)

    def describe_shape(self) -> str:
        return " x ".join("N" if i == 0 and d is None else ("?" if d is None else str(d))
                          for i, d in enumerate(self.input_shape))


def _file(source: str, name: str) -> Path:
    if not name:
        raise UserError(f"model '{source}:': name the file after '{source}:' ({source}:PATH)")
    path = Path(name).expanduser()
    if not path.is_file():
        raise UserError(f"model '{source}:{name}': file '{path}' does not exist"
                        + (" (a folder; name the file in it)" if path.is_dir() else ""))
    return path


def _not_format(source: str, path: Path, detail: str = "") -> UserError:
    return UserError(f"model '{source}:{path}': '{path}' is not {FORMATS[source]}" + (f" ({detail})" if detail else ""))


def _reason(exc: Exception, path: Path) -> str:
    """The first line of a loader's error, the file's path (named already) left out, so that a long path does not
    push the reason past the 160 characters kept."""
    first = (str(exc).splitlines() or [""])[0]
    return first.replace(str(path), "the file").replace(str(path.resolve()), "the file")[:160]


def _no_image_input(source: str, path: Path, found: str) -> UserError:
    return UserError(f"model '{source}:{path}': the file has no float image input (expected one float32 input "
                     f"N x 3 x H x W; it takes {found})")


def _zip_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return []


def _image_shape(source: str, path: Path, shape: list[Any], dtype: str, found: str) -> tuple[Any, ...]:
    fixed = tuple(d if isinstance(d, int) and d > 0 else None for d in shape)
    if dtype not in ("float32", "float16") or len(fixed) != 4 or fixed[1] not in (None, 3):
        raise _no_image_input(source, path, found)
    return fixed


def _output_count(source: str, path: Path, shape: list[Any], dtype: str) -> int | None:
    """The number of output channels an N x K x H x W float output states (None: not fixed in the file)."""
    if dtype not in ("float32", "float16") or len(shape) != 4:
        raise UserError(f"model '{source}:{path}': its first output is {dtype} of shape {list(shape)}, not N x K x H "
                        "x W float logits")
    return shape[1] if isinstance(shape[1], int) and shape[1] > 0 else None


def _read_onnx(path: Path) -> FileInfo:
    import torch

    from segbench.models.sources.runners import ORT_DTYPES, OrtFile, open_session

    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise UserError(f"model 'onnx:{path}': onnx: models run with ONNX Runtime, which is not installed (pip "
                        "install 'segbench[deploy]')") from None
    try:
        session = open_session(str(path), torch.device("cpu"))
    except Exception as exc:
        raise _not_format("onnx", path, _reason(exc, path)) from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    found = ", ".join(f"{i.name} {i.type} {list(i.shape)}" for i in inputs) or "no input"
    if len(inputs) != 1 or inputs[0].type not in ORT_DTYPES:
        raise _no_image_input("onnx", path, found)
    dtype = "float16" if inputs[0].type == "tensor(float16)" else "float32"
    shape = _image_shape("onnx", path, list(inputs[0].shape), dtype, found)
    out = outputs[0]
    out_dtype = {"float": "float32"}.get(out.type[7:-1], out.type[7:-1])  # tensor(float) -> float32
    count = _output_count("onnx", path, list(out.shape), out_dtype)
    names = (inputs[0].name, out.name)
    count = _probe("onnx", path, OrtFile(str(path), names, ORT_DTYPES[inputs[0].type]), shape, None, count)
    return FileInfo("onnx", path, shape, None, count, dtype, names)


def _read_torchscript(path: Path) -> FileInfo:

    names = _zip_names(path)
    if not any(n.endswith("constants.pkl") for n in names) or not any("/code/" in n for n in names):
        raise _not_format("torchscript", path, "a torch.export .pt2 program is export:PATH" if any(
            n.endswith("archive_format") for n in names) else "")
    try:
        module = _jit_load(path)
    except Exception as exc:
        raise _not_format("torchscript", path, _reason(exc, path)) from None
    shape = (None, None, None, None)
    return FileInfo("torchscript", path, shape, None, _probe("torchscript", path, module.eval(), shape, None),
                    "float32")


def _jit_load(path: Path) -> Any:
    """A TorchScript archive loaded on the CPU (torch's deprecation warning of TorchScript silenced)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path), map_location="cpu").eval()


def _read_export(path: Path) -> FileInfo:
    import torch

    names = _zip_names(path)
    if not any(n.endswith("archive_format") for n in names):
        raise _not_format("export", path, "a TorchScript archive is torchscript:PATH" if any(
            n.endswith("constants.pkl") for n in names) else "")
    from segbench.models.sources.pt2 import load

    program, data = load(path)
    user_inputs = set(program.graph_signature.user_inputs)
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder" and n.name in user_inputs]
    values = [n.meta.get("val") for n in placeholders]
    found = ", ".join(f"{n.name} {getattr(v, 'dtype', '?')} {list(getattr(v, 'shape', []))}"
                      for n, v in zip(placeholders, values)) or "no input"
    if len(values) != 1 or not isinstance(values[0], torch.Tensor):
        raise _no_image_input("export", path, found)
    dtype = str(values[0].dtype).removeprefix("torch.")
    shape = _image_shape("export", path, list(values[0].shape), dtype, found)
    max_batch = _upper_bound(program, values[0].shape[0])
    output = next(n for n in program.graph.nodes if n.op == "output").args[0]
    first = output[0] if isinstance(output, (tuple, list)) else output
    value = getattr(first, "meta", {}).get("val")
    count = None
    if isinstance(value, torch.Tensor):
        count = _output_count("export", path, list(value.shape), str(value.dtype).removeprefix("torch."))
    count = _probe("export", path, program.module(), shape, max_batch, count)
    return FileInfo("export", path, shape, max_batch, count, dtype, program=program,
                    sha256=hashlib.sha256(data).hexdigest())


def _upper_bound(program: Any, size: Any) -> int | None:
    """The largest value a dynamic axis of a torch.export program may take (None: unbounded or fixed)."""
    expr = getattr(getattr(size, "node", None), "expr", None)
    bound = program.range_constraints.get(expr) if expr is not None else None
    upper = getattr(bound, "upper", None)
    try:
        import sympy

        return int(upper) if isinstance(upper, (int, sympy.Integer)) else None  # not torch's int_oo (no bound)
    except (TypeError, ValueError, AttributeError):
        return None


def _probe(source: str, path: Path, run: Any, shape: tuple[Any, ...], max_batch: int | None,
           stated: int | None = None) -> int:
    """The number of output channels, from one forward pass of a zero image at the file's size; a UserError if
    the file ``stated`` another number (its output shape) than it returns."""
    import torch

    batch = shape[0] or 1
    size = [batch, 3, shape[2] or PROBE_SIZE, shape[3] or PROBE_SIZE]
    from segbench.models.sources.runners import first_logits

    try:
        with torch.no_grad():
            out = first_logits(run(torch.zeros(size)))
    except Exception as exc:
        raise UserError(f"model '{source}:{path}': a forward pass of a {' x '.join(map(str, size))} float image "
                        f"fails: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]}") from None
    if out.dim() != 4 or not out.is_floating_point():
        raise UserError(f"model '{source}:{path}': it returns {out.dtype} of shape {list(out.shape)}, not N x K x H "
                        "x W float logits")
    if stated is not None and int(out.shape[1]) != stated:
        raise UserError(f"model '{source}:{path}': the file states {stated} output channels, but a forward pass of a "
                        f"{' x '.join(map(str, size))} image returns {int(out.shape[1])}")
    return int(out.shape[1])


READERS = {"onnx": _read_onnx, "torchscript": _read_torchscript, "export": _read_export}


@lru_cache(maxsize=4)  # an export program stays in memory with its FileInfo
def _read_cached(source: str, path: Path, stamp: tuple[int, int]) -> FileInfo:
    return READERS[source](path)


def read(source: str, name: str) -> FileInfo:
    """What the file ``name`` of format ``source`` states (read once per file version); a UserError if it does
    not exist, is not of that format, has no float image input or no logits output."""
    path = _file(source, name)
    stat = path.stat()
    return _read_cached(source, path.resolve(), (stat.st_mtime_ns, stat.st_size))


def _load(info: FileInfo) -> Any:
    """The file's runnable: an ``OrtFile``, a TorchScript module, or a torch.export program's module."""
    from segbench.models.sources.runners import ORT_DTYPES, OrtFile

    if info.format == "onnx":
        dtype = ORT_DTYPES["tensor(float16)" if info.input_dtype == "float16" else "tensor(float)"]
        return OrtFile(str(info.path), info.names, dtype)
    if info.format == "torchscript":
        return _jit_load(info.path)
    return info.program.module()  # read (and checked) once, at config time


def _identity(output: Any) -> Any:
    return output


def resolver(source: str) -> Any:
    def resolve(name: str, weights: str | None) -> Resolved:
        """The file's description, its record (format, path, sha256) and, on demand, its network."""
        from segbench.models.checkpoints import sha256_file
        from segbench.models.sources.runners import FileNetwork

        if weights is not None:
            raise UserError(f"weights.{source}:{name}: an exported file carries its own weights; name none")
        info = read(source, name)
        record = {"kind": "exported", "format": info.format, "path": str(info.path),
                  "sha256": info.sha256 or sha256_file(info.path), "input_shape": list(info.input_shape),
                  "runs_with": "onnxruntime" if source == "onnx" else "torch",
                  "executes_code": source == "torchscript"}  # a TorchScript file is a program; the others data
        normalisation = Normalisation(origin="ImageNet (segbench's convention for exported files; state "
                                             f"normalisation.{source}:{name} otherwise)")

        def build(accepted: bool = False) -> tuple[Any, Any]:
            return FileNetwork(f"{source}:{name}", _load(info), info.input_shape[0], info.max_batch), _identity

        divisor = 1 if info.fixed_size else DYNAMIC_DIVISOR
        return Resolved(source, name, None, info.num_outputs, normalisation, record, build, size_divisor=divisor)

    return resolve


def check_suite_fit(source: str, name: str, cfg: "SuiteConfig") -> None:
    """Raise a UserError unless the suite can evaluate and time the file of ``source:name`` as it allows (see
    segbench.models.sources.fit); nothing to check for other sources."""
    from segbench.models.sources.fit import check_fit

    if source in FORMATS:
        info = read(source, name)
        check_fit(f"{source}:{name}", source, info.input_shape, info.max_batch, cfg)


def checker(source: str) -> Any:
    def check(name: str) -> None:
        read(source, name)

    return check


def fetcher(source: str) -> Any:
    def fetch(name: str) -> str:
        """Nothing to download: the file is local."""
        return str(_file(source, name))

    return fetch


def lister(source: str, description: str) -> Any:
    def names() -> list[tuple[str, str]]:
        return [(f"{source}:PATH", description)]

    return names


def _source(name: str, description: str) -> Source:
    return Source(name, description, checker(name), resolver(name), fetcher(name),
                  lister(name, f"[{name}] {description}"))


SOURCES = (
    _source("onnx", "an ONNX file, run by ONNX Runtime (CPU provider; CUDA's on a GPU with onnxruntime-gpu)"),
    _source("torchscript", "a TorchScript file (torch.jit.save), run by torch"),
    _source("export", "a torch.export program (torch.export.save, .pt2), run by torch; read as data"),
)
