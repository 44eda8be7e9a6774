"""The package's architecture, enforced: layer order, no import cycle, small modules, a test
file for every module, and the README's layout map in step with the tree."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "swin_flax"
MAX_MODULE_LINES = 400

# Bottom-up: a module may import its own package and the layers below it, never above.
# `deploy` sits below `training` so that it can never import training or the pipeline
# (an exported model needs neither); the pipeline may use deploy.
LAYERS = [
    {"errors"},
    {"_optional", "_files", "_options", "cli"},
    {"model"},  # the architecture owns its config: it never reads the run's settings
    {"settings"},
    {"weights"},
    {"data"},
    {"deploy"},
    {"training"},
    {"pipeline"},
    {"commands"},  # the programs: train, convert, export, predict
]


def layer_of(module: str) -> int:
    """`swin_flax.training.loop` -> the index of `training` in LAYERS."""
    top = module.split(".")[1]
    for index, names in enumerate(LAYERS):
        if top in names:
            return index
    raise AssertionError(f"{module} belongs to no layer: add its package to LAYERS")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The swin_flax modules `path` imports anywhere in its body (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("swin_flax.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "swin_flax" or node.module.startswith("swin_flax."):
                # `from swin_flax.training import losses` imports a module, `from
                # swin_flax.training.losses import cross_entropy` a name of one.
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    found.add(sub if sub in known else node.module)
    return found & known


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    known = set(modules)
    return {name: imports_of(path, known) - {name} for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return trail[trail.index(nxt) :] + [nxt] if nxt in trail else [node, nxt]
            if nxt not in state:
                cycle = visit(nxt, trail + [nxt])
                if cycle:
                    return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start, [start])
            if cycle:
                return cycle
    return None


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """'a imports b' for every import of a higher layer (package __init__s re-export
    their own package only, so they are held to the same rule; the top-level
    swin_flax/__init__.py is the public API and may import any layer)."""
    bad = []
    for module, imported in graph.items():
        if module == "swin_flax":
            continue
        for other in imported:
            if other != "swin_flax" and layer_of(other) > layer_of(module):
                bad.append(f"{module} imports {other}")
    return sorted(bad)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_layer_check_finds_an_upward_import():
    graph = {"swin_flax.model.swin": {"swin_flax.training.loop"}, "swin_flax.training.loop": set()}
    assert layer_violations(graph) == ["swin_flax.model.swin imports swin_flax.training.loop"]
    assert layer_violations({"swin_flax.training.loop": {"swin_flax.model.swin"}}) == []


def test_swin_flax_has_no_import_cycle():
    assert find_cycle(import_graph()) is None


def test_every_package_imports_only_the_layers_below_it():
    assert layer_violations(import_graph()) == []


def test_deployment_never_imports_training_or_the_pipeline():
    graph = import_graph()
    deploy = {m: deps for m, deps in graph.items() if m.startswith("swin_flax.deploy")}
    assert deploy, "no deploy modules found"
    for module, deps in deploy.items():
        assert not {d for d in deps if d.split(".")[1:2] in (["training"], ["pipeline"])}, module


def test_the_model_never_imports_the_run_settings():
    graph = import_graph()
    model = {m: deps for m, deps in graph.items() if m.startswith("swin_flax.model")}
    assert model, "no model modules found"
    for module, deps in model.items():
        assert "swin_flax.settings" not in deps, module
    assert "swin_flax.model.attention" in graph["swin_flax.settings"]  # the reverse is fine


def test_errors_imports_nothing_of_ours():
    assert import_graph()["swin_flax.errors"] == set()


def test_no_module_is_over_the_line_limit():
    long = {
        name: n
        for name, path in package_modules().items()
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}, f"split these modules (limit {MAX_MODULE_LINES} lines): {long}"


def expected_test_file(module: str) -> Path:
    """swin_flax.training.loop -> tests/training/test_loop.py; swin_flax.cli -> tests/test_cli.py."""
    parts = module.split(".")[1:]
    return ROOT / "tests" / Path(*parts[:-1]) / f"test_{parts[-1].lstrip('_')}.py"


def test_every_module_has_its_test_file():
    modules = [m for m, p in package_modules().items() if p.name != "__init__.py"]
    missing = [m for m in modules if not expected_test_file(m).exists()]
    assert missing == [], "modules without tests/<package>/test_<module>.py: " + ", ".join(missing)


def readme_layout_modules(text: str) -> set[str]:
    """The modules the README's layout block names: `swin_flax/x.py` lines, and `pkg/  a.py,
    b.py` lines (continued on indented lines) for the modules of swin_flax/pkg/."""
    block = re.search(r"<!-- layout:begin -->(.*?)<!-- layout:end -->", text, re.S)
    assert block, "README.md has no <!-- layout:begin --> ... <!-- layout:end --> block"
    listed, package = set(), None
    for line in block.group(1).splitlines():
        head = re.match(r"\s{4}(swin_flax/[a-z_/]+\.py|[a-z_]+/)\s", line + " ")
        if head and head.group(1).endswith(".py"):
            listed.add(head.group(1))
            package = None
            continue
        if head:
            package = head.group(1)
            line = line[head.end() :]
        elif not line.startswith(" " * 8):
            package = None
        if package and package.rstrip("/") in PACKAGES:
            listed |= {f"swin_flax/{package}{m}" for m in re.findall(r"\b([a-z_]+\.py)\b", line)}
    return listed


PACKAGES = ("model", "weights", "data", "deploy", "training", "pipeline", "commands")


def test_the_readme_layout_names_every_module_of_the_tree_and_no_other():
    listed = readme_layout_modules((ROOT / "README.md").read_text())
    actual = {
        str(p.relative_to(ROOT))
        for p in PACKAGE.rglob("*.py")
        if p.name != "__init__.py" or p.parent == PACKAGE
    }
    assert sorted(actual - listed) == [], "modules missing from the README layout"
    assert sorted(listed - actual) == [], "the README layout names modules that do not exist"


def test_the_readme_layout_parser_reads_both_line_forms():
    text = """<!-- layout:begin -->
    swin_flax/cli.py       the wrapper
    model/     config.py (SwinConfig), swin.py,
               attention.py
    tests/         mirror the package: tests/<package>/test_<module>.py
<!-- layout:end -->"""
    assert readme_layout_modules(text) == {
        "swin_flax/cli.py",
        "swin_flax/model/config.py",
        "swin_flax/model/swin.py",
        "swin_flax/model/attention.py",
    }


ROOT_SCRIPT_MAX_LINES = 200


@pytest.mark.parametrize(
    "script", ["train.py", "export.py", "predict.py", "convert_timm_weights.py"]
)
def test_root_scripts_are_thin(script):
    """Entry points parse arguments and call the package (the logic lives in swin_flax/)."""
    lines = (ROOT / script).read_text().splitlines()
    assert len(lines) <= ROOT_SCRIPT_MAX_LINES, (
        f"{script}: {len(lines)} lines; move logic into swin_flax/"
    )
