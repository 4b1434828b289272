"""The package keeps to what CPython 3.9 and the standard library offer."""

from __future__ import annotations

import ast
import pathlib
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
SDK = HERE.parent
EXAMPLE = SDK.parent.parent / "examples" / "python-app" / "app.py"
SOURCES = sorted((SDK / "src" / "kiln").glob("*.py")) + [EXAMPLE]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_parses_with_the_python_3_9_grammar(path):
    ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 9))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_annotations_are_never_evaluated(path):
    """``X | None`` and similar in annotations are fine on 3.9 only under PEP 563."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    annotated = any(
        isinstance(node, ast.AnnAssign)
        or (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns)
        or (isinstance(node, ast.arg) and node.annotation)
        for node in ast.walk(tree)
    )
    assert not annotated or any(
        isinstance(node, ast.ImportFrom)
        and node.module == "__future__"
        and any(alias.name == "annotations" for alias in node.names)
        for node in tree.body
    ), f"{path.name} lacks 'from __future__ import annotations'"


def test_imports_only_the_standard_library():
    # and the optional native sampler, whose absence is handled (see test_sampling.py)
    stdlib = set(sys.stdlib_module_names) | {"_kiln_native"}
    for path in SOURCES[:-1]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in stdlib or top == "__future__", f"{path.name} imports {name}"
