"""The `mmagent` command line. Built-in commands live in sibling modules; plugins add theirs
through the `register_commands` hook. Errors print one line and exit non-zero, never a traceback."""

from __future__ import annotations

import os
import sys

import click

from ..errors import MMAgentError


class UserFacingError(click.ClickException):
    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class MMAgentGroup(click.Group):
    """A click group that turns mmagent's typed errors into one-line messages."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except MMAgentError as exc:
            raise UserFacingError(_one_line(str(exc)), exit_code=exc.exit_code) from None
        except KeyboardInterrupt:
            raise click.exceptions.Exit(130) from None
        except BrokenPipeError:  # `mmagent … | head`: the reader left; say nothing more
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise click.exceptions.Exit(0) from None
        except Exception as exc:
            if os.environ.get("MMAGENT_DEBUG"):
                raise
            raise UserFacingError(
                f"internal error: {type(exc).__name__}: {_one_line(str(exc))} (MMAGENT_DEBUG=1 shows the traceback)"
            ) from None


@click.group(cls=MMAgentGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mmagent", prog_name="mmagent")
def cli() -> None:
    """mmagent: build and measure multimodal agents.

    Tool chains, adapter VLMs and unified models behind one orchestrator.
    """


#: Sibling modules whose `COMMANDS` are the built-in commands, in `--help` order.
BUILTIN_COMMAND_MODULES: tuple[str, ...] = (
    "run_cmd", "logs_cmd", "catalog_cmd", "plugins_cmd", "models_cmd", "config_cmd", "inspect_cmd", "scenes_cmd",
    "train_cmd", "extract_cmd", "eval_cmd", "route_cmd", "serve_cmd",
)


def build_cli() -> click.Group:
    """The CLI with the built-in commands and every plugin's commands."""
    from importlib import import_module

    from ..plugin_manager import get_plugins

    cli.commands.clear()  # a rebuild (after reset_plugins) must not take old plugin commands for built-ins
    for name in BUILTIN_COMMAND_MODULES:
        for command in import_module(f"{__name__}.{name}").COMMANDS:
            cli.add_command(command)
    builtin = set(cli.commands)

    def per_plugin(info):
        return {"cli": _PluginGroupView(cli, info, builtin)}

    get_plugins().call("register_commands", per_plugin)
    return cli


class _PluginGroupView:
    """What a plugin's `register_commands(cli)` sees: the group, minus the power to replace built-ins."""

    def __init__(self, group: click.Group, info, builtin: set[str]):
        self._group, self._info, self._builtin = group, info, builtin

    def add_command(self, command: click.Command, name: str | None = None) -> None:
        name = name or command.name
        if name in self._builtin:
            raise MMAgentError(f"command '{name}' is built in and cannot be replaced")
        if name in self._group.commands:  # first come, first served, as for backends
            raise MMAgentError(f"command '{name}' is already added by another plugin")
        self._group.add_command(command, name)
        self._info.provides.append(f"command {name}")

    def command(self, *args, **kwargs):
        def decorator(f):
            cmd = click.command(*args, **kwargs)(f)
            self.add_command(cmd)
            return cmd
        return decorator

    def group(self, *args, **kwargs):
        def decorator(f):
            grp = click.group(*args, **kwargs)(f)
            self.add_command(grp)
            return grp
        return decorator

    def __getattr__(self, name):
        return getattr(self._group, name)


def main(argv: list[str] | None = None) -> None:
    try:
        group = build_cli()
    except MMAgentError as exc:  # e.g. an invalid mmagent.toml
        click.echo(f"Error: {_one_line(str(exc))}", err=True)
        sys.exit(exc.exit_code)
    group.main(args=argv, prog_name="mmagent")


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "unknown error"
