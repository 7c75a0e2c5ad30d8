"""The package's floors: no library folder imports the studies, experiments or the registry
above it, and no experiment trains outside the runner or draws from a constant key."""

import ast
import pathlib

import pytest


PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "jaxicl"
LIBRARY = ("_tasks", "_attention", "_meanfield", "_train", "_sweeps", "_host")
ABOVE = {
    "_tasks": ("_studies", "_experiments", "_registry", "_cli"),
    "_attention": ("_studies", "_experiments", "_registry", "_cli"),
    "_meanfield": ("_studies", "_experiments", "_registry", "_cli"),
    "_train": ("_studies", "_experiments", "_registry", "_cli"),
    "_sweeps": ("_studies", "_experiments", "_registry", "_cli"),
    "_host": ("_studies", "_experiments", "_registry", "_cli"),
    "_studies": ("_experiments", "_registry", "_cli"),
}


def _imported_packages(path: pathlib.Path) -> set[str]:
    """The top-level jaxicl subpackages and modules a file imports (relative imports)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            parts = (node.module or "").split(".")
            inside = path.parent != PACKAGE  # a file in a subfolder: level 2 is the package
            if node.level == (2 if inside else 1) and parts[0]:
                found.add(parts[0])
            elif node.level == 1 and inside:
                found.add(path.parent.name)
    return found


@pytest.mark.parametrize("folder", sorted(ABOVE))
def test_no_folder_imports_the_floors_above_it(folder):
    for path in sorted((PACKAGE / folder).glob("*.py")):
        upward = _imported_packages(path) & set(ABOVE[folder])
        assert not upward, f"{path.name} imports {sorted(upward)}"


def test_experiments_train_through_the_runner_with_the_runs_keys():
    for path in sorted((PACKAGE / "_experiments").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.endswith("_trainer"), f"{path.name} calls the trainer"
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("key", "PRNGKey")
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                raise AssertionError(f"{path.name}:{node.lineno} makes a key from a constant")
