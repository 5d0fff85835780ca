"""Sphinx configuration for trioflow's documentation.

Build with ``nox -s docs`` (``sphinx-build -n -W``: nitpicky, warnings are errors).
"""

from __future__ import annotations

import os
import sys
import urllib.request
from importlib.metadata import version as _version
from pathlib import Path

project = "trioflow"
author = "trioflow developers"
copyright = "trioflow developers"
release = _version("trioflow")
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinxcontrib_trio",
]

root_doc = "index"
exclude_patterns = ["_build"]
nitpicky = True
default_role = "obj"
pygments_style = "default"
html_theme = "alabaster"
html_static_path: list[str] = []

# -- autodoc / napoleon ---------------------------------------------------------

# ``trioflow._flow`` imports the event types only for type checking (``import
# trioflow`` leaves the events module until a run sends an event); autodoc
# evaluates the annotations of Flow's signatures in that module's namespace.
import trioflow._events  # noqa: E402
import trioflow._flow  # noqa: E402

trioflow._flow.Event = trioflow._events.Event  # type: ignore[attr-defined]


autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = False
autodoc_default_options = {"members": True, "undoc-members": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = True
# an ``Attributes:`` section becomes a field list, so attrs fields are not described twice
napoleon_use_ivar = True

# Internal names that appear in public signatures but are not themselves public.
nitpick_ignore = [
    # the structural type of trio's and anyio's CapacityLimiter
    ("py:class", "trioflow._scheduler.Limiter"),
    # RunResult.steps: a read-only mapping of step results, by name or step function
    ("py:class", "LazySteps"),
    ("py:class", "trioflow._results.LazySteps"),
    # the runner interface behind flow.step(runner=...) (described in design.rst)
    ("py:class", "trioflow._runners.Runner"),
    # what a run keeps for its timeline (RunResult's private _trace field)
    ("py:class", "trioflow._results.RunTrace"),
    # RunResult.steps' read-only mapping that makes each StepResult when first looked up
    ("py:class", "LazySteps"),
    ("py:class", "trioflow._results.LazySteps"),
]
nitpick_ignore_regex: list[tuple[str, str]] = [
    # type variables (T, R, ...) in generic signatures, also in trioflow.testing's modules
    ("py:class", r"trioflow\.(\w+\.)?_\w+\.[A-Z]"),
]

# -- intersphinx ------------------------------------------------------------------
#
# Links to other projects' docs need their ``objects.inv`` at build time, which
# needs the network. When an inventory cannot be fetched, Sphinx only warns,
# and under ``-W`` that warning fails the build; so offline builds (CI machines
# that reach nothing but package registries) would always fail.
#
# The choice: each inventory is probed once here (a short timeout) and only the
# reachable ones are configured. References into a project whose inventory is
# unreachable are then listed in ``nitpick_ignore_regex``: they render as plain
# text instead of links, while references to trioflow's own objects are still
# checked. ``TRIOFLOW_DOCS_INTERSPHINX=1`` uses every inventory without probing
# (a release build, where a broken link must fail); ``=0`` uses none.

_INVENTORIES = {
    "python": "https://docs.python.org/3",
    "trio": "https://trio.readthedocs.io/en/stable",
    "anyio": "https://anyio.readthedocs.io/en/stable",
    "attrs": "https://www.attrs.org/en/stable",
    "hypothesis": "https://hypothesis.readthedocs.io/en/latest",
}
# What to leave unlinked when a project's inventory is missing.
_NAMESPACES = {
    "python": [
        # any standard-library module, or a name inside one
        r"(" + "|".join(sorted(sys.stdlib_module_names)) + r")(\..*)?",
        r"(Any|Callable|Iterable|Iterator|Mapping|Sequence|Self|Literal|TypeVar)(\[.*)?",
        r"ExceptionGroup\[.*\]",
    ],
    "trio": [r"trio(\..*)?"],
    "anyio": [r"anyio(\..*)?"],
    "attrs": [r"attrs?(\..*)?"],
    "hypothesis": [r"hypothesis(\..*)?"],
}


def _reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/objects.inv", timeout=5) as response:
            return bool(response.status == 200)
    except Exception:
        return False


_mode = os.environ.get("TRIOFLOW_DOCS_INTERSPHINX", "auto")
if _mode == "1":
    _online = set(_INVENTORIES)
elif _mode == "0":
    _online = set()
else:
    _online = {name for name, url in _INVENTORIES.items() if _reachable(url)}

intersphinx_mapping = {name: (url, None) for name, url in _INVENTORIES.items() if name in _online}
intersphinx_timeout = 10
for _name, _patterns in _NAMESPACES.items():
    if _name not in _online:
        for _pattern in _patterns:
            for _role in ("py:class", "py:exc", "py:func", "py:meth", "py:obj", "py:mod", "py:data", "py:attr"):
                nitpick_ignore_regex.append((_role, _pattern))


# -- public names defined in private modules -----------------------------------------
#
# trioflow's classes live in private modules (``trioflow._flow.Flow``) and are
# documented under their public names (``trioflow.Flow``). Annotations that
# autodoc renders may still name the private module; send those references to
# the public name.


def _resolve_private_names(app, env, node, contnode):  # type: ignore[no-untyped-def]
    target = node.get("reftarget", "")
    if node.get("refdomain") != "py" or not target.startswith("trioflow._"):
        return None
    import trioflow

    name = target.rsplit(".", 1)[-1]
    if name not in trioflow.__all__:
        return None
    domain = env.get_domain("py")
    return domain.resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], f"trioflow.{name}", node, contnode
    )


# -- pages listed in the index only when they exist --------------------------------
#
# These pages are written separately; index.rst has the placeholder line
# "optional-pages" in its toctree, replaced here by the pages whose files exist,
# in this order. (A toctree entry for a missing file, or a page in no toctree,
# would each fail the build under -W.)

OPTIONAL_PAGES = [
    "testing",
    "durable",
    "scaling",
    "watching",
    "limits",
    "web-service",
    "coming-from-batch-node",
    "coming-from-node-executor",
    "coming-from-plans",
    "flowfiles",
]


def _list_optional_pages(app, docname, source):  # type: ignore[no-untyped-def]
    if docname != root_doc:
        return
    present = [p for p in OPTIONAL_PAGES if (Path(app.srcdir) / f"{p}.rst").exists()]
    source[0] = source[0].replace(
        "\n   optional-pages\n", "\n" + "".join(f"   {p}\n" for p in present)
    )


def _reread_index(app, env, added, changed, removed):  # type: ignore[no-untyped-def]
    # the index depends on which optional pages exist, not only on its own text
    return [root_doc]


def setup(app):  # type: ignore[no-untyped-def]
    app.connect("missing-reference", _resolve_private_names)
    app.connect("source-read", _list_optional_pages)
    app.connect("env-get-outdated", _reread_index)
