"""A suite's configuration, typed: every value declared once with its type and range, suite YAML files,
``key=value`` overrides, and the one way structured input (suites, results.json, zoo cards) is checked and refused
in one line. The checks against the registries are ``pipeline.validation``'s.

Owns: ``schema`` (``SuiteConfig`` and its sections, YAML files, overrides), ``typed`` (``Record``: pydantic types
on the fields and their errors as one line naming the field).
Imports: segbench.errors
"""
