"""``dcopt ops``: which ops the reference executor supports."""

from __future__ import annotations

import click


@click.command()
@click.option("--domain", default=None, help="Only this domain ('' is the default ONNX domain).")
def ops(domain):
    """List the ops the reference executor implements, by domain."""
    from dcopt.ops.registry import registered_ops

    by_domain: dict[str, list[str]] = {}
    for dom, name in registered_ops():
        if domain is None or dom == domain:
            by_domain.setdefault(dom, []).append(name)
    for dom, names in sorted(by_domain.items()):
        click.echo(f"{dom or 'ai.onnx'} ({len(names)} ops):")
        click.echo("  " + " ".join(sorted(names)))
