"""An example segbench plugin: importing it registers a model (``tinyseg``), a data-set layout (``suffix_pairs``)
and a metric (``error_rate``). segbench imports it through the ``segbench.plugins`` entry point."""

from segbench_example_plugin import layouts, metrics, models  # noqa: F401  (registration happens on import)
