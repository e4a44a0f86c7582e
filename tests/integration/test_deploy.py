"""deploy/: the image and the manifests, checked offline (no Docker, no cluster on this
machine): every YAML parses; core objects validate strictly against Kubernetes' schemas; KServe
objects survive the KServe SDK's own models; every `blaze` command line parses with our CLI
and agrees with the ports, probes and grace periods around it."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import click
import kubernetes_validate
import pytest
import yaml

from blazerpc.cli import main
from blazerpc.config import CLI_DEFAULTS, ServerConfig
from blazerpc.target import load_app

from .support import ROOT, run_in_client_venv

DEPLOY = ROOT / "deploy"
KUBERNETES = "1.33.0"
"""The Kubernetes version the core objects are validated against."""


def documents(folder: str) -> list[dict[str, Any]]:
    return [
        document
        for path in sorted((DEPLOY / folder).glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8"))
    ]


def by_kind(kind: str) -> dict[str, Any]:
    (found,) = [d for d in documents("kubernetes") + documents("kserve") if d["kind"] == kind]
    return found


def test_core_objects_validate_strictly() -> None:
    core = documents("kubernetes")
    assert [d["kind"] for d in core] == ["Deployment", "Service", "PodDisruptionBudget"]
    for document in core:
        kubernetes_validate.validate(document, KUBERNETES, strict=True)
    misspelt = copy.deepcopy(core[0])
    misspelt["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(
        kubernetes_validate.ValidationError, match="'readinessprobe' was unexpected"
    ):
        kubernetes_validate.validate(misspelt, KUBERNETES, strict=True)


@pytest.mark.anyio
async def test_kserve_objects_round_trip_through_the_kserve_sdk(tmp_path: Path) -> None:
    files = sorted(str(path) for path in (DEPLOY / "kserve").glob("*.yaml"))
    service = (DEPLOY / "kserve" / "inference-service.yaml").read_text(encoding="utf-8")
    misspelt = tmp_path / "misspelt.yaml"
    misspelt.write_text(service.replace("protocolVersion:", "protocolversion:"), encoding="utf-8")
    lines = await run_in_client_venv("kserve", "kserve_manifests.py", *files, str(misspelt))
    assert lines == [
        "ok ClusterServingRuntime blazerpc",
        "ok InferenceService chat",
        "lost InferenceService chat: $.spec.predictor.model.protocolversion lost",
    ]


def parse(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """`blaze SUBCOMMAND ...` parsed by our own CLI (nothing runs): the subcommand and its
    options; a bad flag or value raises click's error."""
    assert argv[0] == "blaze", argv
    name = argv[1]
    assert name in main.commands, f"blaze has no command {name!r}"
    with main.commands[name].make_context(name, argv[2:]) as context:
        return name, context.params


def serve_config(argv: list[str]) -> tuple[str, ServerConfig]:
    """A `blaze serve` line: its target (which must load) and the config it makes."""
    name, params = parse(argv)
    assert name == "serve"
    load_app(params["target"])
    fields = {k: v for k, v in params.items() if k in ServerConfig.__struct_fields__}
    return params["target"], ServerConfig.load(fields, {}, defaults=CLI_DEFAULTS)


def dockerfile() -> dict[str, Any]:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    found = {
        "entrypoint": json.loads(re.search(r"^ENTRYPOINT (.+)$", text, re.M)[1]),  # type: ignore[index]
        "cmd": json.loads(re.search(r"^CMD (.+)$", text, re.M)[1]),  # type: ignore[index]
        "health": json.loads(re.search(r"^HEALTHCHECK .*? CMD (\[.+\])$", text, re.M)[1]),  # type: ignore[index]
        "expose": {int(p) for p in re.search(r"^EXPOSE (.+)$", text, re.M)[1].split()},  # type: ignore[index]
        "user": re.search(r"^USER (\S+)$", text, re.M)[1],  # type: ignore[index]
    }
    return found


def test_the_dockerfile_serves_on_every_interface_and_checks_health_with_blaze() -> None:
    image = dockerfile()
    target, config = serve_config(image["entrypoint"] + image["cmd"])
    assert target == "examples/chat.py:app"
    assert config.host == "0.0.0.0"
    assert image["expose"] == {config.port, config.http_port}
    assert image["user"] != "root"
    name, health = parse(image["health"])
    assert (name, health["port"]) == ("health", config.port)
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".git", ".venv", "tests"} <= set(ignored)


def test_the_deployment_fits_the_image_and_drains_within_its_grace() -> None:
    entrypoint = dockerfile()["entrypoint"]
    pod = by_kind("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    target, config = serve_config(entrypoint + container["args"])  # no `blaze serve` twice
    declared = {port["containerPort"] for port in container["ports"]}
    assert declared == {config.port, config.http_port, config.metrics_port}
    probes = [container[p] for p in ("startupProbe", "readinessProbe", "livenessProbe")]
    assert all(probe["grpc"]["port"] == config.port for probe in probes)
    served = {model.name for model in load_app(target).schema.models}
    assert container["readinessProbe"]["grpc"]["service"] in served
    sleep = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["terminationGracePeriodSeconds"] > sleep + config.grace
    service_ports = {p["targetPort"] for p in by_kind("Service")["spec"]["ports"]}
    assert service_ports == {p["name"] for p in container["ports"] if p["name"] != "metrics"}


def test_the_kserve_runtime_serves_v2_on_8080_and_grpc_on_h2c() -> None:
    entrypoint = dockerfile()["entrypoint"]
    runtime = by_kind("ClusterServingRuntime")
    (container,) = runtime["spec"]["containers"]
    _, config = serve_config(entrypoint + container["args"])
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"h2c": config.port, "http1": 8080}
    assert config.http_port == 8080 and config.open_inference
    assert set(runtime["spec"]["protocolVersions"]) == {"v2", "grpc-v2"}
    service = by_kind("InferenceService")
    assert service["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == (
        "RawDeployment"  # two ports: Knative (serverless mode) routes one
    )
    predictor = service["spec"]["predictor"]
    assert predictor["model"]["runtime"] == runtime["metadata"]["name"]
    formats = {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert predictor["model"]["modelFormat"]["name"] in formats
    sleep = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert predictor["terminationGracePeriodSeconds"] > sleep + config.grace


def test_a_bad_flag_in_a_manifest_would_fail_here() -> None:
    with pytest.raises(click.UsageError, match="No such option '--prot'"):
        parse(["blaze", "serve", "examples/chat.py:app", "--prot", "50051"])
