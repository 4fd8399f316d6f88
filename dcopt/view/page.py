"""The viewer's page: served live (assets by URL, data from the JSON API) or exported as one
self-contained HTML file (assets inlined, every stage and node precomputed into the file).

One template (``static/index.html``) and one script (``static/app.js``) serve both: the script
reads ``window.DCOPT_DATA`` when the file carries its data and asks the server otherwise, and
hides what needs a server (candidates, preview, apply, undo) in the static file.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

STATIC = Path(__file__).parent / "static"
SCRIPTS = ("vendor/cytoscape.min.js", "vendor/cytoscape-dagre.min.js", "app.js", "charts.js", "records.js",
           "forms.js")


def _template(title: str) -> str:
    return (STATIC / "index.html").read_text().replace("{{title}}", html.escape(title))


def live_page(title: str) -> str:
    head = '<link rel="stylesheet" href="/static/app.css">'
    scripts = "".join(f'<script src="/static/{s}"></script>' for s in SCRIPTS)
    return _template(title).replace("{{head}}", head).replace("{{scripts}}", scripts)


def _inline_script(text: str) -> str:
    return "<script>" + text.replace("</script", "<\\/script") + "</script>"


def static_page(api) -> str:
    """The whole session as one HTML file that needs no server and no network."""
    data = static_data(api)
    head = "<style>" + (STATIC / "app.css").read_text() + "</style>"
    payload = json.dumps(data, default=str, separators=(",", ":"))
    scripts = _inline_script(f"window.DCOPT_DATA = {payload};") + "".join(
        _inline_script((STATIC / s).read_text()) for s in SCRIPTS)
    return _template(api.session.name + " (static)").replace("{{head}}", head).replace(
        "{{scripts}}", scripts)


def static_data(api) -> dict:
    """Every stage and the details of every node in it. A node unchanged between stages is the
    same object, so its details are stored once; kernel sources are stored once by name."""
    from dcopt.view.graph_json import iter_nodes

    session = api.session
    stages, nodes, details, sources = {}, {}, {}, {}
    with session.lock:
        for stage in session.stages:
            stages[stage.index] = api.stage(stage.index)
            ids = {}
            for nid, node in iter_nodes(stage.graph):
                key = f"{id(node):x}"
                if key not in details:
                    info = api.details.of(stage.index, nid)
                    for k in info["kernels"]:
                        sources.setdefault(k["name"] or k["step"], k.pop("source"))
                    details[key] = info
                ids[nid] = key
            nodes[stage.index] = ids
    return {"static": True, "session": api.overview(), "stages": stages, "nodes": nodes, "details": details,
            "sources": sources, "build": api.build(api.build_ref) if api.build_ref else None,
            "run": api.run(api.run_ref) if api.run_ref else None}
