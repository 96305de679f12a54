"""`mmagent inspect`: run inputs through the hardening layer and describe them (nothing is stored)."""

from __future__ import annotations

import hashlib

import click

from .output import print_json, print_table


@click.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--expect", type=click.Choice(["image", "audio", "video"]), help="Reject other kinds.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def inspect(sources: tuple[str, ...], expect: str | None, as_json: bool) -> None:
    """Validate media (path, data URL or http(s) URL) and show its type, size and dimensions."""
    from ..config import load_settings
    from ..content.guard import inspect_media
    from ..content.sources import read_source

    settings = load_settings()
    results = []
    for source in sources:
        data, declared, label = read_source(source, settings)
        info = inspect_media(data, settings.limits, expect=expect, declared_mime=declared, label=label)
        results.append({"source": label, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                        **{k: v for k, v in info.__dict__.items() if v is not None}})
    if as_json:
        print_json(results)
        return
    rows = [(r["source"], r["kind"], r["mime_type"], f"{r['bytes']:,}", _shape(r)) for r in results]
    print_table(("source", "kind", "type", "bytes", "shape"), rows)


def _shape(r: dict) -> str:
    bits = []
    if "width" in r:
        bits.append(f"{r['width']}x{r['height']}")
    if "duration" in r:
        bits.append(f"{r['duration']:.2f} s")
    if "sample_rate" in r:
        bits.append(f"{r['sample_rate']} Hz x{r.get('channels', '?')}")
    return ", ".join(bits)


COMMANDS = [inspect]
