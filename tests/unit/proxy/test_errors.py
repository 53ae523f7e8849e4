"""One error tree: every exception the project defines descends from ShadowProxyError, and no
two share a name (a reader of ``except NotFound`` must know which one it is)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections import Counter

import comparators
import proxy
from proxy.errors import ShadowProxyError


def project_exceptions() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for package in (comparators, proxy):
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if info.name.endswith("__main__"):
                continue
            module = importlib.import_module(info.name)
            for _, obj in inspect.getmembers(module, inspect.isclass):
                if issubclass(obj, BaseException) and obj.__module__ == info.name:
                    found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return list(found.values())


def test_the_walk_finds_the_known_subtrees() -> None:
    names = {cls.__name__ for cls in project_exceptions()}
    assert {"StoreError", "BackendError", "FlagError", "HTTPProblem", "RuleError"} <= names


def test_every_exception_descends_from_the_one_root() -> None:
    strays = [
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in project_exceptions()
        # Private control-flow signals never leave their module.
        if not cls.__name__.startswith("_") and not issubclass(cls, ShadowProxyError)
    ]
    assert strays == []


def test_no_two_exceptions_share_a_name() -> None:
    counts = Counter(cls.__name__ for cls in project_exceptions())
    assert [name for name, n in counts.items() if n > 1] == []
