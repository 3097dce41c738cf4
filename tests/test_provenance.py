"""The code hash: each stage's module set is derived from its entry module's imports and misses none of them."""

import json
import shutil
import subprocess
import sys

import pytest

from imagic_steps.provenance import PACKAGE_ROOT, STAGE_ENTRY_MODULES, code_version, imported_modules, stage_modules


# One fresh interpreter imports every entry module (and so every third-party library they use), forgets the
# package's own modules, then forks a child per entry that imports only that entry: the package modules a child
# loads are those a fresh interpreter importing the entry loads (the libraries are cached, ours are not), at
# ~0.2 s an entry instead of ~5 s (test_a_forked_child_loads_what_a_fresh_interpreter_loads checks one).
LOADED_BY_FORKED_CHILDREN = """
import importlib, json, os, sys
for entry in sys.argv[1:]:
    importlib.import_module('imagic_steps.' + entry)
ours = lambda: [m for m in sys.modules if m == 'imagic_steps' or m.startswith('imagic_steps.')]
for name in ours():
    del sys.modules[name]
for entry in sys.argv[1:]:
    read, write = os.pipe()
    if os.fork() == 0:
        os.close(read)
        importlib.import_module('imagic_steps.' + entry)
        os.write(write, json.dumps([entry, ours()]).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        print(pipe.read())
    _, status = os.wait()
    assert os.waitstatus_to_exitcode(status) == 0, entry
"""


def relative_names(names) -> set[str]:
    """Full module names of the package -> names relative to it ("" for the package itself)."""
    return {name[len("imagic_steps."):] if "." in name else "" for name in names}


def loaded_modules_of(*entries: str) -> dict[str, set[str]]:
    """entry -> the package's modules a fresh interpreter has loaded after importing `entry` (names relative to
    the package; "" for the package itself)."""
    out = subprocess.run([sys.executable, "-c", LOADED_BY_FORKED_CHILDREN, *entries], capture_output=True,
                         text=True, check=True).stdout
    loaded = {}
    for line in out.splitlines():
        entry, names = json.loads(line)
        loaded[entry] = relative_names(names)
    assert set(loaded) == set(entries)
    return loaded


@pytest.fixture(scope="module")
def loaded_modules() -> dict[str, set[str]]:
    """Every stage entry module -> the package modules importing it loads."""
    return loaded_modules_of(*sorted(set(STAGE_ENTRY_MODULES.values())))


@pytest.mark.slow  # a fresh interpreter: ~6 s
def test_a_forked_child_loads_what_a_fresh_interpreter_loads(loaded_modules):
    """The fork shortcut above against the plain way, on one entry."""
    entry = STAGE_ENTRY_MODULES["score"]
    script = ("import importlib, sys; importlib.import_module('imagic_steps.' + sys.argv[1]); "
              "print('\\n'.join(m for m in sys.modules if m == 'imagic_steps' or m.startswith('imagic_steps.')))")
    out = subprocess.run([sys.executable, "-c", script, entry], capture_output=True, text=True, check=True).stdout
    assert loaded_modules[entry] == relative_names(out.split())


def unhashed(loaded: set[str], hashed: set[str]) -> set[str]:
    """Modules a stage loads but that its hash `hashed` leaves out: each one a caching bug."""
    return loaded - hashed


@pytest.mark.parametrize("stage", sorted(STAGE_ENTRY_MODULES))
def test_every_module_a_stage_loads_is_in_its_hash(stage, loaded_modules):
    entry = STAGE_ENTRY_MODULES[stage]
    hashed = set(stage_modules(stage))
    loaded = loaded_modules[entry]
    assert entry in loaded and unhashed(loaded, hashed) == set()
    # the check fails when any one of them is left out of the hash
    for module in sorted(loaded):
        assert unhashed(loaded, hashed - {module}) == {module}


def test_imports_inside_functions_count_too(loaded_modules):
    # the score stage imports the digits classifier only when the digits scorer is chosen, and evaluate only
    # for the digits plot options: not loaded by the import alone, but code that defines their results
    assert {"digits.classifier", "digits.data"} <= set(stage_modules("score"))
    assert "digits.classifier" in set(stage_modules("evaluate"))
    assert "digits.classifier" not in loaded_modules[STAGE_ENTRY_MODULES["score"]]


def test_stage_a_does_not_depend_on_the_result_figures_or_the_statistics():
    # editing a trade-off plot or a summary must not rerun the model stages
    for stage in ("embed", "finetune", "sample", "sdedit"):
        assert not {"figures", "stats", "evaluate", "score"} & set(stage_modules(stage)), stage


def test_editing_a_module_changes_exactly_the_hashes_of_the_stages_that_use_it(tmp_path):
    root = tmp_path / "imagic_steps"
    shutil.copytree(PACKAGE_ROOT, root, ignore=shutil.ignore_patterns("presets", "__pycache__"))
    before = {stage: code_version(stage, root) for stage in STAGE_ENTRY_MODULES}
    assert before == {stage: code_version(stage) for stage in STAGE_ENTRY_MODULES}
    with open(root / "digits" / "classifier.py", "a", encoding="utf-8") as source:
        source.write("\n# an edit\n")
    after = {stage: code_version(stage, root) for stage in STAGE_ENTRY_MODULES}
    changed = {stage for stage in STAGE_ENTRY_MODULES if after[stage] != before[stage]}
    assert changed == {stage for stage in STAGE_ENTRY_MODULES if "digits.classifier" in stage_modules(stage, root)}
    assert changed == {"score", "evaluate"}


# The data path, in order: a module may import the ones before it, never one after it.
DATA_PATH = ("embed", "finetune_artefact", "sample", "finetune", "sdedit", "score", "stats", "figures", "evaluate")


def test_no_module_imports_one_later_in_the_data_path():
    for index, module in enumerate(DATA_PATH):
        later = set(DATA_PATH[index + 1:]) & imported_modules(module)
        assert not later, f"{module} imports {sorted(later)}, later in the data path"
    assert "finetune" not in imported_modules("sample")  # sample reads stage B's artefact, not its trainer
