"""The reference pages, generated from the code at every build (mkdocs-gen-files
runs this): nothing in them is copied by hand, so nothing can drift.

- reference/http-api.md   the gateway's OpenAPI document (FastAPI's, from the
                          routes, their docstrings and models), rendered by
                          essentials-openapi
- reference/settings.md   the Settings class (intraday/config.py): every
                          INTRADAY_* variable, its type, default and docstring
- reference/metrics.md    every Prometheus metric (clients/metrics.py)
- reference/messages.md   the topics' JSON Schemas (schemas/)
"""

from __future__ import annotations

import ast
import inspect
import json
import typing
from pathlib import Path

import mkdocs_gen_files
from openapidocs.mk.v3 import OpenAPIV3DocumentationHandler
from prometheus_client.metrics import MetricWrapperBase

ROOT = Path(__file__).resolve().parent.parent
GENERATED = "_Generated from the code at build time (docs/gen_pages.py); edit the code, not this page._"


def _cell(text: object) -> str:
    """A value fit for a Markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def http_api() -> str:
    from services.gateway.app import app

    spec = json.loads(json.dumps(app.openapi()))
    rows = []
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            scopes = [s for req in op.get("security", []) for s in next(iter(req.values()), [])]
            what = (op.get("description") or op.get("summary", "")).split("\n\n")[0]  # its docstring's lead
            rows.append(f"| `{method.upper()} {path}` | {', '.join(f'`{s}`' for s in scopes) or 'none'} "
                        f"| {_cell(what)} |")
    body = OpenAPIV3DocumentationHandler(spec, style="MARKDOWN").write()
    # Its own title is the document's; this page has one.
    body = body.split("\n", 1)[1] if body.startswith("# ") else body
    return "\n".join([
        "# HTTP API reference", "", GENERATED, "",
        "The gateway's routes (port 8000). Every route but `/health` and `/metrics` needs an API key,",
        "`Authorization: Bearer <key>`, holding the route's scope ([the API](../api.md) says how keys",
        "and tokens work). The same document is served live at `/openapi.json` and `/docs`.", "",
        "| route | scope | what it does |", "|---|---|---|", *rows, "", body])


def _type_name(annotation: object) -> str:
    """`str`, `Path or none`, `local or production` (a Literal's values)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return " or ".join(f"`{a}`" for a in args)
    if args:  # a union
        return " or ".join("none" if a is type(None) else _type_name(a) for a in args)
    return getattr(annotation, "__name__", str(annotation))


def settings() -> str:
    from intraday.config import Settings

    rows = []
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if isinstance(default, Path) and ROOT in default.parents:
            default = f"./{default.relative_to(ROOT)}"
        shown = "empty" if default == "" else "none" if default is None else f"`{default}`"
        kind = _type_name(field.annotation)
        rows.append(f"| `INTRADAY_{name.upper()}` | {_cell(kind)} | {_cell(shown)} | "
                    f"{_cell(field.description or '')} |")
    return "\n".join([
        "# Settings reference", "", GENERATED, "",
        "One settings object for every process (`intraday.config.Settings`, pydantic-settings), read",
        "from environment variables. In production, `INTRADAY_ENVIRONMENT=production` refuses the",
        "local defaults of anything that carries a credential or leaves the pod unencrypted.", "",
        "| variable | type | default | meaning |", "|---|---|---|---|", *rows, ""])


def metrics() -> str:
    import clients.metrics as module

    source = inspect.getsource(module)
    section, sections = "", {}
    for node in ast.parse(source).body:  # each metric's section: the `# -- name --` comment above it
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            above = source.splitlines()[: node.lineno - 1]
            marks = [line for line in above if line.startswith("# -- ")]
            section = marks[-1].strip("# -").strip() if marks else ""
            sections[node.targets[0].id] = section
    out = ["# Metrics reference", "", GENERATED, "",
           "Every metric the apps expose on `/metrics` (`clients/metrics.py`). Labels are bounded: never",
           "a device or a forecast id. The Grafana dashboards (`observability/dashboards.py`) and the",
           "alert rules (`observability/rules.yml`) read these names.", ""]
    current = None
    for attr, metric in vars(module).items():
        if not isinstance(metric, MetricWrapperBase):
            continue
        if sections.get(attr) != current:
            current = sections.get(attr)
            out += ["", f"## {current or 'other'}", "", "| metric | type | labels | what it counts |",
                    "|---|---|---|---|"]
        (family,) = metric.describe()
        exposed = family.name + ("_total" if family.type == "counter" else "")
        labels = ", ".join(f"`{x}`" for x in getattr(metric, "_labelnames", ()))
        out.append(f"| `{exposed}` | {family.type} | {labels} | {_cell(family.documentation)} |")
    return "\n".join(out) + "\n"


def messages() -> str:
    out = ["# Messages reference", "", GENERATED, "",
           "Each topic's message as its JSON Schema (`schemas/`, draft 2020-12); `intraday/messages.py`",
           "builds and reads them, and the tests check real messages against them.", ""]
    for path in sorted((ROOT / "schemas").glob("*.schema.json")):
        schema = json.loads(path.read_text())
        topic = path.name.removesuffix(".schema.json")
        out += [f"## `{topic}`", "", _cell(schema.get("description", schema.get("title", ""))), "",
                "| field | type | required | meaning |", "|---|---|---|---|"]
        required = set(schema.get("required", []))
        for name, prop in schema.get("properties", {}).items():
            kind = prop.get("type") or " or ".join(str(p.get("type", "?")) for p in prop.get("anyOf", [])) \
                or ("const " + json.dumps(prop["const"]) if "const" in prop else "")
            out.append(f"| `{name}` | {_cell(kind)} | {'yes' if name in required else ''} | "
                       f"{_cell(prop.get('description', ''))} |")
        out += ["", f"??? note \"The whole schema: `schemas/{path.name}`\"", "", "    ```json",
                *("    " + line for line in json.dumps(schema, indent=2).splitlines()), "    ```", ""]
    return "\n".join(out)


for page, make in (("http-api", http_api), ("settings", settings), ("metrics", metrics),
                   ("messages", messages)):
    with mkdocs_gen_files.open(f"reference/{page}.md", "w") as f:
        f.write(make())
    mkdocs_gen_files.set_edit_path(f"reference/{page}.md", "gen_pages.py")
