"""Every Kubernetes manifest under ``deploy/kubernetes`` validated offline: core resources against
the Kubernetes OpenAPI schemas bundled with ``kubernetes-validate`` (strict: unknown fields fail),
KServe's InferenceService (a custom resource, no bundled schema) by its required structure; every
kustomization's references exist; and the rules a pod of Mollify must keep (gRPC probes on
grpc.health.v1, Prometheus annotations, resources, non-root with a read-only root filesystem,
every interface bound, a termination grace that covers the drain delay and the grace period)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

kubernetes_validate = pytest.importorskip("kubernetes_validate")

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
KUBERNETES_VERSION = "1.33"
_CUT_OFF_S = 2  # service/server.py: calls still open this long after the grace period are cancelled
MANIFESTS = sorted(p for p in (DEPLOY / "kubernetes").rglob("*.yaml") if p.name != "kustomization.yaml")
KUSTOMIZATIONS = sorted((DEPLOY / "kubernetes").rglob("kustomization.yaml"))


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _pod_specs(document: dict[str, Any]) -> list[dict[str, Any]]:
    if document["kind"] == "Deployment":
        return [document["spec"]["template"]["spec"]]
    if document["kind"] == "InferenceService":
        return [document["spec"]["explainer"]]
    return []


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def _mollify(pod: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in pod["containers"] if str(c.get("image", "")).startswith("mollify")]
    return container


def test_there_are_manifests() -> None:
    kinds = {d["kind"] for p in MANIFESTS for d in _documents(p)}
    assert {"Deployment", "Service", "InferenceService"} <= kinds


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_manifest_validates(path: Path) -> None:
    for document in _documents(path):
        if document["apiVersion"].startswith("serving.kserve.io/"):
            assert document["apiVersion"] == "serving.kserve.io/v1beta1"
            spec = document["spec"]
            assert spec["predictor"]["model"]["storageUri"]
            (container,) = spec["explainer"]["containers"]
            assert {"--model_name=digits", "--model_dir=/mnt/models", "--http_port=8080"} <= set(
                container["args"]
            )
            continue
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_kustomization_references_exist(path: Path) -> None:
    (document,) = _documents(path)
    assert document["kind"] == "Kustomization"
    for reference in document.get("resources", []):
        target = (path.parent / reference).resolve()
        assert target.is_file() or (target / "kustomization.yaml").is_file(), reference


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_pods_keep_the_service_rules(path: Path) -> None:
    for document in _documents(path):
        for pod in _pod_specs(document):
            container = _mollify(pod)
            env = _env(container)
            args = " ".join(container.get("args", []))
            grpc_port = container["readinessProbe"]["grpc"]["port"]
            assert container["readinessProbe"]["grpc"]["service"] == "mollify.v1.ExplainerService"
            assert container["livenessProbe"]["grpc"]["port"] == grpc_port
            # KServe's --grpc_port binds every interface; otherwise MOLLIFY_ADDRESS must say so.
            bound = (
                f"0.0.0.0:{grpc_port}" if f"--grpc_port={grpc_port}" in args else env.get("MOLLIFY_ADDRESS")
            )
            assert bound == f"0.0.0.0:{grpc_port}", "pods must bind every interface"
            grace = pod["terminationGracePeriodSeconds"]
            assert (
                grace
                >= float(env["MOLLIFY_DRAIN_DELAY_S"]) + float(env["MOLLIFY_GRACE_PERIOD_S"]) + _CUT_OFF_S
            )
            assert container["resources"]["requests"] and container["resources"]["limits"]
            security = container["securityContext"]
            assert (
                security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
            )
            assert pod["securityContext"]["runAsNonRoot"] is True
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            assert env["MOLLIFY_CACHE_DIR"] in mounts, "the gradient-graph cache needs a writable volume"
            assert "/tmp" in mounts
            annotations = (
                document["spec"]["template"]["metadata"]
                if document["kind"] == "Deployment"
                else document["metadata"]
            )["annotations"]
            assert (
                annotations["prometheus.io/scrape"] == "true"
                and annotations["prometheus.io/path"] == "/metrics"
            )


def test_images_run_mollify_serve_as_non_root() -> None:
    for name in ("Dockerfile", "Dockerfile.cuda"):
        text = (DEPLOY / "docker" / name).read_text()
        assert 'ENTRYPOINT ["mollify", "serve"]' in text
        assert (
            "USER 10001" in text and "MOLLIFY_ADDRESS=0.0.0.0:" in text and "MOLLIFY_CACHE_DIR=/cache" in text
        )
    cuda = (DEPLOY / "docker" / "Dockerfile.cuda").read_text()
    assert "FROM nvidia/cuda:" in cuda and '".[cuda]"' in cuda
