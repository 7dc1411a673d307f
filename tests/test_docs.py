"""The API reference builds without a warning, and every public function and class documents
its arguments and shows an example."""

import importlib
import inspect
import pkgutil
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest

import dynprune.harness

REPO = Path(__file__).resolve().parents[1]

MODULES = [
    "dynprune",
    "dynprune.scores",
    "dynprune.masks",
    "dynprune.select",
    "dynprune.tree",
    "dynprune.schedules",
    "dynprune.distributions",
    "dynprune.algorithms",
    "dynprune.stats",
    "dynprune.sparse",
    "dynprune.surgery",
    "dynprune.gating",
    "dynprune.gating.nnx",
    *sorted(
        f"dynprune.harness.{m.name}"
        for m in pkgutil.iter_modules(dynprune.harness.__path__)
        if not m.name.startswith("_")
    ),
]


@pytest.mark.docs
def test_docs_build_without_warnings(tmp_path):
    """`python -m sphinx -W` over docs/: a docstring's reStructuredText slip fails here."""
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    build = subprocess.run(
        [*command, "docs", str(tmp_path / "html")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, f"sphinx failed:\n{build.stderr}\n{build.stdout[-3000:]}"
    assert (tmp_path / "html" / "index.html").exists()


def _is_typing_construct(obj) -> bool:
    """`Any`, `Callable[..., Any]`, `list[int]`, `X | None`, a TypeVar: aliases, not API."""
    return (
        typing.get_origin(obj) is not None
        or getattr(obj, "__module__", None) in {"typing", "typing_extensions"}
        or type(obj).__module__ in {"typing", "types", "typing_extensions", "collections.abc"}
    )


def public_api(module_name: str) -> dict[str, object]:
    """The functions and classes `module_name` exports: its `__all__`, else the public names
    it defines."""
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:
        names = [
            n
            for n, obj in vars(module).items()
            if not n.startswith("_") and getattr(obj, "__module__", None) == module_name
        ]
    api = {}
    for name in names:
        obj = getattr(module, name)
        if inspect.ismodule(obj) or not callable(obj) or _is_typing_construct(obj):
            continue
        api[name] = obj
    return api


def _takes_arguments(obj) -> bool:
    try:
        parameters = inspect.signature(obj).parameters
    except (TypeError, ValueError):  # no signature to read (a builtin)
        return False
    return any(p not in ("self", "cls") for p in parameters)


def _section(doc: str, name: str) -> bool:
    return re.search(rf"^\s*{name}:\s*$", doc, re.MULTILINE) is not None


def missing_docs(obj) -> list[str]:
    """What `obj`'s docstring lacks: an `Args:` (or, for a class, `Attributes:`) section and a
    `>>>` example."""
    doc = (obj.__doc__ if inspect.isclass(obj) else inspect.getdoc(obj)) or ""
    missing = []
    if inspect.isclass(obj):
        if not (_section(doc, "Args") or _section(doc, "Attributes")):
            missing.append("Args:/Attributes:")
    elif _takes_arguments(obj) and not _section(doc, "Args"):
        missing.append("Args:")
    if ">>>" not in doc:
        missing.append(">>> example")
    return missing


def test_public_api_is_listed():
    """The listing finds the API (a listing that found nothing would pass every check)."""
    assert "dynprune.harness.train" in MODULES
    assert {"prune", "Pruner", "PruneState"} <= set(public_api("dynprune"))
    assert "PyTree" not in public_api("dynprune.pruner")  # a typing alias
    assert "fit" in public_api("dynprune.harness.train")
    assert sum(len(public_api(m)) for m in MODULES) > 150


@pytest.mark.parametrize("module_name", MODULES)
def test_public_api_documented(module_name):
    undocumented = {
        f"{module_name}.{name}": missing
        for name, obj in public_api(module_name).items()
        if (missing := missing_docs(obj))
    }
    assert not undocumented, "docstrings lack sections:\n" + "\n".join(
        f"  {name}: no {', no '.join(missing)}" for name, missing in undocumented.items()
    )
