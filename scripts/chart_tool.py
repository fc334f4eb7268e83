#!/usr/bin/env python3
"""Renders, lints and validates the Helm chart charts/pruneforge offline.

Helm itself does the work: the PyPI package helm-python-sdk binds Helm's official Go SDK (v4)
through a C ABI (libhelm_c.so ships in the wheel), so rendering, values.schema.json checks and
lint are Helm's own code, not a re-implementation. Every rendered manifest is then validated with
kubernetes-validate against the Kubernetes 1.32 OpenAPI schemas (strict: unknown fields fail).

Subcommands:
  render OUTDIR         lint + render every charts/pruneforge/ci/*-values.yaml scenario into
                        OUTDIR/<scenario>.yaml (plus OUTDIR/crds.yaml), validate all manifests,
                        validate values.yaml and the scenarios against values.schema.json.
  check-values FILE...  print, as JSON, what jsonschema and Helm say about each values file
                        (used by the tests to prove bad values are rejected).
  validate FILE...      print, as JSON, the problems of every object in the files (built-in kinds
                        with kubernetes-validate; other kinds are reported as unchecked).

Exit status: 0 ok, 1 validation failures, 2 missing tools (the message says what to install).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "pruneforge"
RELEASE = "pruneforge"
NAMESPACE = "pruneforge-system"
KUBE_VERSION = "1.32.0"
HELM_SDK_VERSION = "0.2.2"
PIP_LINE = (
    "python3 -m pip install 'helm-python-sdk==0.2.2' 'kubernetes-validate==1.*' "
    "'jsonschema==4.*' 'PyYAML==6.*'"
)

# The order `helm install` applies kinds in (Helm's InstallOrder, the kinds this chart uses).
INSTALL_ORDER = [
    "Namespace",
    "CustomResourceDefinition",
    "ServiceAccount",
    "ConfigMap",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Service",
    "Deployment",
]

# ServiceMonitor (monitoring.coreos.com/v1) is not a built-in kind, so kubernetes-validate has
# no schema for it. This is the subset of the Prometheus Operator's ServiceMonitor schema that
# the chart emits, with the upstream types and duration pattern; unknown fields fail.
DURATION = (
    "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
)
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "namespace"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
                "namespace": {"type": "string"},
                "labels": STRING_MAP,
                "annotations": STRING_MAP,
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "jobLabel": {"type": "string"},
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchLabels": STRING_MAP},
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                            "interval": {"type": "string", "pattern": DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": DURATION},
                            "honorLabels": {"type": "boolean"},
                        },
                    },
                },
            },
        },
    },
}


class MissingTools(Exception):
    pass


def load_tools():
    """Imports the Python tools, or raises MissingTools naming what to install."""
    missing = []
    mods = {}
    for name in ("helm_python", "kubernetes_validate", "jsonschema", "yaml"):
        try:
            mods[name] = __import__(name)
        except ImportError as e:
            missing.append(f"{name} ({e})")
    if missing:
        raise MissingTools(
            "missing Python tools for the chart checks: " + ", ".join(missing) + f"\ninstall them with: {PIP_LINE}"
        )
    version = getattr(mods["helm_python"], "__version__", "?")
    if version != HELM_SDK_VERSION:
        raise MissingTools(
            f"helm-python-sdk {version} is installed but the chart checks are pinned to "
            f"{HELM_SDK_VERSION}\ninstall it with: {PIP_LINE}"
        )
    return mods


def strict_yaml_loader(yaml):
    """A SafeLoader that rejects duplicate mapping keys, as the apiserver's YAML decoder does."""

    class StrictLoader(yaml.SafeLoader):
        pass

    def construct_mapping(loader, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return yaml.SafeLoader.construct_mapping(loader, node, deep)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return StrictLoader


def split_documents(text):
    """Splits a rendered template into YAML documents (raw text), dropping empty ones."""
    docs = re.split(r"(?m)^---[ \t]*$", text)
    return [d.strip("\n") for d in docs if d.strip() and not all(
        line.strip() == "" or line.lstrip().startswith("#") for line in d.splitlines()
    )]


def scenarios():
    files = sorted((CHART / "ci").glob("*-values.yaml"))
    return [(f.name[: -len("-values.yaml")], f) for f in files]


def load_values(mods, path):
    data = mods["yaml"].load(path.read_text(), Loader=strict_yaml_loader(mods["yaml"]))
    return data or {}


def schema_errors(mods, schema, values):
    validator = mods["jsonschema"].Draft7Validator(schema)
    return [
        f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
        for e in sorted(validator.iter_errors(values), key=lambda e: list(map(str, e.absolute_path)))
    ]


def validate_manifest(mods, doc):
    """Returns a list of problems of one rendered object."""
    api_version = doc.get("apiVersion", "")
    kind = doc.get("kind", "")
    if not api_version or not kind:
        return ["object without apiVersion/kind"]
    if api_version.startswith("pruneforge.dev/"):
        # Checked against the CRD's openAPIV3Schema (and CEL rules) by the pruneforge-api tests.
        return []
    if api_version == "monitoring.coreos.com/v1" and kind == "ServiceMonitor":
        return schema_errors(mods, SERVICE_MONITOR_SCHEMA, doc)
    kv = mods["kubernetes_validate"]
    try:
        kv.validate(doc, KUBE_VERSION, strict=True)
    except kv.ValidationError as e:
        where = "/".join(str(p) for p in e.path)
        return [f"{where or '(root)'}: {e.message}"]
    except kv.SchemaNotFoundError as e:
        return [f"kind {kind} ({api_version}) is unknown to Kubernetes {KUBE_VERSION}: {e}"]
    return []


def render_scenario(mods, chart, values):
    """Renders with Helm; returns [(source template, raw document text)] in install order."""
    rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    out = []
    for source in sorted(rendered):
        if source.endswith("NOTES.txt"):
            continue
        for raw in split_documents(rendered[source]):
            out.append((source, raw))
    loader = strict_yaml_loader(mods["yaml"])

    def order(item):
        kind = (mods["yaml"].load(item[1], Loader=loader) or {}).get("kind", "")
        return INSTALL_ORDER.index(kind) if kind in INSTALL_ORDER else len(INSTALL_ORDER)

    return sorted(out, key=order)


def cmd_render(outdir):
    mods = load_tools()
    helm = mods["helm_python"]
    yaml = mods["yaml"]
    loader = strict_yaml_loader(yaml)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    failures = []
    schema = json.loads((CHART / "values.schema.json").read_text())
    mods["jsonschema"].Draft7Validator.check_schema(schema)

    for errs, what in [(schema_errors(mods, schema, load_values(mods, CHART / "values.yaml")), "values.yaml")]:
        failures += [f"{what}: {e}" for e in errs]

    with helm.Chart.load(str(CHART)) as chart:
        print(f"helm-python-sdk {helm.__version__} (Helm SDK {helm.helm_sdk_version()}), "
              f"kubernetes-validate for Kubernetes {KUBE_VERSION}")
        # CRDs ship in crds/: Helm installs them first and never templates them.
        crd_docs = []
        for crd in chart.crds:
            for raw in split_documents(crd["data"]):
                crd_docs.append((crd["name"], raw))
        for name, values_file in [("crds", None)] + scenarios():
            if values_file is None:
                docs = crd_docs
            else:
                values = load_values(mods, values_file)
                # Helm validates the user's values merged over values.yaml; so does jsonschema here.
                merged = chart.merge_values(values)
                failures += [f"{values_file.name}: {e}" for e in schema_errors(mods, schema, merged)]
                lint = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE,
                                 kube_version=f"v{KUBE_VERSION}")
                for m in lint.get("messages", []):
                    if m.get("severity", 0) >= 2:
                        failures.append(f"helm lint ({values_file.name}): {m.get('path')}: {m.get('error')}")
                for e in lint.get("errors", []):
                    failures.append(f"helm lint ({values_file.name}): {e}")
                try:
                    docs = render_scenario(mods, chart, values)
                except helm.HelmError as e:
                    failures.append(f"helm template ({values_file.name}): {e}")
                    continue
            text = []
            for source, raw in docs:
                try:
                    obj = yaml.load(raw, Loader=loader)
                except yaml.YAMLError as e:
                    failures.append(f"{name}: {source}: not valid YAML: {e}")
                    continue
                label = f"{name}: {source}: {obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
                failures += [f"{label}: {p}" for p in validate_manifest(mods, obj)]
                text.append(f"---\n# Source: {source}\n{raw}\n")
            (outdir / f"{name}.yaml").write_text("".join(text))
            print(f"{name}: {len(docs)} objects -> {outdir / (name + '.yaml')}")
    if failures:
        print(f"{len(failures)} chart problem(s):", file=sys.stderr)
        for f in failures:
            print(f"  - {f}", file=sys.stderr)
        return 1
    print("chart ok: lint clean, every manifest valid")
    return 0


def cmd_check_values(files):
    mods = load_tools()
    helm = mods["helm_python"]
    schema = json.loads((CHART / "values.schema.json").read_text())
    report = {}
    with helm.Chart.load(str(CHART)) as chart:
        for f in files:
            values = load_values(mods, Path(f))
            merged = chart.merge_values(values)
            entry = {"jsonschema": schema_errors(mods, schema, merged), "helm": None}
            try:
                chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
            except helm.HelmError as e:
                entry["helm"] = str(e)
            report[f] = entry
    print(json.dumps(report, indent=2))
    return 0


def cmd_validate(files):
    mods = load_tools()
    kv = mods["kubernetes_validate"]
    loader = strict_yaml_loader(mods["yaml"])
    report = []
    for f in files:
        for obj in mods["yaml"].load_all(Path(f).read_text(), Loader=loader):
            if not obj:
                continue
            api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
            entry = {"file": f, "apiVersion": api_version, "kind": kind,
                     "name": (obj.get("metadata") or {}).get("name"), "checked": True, "errors": []}
            if api_version.startswith("pruneforge.dev/"):
                entry["checked"] = False  # the caller checks these against the CRD
            elif api_version == "monitoring.coreos.com/v1" and kind == "ServiceMonitor":
                entry["errors"] = schema_errors(mods, SERVICE_MONITOR_SCHEMA, obj)
            else:
                try:
                    kv.validate(obj, KUBE_VERSION, strict=True)
                except kv.ValidationError as e:
                    where = "/".join(str(p) for p in e.path)
                    entry["errors"].append(f"{where or '(root)'}: {e.message}")
                except kv.SchemaNotFoundError:
                    entry["checked"] = False
            report.append(entry)
    print(json.dumps(report, indent=2))
    return 0


def main(argv):
    try:
        if len(argv) == 2 and argv[0] == "render":
            return cmd_render(argv[1])
        if len(argv) >= 2 and argv[0] == "check-values":
            return cmd_check_values(argv[1:])
        if len(argv) >= 2 and argv[0] == "validate":
            return cmd_validate(argv[1:])
    except MissingTools as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
