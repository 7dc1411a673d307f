"""Sphinx configuration: the API reference, built offline from the Google-style docstrings.

Build with ``python -m sphinx -W --keep-going -b html docs docs/_build/html``.
"""

import importlib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

project = "dynprune"
author = "dynprune authors"
copyright = "dynprune authors"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "myst_nb",
]

exclude_patterns = ["_build", "**.ipynb_checkpoints", "notebooks/*.py", "notebooks/__pycache__"]

# Offline: no intersphinx, and unresolved references (numpy, jax, flax types) stay plain text.
nitpicky = False

# Google-style docstrings.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# ``Attributes:`` sections become fields of the class's entry, not entries of their own, so an
# attribute that autodoc also documents (a property, a dataclass field) is described once.
napoleon_use_ivar = True

autodoc_default_options = {"members": True, "member-order": "bysource", "show-inheritance": True}
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autosummary_generate = False

# Notebooks are committed with their outputs (notebooks/*.ipynb); they are rendered, never run.
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath"]

html_theme = "alabaster"
html_title = "dynprune"


def _reexports(package: str) -> str:
    """An autosummary table of `package.__all__`'s functions and classes, each linked to the
    module that defines (and documents) it."""
    module = importlib.import_module(package)
    lines = [".. autosummary::", ""]
    for name in module.__all__:
        obj = getattr(module, name)
        if callable(obj) and getattr(obj, "__module__", "").startswith("dynprune"):
            # Relative to `package`, the current module where the table stands.
            module_name = obj.__module__.removeprefix(f"{package}.")
            lines.append(f"   ~{module_name}.{obj.__qualname__}")
    return "\n".join([*lines, ""])


def _source_read(app, docname, source):
    marker = ".. reexports: dynprune"
    if marker in source[0]:
        source[0] = source[0].replace(marker, _reexports("dynprune"))


# Docstrings write absolute values and set sizes as |w|, |A ∩ B|, which reStructuredText reads
# as substitution references: escape the bars in prose, never in code, roles, literal blocks,
# doctests, line blocks or tables.
_SPANS = re.compile(r"(``.+?``|(?::[\w.:+-]+:)?`[^`]+`_{0,2})")
_LITERAL_DIRECTIVE = re.compile(
    r"\.\. (code-block|code|sourcecode|math|doctest|testcode|testoutput|parsed-literal)::"
)


def _escape_bars(app, what, name, obj, options, lines):
    literal_indent = None  # indentation of the line that opened a literal block
    doctest = False
    for i, line in enumerate(lines):
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if not stripped:
            doctest = False
            continue
        if literal_indent is not None:
            if indent > literal_indent:
                continue
            literal_indent = None
        if doctest or stripped.startswith(">>>"):
            doctest = True
            continue
        if stripped.startswith(("| ", "+-", "+=")):
            continue
        if _LITERAL_DIRECTIVE.match(stripped) or (
            stripped.endswith("::") and not stripped.startswith(".. ")
        ):
            literal_indent = indent
        parts = _SPANS.split(line)
        lines[i] = "".join(p if k % 2 else p.replace("|", r"\|") for k, p in enumerate(parts))


def _skip_namedtuple_fields(app, what, name, obj, skip, options):
    """NamedTuple fields ("Alias for field number N") are described by the class's
    ``Attributes:`` section instead."""
    if (getattr(obj, "__doc__", None) or "").startswith("Alias for field number"):
        return True
    return None


def setup(app):
    app.connect("source-read", _source_read)
    app.connect("autodoc-process-docstring", _escape_bars)
    app.connect("autodoc-skip-member", _skip_namedtuple_fields)
