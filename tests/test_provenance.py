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
}


@pytest.fixture
def tree(tmp_path):
    for rel, text in TREE.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


def _digests(root):
    return {m: source_digest(module_closure(m, root), root)
            for m in ("strategies/a.py", "strategies/c.py", "baselines/b.py")}


def test_scopes_follow_imports_within_the_method_packages_only(tree):
    assert core_files(tree) == ("flower_gd/__init__.py", "flower_gd/node.py",
                                "strategies/__init__.py", "baselines/__init__.py")
    assert module_closure("strategies/a.py", tree) == ("strategies/a.py", "strategies/relay.py")
    assert module_closure("strategies/c.py", tree) == ("strategies/a.py", "strategies/c.py",
                                                       "strategies/relay.py")
    assert module_closure("baselines/b.py", tree) == ("baselines/b.py",)


@pytest.mark.parametrize("edited, changes", [
    ("flower_gd/node.py", {"strategies/a.py", "strategies/c.py", "baselines/b.py"}),  # core
    ("strategies/relay.py", {"strategies/a.py", "strategies/c.py"}),  # imported by a, c
    ("strategies/c.py", {"strategies/c.py"}),
    ("baselines/b.py", {"baselines/b.py"}),
    ("flower_gd/methods.py", set()),  # the registry: a new entry keeps every run
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
    assert method_files("gossip-adaptive") == ("strategies/gossip.py",
                                               "strategies/gossip_adaptive.py",
                                               "strategies/relay.py")
    assert method_files("local") == ("baselines/local.py", "strategies/gossip.py",
                                     "strategies/relay.py")
    assert method_files("dlad") == ("baselines/dlad.py",)
    assert method_files("fedmd") == ("baselines/consensus.py", "baselines/fedmd.py")
    assert method_files("central-all") == ("baselines/central.py",)
    assert "flower_gd/methods.py" not in core_files() and "flower_gd/node.py" in core_files()


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
    # a run digested before scopes (no method-files) was digested over the whole tree
    legacy = {k: v for k, v in now.items() if k != "method-files"}
    assert not made_by_this_code(_run(tmp_path, "fedmd", legacy))
    # a method today's registry does not know
    assert not made_by_this_code(_run(tmp_path, "gone", {**now, "method-files": []}))
