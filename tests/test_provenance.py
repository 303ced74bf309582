"""A run's code is scoped to its method: the harness, and the method's own modules."""

import json

import pytest

from flower_gd.provenance import (
    CODE_VERSION_KEY,
    code_version,
    core_files,
    made_by_this_code,
    method_files,
    module_closure,
    source_digest,
)

TREE = {
    "flower_gd/__init__.py": "",
    "flower_gd/node.py": "X = 1\n",
    "flower_gd/methods.py": "from strategies import a\nfrom baselines import b\n",
    "flower_gd/report.py": "# reads finished runs\n",
    "strategies/__init__.py": "",
    "strategies/relay.py": "R = 1\n",
    "strategies/a.py": "from flower_gd.node import X\nfrom strategies.relay import R\n",
    "strategies/c.py": "def f():\n    from strategies import a  # a local import counts\n",
    "baselines/__init__.py": "",
    "baselines/b.py": "import flower_gd.node\n",
    "flower_gd/payload_codecs/__init__.py": "from flower_gd.payload_codecs import k\n",
    "flower_gd/payload_codecs/k.py": "from flower_gd.payload_codecs.j import J\n",
    "flower_gd/payload_codecs/j.py": "J = 1\n",
}


@pytest.fixture
def tree(tmp_path):
    for rel, text in TREE.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


def _digests(root):
    return {m: source_digest(module_closure(m, root), root)
            for m in ("strategies/a.py", "strategies/c.py", "baselines/b.py",
                      "flower_gd/payload_codecs/k.py")}


def test_scopes_follow_imports_within_the_method_packages_only(tree):
    assert core_files(tree) == ("flower_gd/__init__.py", "flower_gd/node.py",
                                "strategies/__init__.py", "baselines/__init__.py")
    assert module_closure("strategies/a.py", tree) == ("strategies/a.py", "strategies/relay.py")
    assert module_closure("strategies/c.py", tree) == ("strategies/a.py", "strategies/c.py",
                                                       "strategies/relay.py")
    assert module_closure("baselines/b.py", tree) == ("baselines/b.py",)
    assert module_closure("flower_gd/payload_codecs/k.py", tree) == (
        "flower_gd/payload_codecs/j.py", "flower_gd/payload_codecs/k.py")


@pytest.mark.parametrize("edited, changes", [
    ("flower_gd/node.py", {"strategies/a.py", "strategies/c.py", "baselines/b.py",
                           "flower_gd/payload_codecs/k.py"}),  # core
    ("strategies/relay.py", {"strategies/a.py", "strategies/c.py"}),  # imported by a, c
    ("strategies/c.py", {"strategies/c.py"}),
    ("baselines/b.py", {"baselines/b.py"}),
    ("flower_gd/methods.py", set()),  # the registry: a new entry keeps every run
    ("flower_gd/payload_codecs/j.py", {"flower_gd/payload_codecs/k.py"}),  # imported by k
    ("flower_gd/payload_codecs/__init__.py", set()),  # the codec registry
    ("flower_gd/report.py", set()),  # reads finished runs only
])
def test_an_edit_changes_exactly_the_scopes_that_hold_the_file(tree, edited, changes):
    before = _digests(tree)
    (tree / edited).write_text((tree / edited).read_text() + "# edited\n")
    after = _digests(tree)
    assert {m for m in before if before[m] != after[m]} == changes


def test_a_new_method_file_changes_no_other_scope(tree):
    before = _digests(tree)
    (tree / "baselines/new.py").write_text("from strategies.relay import R\n")
    assert _digests(tree) == before


def test_the_real_methods_scopes():
    # what the relay methods share is in strategies/peers.py and relay.py: an edit to paper
    # gossip's own file keeps gossip-adaptive's runs
    assert method_files("gossip-adaptive") == ("strategies/gossip_adaptive.py",
                                               "strategies/peers.py", "strategies/relay.py")
    assert method_files("local") == ("baselines/local.py", "strategies/gossip.py",
                                     "strategies/peers.py", "strategies/relay.py")
    assert method_files("dlad") == ("baselines/dlad.py",)
    assert method_files("fedmd") == ("baselines/consensus.py", "baselines/fedmd.py")
    assert method_files("central-all") == ("baselines/central.py",)
    assert "flower_gd/methods.py" not in core_files() and "flower_gd/node.py" in core_files()


def test_the_real_codecs_scopes():
    """A run's codec module joins its scope with what it imports; float32 is core."""
    from flower_gd.provenance import codec_files, run_scope, scope_files

    assert codec_files("float32") == ()
    assert codec_files("hard4") == ("flower_gd/payload_codecs/hard4.py",)
    assert codec_files("hard4p2r1-ac") == (
        "flower_gd/payload_codecs/hard4.py", "flower_gd/payload_codecs/hard4p1.py",
        "flower_gd/payload_codecs/hard4p2r1_ac.py", "flower_gd/payload_codecs/range_coder.py")
    assert not any(f.startswith("flower_gd/payload_codecs/") for f in core_files())
    assert run_scope({"method": "gossip-adaptive", "codec": "hard4p1"}) == (
        "gossip-adaptive", "hard4p1")
    # a method that does not read `codec` sends float32 or nothing: no codec in its scope
    assert run_scope({"method": "fedavg", "codec": "hard4p1"}) == ("fedavg", None)
    assert run_scope({"method": "dlad", "codec": "float32"}) == ("dlad", None)
    assert scope_files("dlad", "hard4") == ("baselines/dlad.py",
                                            "flower_gd/payload_codecs/hard4.py")
    assert code_version("dlad", "hard4")["source"] != code_version("dlad")["source"]


def test_a_run_is_this_codes_only_with_its_codec(tmp_path):
    now = code_version("gossip", "hard")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"method": "gossip", "codec": "hard",
                                                 CODE_VERSION_KEY: now}))
    assert made_by_this_code(run)
    (run / "config.json").write_text(json.dumps({"method": "gossip", "codec": "topk",
                                                 CODE_VERSION_KEY: now}))
    assert not made_by_this_code(run)


def _run(tmp_path, method, version):
    run = tmp_path / method
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"method": method, CODE_VERSION_KEY: version}))
    return run


def test_a_run_is_this_codes_when_its_scope_is(tmp_path):
    now = code_version("dlad")
    assert made_by_this_code(_run(tmp_path, "dlad", now))
    # another method's files in the record: other code
    assert not made_by_this_code(_run(tmp_path, "gossip", now))
    # a run digested before scopes took in codecs (no scope-files) was digested otherwise
    legacy = {k: v for k, v in now.items() if k != "scope-files"}
    assert not made_by_this_code(_run(tmp_path, "fedmd", legacy))
    # a method today's registry does not know
    assert not made_by_this_code(_run(tmp_path, "gone", {**now, "scope-files": []}))


def test_no_method_module_reaches_code_the_static_scope_cannot_see():
    """The scope follows static imports: a method or codec module may not import a registry
    or import modules by name at run time, and no harness module but the registries imports
    a method or codec module (it would hide that module's edits from the scopes of the
    others)."""
    import ast

    from flower_gd.config import PROJECT_ROOT
    from flower_gd.provenance import (
        CODEC_ROOT,
        METHOD_ROOTS,
        REGISTRY_FILE,
        _scoped,
        imported_files,
    )

    codec_registry = f"{CODEC_ROOT}/__init__.py"
    for package in ("flower_gd", CODEC_ROOT, *METHOD_ROOTS):
        for path in sorted((PROJECT_ROOT / package).glob("*.py")):
            rel = path.relative_to(PROJECT_ROOT).as_posix()
            imported = imported_files(rel)
            if _scoped(rel):
                assert REGISTRY_FILE not in imported and codec_registry not in imported, rel
                names = {n.id for n in ast.walk(ast.parse(path.read_text()))
                         if isinstance(n, ast.Name)} | {
                    a.name for n in ast.walk(ast.parse(path.read_text()))
                    if isinstance(n, ast.Import | ast.ImportFrom) for a in n.names}
                assert not names & {"importlib", "import_module", "__import__"}, rel
            elif rel not in (REGISTRY_FILE, codec_registry):
                assert not {f for f in imported if _scoped(f)}, rel


# `local` runs the relay for 0 rounds (baselines/local.py): of the files in its scope it
# executes gossip's local phase and the relay's round 0, never a pull or a step, so the keys
# only pulls and steps read cannot change it; and the inference list gossip's local phase
# stores (logits or probabilities, `inference-output`) is never sent or reported by it.
# `fedmd` shares logits and refuses every codec but float32 and float16 (its `check`), so the
# consensus server's `codec-topk` never takes effect for it.
NEVER_ON_ITS_PATH = {"local": {"topology", "pull-timeout", "pull-retries", "gossip-assist",
                               "num-server-rounds", "round-epochs", "label-source",
                               "robust-mix", "clip-radius", "inference-output"},
                     "fedmd": {"codec-topk"}}


def test_every_option_key_a_method_reads_in_its_scope_is_declared():
    """A key only some methods declare (`reads`) is not compared with the saved runs of the
    others: a method whose own modules read an option key (`cfg.<key>` anywhere in its
    scope's files) must declare it."""
    import ast

    from flower_gd import methods
    from flower_gd.config import PROJECT_ROOT

    def reads_cfg(node: ast.AST) -> bool:
        return isinstance(node, ast.Attribute) and (
            (isinstance(node.value, ast.Attribute) and node.value.attr == "cfg")
            or (isinstance(node.value, ast.Name) and node.value.id == "cfg"))

    def option_read(node: ast.AST) -> str | None:  # cfg.option("key")
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "option" and node.args
                and isinstance(node.args[0], ast.Constant)):
            return str(node.args[0].value)
        return None

    for name in methods.REGISTRY:
        trees = [ast.parse((PROJECT_ROOT / rel).read_text()) for rel in method_files(name)]
        used = {node.attr.replace("_", "-")  # type: ignore[attr-defined]
                for tree in trees for node in ast.walk(tree) if reads_cfg(node)}
        used |= {k for tree in trees for node in ast.walk(tree)
                 if (k := option_read(node)) is not None}
        waived = NEVER_ON_ITS_PATH.get(name, set())
        assert waived <= used, f"{name}: stale waiver {sorted(waived - used)}"
        undeclared = (used & methods.OPTION_KEYS) - methods.get(name).reads - waived
        assert not undeclared, f"{name} reads {sorted(undeclared)} without declaring them"


def test_a_key_compared_when_the_run_was_made_stays_compared(tmp_path):
    """Another method declaring a key the run's method read then (a key all methods read)
    must not make the run's value of it irrelevant: the run recorded it as compared."""
    from flower_gd.config import load_defaults
    from flower_gd.provenance import config_differs

    config = load_defaults()  # gossip: gossip-peers is a key only others read today
    run = tmp_path / "run"
    run.mkdir()
    version = {**code_version("gossip"), "unread-keys": []}  # then: every key compared
    (run / "config.json").write_text(json.dumps({**config, "gossip-peers": 3,
                                                 CODE_VERSION_KEY: version}))
    assert config_differs(run, config, {"gossip-peers"}) == ["gossip-peers"]
    version["unread-keys"] = ["gossip-peers"]  # then as now: not the run's key
    (run / "config.json").write_text(json.dumps({**config, "gossip-peers": 3,
                                                 CODE_VERSION_KEY: version}))
    assert config_differs(run, config, {"gossip-peers"}) == []


def test_a_run_whose_code_changed_on_disk_while_it_ran_is_marked(tmp_path, monkeypatch):
    from flower_gd import results
    from flower_gd.results import RunRecorder

    meter = type("Meter", (), {"entries": [], "collect_late": lambda self: 0})()
    rec = RunRecorder(tmp_path / "run", {"method": "dlad"}, meter, lambda p: "cnn")
    monkeypatch.setattr(results, "still_this_code", lambda *scope: False)
    with pytest.warns(UserWarning, match="changed on disk while it ran"):
        rec.finalize()
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved[CODE_VERSION_KEY]["source"] == "changed-during-run"
    assert not made_by_this_code(tmp_path / "run")
