"""The public home of public names: ``trioflow.GraphError``, not ``trioflow._exceptions.GraphError``."""

from __future__ import annotations


def public_home(*objects: object) -> None:
    """Show ``objects`` as ``trioflow.Name`` in reprs, tracebacks, pickles and the docs.

    ``trioflow/__init__.py`` calls it for the names it imports at once; a
    module whose names it imports only when first used calls it itself, so
    the names look the same whichever way the module was imported.
    """
    for obj in objects:
        if getattr(obj, "__module__", "").startswith("trioflow._"):
            try:
                obj.__module__ = "trioflow"
            except (AttributeError, TypeError):  # e.g. a type alias
                pass
