"""deploy/k8s (a cluster): every manifest valid for the Kubernetes API of a fixed version
(kubernetes-validate, strict: an unknown field is refused; its schemas ship in the
package, nothing is downloaded) and listed in the kustomization; every container
hardened, probed and bounded; each service given only its own Secret, as files, with
the same secrets as in deploy/compose; the shared ConfigMap holding only real settings
that are not secret; TLS in front of the API. Not applied to a cluster: there is none
on this machine."""

from __future__ import annotations

import copy
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions
from pydantic import BaseModel
from test_deploy_units import secret_variables

from ganzhi.settings import SECRETS_DIR_VARIABLE, ApiSettings, OpsPorts, Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
COMPOSE = ROOT / "deploy" / "compose" / "compose.yaml"
DOCKERFILE = ROOT / "deploy" / "compose" / "Dockerfile"
# The Kubernetes version the manifests are checked against (a schema set that
# kubernetes-validate ships; the dev extra asks for a release that has it).
K8S_VERSION = "1.33"
NAMESPACE = "ganzhi"
PLACEHOLDER = "REPLACE-ME"
WORKLOADS = {"Deployment", "StatefulSet", "Job"}
# Made before applying, named in the README: the MQTT broker's CA and the Ingress' TLS.
PREREQUISITES = {("ConfigMap", "ganzhi-mqtt-ca"), ("Secret", "ganzhi-tls")}
# The long-running services and their replicas (ingest and stream scale out; alerts: one).
REPLICAS = {"ingest": 2, "stream": 2, "alerts": 1, "api": 2}
HARDENED = {"runAsNonRoot": True, "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}}
# A password inside a URL (a DSN, a broker address with credentials).
CREDENTIAL_IN_URL = re.compile(r"://[^/@\s:]+:[^/@\s]+@")


def validate(resource: dict[str, Any]) -> None:
    """Raise unless ``resource`` is valid for the Kubernetes API of K8S_VERSION, with
    unknown fields refused (``kubernetes_validate.ValidationError``; a kind it has no
    schema for: ``SchemaNotFoundError``)."""
    kubernetes_validate.validate(resource, K8S_VERSION, strict=True)


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def documents() -> list[tuple[str, dict[str, Any]]]:
    return [(p.name, d) for p in manifest_files()
            for d in yaml.safe_load_all(p.read_text()) if d]


def of_kind(*kinds: str) -> list[dict[str, Any]]:
    return [d for _, d in documents() if d["kind"] in kinds]


def component(resource: dict[str, Any]) -> str:
    return str(resource["metadata"]["labels"]["app.kubernetes.io/component"])


def workloads() -> dict[str, dict[str, Any]]:
    out = {component(w): w for w in of_kind(*WORKLOADS)}
    assert len(out) == len(of_kind(*WORKLOADS)), "two workloads of one component"
    return out


def pod(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    p = pod(workload)
    return [*p.get("initContainers", []), *p["containers"]]


def config() -> dict[str, str]:
    (cm,) = [c for c in of_kind("ConfigMap") if c["metadata"]["name"] == "ganzhi-config"]
    data: dict[str, str] = cm["data"]
    return data


def secrets() -> dict[str, dict[str, Any]]:
    return {s["metadata"]["name"]: s for s in of_kind("Secret")}


def setting_variables(model: type[BaseModel] = Settings, prefix: str = "GANZHI_") -> set[str]:
    """The environment name of every setting, sections' fields included."""
    out = set()
    for name, field in model.model_fields.items():
        var = f"{prefix}{name.upper()}"
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out |= setting_variables(ann, f"{var}__")
        else:
            out.add(var)
    return out


def compose_secret_files() -> dict[str, dict[str, str]]:
    """Compose's secrets per component (ingest-1 and ingest-2: ingest): source -> target."""
    out: dict[str, dict[str, str]] = {}
    for name, s in yaml.safe_load(COMPOSE.read_text())["services"].items():
        if not str(s.get("image", "")).startswith("ganzhi:"):
            continue
        files = {x["source"]: x["target"] for x in s.get("secrets", [])}
        assert out.setdefault(re.sub(r"-\d+$", "", name), files) == files, name
    return out


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Any attempt to reach the network fails the test: the schemas are in the package."""
    def refuse(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("the validation tried to reach the network")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield


def test_the_validator_has_the_version_offline() -> None:
    assert f"{K8S_VERSION}.0" in all_versions(), all_versions()
    # Strict schemas: additionalProperties false, unknown fields refused.
    schemas = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    assert (schemas / f"v{K8S_VERSION}.0-local-strict" / "deployment-apps-v1.json").is_file()


def test_every_manifest_is_valid_for_the_kubernetes_api(offline: None) -> None:
    docs = documents()
    assert {d["kind"] for _, d in docs} >= {
        "Namespace", "ConfigMap", "Secret", "Deployment", "StatefulSet", "Job", "Service",
        "Ingress", "PodDisruptionBudget", "NetworkPolicy"}
    errors = []
    for name, d in docs:
        try:
            validate(d)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{name} {d['kind']}/{d['metadata']['name']}: "
                          f"{'.'.join(map(str, e.path))}: {e.message}")
    assert not errors, "\n".join(errors)


def test_the_validation_refuses_what_kubernetes_would(offline: None) -> None:
    (api,) = [w for w in of_kind("Deployment") if w["metadata"]["name"] == "api"]
    validate(api)
    unknown = copy.deepcopy(api)
    unknown["spec"]["template"]["spec"]["containers"][0]["bogus"] = True
    with pytest.raises(kubernetes_validate.ValidationError, match="bogus"):
        validate(unknown)
    misspelt = copy.deepcopy(api)
    misspelt["spec"]["replica"] = misspelt["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(misspelt)
    wrong_type = copy.deepcopy(api)
    wrong_type["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(wrong_type)
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        validate({"apiVersion": "example.com/v1", "kind": "Bogus", "metadata": {"name": "x"}})


def test_the_kustomization_lists_every_manifest_and_names_the_image() -> None:
    k = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert k["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert k["kind"] == "Kustomization"
    assert set(k) <= {"apiVersion", "kind", "namespace", "resources", "images", "labels"}
    assert sorted(k["resources"]) == [p.name for p in manifest_files()]
    assert len(k["resources"]) == len(set(k["resources"]))
    assert k["namespace"] == NAMESPACE
    # Nothing but manifests, the kustomization and the README in the folder.
    assert {p.name for p in K8S.iterdir()} == {
        *k["resources"], "kustomization.yaml", "README.md"}
    # The image compose builds (ganzhi:${GANZHI_VERSION:-latest}), set with `images:`.
    compose_image = yaml.safe_load(COMPOSE.read_text())["services"]["api"]["image"]
    name = compose_image.split(":", 1)[0]
    assert [i["name"] for i in k["images"]] == [name]
    for w in workloads().values():
        for c in containers(w):
            assert c["image"].split(":", 1)[0] == name, c["name"]


def test_every_object_is_in_the_namespace_and_the_namespace_is_restricted() -> None:
    for name, d in documents():
        if d["kind"] == "Namespace":
            assert d["metadata"]["name"] == NAMESPACE
            assert d["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == \
                "restricted"
        else:
            assert d["metadata"].get("namespace") == NAMESPACE, (name, d["kind"])


def test_every_container_is_hardened_probed_and_bounded() -> None:
    user = re.search(r"--uid (\d+)", DOCKERFILE.read_text())
    assert user, "the image's user id"
    uid = int(user.group(1))
    assert set(workloads()) == {"migrate", *REPLICAS}
    for comp, w in workloads().items():
        p = pod(w)
        assert p["automountServiceAccountToken"] is False, comp
        assert p["securityContext"]["runAsNonRoot"] is True, comp
        assert p["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, comp
        # The image's user is a name: runAsNonRoot needs the number to check it.
        assert p["securityContext"]["runAsUser"] == uid, comp
        assert not {"hostNetwork", "hostPID", "hostIPC"} & set(p), comp
        assert not any("hostPath" in v for v in p.get("volumes", [])), comp
        for c in containers(w):
            where = f"{comp}/{c['name']}"
            sc = c["securityContext"]
            for key, value in HARDENED.items():
                assert sc.get(key) == value, f"{where}: securityContext.{key}"
            assert "privileged" not in sc, where
            for kind in ("requests", "limits"):
                assert set(c["resources"][kind]) >= {"cpu", "memory"}, f"{where}: {kind}"
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{where}: no writable /tmp"
            if w["kind"] == "Job":
                continue
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert probe in c, f"{where}: no {probe}"


def test_the_probes_and_ports_are_the_services_own() -> None:
    """Each service's health endpoint is /healthz on its GANZHI_OPS__* port (the API:
    on its own port), and it listens on the pod's address, not only on loopback."""
    ops = OpsPorts()
    ports = {"ingest": ops.ingest, "stream": ops.stream, "alerts": ops.alerts,
             "api": ApiSettings().port}
    assert config()["GANZHI_OPS__HOST"] == "0.0.0.0"
    for comp, port in ports.items():
        (c,) = pod(workloads()[comp])["containers"]
        named = {x["name"]: x["containerPort"] for x in c["ports"]}
        probe = c["readinessProbe"]["httpGet"]
        assert probe["path"] == "/healthz", comp
        assert named[probe["port"]] == port, comp
        for kind in ("startupProbe", "livenessProbe"):
            target = c[kind].get("httpGet") or c[kind]["tcpSocket"]
            assert named[target["port"]] == port, (comp, kind)
        if comp == "api":
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            assert env["GANZHI_API__HOST"] == "0.0.0.0"


def test_replicas_and_disruption_budgets() -> None:
    w = workloads()
    for comp, n in REPLICAS.items():
        assert w[comp]["spec"]["replicas"] == n, comp
    # Ingest: a stable worker id per pod (the broker keeps each worker's session).
    assert w["ingest"]["kind"] == "StatefulSet"
    (ingest,) = pod(w["ingest"])["containers"]
    (worker_id,) = [e for e in ingest["env"] if e["name"] == "GANZHI_INGEST__WORKER_ID"]
    assert worker_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # Alerts: a static consumer-group member; two must never run side by side.
    assert w["alerts"]["spec"]["strategy"]["type"] == "Recreate"
    # Every stream worker gets the same share of the partitions.
    assert int(config()["GANZHI_KAFKA__PARTITIONS"]) % REPLICAS["stream"] == 0
    assert "multiple of the replica count" in (K8S / "stream.yaml").read_text()
    budgets = {component(b): b for b in of_kind("PodDisruptionBudget")}
    assert set(budgets) == {"ingest", "stream", "api"}
    for comp, b in budgets.items():
        labels = w[comp]["spec"]["template"]["metadata"]["labels"]
        assert b["spec"]["selector"]["matchLabels"].items() <= labels.items(), comp
        assert b["spec"].get("maxUnavailable", 0) < REPLICAS[comp], comp


def test_each_service_mounts_only_its_own_secrets_as_files() -> None:
    known = secret_variables()
    folder = config()[SECRETS_DIR_VARIABLE]
    compose = compose_secret_files()
    defined = secrets()
    mounted_by: dict[str, list[str]] = {}
    for comp, w in workloads().items():
        volumes = [v for v in pod(w)["volumes"] if "secret" in v]
        assert len(volumes) == 1, f"{comp}: one Secret each"
        (v,) = volumes
        name = v["secret"]["secretName"]
        mounted_by.setdefault(name, []).append(comp)
        assert v["secret"]["defaultMode"] & 0o007 == 0, f"{comp}: secrets readable by all"
        files = {i["key"]: i["path"] for i in v["secret"]["items"]}
        # The same secrets, under the same names and files, as deploy/compose gives it.
        assert files == compose[comp], comp
        assert set(files.values()) <= known, (comp, set(files.values()) - known)
        assert set(files) == set(defined[name]["stringData"]), f"{comp}: keys unused/missing"
        for c in containers(w):
            mounts = [m for m in c["volumeMounts"] if m["name"] == v["name"]]
            assert [(m["mountPath"], m.get("readOnly")) for m in mounts] == [(folder, True)]
            # Never in the environment.
            assert not any("secretRef" in e for e in c.get("envFrom", [])), comp
            env = c.get("env", [])
            assert not any("secretKeyRef" in e.get("valueFrom", {}) for e in env), comp
            assert not {e["name"] for e in env} & known, comp
    assert {n: sorted(c) for n, c in mounted_by.items()} == {
        n: [n.removeprefix("ganzhi-")] for n in defined}, "a Secret mounted elsewhere"


def test_secrets_hold_placeholders_only() -> None:
    assert secrets()
    for name, s in secrets().items():
        assert s["type"] == "Opaque", name
        assert "data" not in s, f"{name}: base64 data (a real value?)"
        assert s["stringData"], name
        for key, value in s["stringData"].items():
            assert value == PLACEHOLDER, f"{name}/{key}: not the placeholder"


def test_the_configmap_holds_real_settings_and_no_secret() -> None:
    data = config()
    known, secret = setting_variables(), secret_variables()
    assert len(data) > 10
    assert set(data) - {SECRETS_DIR_VARIABLE} <= known, set(data) - known
    assert not set(data) & secret, "a secret in the ConfigMap"
    for key, value in data.items():
        assert isinstance(value, str), f"{key}: not a string"
        assert PLACEHOLDER not in value and not CREDENTIAL_IN_URL.search(value), key
    for comp, w in workloads().items():
        for c in containers(w):
            for e in c.get("env", []):
                assert e["name"] in known, f"{comp}: {e['name']} is not a setting"
                assert not CREDENTIAL_IN_URL.search(e.get("value", "")), comp


def kubelet_secret_volume(folder: Path, files: dict[str, str]) -> None:
    """A Secret volume as the kubelet lays it out: the files in a timestamped directory
    behind the ..data link, and a link per file."""
    real = folder / "..2025_01_01_00_00_00.000000001"
    real.mkdir(parents=True)
    (folder / "..data").symlink_to(real.name)
    for name, value in files.items():
        (real / name).write_text(value)
        (folder / name).symlink_to(f"..data/{name}")


@pytest.mark.parametrize("comp", sorted(["migrate", *REPLICAS]))
def test_the_settings_load_as_each_pod_sees_them(
        comp: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for k in list(os.environ):
        if k.startswith("GANZHI_") or k == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)  # no .env file
    w = workloads()[comp]
    (c,) = pod(w)["containers"]
    (v,) = [v for v in pod(w)["volumes"] if "secret" in v]
    values = secrets()[v["secret"]["secretName"]]["stringData"]
    folder = tmp_path / "secrets"
    kubelet_secret_volume(folder, {i["path"]: values[i["key"]] for i in v["secret"]["items"]})
    for key, value in config().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv(SECRETS_DIR_VARIABLE, str(folder))
    for e in c.get("env", []):
        monkeypatch.setenv(e["name"], e.get("value", f"{w['metadata']['name']}-0"))
    s = Settings()
    assert s.ops.host == "0.0.0.0"
    assert s.kafka.replication_factor == 3 and s.kafka.min_insync_replicas == 2
    files = {i["path"] for i in v["secret"]["items"]}
    if "GANZHI_DB__DSN" in files:
        assert s.db.dsn.get_secret_value() == PLACEHOLDER
    if "GANZHI_MQTT__SHARE_GROUP" in files:
        assert s.mqtt.share_group is not None
        assert s.mqtt.share_group.get_secret_value() == PLACEHOLDER
        assert s.ingest.worker_id == "ingest-0"


def test_the_ingress_has_tls_and_routes_only_the_public_paths() -> None:
    ingresses = of_kind("Ingress")
    assert ingresses
    services = {s["metadata"]["name"]: s for s in of_kind("Service")}
    public = urlparse(config()["GANZHI_WEBHOOK__PUBLIC_BASE_URL"])
    assert public.scheme == "https"
    for ing in ingresses:
        tls = ing["spec"]["tls"]
        assert tls and all(t["secretName"] == "ganzhi-tls" for t in tls)
        covered = {h for t in tls for h in t["hosts"]}
        for rule in ing["spec"]["rules"]:
            assert rule["host"] in covered and rule["host"] == public.hostname
            for path in rule["http"]["paths"]:
                # "/" as a prefix would route /metrics too.
                assert path["path"] != "/" or path["pathType"] == "Exact"
                assert not path["path"].startswith("/metrics")
                backend = path["backend"]["service"]
                ports = {p["name"] for p in services[backend["name"]]["spec"]["ports"]}
                assert backend["port"]["name"] in ports
    live = [p for i in ingresses for r in i["spec"]["rules"] for p in r["http"]["paths"]
            if p["path"] == "/api/v1/live"]
    assert live, "the live stream needs its own unbuffered route"
    assert "ganzhi-tls" in (K8S / "README.md").read_text()


def test_services_reach_their_pods_and_metrics_are_annotated() -> None:
    w = workloads()
    services = {component(s): s for s in of_kind("Service")}
    assert set(services) == set(REPLICAS)
    for comp, svc in services.items():
        labels = w[comp]["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= labels.items(), comp
        (c,) = pod(w[comp])["containers"]
        named = {x["name"]: x["containerPort"] for x in c["ports"]}
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in named, comp
        notes = svc["metadata"]["annotations"]
        assert notes["prometheus.io/scrape"] == "true", comp
        assert notes["prometheus.io/path"] == "/metrics", comp
        assert int(notes["prometheus.io/port"]) in named.values(), comp
    assert w["ingest"]["spec"]["serviceName"] == services["ingest"]["metadata"]["name"]
    assert services["ingest"]["spec"]["clusterIP"] == "None"


def test_network_policies_let_in_only_what_each_service_needs() -> None:
    policies = of_kind("NetworkPolicy")
    deny = [p for p in policies if p["spec"]["podSelector"] == {}]
    assert len(deny) == 1 and deny[0]["spec"]["policyTypes"] == ["Ingress"]
    assert "ingress" not in deny[0]["spec"]
    w = workloads()
    allowed: dict[str, set[str]] = {}
    for p in policies:
        if p in deny:
            continue
        comp = p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        (c,) = pod(w[comp])["containers"]
        named = {x["name"] for x in c["ports"]}
        for rule in p["spec"]["ingress"]:
            assert rule.get("from"), f"{comp}: open to every source"
            assert all(set(peer) == {"namespaceSelector"} for peer in rule["from"]), comp
            assert rule["ports"] and {x["port"] for x in rule["ports"]} <= named, comp
            allowed.setdefault(comp, set()).update(
                peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                for peer in rule["from"])
    # The migrations take no connections; the API from the ingress controller and
    # Prometheus; the workers from Prometheus only.
    assert allowed == {"api": {"ingress-nginx", "monitoring"}, "ingest": {"monitoring"},
                       "stream": {"monitoring"}, "alerts": {"monitoring"}}


def test_what_the_manifests_refer_to_exists_or_is_a_documented_prerequisite() -> None:
    present = {(d["kind"], d["metadata"]["name"]) for _, d in documents()}
    readme = (K8S / "README.md").read_text()
    for kind, name in PREREQUISITES:
        assert (kind, name) not in present and name in readme, name
    wanted = set()
    for w in workloads().values():
        for v in pod(w)["volumes"]:
            if "secret" in v:
                wanted.add(("Secret", v["secret"]["secretName"]))
            if "configMap" in v:
                wanted.add(("ConfigMap", v["configMap"]["name"]))
        for c in containers(w):
            wanted |= {("ConfigMap", e["configMapRef"]["name"]) for e in c.get("envFrom", [])}
    wanted |= {("Secret", t["secretName"]) for i in of_kind("Ingress") for t in i["spec"]["tls"]}
    assert wanted <= present | PREREQUISITES, wanted - present - PREREQUISITES


def relabel(labels: dict[str, str], rules: list[dict[str, Any]]) -> dict[str, str] | None:
    """Prometheus' relabelling, the keep and replace actions (None: dropped)."""
    out = dict(labels)
    for rule in rules:
        value = rule.get("separator", ";").join(out.get(n, "") for n in rule["source_labels"])
        m = re.fullmatch(rule.get("regex", "(.*)"), value)
        if rule.get("action", "replace") == "keep":
            if m is None:
                return None
        elif m is not None:
            replacement = re.sub(r"\$(\d+)", r"\\g<\1>", rule.get("replacement", "$1"))
            out[rule["target_label"]] = m.expand(replacement)
    return out


def meta(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def test_the_readme_scrape_job_names_the_targets_as_the_rules_expect() -> None:
    """The README's Prometheus job for the annotated Services, its relabelling run on
    what Kubernetes discovery reports for each Service: every service scraped on its
    metrics port, as the job the alerting rules and deploy/compose name it
    (ganzhi-<service>). (promtool cannot check it: Debian builds it without Kubernetes
    discovery.)"""
    text = (K8S / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(scrape_configs:.*?)```", text, re.S)
    assert len(blocks) == 1, "one scrape_configs block in README.md"
    (job,) = yaml.safe_load(blocks[0])["scrape_configs"]
    (sd,) = job["kubernetes_sd_configs"]
    assert sd == {"role": "endpoints", "namespaces": {"names": [NAMESPACE]}}
    compose_jobs = {j["job_name"] for j in yaml.safe_load(
        (ROOT / "deploy" / "compose" / "prometheus.yml").read_text())["scrape_configs"]}
    w = workloads()
    jobs = set()
    for svc in of_kind("Service"):
        comp = component(svc)
        (port,) = svc["spec"]["ports"]
        (c,) = pod(w[comp])["containers"]
        (container_port,) = [p["containerPort"] for p in c["ports"]
                             if p["name"] == port["targetPort"]]
        labels = {"__address__": f"10.1.2.3:{container_port}",
                  "__metrics_path__": "/metrics",
                  "__meta_kubernetes_pod_name": f"{comp}-0", "job": job["job_name"]}
        labels |= {f"__meta_kubernetes_service_annotation_{meta(k)}": v
                   for k, v in svc["metadata"]["annotations"].items()}
        labels |= {f"__meta_kubernetes_service_label_{meta(k)}": v
                   for k, v in svc["metadata"]["labels"].items()}
        target = relabel(labels, job["relabel_configs"])
        assert target is not None, comp
        assert target["__address__"] == f"10.1.2.3:{container_port}", comp
        assert target["__metrics_path__"] == "/metrics", comp
        assert target["instance"] == f"{comp}-0", comp
        jobs.add(target["job"])
    assert jobs == compose_jobs, (jobs, compose_jobs)
    # A Service without the annotation is not scraped.
    assert relabel({"__address__": "10.1.2.3:80"}, job["relabel_configs"]) is None
