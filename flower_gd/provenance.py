"""Which code made a run, and whether a saved run may be reused by today's code.

A run's `config.json` records `code-version`: the git commit and whether the tree had
uncommitted changes, the versions of flwr, torch and numpy, and a digest of the source
that computed it. That source is *scoped to the run's method and codec*: every Python file
of the harness (`flower_gd` but its codec modules, the *core*), the method's own module with
every `strategies` or `baselines` module it imports, directly or through another
(`method_files`), and the module of the codec its payloads travel in, with what that
imports (`codec_files`; float32, the default, is core). The registries
(`flower_gd/methods.py`, `flower_gd/payload_codecs/__init__.py`) only route a name to its
module and check configs, and the READ_ONLY modules only read finished runs; none is part
of any scope. So a change to one method's file re-measures that method's runs (and those of
methods importing it), a change to one codec's file re-measures the runs that use it,
adding a method or a codec re-measures nothing, and a change to the harness re-measures
everything.

A sweep reuses a finished run only when its code matches (`made_by_this_code`) and its
config does (`config_differs`): every key the run's method reads, and every key all
methods read; a key the saved run lacks is a difference, not a default. Keys that only
other methods read (`flower_gd.methods.unread_keys`) are not compared: they cannot change
what this method computed, and they do not appear in its run name either.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import json
import os
import platform
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
CODEC_ROOT = "flower_gd/payload_codecs"  # one module per codec; its __init__ is the registry
DEFAULT_CODEC = "float32"  # in the core (flower_gd/codecs.py): every run may send it
# modules that only read finished runs (tables, figures, the choice on validation): a change
# to them changes no run, so they are not part of a run's code
READ_ONLY = ("flower_gd/report.py", "flower_gd/tables.py", "flower_gd/plots.py",
             "flower_gd/select.py")
# the registry: a name -> module table and config checks; each run's scope holds its own
# method's module instead
REGISTRY_FILE = "flower_gd/methods.py"
# the packages whose versions a run records and a reused run must share: the engine, the
# arithmetic, the model definitions and the embedded digits data
PACKAGE_VERSIONS = ("flwr", "torch", "numpy", "torchvision", "scikit-learn")


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
    for name in PACKAGE_VERSIONS:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = "absent"
    return packages


def scope_files(method: str | None, codec: str | None = None,
                root: Path = PROJECT_ROOT) -> tuple[str, ...]:
    """The files of a run's scope beyond the core: its method's (`method_files`) and its
    codec's (`codec_files`), sorted."""
    own = set(method_files(method, root)) if method else set()
    return tuple(sorted(own | set(codec_files(codec, root) if codec else ())))


def run_scope(config: dict[str, Any]) -> tuple[str, str | None]:
    """(method, codec) of a run config: the codec only where the method reads `codec` (a
    method that does not sends float32 or nothing, both core)."""
    from flower_gd.methods import REGISTRY  # the registry imports every method

    method = str(config.get("method"))
    entry = REGISTRY.get(method)
    codec = config.get("codec")
    reads_codec = entry is not None and "codec" in entry.reads
    return method, (str(codec) if reads_codec and codec not in (None, DEFAULT_CODEC) else None)


@functools.cache
def code_version(method: str | None = None, codec: str | None = None) -> dict[str, Any]:
    """The code that makes `method`'s runs with `codec` in this process (`run_scope` gives
    both for a config): git commit and whether the tree had uncommitted changes, the scoped
    source digest (`source_digest`) with the files of its scope beyond the core
    (`scope-files`), the option keys the method does not read (`unread-keys`, see
    `config_differs`), and the versions of the packages that compute the numbers. Without a
    method: the core alone (what the local phase and tools outside any method run).

    Taken once per process, as the code is imported once: a sweep in one process whose
    files are edited while it runs goes on with the code it loaded, and `still_this_code`
    tells its runs apart. An app installed from a bundle (the deployment engine) has no git
    checkout: it takes the commit its launcher put in FLOWER_GD_CODE_VERSION, or `unknown`.
    """
    own = scope_files(method, codec)
    version = {"source": source_digest(own), "scope-files": list(own), **_packages()}
    if method:
        from flower_gd.methods import unread_keys  # the registry imports every method

        version["unread-keys"] = sorted(unread_keys(method))
    commit, dirty = _commit_and_dirty()
    launched = os.environ.get(CODE_VERSION_ENV)
    if commit is None and launched:
        return {**json.loads(launched), **version}
    return {"commit": commit or "unknown", "dirty": dirty, **version}


def still_this_code(method: str | None = None, codec: str | None = None) -> bool:
    """Whether the files on disk are still those `code_version` saw when this process took
    its snapshot (a file edited during a sweep: later runs ran the code loaded before)."""
    return source_digest(scope_files(method, codec)) == code_version(method, codec)["source"]


@functools.cache
def machine() -> dict[str, Any]:
    """The machine a run ran on: CPU model, cores, platform, Python. Not part of a run's
    identity (a run is reused across machines), but floating-point results differ in their
    last bits across CPUs, and through training by more: tables that mix machines can say so."""
    cpu, flags = platform.processor() or platform.machine(), ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and cpu in ("", platform.machine()):
                cpu = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = value.strip()
    # the instruction-set extensions pick the SIMD kernels, and so the float rounding: a
    # virtual machine's model name ("AMD EPYC") does not tell two CPU generations apart
    return {"cpu": cpu, "cpu-flags": hashlib.blake2b(flags.encode(), digest_size=4).hexdigest(),
            "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}


# ------------------------------------------------------------------ the scope of a run
def _module_file(module: str, root: Path) -> str | None:
    """`strategies.gossip` -> "strategies/gossip.py" (or a package's __init__.py), when it
    is one of the project's packages and exists under `root`."""
    parts = module.split(".")
    if parts[0] not in SOURCE_ROOTS:
        return None
    for candidate in ("/".join(parts) + ".py", "/".join(parts) + "/__init__.py"):
        if (root / candidate).is_file():
            return candidate
    return None


def imported_files(path: str, root: Path = PROJECT_ROOT) -> set[str]:
    """The project's modules that the file `path` imports (statically: `import x.y`,
    `from x import y`, `from x.y import z`, at any depth of the file), as paths."""
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
    return found


def method_files(method: str, root: Path = PROJECT_ROOT) -> tuple[str, ...]:
    """The files of `method`'s scope beyond the core: its module (from the registry) and
    every `strategies` / `baselines` module reachable from it by imports, sorted."""
    files: set[str] = set()
    for module in entry_modules(method):
        entry = _module_file(module, root)
        if entry is None or entry.split("/", 1)[0] not in METHOD_ROOTS:
            raise ConfigError(f"method={method}: its code comes from {module}, not from a "
                              f"module of {METHOD_ROOTS}: move it there, so that runs "
                              "record the code that made them")
        files.update(module_closure(entry, root))
    return tuple(sorted(files))


def codec_files(codec: str, root: Path = PROJECT_ROOT) -> tuple[str, ...]:
    """The files of `codec`'s scope: its module of `flower_gd.payload_codecs` and every codec
    or method module it imports; none for float32 (core).

    Raises
    ------
    ConfigError
        A codec the registry does not know, or whose code is not a module of CODEC_ROOT.
    """
    if codec == DEFAULT_CODEC:
        return ()
    from flower_gd.payload_codecs import REGISTRY  # the registry imports every codec

    if codec not in REGISTRY:
        raise ConfigError(f"codec={codec}: not a codec of {CODEC_ROOT}; choose one of "
                          f"{list(REGISTRY)}")
    spec = REGISTRY[codec]
    files: set[str] = set()
    for fn in (spec.encode, spec.decode, spec.weights):  # a lambda's module is where it is
        module = fn.__module__
        entry = _module_file(module, root)
        if entry is None or not _scoped(entry):
            raise ConfigError(f"codec={codec}: its code comes from {module}, not from a module "
                              f"of {CODEC_ROOT}: move it there, so that runs record the code "
                              "that made them")
        files.update(module_closure(entry, root))
    return tuple(sorted(files))


def _scoped(path: str) -> bool:
    """A file of some run's scope rather than the core: a method module or a codec module
    (the packages' __init__ files are core or a registry)."""
    if path.endswith("/__init__.py"):
        return False
    return path.split("/", 1)[0] in METHOD_ROOTS or path.startswith(CODEC_ROOT + "/")


def entry_modules(method: str) -> set[str]:
    """The modules a method's code starts from: every method-package module that holds its
    `Method` entry, and the modules of its `run` and `check` (partials unwrapped). Node
    steps are wrappers from `strategies.relay` or functions of these modules."""
    import sys

    from flower_gd import methods  # the registry imports every method: not at module load

    entry = methods.get(method)
    found = {name for name, module in list(sys.modules.items())
             if name.split(".", 1)[0] in METHOD_ROOTS
             and any(value is entry for value in vars(module).values())}
    for fn in (entry.run, entry.check):
        while isinstance(fn, functools.partial):
            fn = fn.func
        if fn is not None:
            found.add(str(fn.__module__))
    return {m for m in found if not m.startswith("flower_gd.")}


def module_closure(entry: str, root: Path = PROJECT_ROOT) -> tuple[str, ...]:
    """`entry` and every method or codec module reachable from it by imports, sorted."""
    seen, todo = set(), [entry]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(f for f in imported_files(path, root)  # packages' __init__: core
                    if _scoped(f) and f not in seen)
    return tuple(sorted(seen))


def core_files(root: Path = PROJECT_ROOT) -> tuple[str, ...]:
    """Every Python file of the three packages but the methods' and codecs' own modules, the
    registries and the READ_ONLY modules: the harness every run executes."""
    files = []
    for package in SOURCE_ROOTS:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if rel in READ_ONLY or rel == REGISTRY_FILE or rel.startswith(CODEC_ROOT + "/"):
                continue
            if _scoped(rel):
                continue
            files.append(rel)
    return tuple(files)


def source_digest(method_scope: Iterable[str] = (), root: Path = PROJECT_ROOT) -> str:
    """Digest of the core and of the files `method_scope` names (their paths and bytes)."""
    h = hashlib.blake2b(digest_size=16)
    for rel in sorted({*core_files(root), *method_scope}):
        h.update(rel.encode())
        h.update(hashlib.blake2b((root / rel).read_bytes(), digest_size=16).digest())
    return h.hexdigest()


# ------------------------------------------------------------------ saved runs
def config_differs(run_dir: Path, config: dict[str, Any],
                   unread: Iterable[str] = ()) -> list[str]:
    """Keys in which `config` differs from the config a run directory saved.

    A key the saved run lacks (it predates the key) is a difference, not a default: the code
    that made the run may have meant something else by its absence. Where the run lives is
    not part of what it computed, so a moved or cloned results folder still matches. A key
    of `unread` (those only other methods read today) is skipped where it could not have
    mattered then either: the saved run lacks it (another method added it since), or the
    run recorded it as unread too. A key the run's method could read then (it was read by
    every method) and no longer counts as its own is compared: the registry changed, not
    the run's evidence.
    """
    saved = upgrade(json.loads((Path(run_dir) / "config.json").read_text()))
    version = saved.pop(CODE_VERSION_KEY, None)  # which code made it: not the config
    unread_then = set(version.get("unread-keys", [])) if isinstance(version, dict) else set()
    missing = object()
    skip = set(HOUSEKEEPING_KEYS) | {k for k in unread if k not in saved or k in unread_then}
    return sorted(k for k in set(saved) | set(config)
                  if k not in skip and saved.get(k, missing) != config.get(k, missing))


def saved_code_version(run_dir: Path) -> dict[str, Any] | None:
    """The `code-version` a run directory saved, or None (made before runs recorded it)."""
    saved = json.loads((Path(run_dir) / "config.json").read_text())
    version = saved.get(CODE_VERSION_KEY)
    return version if isinstance(version, dict) else None


def made_by_this_code(run_dir: Path, saved: dict[str, Any] | None = None) -> bool:
    """Whether the run was made by the code this process runs: the same source in the run's
    scope (today's core and today's files of its method's and codec's scope) and the same
    flwr, torch and numpy. A run that recorded no `scope-files` (made before scopes took in
    codecs) was digested over another scope: it is other code.

    The commit alone would not do: a commit that changes only the README keeps the runs,
    and a dirty tree's runs match only the tree they were made by. `saved` is the run's
    config.json when the caller has read it already.
    """
    if saved is None:
        saved = json.loads((Path(run_dir) / "config.json").read_text())
    version = saved.get(CODE_VERSION_KEY)
    if not isinstance(version, dict) or "scope-files" not in version:
        return False
    try:
        now = code_version(*run_scope(saved))
    except ConfigError:  # a method or codec today's registries do not know (or cannot scope)
        return False
    return all(version.get(k) == now[k]
               for k in ("source", "scope-files", *PACKAGE_VERSIONS))


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
