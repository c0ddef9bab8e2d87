"""External model sources: published checkpoints named ``SOURCE:NAME`` (``torchvision:``, ``hf:``,
``smp:``), exported model files (``onnx:PATH``, ``torchscript:PATH``, ``export:PATH``) and models held in memory
(``memory:NAME``).

A source resolves a name to what segbench needs before building anything (``Resolved``: the class
names the checkpoint carries, its number of outputs, its input normalisation, where its weights are)
and, on demand, the network itself. Nothing is downloaded unless ``fetch`` is called, which is what
the user's ``download=true`` does: afterwards everything is read from the libraries' own caches.

Owns: ``base`` (``Source``, ``Resolved``, safe reading of checkpoints), ``wrapper`` (any external network as
segbench's own models), ``tv`` (torchvision), ``hf`` (transformers' semantic segmentation), ``universal``
(transformers' universal segmentation), ``smp`` (segmentation-models-pytorch), ``hub`` (folders and hub ids),
``exported`` (``onnx:``, ``torchscript:``, ``export:``), ``runners`` (exported files run as torch modules),
``pt2`` (a ``.pt2`` archive read as data), ``fit`` (whether a suite can use an exported file), ``memory`` (models
held in memory).
Imports: segbench.errors, segbench.core, segbench.config, segbench.data, segbench.models
"""

from __future__ import annotations

from segbench.core.registry import Registry
from segbench.models.sources.base import Resolved, Source, split_name

__all__ = ["SOURCES", "Resolved", "Source", "split_name"]


SOURCES: Registry[Source] = Registry("model source")


def _register() -> None:
    import segbench.models.sources.hf as hf
    import segbench.models.sources.memory as memory
    import segbench.models.sources.smp as smp
    import segbench.models.sources.tv as tv
    from segbench.models.sources.exported import SOURCES as EXPORTED

    for source in (tv.SOURCE, hf.SOURCE, smp.SOURCE, memory.SOURCE, *EXPORTED):
        SOURCES.register(source.name, source)


_register()
