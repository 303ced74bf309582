"""Which code made a run, and whether a saved run may be reused by today's code.

A run's `config.json` records `code-version`: the git commit and whether the tree had
uncommitted changes, the versions of flwr, torch and numpy, and a digest of the source
that computed it. That source is *scoped to the run's method*: every Python file of the
harness (`flower_gd`, the *core*) and the method's own module with every `strategies` or
`baselines` module it imports, directly or through another (`method_files`). The registry
(`flower_gd/methods.py`) only routes a method name to its module and checks configs, and
the READ_ONLY modules only read finished runs; neither is part of any scope. So a change
to one method's file re-measures that method's runs (and those of methods importing it),
adding a method re-measures nothing, and a change to the harness re-measures everything.

A sweep reuses a finished run only when its code matches (`made_by_this_code`) and its
config does (`config_differs`): every key the run's method reads, and every key all
methods read; a key the saved run lacks is a difference, not a default. Keys that only
other methods read (`flower_gd.methods.unread_keys`) are not compared: they cannot change
what this method computed, and they do not appear in its run name either.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import subprocess
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from flower_gd.config import HOUSEKEEPING_KEYS, PROJECT_ROOT, ConfigError, upgrade

CODE_VERSION_KEY = "code-version"  # in config.json beside the run config: which code ran it
CODE_VERSION_ENV = "FLOWER_GD_CODE_VERSION"  # set by a launcher for apps run off a checkout
CODE_PATHS = ("flower_gd", "strategies", "baselines", "pyproject.toml")
SOURCE_ROOTS = ("flower_gd", "strategies", "baselines")
METHOD_ROOTS = ("strategies", "baselines")  # packages of the methods' own modules
# modules that only read finished runs (tables, figures, the choice on validation): a change
# to them changes no run, so they are not part of a run's code
READ_ONLY = ("flower_gd/report.py", "flower_gd/tables.py", "flower_gd/plots.py",
             "flower_gd/select.py")
# the registry: a name -> module table and config checks; each run's scope holds its own
# method's module instead
REGISTRY_FILE = "flower_gd/methods.py"
PACKAGES = ("flower_gd", "strategies", "baselines")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True,
                             text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@functools.cache
def _commit_and_dirty() -> tuple[str | None, bool | None]:
    commit = _git("rev-parse", "HEAD")
    # dirty: uncommitted changes to what computes the numbers (docs and results aside)
    # (an untracked .py file there counts: the source digest includes it)
    status = (_git("status", "--porcelain", "--untracked-files=all", "--", *CODE_PATHS)
              if commit else None)
    return commit, None if status is None else bool(status)


@functools.cache
def _packages() -> dict[str, str]:
    packages = {}
    for name in ("flwr", "torch", "numpy"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = "absent"
    return packages


def code_version(method: str | None = None) -> dict[str, Any]:
    """The code that makes `method`'s runs in this process: git commit and whether the tree
    had uncommitted changes, the scoped source digest (`source_digest`) with the files of
    its scope beyond the core (`method-files`), and the versions of the packages that
    compute the numbers. Without a method: the core alone (what the local phase and tools
    outside any method run).

    An app installed from a bundle (the deployment engine) has no git checkout: it takes the
    commit its launcher put in FLOWER_GD_CODE_VERSION, or says `unknown`.
    """
    own = method_files(method) if method else ()
    version = {"source": source_digest(own), "method-files": list(own), **_packages()}
    commit, dirty = _commit_and_dirty()
    launched = os.environ.get(CODE_VERSION_ENV)
    if commit is None and launched:
        return {**json.loads(launched), **version}
    return {"commit": commit or "unknown", "dirty": dirty, **version}


# ------------------------------------------------------------------ the scope of a run
def _module_file(module: str, root: Path) -> str | None:
    """`strategies.gossip` -> "strategies/gossip.py" (or a package's __init__.py), when it
    is one of the project's packages and exists under `root`."""
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    for candidate in ("/".join(parts) + ".py", "/".join(parts) + "/__init__.py"):
        if (root / candidate).is_file():
            return candidate
    return None


def imported_files(path: str, root: Path = PROJECT_ROOT) -> set[str]:
    """The project's modules that the file `path` imports (statically: `import x.y`,
    `from x import y`, `from x.y import z`, at any depth of the file), as paths."""
    stat = (root / path).stat()
    return set(_imported_files(path, root, stat.st_mtime_ns, stat.st_size))


@functools.cache
def _imported_files(path: str, root: Path, mtime_ns: int, size: int) -> frozenset[str]:
    tree = ast.parse((root / path).read_text(), filename=path)
    package = path.rsplit("/", 1)[0].replace("/", ".")
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the file's package
                up = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join([*up, base] if base else up)
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found.update(f for f in (_module_file(n, root) for n in names) if f is not None)
    return frozenset(found)


def method_files(method: str, root: Path = PROJECT_ROOT) -> tuple[str, ...]:
    """The files of `method`'s scope beyond the core: its module (from the registry) and
    every `strategies` / `baselines` module reachable from it by imports, sorted."""
    from flower_gd import methods  # the registry imports every method: not at module load

    module = methods.get(method).run.__module__
    entry = _module_file(module, root)
    if entry is None:
        raise ValueError(f"method={method}: its module {module} is not under {METHOD_ROOTS}")
    return module_closure(entry, root)


def module_closure(entry: str, root: Path = PROJECT_ROOT) -> tuple[str, ...]:
    """`entry` and every method-package module reachable from it by imports, sorted."""
    seen, todo = set(), [entry]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(f for f in imported_files(path, root)  # packages' __init__: core
                    if f.split("/", 1)[0] in METHOD_ROOTS and not f.endswith("/__init__.py")
                    and f not in seen)
    return tuple(sorted(seen))


def core_files(root: Path = PROJECT_ROOT) -> tuple[str, ...]:
    """Every Python file of the three packages but the methods' own modules, the registry
    and the READ_ONLY modules: the harness every run executes."""
    files = []
    for package in SOURCE_ROOTS:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if rel in READ_ONLY or rel == REGISTRY_FILE:
                continue
            if package in METHOD_ROOTS and path.name != "__init__.py":
                continue
            files.append(rel)
    return tuple(files)


def source_digest(method_scope: Iterable[str] = (), root: Path = PROJECT_ROOT) -> str:
    """Digest of the core and of the files `method_scope` names (their paths and bytes)."""
    h = hashlib.blake2b(digest_size=16)
    for rel in sorted({*core_files(root), *method_scope}):
        path = root / rel
        stat = path.stat()
        h.update(rel.encode())
        h.update(_file_digest(path, stat.st_mtime_ns, stat.st_size))
    return h.hexdigest()


@functools.cache
def _file_digest(path: Path, mtime_ns: int, size: int) -> bytes:
    """A file's content digest, read once per version of the file (a report checks the
    code of hundreds of runs)."""
    return hashlib.blake2b(path.read_bytes(), digest_size=16).digest()


# ------------------------------------------------------------------ saved runs
def config_differs(run_dir: Path, config: dict[str, Any],
                   unread: Iterable[str] = ()) -> list[str]:
    """Keys in which `config` differs from the config a run directory saved.

    A key the saved run lacks (it predates the key) is a difference, not a default: the code
    that made the run may have meant something else by its absence. Where the run lives is
    not part of what it computed, so a moved or cloned results folder still matches; nor
    are the `unread` keys (those only other methods read).
    """
    saved = upgrade(json.loads((Path(run_dir) / "config.json").read_text()))
    saved.pop(CODE_VERSION_KEY, None)  # which code made it is not part of the config
    missing = object()
    skip = set(HOUSEKEEPING_KEYS) | set(unread)
    return sorted(k for k in set(saved) | set(config)
                  if k not in skip and saved.get(k, missing) != config.get(k, missing))


def saved_code_version(run_dir: Path) -> dict[str, Any] | None:
    """The `code-version` a run directory saved, or None (made before runs recorded it)."""
    saved = json.loads((Path(run_dir) / "config.json").read_text())
    version = saved.get(CODE_VERSION_KEY)
    return version if isinstance(version, dict) else None


def made_by_this_code(run_dir: Path, saved: dict[str, Any] | None = None) -> bool:
    """Whether the run was made by the code this process runs: the same source in the run's
    scope (today's core and today's files of its method's scope) and the same flwr, torch
    and numpy. A run that recorded no `method-files` (made before scopes) was digested over
    the whole tree: it is other code.

    The commit alone would not do: a commit that changes only the README keeps the runs,
    and a dirty tree's runs match only the tree they were made by. `saved` is the run's
    config.json when the caller has read it already.
    """
    if saved is None:
        saved = json.loads((Path(run_dir) / "config.json").read_text())
    version = saved.get(CODE_VERSION_KEY)
    if not isinstance(version, dict) or "method-files" not in version:
        return False
    try:
        now = code_version(str(saved.get("method")))
    except ConfigError:  # a method today's registry does not know: not this code
        return False
    return all(version.get(k) == now[k] for k in ("source", "method-files", "flwr", "torch",
                                                  "numpy"))


STALE_DIR = ".stale"  # where a sweep moves runs made by other code before re-measuring them


def set_aside(run_dir: Path) -> Path:
    """Move a run made by other code to `<parent>/.stale/<name>-<commit>` (never deleted
    here: its owner decides), so that the sweep re-measures the cell."""
    run_dir = Path(run_dir)
    commit = str((saved_code_version(run_dir) or {}).get("commit", "unknown"))[:10]
    target = run_dir.parent / STALE_DIR / f"{run_dir.name}-{commit}"
    n = 1
    while target.exists():
        n += 1
        target = run_dir.parent / STALE_DIR / f"{run_dir.name}-{commit}-{n}"
    target.parent.mkdir(parents=True, exist_ok=True)
    run_dir.rename(target)
    return target
