"""The package layers, checked on the source: no module imports upward.

    kernels            pure numba; imports neither shm_engine nor clients
      ^
    shm_engine.core    layout, segment, ordering, latch, rows, registry, config
    shm_engine.wire    the heartbeat wire format
      ^
    shm_engine.ingest  shm_engine.tick  clients     (siblings: none imports another)
      ^
    shm_engine.ops     supervisor, CLI, status, top, metrics, keys, demo
    shm_engine.http    the HTTP API and dashboard (the supervisor names its
                       child by a string, never an import)
    shm_engine         the package facade

Every import counts, including those inside functions (a lazy import is still
a dependency).  A light sender must not load numba: checked in a fresh
interpreter.
"""

import ast
import importlib
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("kernels", "shm_engine", "clients")

# (prefix, layer, group): the longest matching prefix wins.
LAYERS = [
    ("kernels", 0, "kernels"),
    ("shm_engine.core", 1, "core"),
    ("shm_engine.wire", 1, "wire"),
    ("shm_engine.ingest", 2, "ingest"),
    ("shm_engine.tick", 2, "tick"),
    ("clients", 2, "clients"),
    ("shm_engine.ops", 3, "ops"),
    ("shm_engine.http", 3, "http"),
    ("shm_engine", 3, "facade"),
]


def classify(module: str):
    best = None
    for prefix, layer, group in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, layer, group)
    return None if best is None else best[1:]


def module_name(path: pathlib.Path, root: pathlib.Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_package(module: str, root: pathlib.Path = ROOT) -> bool:
    return (root / module.replace(".", "/") / "__init__.py").exists()


def imported_modules(path: pathlib.Path, module: str, root: pathlib.Path = ROOT):
    """(line, imported module) for every import of a project module in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if is_package(module, root) else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                # `from pkg import submodule` depends on the submodule.
                is_module = (
                    is_package(sub, root) or (root / (sub.replace(".", "/") + ".py")).exists()
                )
                yield node.lineno, sub if is_package(target, root) and is_module else target


def violations(root: pathlib.Path = ROOT):
    found = []
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            module = module_name(path, root)
            here = classify(module)
            for line, target in imported_modules(path, module, root):
                there = classify(target)
                if there is None or here is None:
                    continue
                (l_here, g_here), (l_there, g_there) = here, there
                upward = l_there > l_here
                sibling = l_there == l_here == 2 and g_here != g_there
                if upward or sibling:
                    found.append(
                        f"{path.relative_to(root)}:{line}: {module} ({g_here}, "
                        f"layer {l_here}) imports {target} ({g_there}, layer {l_there})"
                    )
    return found


def test_no_module_imports_upward_or_across_siblings():
    assert violations() == []


def test_the_checker_catches_upward_and_sibling_imports(tmp_path):
    # The check itself can fail: a small tree with one kernel importing the
    # service (upward), a client importing the ingest (sibling), and a lazy
    # import inside a function.
    for pkg in ("kernels", "shm_engine", "shm_engine/core", "shm_engine/ingest", "clients"):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "shm_engine/core/layout.py").write_text("")
    (tmp_path / "shm_engine/ingest/process.py").write_text("")
    (tmp_path / "kernels/bad.py").write_text("from shm_engine.core import layout\n")
    (tmp_path / "clients/bad.py").write_text("def f():\n    import shm_engine.ingest.process\n")
    (tmp_path / "clients/good.py").write_text("from shm_engine.core.layout import X\n")
    found = violations(tmp_path)
    assert len(found) == 2, found
    assert found[0].startswith(
        "kernels/bad.py:1: kernels.bad (kernels, layer 0) imports "
        "shm_engine.core.layout (core, layer 1)"
    )
    assert found[1].startswith(
        "clients/bad.py:2: clients.bad (clients, layer 2) imports shm_engine.ingest.process"
    )


@pytest.mark.parametrize(
    "module, kind",
    [
        ("kernels.params", 0),
        ("shm_engine.core.layout", 1),
        ("clients.reader", 2),
        ("shm_engine.tick.ticker", 2),
        ("shm_engine.ops.cli", 3),
        ("shm_engine.http.api", 3),
        ("shm_engine", 3),
    ],
)
def test_layer_table(module, kind):
    assert classify(module)[0] == kind


def test_heartbeat_sender_does_not_load_numba():
    code = (
        "import sys\n"
        "from clients import HeartbeatClient, CurveKeys, InvalidHeartbeat, NodeState\n"
        "heavy = sorted(m for m in ('numba', 'llvmlite', 'posix_ipc') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=True,
    )
    assert out.stdout.strip() == "", f"`from clients import HeartbeatClient` loaded {out.stdout}"


@pytest.mark.parametrize("package", ["shm_engine", "clients", "kernels"])
def test_every_public_name_resolves(package):
    # Lazy facades name their modules as strings: a move must not break them.
    mod = importlib.import_module(package)
    missing = [name for name in mod.__all__ if not hasattr(mod, name)]
    assert missing == []
