"""deploy/kubernetes: every core manifest valid against the Kubernetes schemas, every ``LIMNER_*`` variable a
real setting, the settings they give load, and the pieces refer to each other (selectors, ports, volumes,
secret keys, the RayService's applications and the models of limner.toml)."""

from __future__ import annotations

import importlib
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from limner.engines.catalog import ModelEntry
from limner.engines.ray_serve import app_name
from limner.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
KUBERNETES = "1.30.0"
"""The oldest Kubernetes the manifests are meant for (native ``preStop: sleep`` needs 1.30)."""
NOT_SETTINGS = {"LIMNER_CONFIG"}
"""``LIMNER_*`` variables read outside ``Settings``: the path of ``limner.toml`` (``limner.settings.config_path``)."""


def documents() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((ROOT / "kustomization.yaml").read_text())
    found: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        found += [doc for doc in yaml.safe_load_all((ROOT / name).read_text()) if doc]
    return found


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    [found] = [doc for doc in documents() if doc["kind"] == kind and name in (None, doc["metadata"]["name"])]
    return found


def test_the_kustomization_lists_every_manifest() -> None:
    listed = set(yaml.safe_load((ROOT / "kustomization.yaml").read_text())["resources"])
    assert listed == {path.name for path in ROOT.glob("*.yaml")} - {"kustomization.yaml"}


CORE = [doc for doc in documents() if doc["apiVersion"] != "ray.io/v1"]
"""Every manifest but KubeRay's (no schema here: test_the_rayservice_serves_the_models_of_limner_toml)."""


@pytest.mark.parametrize("document", CORE, ids=[f"{doc['kind']}/{doc['metadata']['name']}" for doc in CORE])
def test_each_core_manifest_is_valid_kubernetes(document: dict[str, Any]) -> None:
    kubernetes_validate.validate(document, KUBERNETES, strict=True)


def test_a_broken_manifest_is_refused() -> None:
    """The validation above can fail: a misspelt field and a wrong type are both caught."""
    deployment = one("Deployment")
    misspelt = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, KUBERNETES, strict=True)
    wrong = {**deployment, "spec": {**deployment["spec"], "replicas": "two"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong, KUBERNETES, strict=True)


def container() -> dict[str, Any]:
    [found] = one("Deployment")["spec"]["template"]["spec"]["containers"]
    return found


def limner_variables() -> set[str]:
    names = set(one("ConfigMap", "limner-settings")["data"])
    names |= {variable["name"] for variable in container().get("env", [])}
    return {name for name in names if name.startswith("LIMNER_")}


def test_every_limner_variable_is_a_setting() -> None:
    names = limner_variables()
    assert {"LIMNER_DATABASE_URL", "LIMNER_REDIS_URL", "LIMNER_MEDIA_STORE", "LIMNER_SIGNING_SECRET"} <= names
    fields = {f"LIMNER_{name.upper()}" for name in Settings.model_fields}
    assert not names - NOT_SETTINGS - fields


def test_the_settings_the_manifests_give_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = one("ConfigMap", "limner-settings")["data"]
    for name in [name for name in os.environ if name.startswith("LIMNER_")]:
        monkeypatch.delenv(name)
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    config = tmp_path / "limner.toml"
    config.write_text(one("ConfigMap", "limner-config")["data"]["limner.toml"])
    monkeypatch.setenv("LIMNER_CONFIG", str(config))
    for variable in container()["env"]:
        if "valueFrom" in variable:  # a secret: a value of the shape the README's command makes
            monkeypatch.setenv(variable["name"], "postgresql://u:p@h/db" if "URL" in variable["name"] else "x" * 43)
    loaded = load_settings()
    assert (loaded.host, loaded.media_store, loaded.s3_bucket) == ("0.0.0.0", "s3", "limner-media")
    assert loaded.log_format == "json" and loaded.secret("signing_secret") == "x" * 43
    assert str(loaded.data_dir) == settings["LIMNER_DATA_DIR"]
    [model] = loaded.models
    assert model.runtime == "ray" and model.ray_address == "ray://limner-models-head-svc:10001"


def test_the_api_pods_run_locked_down_with_probes_and_volumes() -> None:
    pod = one("Deployment")["spec"]["template"]["spec"]
    main = container()
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    assert main["securityContext"]["allowPrivilegeEscalation"] is False
    assert main["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert main["resources"]["requests"] and main["resources"]["limits"]["memory"]
    ports = {port["name"]: port["containerPort"] for port in main["ports"]}
    settings = one("ConfigMap", "limner-settings")["data"]
    assert ports == {"http": int(settings["LIMNER_PORT"])}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert main[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in main["volumeMounts"]}
    assert "emptyDir" in volumes[mounts[settings["LIMNER_DATA_DIR"]]]
    assert "emptyDir" in volumes[mounts["/tmp"]]
    config_dir = str(Path(settings["LIMNER_CONFIG"]).parent)
    assert volumes[mounts[config_dir]]["configMap"]["name"] == "limner-config"
    assert main["envFrom"] == [{"configMapRef": {"name": "limner-settings"}}]


def test_every_secret_key_is_one_the_readme_creates() -> None:
    created = set(re.findall(r"--from-literal=([a-z0-9-]+)=", (ROOT / "README.md").read_text()))
    refs = [variable["valueFrom"]["secretKeyRef"] for variable in container()["env"] if "valueFrom" in variable]
    assert {ref["name"] for ref in refs} == {"limner-secrets"}
    assert {ref["key"] for ref in refs} == created
    assert not any("SECRET" in name or "TOKEN" in name for name in one("ConfigMap", "limner-settings")["data"])


def test_service_ingress_pdb_and_hpa_point_at_the_api_pods() -> None:
    deployment = one("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = one("Service", "limner")
    assert service["spec"]["selector"].items() <= labels.items()
    assert {port["targetPort"] for port in service["spec"]["ports"]} == {"http"}
    [rule] = one("Ingress")["spec"]["rules"]
    [path] = rule["http"]["paths"]
    backend = path["backend"]["service"]
    assert backend["name"] == "limner"
    assert backend["port"]["name"] in {port["name"] for port in service["spec"]["ports"]}
    assert rule["host"] == one("ConfigMap", "limner-settings")["data"]["LIMNER_ALLOWED_HOSTS"]
    assert one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    target = one("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    minimum = one("HorizontalPodAutoscaler")["spec"]["minReplicas"]
    assert minimum >= 2 and minimum > one("PodDisruptionBudget")["spec"]["minAvailable"]  # a drain keeps one


def test_the_rayservice_serves_the_models_of_limner_toml() -> None:
    service = one("RayService")
    assert service["apiVersion"] == "ray.io/v1"
    toml = tomllib.loads(one("ConfigMap", "limner-config")["data"]["limner.toml"])
    models = {entry.id: entry for entry in (ModelEntry.model_validate(raw) for raw in toml["models"])}
    applications = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]
    assert len(applications) == len(models)
    for application in applications:
        module, _, attribute = application["import_path"].partition(":")
        assert callable(getattr(importlib.import_module(module), attribute))
        served = ModelEntry.model_validate(application["args"]["model"])
        entry = models[served.id]
        assert application["name"] == app_name(entry)
        same = ("engine", "path", "ray_replicas", "ray_max_replicas", "ray_actor_options")
        assert {name: getattr(served, name) for name in same} == {name: getattr(entry, name) for name in same}
        head = entry.ray_address.removeprefix("ray://").split(":")[0] if entry.ray_address else ""
        assert head == f"{service['metadata']['name']}-head-svc"
    cluster = service["spec"]["rayClusterConfig"]
    [head_container] = cluster["headGroupSpec"]["template"]["spec"]["containers"]
    head_ports = {port["containerPort"] for port in head_container["ports"]}
    assert 10001 in head_ports  # the Ray client port in ray_address
    [workers] = cluster["workerGroupSpecs"]
    [worker] = workers["template"]["spec"]["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert workers["minReplicas"] <= workers["replicas"] <= workers["maxReplicas"]
    mounted = {mount["mountPath"] for mount in worker["volumeMounts"]}
    assert all(any(str(entry.path).startswith(path) for path in mounted) for entry in models.values())


def test_the_serve_config_builder_makes_an_application() -> None:
    serve = pytest.importorskip("ray.serve")
    from limner.engines.ray_serve import application

    [config] = yaml.safe_load(one("RayService")["spec"]["serveConfigV2"])["applications"]
    built = application(config["args"])
    assert isinstance(built, serve.Application)


def test_the_ray_pods_export_traces_where_the_api_pods_do() -> None:
    """The replicas continue each request's trace: they need the API's collector and exporter choice."""
    settings = one("ConfigMap", "limner-settings")["data"]
    cluster = one("RayService")["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        [container] = group["template"]["spec"]["containers"]
        env = {item["name"]: item for item in container["env"]}
        for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT"):
            assert env[name]["valueFrom"]["configMapKeyRef"] == {"name": "limner-settings", "key": name}
            assert name in settings
        assert env["OTEL_SERVICE_NAME"]["value"] == "limner-models"
