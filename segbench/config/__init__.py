"""A suite's configuration: the typed schema, suite YAML files, ``key=value`` overrides, and the checks against every
registry that run before any work starts. May import ``core`` and the registries of ``data``, ``models``, ``train``
and ``metrics`` (to check names), nothing further down the flow."""
