"""Plugins: the example plugin through its real entry point, the MMAGENT_LOAD_PLUGINS allowlist,
broken plugins reported and skipped, and each hook in-process (`test_hook_<name>`, one per hook)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import mmagent
from mmagent.backends import Backend, Captioner, get_backend, get_registry, list_backends
from mmagent.cli import build_cli
from mmagent.errors import BackendNotFoundError
from mmagent.plugin_manager import Plugins, get_plugins, reset_plugins

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "mmagent-plugin-example"
HEAVY = ("torch", "transformers", "diffusers", "whisper")


# -- helpers -------------------------------------------------------------------------------------


def mmagent_command() -> list[str]:
    """The installed `mmagent` script next to this interpreter (else the same entry, via -c)."""
    script = Path(sys.executable).with_name("mmagent")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from mmagent.cli import main; main(sys.argv[1:])"]


def run(args: list[str], *, path: list[Path] = (), cwd: Path, allow: str | None = None,
        python: bool = False) -> subprocess.CompletedProcess:
    """Run `mmagent ARGS` (or `python ARGS`) with `path` on PYTHONPATH, in the test's isolated env."""
    env = dict(os.environ)  # conftest already set a private MMAGENT_HOME and XDG_CONFIG_HOME
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in path)
    env.pop("MMAGENT_LOAD_PLUGINS", None)
    if allow is not None:
        env["MMAGENT_LOAD_PLUGINS"] = allow
    cmd = [sys.executable, *args] if python else [*mmagent_command(), *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def plugins_json(**kwargs) -> dict[str, dict]:
    proc = run(["plugins", "--json"], **kwargs)
    assert proc.returncode == 0, proc.stderr
    return {p["name"]: p for p in json.loads(proc.stdout)}


def make_png(path: Path, size=(40, 30), color=(255, 0, 0), stripe=(0, 0, 255)) -> Path:
    """A `color` image with a thin `stripe` along the top (so there are two colours)."""
    from PIL import Image

    im = Image.new("RGB", size, color)
    im.paste(stripe, (0, 0, size[0], max(1, size[1] // 6)))
    im.save(path)
    return path


@pytest.fixture
def no_entry_points(monkeypatch):
    """In-process tests: no installed third-party plugin can interfere; fresh process-wide state."""
    monkeypatch.setenv("MMAGENT_LOAD_PLUGINS", "")
    reset_plugins()
    yield
    reset_plugins()


# -- the example plugin, installed for real ----------------------------------------------------


@pytest.fixture(scope="module")
def example_site(tmp_path_factory) -> Path:
    """examples/mmagent-plugin-example installed (offline, no deps) into a private folder."""
    for needed in ("pip", "setuptools"):
        if importlib.util.find_spec(needed) is None:
            pytest.skip(f"{needed} is not installed in this environment")
    work = tmp_path_factory.mktemp("example-plugin")
    src = work / "src"  # a copy, so the build leaves no build/ or *.egg-info in the repository
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = work / "site"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--no-cache-dir", "--disable-pip-version-check", "--quiet", "--target", str(site), str(src)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (site / "mmagent_plugin_example" / "__init__.py").is_file()
    return site


def test_example_is_listed_by_plugins(example_site, tmp_path):
    info = plugins_json(path=[example_site], cwd=tmp_path)["example"]
    assert info["source"] == "entry point"
    assert info["package"] == "mmagent-plugin-example"
    assert info["version"] == "0.1.0"
    assert info["module"] == "mmagent_plugin_example"
    assert info["status"] == "ok", info["errors"]
    assert info["errors"] == []
    assert set(info["provides"]) == {"caption/palette", "command palette"}


def test_example_plugins_table(example_site, tmp_path):
    proc = run(["plugins"], path=[example_site], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "example" in proc.stdout and "palette" in proc.stdout


def test_example_backend_is_listed(example_site, tmp_path):
    proc = run(["backends", "--role", "caption", "--json"], path=[example_site], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    entries = {e["name"]: e for e in json.loads(proc.stdout)}
    palette = entries["palette"]
    assert palette["role"] == "caption" and palette["plugin"] == "example"
    assert palette["accepts"] == ["image"] and palette["produces"] == ["text"]
    assert palette["missing"] == []
    assert all(e["role"] == "caption" for e in entries.values())


def test_example_command_prints_dominant_colors(example_site, tmp_path):
    image = make_png(tmp_path / "red.png")
    proc = run(["palette", str(image)], path=[example_site], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "40x30 png"
    names = [line.split()[0] for line in lines[1:]]
    assert names[0] == "red" and "blue" in names
    assert lines[1].split()[1] == "#ff0000"
    shares = [float(line.split()[-1].rstrip("%")) for line in lines[1:]]
    assert shares == sorted(shares, reverse=True) and abs(sum(shares) - 100) < 0.5
    assert shares[0] > 75

    one = run(["palette", str(image), "--colors", "1"], path=[example_site], cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    assert len(one.stdout.splitlines()) == 2


def test_example_command_goes_through_input_hardening(example_site, tmp_path):
    fake = tmp_path / "fake.png"
    fake.write_text("not an image at all")
    proc = run(["palette", str(fake)], path=[example_site], cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("Error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr

    missing = run(["palette", str(tmp_path / "missing.png")], path=[example_site], cwd=tmp_path)
    assert missing.returncode == 2 and "no such file" in missing.stderr

    bad_n = run(["palette", str(make_png(tmp_path / "ok.png")), "--colors", "0"], path=[example_site],
                cwd=tmp_path)
    assert bad_n.returncode == 2 and "--colors" in bad_n.stderr


def test_example_command_in_help(example_site, tmp_path):
    proc = run(["--help"], path=[example_site], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    commands = proc.stdout.split("Commands:", 1)[1].split()
    assert "palette" in commands and "plugins" in commands


def test_example_captioner_through_get_backend(example_site, tmp_path):
    image = make_png(tmp_path / "red.png")
    code = (
        "import sys, mmagent\n"
        "backend = mmagent.get_backend('caption', 'palette')\n"
        "print(backend.caption(mmagent.load_media(sys.argv[1], expect='image')))\n"
    )
    proc = run(["-c", code, str(image)], path=[example_site], cwd=tmp_path, python=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("A 40x30 image, mostly red (")
    assert "blue" in proc.stdout


def test_example_module_imports_nothing_heavy(example_site, tmp_path):
    image = make_png(tmp_path / "red.png")
    code = textwrap.dedent(f"""
        import json, sys
        import mmagent_plugin_example
        after_import = [m for m in {HEAVY!r} if m in sys.modules]

        import mmagent
        from mmagent.plugin_manager import Plugins
        plugins = Plugins()
        plugins.add(mmagent_plugin_example, "example")
        found = []
        plugins.call("register_backends", lambda info: {{"register": found.append}})
        text = found[0]().caption(mmagent.load_media(sys.argv[1], expect="image"))
        after_use = [m for m in {HEAVY!r} if m in sys.modules]
        print(json.dumps({{"import": after_import, "use": after_use, "caption": text}}))
    """)
    proc = run(["-c", code, str(image)], path=[example_site], cwd=tmp_path, python=True)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["import"] == [] and result["use"] == []
    assert "mostly red" in result["caption"]


# -- MMAGENT_LOAD_PLUGINS --------------------------------------------------------------------------


@pytest.mark.parametrize("allow, shown", [
    (None, True),                       # unset: every installed plugin
    ("", False),                        # empty: none
    ("example", True),                  # by entry-point name
    ("mmagent-plugin-example", True),   # by distribution name
    ("mmagent_plugin_example", True),   # ... spelled as pip would also accept it
    ("other, example", True),           # a comma-separated list, spaces ignored
    ("other", False),                   # someone else
])
def test_allowlist(example_site, tmp_path, allow, shown):
    assert ("example" in plugins_json(path=[example_site], cwd=tmp_path, allow=allow)) is shown
    help_text = run(["--help"], path=[example_site], cwd=tmp_path, allow=allow).stdout
    assert ("palette" in help_text.split("Commands:", 1)[1].split()) is shown


# -- broken plugins --------------------------------------------------------------------------------

PREFIX = "mmagent_testplug_"

BROKEN = {
    "importfail": """
        raise ImportError("this plugin needs libfoo, which is not installed")
    """,
    "hookraises": """
        import mmagent

        @mmagent.hookimpl
        def register_backends(register):
            raise RuntimeError("boom in register_backends")
    """,
    "notbackend": """
        import mmagent

        @mmagent.hookimpl
        def register_backends(register):
            register(dict)
    """,
    "wrongrole": """
        import mmagent

        class Impostor(mmagent.Backend):  # claims the caption role without the Captioner contract
            role = "caption"
            name = "impostor"

        @mmagent.hookimpl
        def register_backends(register):
            register(Impostor)
    """,
    "unknownhook": """
        import mmagent

        @mmagent.hookimpl
        def register_backend(register):  # typo: the hook is register_backends
            pass
    """,
    "wrongarg": """
        import mmagent

        @mmagent.hookimpl
        def register_backends(registry):  # the hook's argument is `register`
            pass
    """,
    "replacebuiltin": """
        import click
        import mmagent

        @mmagent.hookimpl
        def register_commands(cli):
            @cli.command("plugins")
            def hijack():
                click.echo("hijacked")
    """,
}

GOOD = """
    import click
    import mmagent
    from mmagent.backends import Captioner

    class Fixed(Captioner):
        name = "fixed"

        def caption(self, image, *, prompt=None):
            return "a picture"

    @mmagent.hookimpl
    def register_backends(register):
        register(Fixed)

    @mmagent.hookimpl
    def register_commands(cli):
        @cli.command("good-hello")
        def hello():
            click.echo("hello from good")
"""

EXPECTED_ERRORS = {
    "importfail": ["failed to import", "ImportError", "needs libfoo"],
    "hookraises": ["register_backends raised RuntimeError", "boom in register_backends"],
    "notbackend": ["is not a subclass of mmagent.Backend"],
    "wrongrole": ["Impostor", "role 'caption'", "does not subclass Captioner"],
    "unknownhook": ["failed to register", "unknown hook", "register_backend ", "register_backends"],
    "wrongarg": ["failed to register", "register_backends", "registry"],
    "replacebuiltin": ["register_commands raised", "command 'plugins' is built in"],
}


def make_dist(site: Path, ep_name: str, source: str) -> None:
    """A minimal installed distribution: NAME-0.1.dist-info/{METADATA,entry_points.txt} + module."""
    module = PREFIX + ep_name
    info = site / f"{module}-0.1.dist-info"
    info.mkdir(parents=True)
    dist = module.replace("_", "-")
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[mmagent]\n{ep_name} = {module}\n")
    (site / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture(scope="module")
def broken_site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("broken-plugins")
    for name, source in BROKEN.items():
        make_dist(site, name, source)
    make_dist(site, "good", GOOD)
    return site


def test_broken_plugins_are_reported(broken_site, tmp_path):
    infos = plugins_json(path=[broken_site], cwd=tmp_path)
    for name, fragments in EXPECTED_ERRORS.items():
        info = infos[name]
        assert info["status"] == "error", name
        assert info["source"] == "entry point"
        assert info["package"] == (PREFIX + name).replace("_", "-")
        message = " ".join(info["errors"])
        for fragment in fragments:
            assert fragment in message, (name, message)
        assert all("\n" not in e for e in info["errors"]), info["errors"]
    good = infos["good"]
    assert good["status"] == "ok" and good["errors"] == []
    assert set(good["provides"]) == {"caption/fixed", "command good-hello"}


def test_broken_plugins_leave_the_cli_working(broken_site, tmp_path):
    help_ = run(["--help"], path=[broken_site], cwd=tmp_path)
    assert help_.returncode == 0, help_.stderr
    commands = help_.stdout.split("Commands:", 1)[1].split()
    assert {"plugins", "backends", "good-hello"} <= set(commands)
    assert "hijack" not in commands

    table = run(["plugins"], path=[broken_site], cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "good" in table.stdout and "error" in table.stdout

    hello = run(["good-hello"], path=[broken_site], cwd=tmp_path)
    assert hello.returncode == 0 and hello.stdout == "hello from good\n"

    backends = run(["backends", "--json"], path=[broken_site], cwd=tmp_path)
    assert backends.returncode == 0, backends.stderr
    names = {(e["role"], e["name"], e["plugin"]) for e in json.loads(backends.stdout)}
    assert ("caption", "fixed", "good") in names
    assert not any(n == "impostor" for _, n, _ in names)


def test_broken_plugins_beside_the_example(broken_site, example_site, tmp_path):
    infos = plugins_json(path=[broken_site, example_site], cwd=tmp_path)
    assert infos["example"]["status"] == "ok" and infos["good"]["status"] == "ok"
    assert infos["importfail"]["status"] == "error"


def test_allowlist_skips_broken_plugins_entirely(broken_site, tmp_path):
    infos = plugins_json(path=[broken_site], cwd=tmp_path, allow="good")
    assert "good" in infos and not set(BROKEN) & set(infos)


# -- the hooks, in-process (datasette's rule: every hook has a test_hook_<name>) -------------------


class Echo(Captioner):
    name = "echo-test"
    description = "Says the image size"

    def caption(self, image, *, prompt=None):
        return f"{image.width}x{image.height}"


def test_hook_register_backends(no_entry_points, tmp_path):
    class Plugin:
        @mmagent.hookimpl
        def register_backends(self, register):
            register(Echo)

    info = get_plugins().add(Plugin(), "echo")
    backend = get_backend("caption", "echo-test")
    assert isinstance(backend, Echo)
    assert backend.caption(mmagent.load_media(make_png(tmp_path / "a.png"), expect="image")) == "40x30"
    entry = get_registry().get("caption", "echo-test")
    assert entry.plugin == "echo" and entry.cls is Echo
    assert "echo-test" in [e.name for e in list_backends("caption")]
    assert info.status == "ok" and info.provides == ["caption/echo-test"]


def test_hook_register_commands(no_entry_points):
    class Plugin:
        @mmagent.hookimpl
        def register_commands(self, cli):
            @cli.command()
            @click.argument("who")
            def greet(who):
                """Say hello."""
                click.echo(f"hello {who}")

    info = get_plugins().add(Plugin(), "greeter")
    result = CliRunner().invoke(build_cli(), ["greet", "Ada"])
    assert result.exit_code == 0, result.output
    assert result.output == "hello Ada\n"
    assert info.status == "ok" and info.provides == ["command greet"]


def test_plugins_add_isolates_each_plugin():
    """`Plugins` on its own: each hook call gets arguments built for (and credited to) its plugin."""

    def make(tag):
        module = types.ModuleType(f"plugin_{tag}")

        @mmagent.hookimpl
        def register_backends(register):
            register(tag)

        module.register_backends = register_backends
        return module

    plugins = Plugins()
    plugins.add(make("a"), "a")
    plugins.add(make("b"), "b")
    seen = []
    plugins.call("register_backends", lambda info: {"register": lambda x: seen.append((info.name, x))})
    assert sorted(seen) == [("a", "a"), ("b", "b")]
    assert plugins.infos["a"].source == "runtime" and plugins.infos["a"].module == "plugin_a"


def test_rebuilding_the_cli_keeps_plugin_commands(no_entry_points):
    """After reset_plugins(), a rebuilt CLI must not take the old plugin commands for built-ins."""

    def plugin():
        module = types.ModuleType("hello_plugin")

        @mmagent.hookimpl
        def register_commands(cli):
            cli.add_command(click.Command("hello", callback=lambda: click.echo("hi")))

        module.register_commands = register_commands
        return module

    for _ in range(2):
        reset_plugins()
        info = get_plugins().add(plugin(), "hello")
        group = build_cli()
        assert info.status == "ok", info.errors
        assert CliRunner().invoke(group, ["hello"]).output == "hi\n"
    reset_plugins()
    assert "hello" not in build_cli().commands


def test_builtin_commands_cannot_be_replaced(no_entry_points):
    class Plugin:
        @mmagent.hookimpl
        def register_commands(self, cli):
            cli.add_command(click.Command("config", callback=lambda: click.echo("hijacked")))

    info = get_plugins().add(Plugin(), "hijacker")
    group = build_cli()
    assert info.status == "error"
    assert info.errors == ["register_commands raised MMAgentError: command 'config' is built in and cannot be replaced"]
    result = CliRunner().invoke(group, ["plugins", "--json"])
    assert result.exit_code == 0 and "hijacked" not in result.output


def test_a_command_name_is_first_come_first_served(no_entry_points):
    def plugin(text):
        class Plugin:
            @mmagent.hookimpl
            def register_commands(self, cli):
                cli.add_command(click.Command("hello", callback=lambda: click.echo(text)))
        return Plugin()

    first = get_plugins().add(plugin("first"), "first")
    second = get_plugins().add(plugin("second"), "second")
    group = build_cli()
    assert CliRunner().invoke(group, ["hello"]).output == "first\n"
    assert first.status == "ok" and first.provides == ["command hello"]
    assert second.errors == ["register_commands raised MMAgentError: command 'hello' is already added by another plugin"]
    assert second.provides == []


def test_failures_in_process(no_entry_points):
    class Raises:
        @mmagent.hookimpl
        def register_backends(self, register):
            register(Echo)  # registered before the failure: kept
            raise ValueError("half-way")

    class NotABackend:
        @mmagent.hookimpl
        def register_backends(self, register):
            register(object())

    class Nameless(Captioner):
        pass

    class NoName:
        @mmagent.hookimpl
        def register_backends(self, register):
            register(Nameless)

    class Duplicate:
        @mmagent.hookimpl
        def register_backends(self, register):
            register(Echo)

    class WrongArg:
        @mmagent.hookimpl
        def register_commands(self, group):
            pass

    class Typo:
        @mmagent.hookimpl
        def register_command(self, cli):
            pass

    class Optional:  # optionalhook: a hook of a newer mmagent, tolerated
        @mmagent.hookimpl(optionalhook=True)
        def register_widgets(self, register):
            pass

    plugins = get_plugins()
    for name, obj in [("raises", Raises()), ("notabackend", NotABackend()), ("noname", NoName()),
                      ("duplicate", Duplicate()), ("wrongarg", WrongArg()), ("typo", Typo()),
                      ("optional", Optional())]:
        plugins.add(obj, name)
    registry = get_registry()
    infos = plugins.infos

    assert infos["raises"].errors == ["register_backends raised ValueError: half-way"]
    assert infos["raises"].provides == ["caption/echo-test"]
    assert registry.get("caption", "echo-test").plugin == "raises"
    assert "is not a subclass of mmagent.Backend" in infos["notabackend"].errors[0]
    assert "must set string class attributes 'role' and 'name'" in infos["noname"].errors[0]
    assert infos["duplicate"].errors == ["backend caption/echo-test is already registered by plugin 'raises'"]
    assert infos["wrongarg"].errors[0].startswith("failed to register: ")
    assert "group" in infos["wrongarg"].errors[0] and "\n" not in infos["wrongarg"].errors[0]
    assert infos["typo"].errors[0].startswith("failed to register: unknown hook(s) register_command (known: ")
    assert "register_commands" in infos["typo"].errors[0]
    assert infos["optional"].status == "ok"
    for name in ("wrongarg", "typo"):
        assert plugins.pm.get_plugin(name) is None  # not registered: its hooks never run
    with pytest.raises(BackendNotFoundError):
        get_backend("caption", "missing")


# -- the example module, in-process (the pattern to copy when testing a plugin) ------------------


@pytest.fixture
def example_module(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    import mmagent_plugin_example

    return mmagent_plugin_example


def test_example_in_process(example_module, no_entry_points, tmp_path):
    info = get_plugins().add(example_module, "example")
    backend = get_backend("caption", "palette")
    part = mmagent.load_media(make_png(tmp_path / "img.png", size=(60, 60), color=(250, 250, 250),
                                       stripe=(0, 120, 0)), expect="image")
    assert backend.caption(part) == "A 60x60 image, mostly white (83%), with green (17%)."
    assert get_backend("caption", "palette", colors=1).caption(part) == "A 60x60 image, mostly white (83%)."

    result = CliRunner().invoke(build_cli(), ["palette", str(tmp_path / "img.png"), "-n", "2"])
    assert result.exit_code == 0, result.output
    assert [line.split()[0] for line in result.output.splitlines()[1:]] == ["white", "green"]
    assert info.status == "ok" and set(info.provides) == {"caption/palette", "command palette"}


@pytest.mark.parametrize("rgb, name", [
    ((255, 0, 0), "red"), ((0, 0, 0), "black"), ((255, 255, 255), "white"), ((0, 0, 255), "blue"),
    ((20, 180, 20), "green"), ((250, 230, 30), "yellow"), ((120, 120, 125), "gray"), ((0, 0, 120), "navy"),
])
def test_example_color_names(example_module, rgb, name):
    assert example_module.color_name(rgb) == name


def test_example_backend_contract(example_module):
    cls = example_module.PaletteCaptioner
    assert issubclass(cls, Captioner) and issubclass(cls, Backend)
    assert (cls.role, cls.name) == ("caption", "palette")
    assert cls().load_model() is None
