"""The import rules of docs/architecture.md, read from every module's imports."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "t2m_pipeline"

ALLOWED = {
    "vocabulary": set(),
    "partition_keys": set(),
    "config": set(),
    "storage": {"vocabulary", "partition_keys", "config", "db", "storage"},
    "db": {"vocabulary", "partition_keys", "config", "storage", "db", "render.outline"},
    "render": {"vocabulary", "partition_keys", "config", "storage", "db", "render"},
    "pipeline": {"vocabulary", "partition_keys", "config", "storage", "db", "render", "pipeline"},
    "migration": {"vocabulary", "partition_keys", "config", "storage", "db", "render", "migration", "pipeline"},
    "audits": {"vocabulary", "partition_keys", "config", "storage", "db", "audits"},
    "reports": set(),
    "launcher": set(),  # dagster.yaml's run launcher: Dagster only, never the code it launches
    "cli": {"vocabulary", "partition_keys", "config", "storage", "db", "render", "pipeline", "migration", "audits", "reports", "cli"},
}


def imported_modules(path: Path) -> list[str]:
    """Every module a file imports by name (`import a.b`, `from a.b import c`), wherever the import sits."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        names += [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
    return names


def imports_of(path: Path) -> set[tuple[str, str]]:
    """`t2m_pipeline.x[.y]` modules a file imports, as (`x`, `x.y`)."""
    found = set()
    for name in imported_modules(path):
        if name.startswith("t2m_pipeline."):
            parts = name.split(".")[1:]
            found.add((parts[0], ".".join(parts[:2])))
    return found


OUTSIDE = ("scripts", "benchmarks", "devtools")  # beside the package, never installed


def outside_modules() -> list[Path]:
    return [path for folder in OUTSIDE for path in (PACKAGE.parent / folder).rglob("*.py")]


def layer_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def test_every_library_module_imports_only_the_layers_below_it():
    bad = []
    for path in PACKAGE.rglob("*.py"):
        layer = layer_of(path)
        if layer in ("defs", "definitions", "__init__") or "migrations" in path.parts:
            continue
        allowed = ALLOWED[layer] | {layer}
        for top, name in imports_of(path):
            if top not in allowed and name not in allowed:
                bad.append(f"{path.relative_to(PACKAGE)} imports t2m_pipeline.{name}")
    assert not bad, "\n".join(sorted(set(bad)))


def test_nothing_outside_the_dagster_layer_imports_it():
    bad = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if layer_of(path) not in ("defs", "definitions") and {"defs", "definitions"} & {top for top, _ in imports_of(path)}
    ]
    assert not bad


def test_the_package_never_imports_tests_devtools_or_scripts():
    bad = [
        f"{path}: {name}"
        for path in PACKAGE.rglob("*.py")
        for name in imported_modules(path)
        if name.split(".")[0] in ("t2m_pipeline_tests", *OUTSIDE)
    ]
    assert not bad


def test_scripts_benchmarks_and_devtools_never_import_the_tests():
    bad = [
        f"{path.relative_to(PACKAGE.parent)}: {name}"
        for path in outside_modules()
        for name in imported_modules(path)
        if name.split(".")[0] == "t2m_pipeline_tests"
    ]
    assert not bad, "\n".join(bad)


def test_every_first_party_name_the_scripts_and_benchmarks_import_exists():
    """Their imports sit inside functions (a benchmark runs for minutes before reaching one): a renamed module must
    fail here, not at the end of a long run."""
    import importlib

    repo = PACKAGE.parent
    missing = []
    for path in outside_modules():
        for node in ast.walk(ast.parse(path.read_text())):  # `from m import name`: the names are checked too
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("t2m_pipeline", "devtools"):
                try:
                    module = importlib.import_module(node.module)
                except ImportError as exc:
                    missing.append(f"{path.relative_to(repo)}: {node.module} ({exc})")
                    continue
                missing += [
                    f"{path.relative_to(repo)}: {node.module}.{a.name}"
                    for a in node.names
                    if not hasattr(module, a.name)
                    and not (hasattr(module, "__path__") and importlib.util.find_spec(f"{node.module}.{a.name}"))
                ]
    assert not missing, "\n".join(missing)
