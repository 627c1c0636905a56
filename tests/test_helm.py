"""The Helm chart (deploy/helm/lesionseg) rendered offline for every CI values file with the real
Helm v4 SDK, then: helm lint, the Kubernetes OpenAPI schemas of several versions (strict), checkov,
yamllint; and what the chart promises: GPU limits, Triton's arguments, /dev/shm, probes, security
contexts, the headless gRPC Service, the HPA and its prometheus-adapter rule, NetworkPolicies, the
gateway's config (loaded with the gateway's own loader), KServe. No cluster, no server."""

from __future__ import annotations

import concurrent.futures
import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import helm_chart as hc
import pytest
import tomllib
import yaml
from helm_chart import FULLNAME, NAMESPACE, container, find, find_all, render

CI_FILES = hc.ci_values_files()
CI_IDS = [f.stem for f in CI_FILES]


def kubernetes_validate():
    try:
        import kubernetes_validate
    except ImportError:
        pytest.fail("kubernetes_validate missing: pip install kubernetes-validate")
    return kubernetes_validate


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {f.stem: render([f]) for f in CI_FILES}


def triton(objects: list[dict]) -> dict:
    return find(objects, "Deployment", "-triton")


def gateway(objects: list[dict]) -> dict:
    return find(objects, "StatefulSet", "-gateway")


def pod_owners(objects: list[dict]) -> list[dict]:
    return [o for o in objects if o["kind"] in ("Deployment", "StatefulSet", "Job")]


def all_containers(owner: dict) -> list[dict]:
    spec = owner["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def matches(selector: dict, labels: dict) -> bool:
    """A LabelSelector (matchLabels and matchExpressions In/NotIn/Exists) against labels."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        key, op, values = expression["key"], expression["operator"], expression.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


# -- the CI matrix: render, lint, schemas, checkov, yamllint ------------------------------------

@pytest.mark.parametrize("values_file", CI_FILES, ids=CI_IDS)
def test_renders_and_lints_clean(values_file: Path) -> None:
    objects = render([values_file])
    assert objects, "nothing rendered"
    report = hc.lint([values_file])
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # 2 warning, 3 error
    assert not problems and not report["errors"], f"helm lint --strict: {problems or report['errors']}"
    for obj in objects:
        meta = obj["metadata"]
        assert meta["namespace"] == NAMESPACE, f"{obj['kind']}/{meta['name']} has no namespace"
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by",
                    "helm.sh/chart", "app.kubernetes.io/version"):
            assert key in meta.get("labels", {}), f"{obj['kind']}/{meta['name']} lacks label {key}"


#: Kinds from CRDs: kubernetes-validate bundles only the core API's schemas, so these get the
#: structural checks of `check_crd_object` instead (everything else must have a schema).
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("serving.kserve.io/v1alpha1", "ServingRuntime"),
             ("serving.kserve.io/v1beta1", "InferenceService")}


def kube_versions() -> list[str]:
    """The chart's oldest supported Kubernetes (Chart.yaml kubeVersion >=1.25), 1.29 and the newest
    kubernetes-validate bundles."""
    from kubernetes_validate.utils import latest_version

    return ["1.25.0", "1.29.0", latest_version()]


def test_kubernetes_versions_cover_new_releases() -> None:
    versions = kube_versions()
    assert tuple(int(x) for x in versions[-1].split(".")[:2]) >= (1, 33), versions


@pytest.mark.parametrize("values_file", CI_FILES, ids=CI_IDS)
def test_objects_validate_against_kubernetes_schemas(values_file: Path, rendered) -> None:
    kv = kubernetes_validate()
    checked = 0
    for obj in rendered[values_file.stem]:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        if (obj["apiVersion"], obj["kind"]) in CRD_KINDS:
            check_crd_object(obj)
            continue
        for version in kube_versions():
            try:
                kv.validate(obj, version, strict=True)
            except kv.SchemaNotFoundError as exc:
                pytest.fail(f"{where}: no schema in Kubernetes {version} ({exc.message}): a removed or unknown API version")
            except kv.ValidationError as exc:
                pytest.fail(f"{where} is invalid in Kubernetes {version} at {'.'.join(map(str, exc.path))}: {exc.message}")
            checked += 1
    assert checked


def test_strict_validation_catches_an_unknown_field(rendered) -> None:
    """The validation above is strict: a misspelt field fails (it would pass non-strict)."""
    kv = kubernetes_validate()
    broken = copy.deepcopy(triton(rendered["default-values"]))
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, "1.29.0", strict=True)
    removed = {"apiVersion": "autoscaling/v2beta2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "x"}, "spec": {}}
    with pytest.raises(kv.SchemaNotFoundError):  # NVIDIA's chart's HPA: gone since 1.26
        kv.validate(removed, "1.29.0", strict=True)


def check_crd_object(obj: dict) -> None:
    """Structure of a ServiceMonitor / ServingRuntime / InferenceService (their CRDs are not
    installed here): the fields their controllers read, with the right types."""
    where = f"{obj['kind']}/{obj['metadata']['name']}"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", obj["metadata"]["name"]), where
    assert all(isinstance(v, str) for v in obj["metadata"].get("labels", {}).values()), where
    spec = obj["spec"]
    if obj["kind"] == "ServiceMonitor":
        assert set(spec) <= {"selector", "namespaceSelector", "endpoints", "jobLabel"}, where
        assert spec["selector"]["matchLabels"] and spec["namespaceSelector"]["matchNames"] == [NAMESPACE]
        for endpoint in spec["endpoints"]:
            assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}, where
            assert isinstance(endpoint["port"], str) and endpoint["path"].startswith("/")
            assert re.fullmatch(r"\d+(ms|s|m)", endpoint["interval"]), where
    elif obj["kind"] == "ServingRuntime":
        assert set(spec) <= {"annotations", "supportedModelFormats", "protocolVersions", "containers", "volumes",
                             "nodeSelector", "tolerations", "affinity", "imagePullSecrets", "multiModel"}, where
        assert {"v2", "grpc-v2"} <= set(spec["protocolVersions"])
        assert {"name": "triton", "version": "2", "autoSelect": False} in spec["supportedModelFormats"]
        (c,) = spec["containers"]
        assert c["name"] == "kserve-container" and isinstance(c["image"], str)
        assert all(isinstance(a, str) for a in c["command"] + c["args"])
        assert all(isinstance(p["containerPort"], int) and p["name"] in ("http1", "h2c") for p in c["ports"])
        mounted = {m["name"] for m in c["volumeMounts"]}
        assert mounted <= {v["name"] for v in spec["volumes"]}, where
    elif obj["kind"] == "InferenceService":
        predictor = spec["predictor"]
        model = predictor["model"]
        assert model["modelFormat"] == {"name": "triton", "version": "2"}
        assert model["protocolVersion"] in ("v2", "grpc-v2")
        assert re.match(r"^(pvc|s3|gs|https?)://", model["storageUri"]), model["storageUri"]
        assert isinstance(predictor["minReplicas"], int) and predictor["maxReplicas"] >= predictor["minReplicas"]
    else:  # pragma: no cover
        pytest.fail(f"no structural check for {where}")


@pytest.fixture(scope="module")
def checkov_reports(tmp_path_factory) -> dict[str, dict]:
    """checkov's JSON report of each CI values file's rendered manifests (plus `digest`: default
    values with both images pinned by digest), one run per render so that a NetworkPolicy of one
    render cannot satisfy a graph check of another; runs side by side."""
    executable = hc.checkov_executable()
    if executable is None:
        pytest.fail("checkov not found (set LESIONSEG_CHECKOV, or install it in its own venv: "
                    f"{hc.CHECKOV_INSTALL}; in .venv it would downgrade packages)")
    root = tmp_path_factory.mktemp("checkov")
    digest = "sha256:" + "0" * 64
    renders = {f.stem: hc.render_text([f]) for f in CI_FILES}
    renders["digest"] = hc.render_text(set_values={"image": {"triton": {"digest": digest}, "gateway": {"digest": digest}}})
    for name, text in renders.items():
        (root / name).mkdir()
        (root / name / "manifests.yaml").write_text(text)

    def scan(name: str) -> dict:
        done = subprocess.run([executable, "--framework", "kubernetes", "--skip-download", "-o", "json",
                               "-d", str(root / name)], capture_output=True, text=True, timeout=300, check=False)
        if done.returncode not in (0, 1):  # 1: some check failed
            pytest.fail(f"checkov failed ({done.returncode}) on {name}: {done.stderr[-2000:]}")
        report = json.loads(done.stdout)
        return report[0] if isinstance(report, list) else report

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(renders)) as pool:
        return dict(zip(renders, pool.map(scan, renders)))


#: The only checks the chart skips, and only while an image is not pinned by digest (the reason
#: is written on the object: checkov.io/skip annotations from templates/_helpers.tpl).
ALLOWED_SKIPS = {"CKV_K8S_43", "CKV_K8S_15"}


@pytest.mark.slow  # checkov scans every render
@pytest.mark.parametrize("values_file", CI_FILES, ids=CI_IDS)
def test_checkov_finds_no_failed_check(values_file: Path, checkov_reports) -> None:
    report = checkov_reports[values_file.stem]
    summary = report["summary"]
    failed = [f"{c['check_id']} {c['check_name']} ({c['resource']})" for c in report["results"]["failed_checks"]]
    assert not failed, "checkov failed checks:\n" + "\n".join(failed)
    assert summary["parsing_errors"] == 0 and summary["passed"] > 50, summary
    for skipped in report["results"]["skipped_checks"]:
        reason = (skipped.get("check_result") or {}).get("suppress_comment", "")
        assert skipped["check_id"] in ALLOWED_SKIPS, f"unexpected skip of {skipped['check_id']} ({skipped['resource']})"
        assert len(reason) > 30, f"{skipped['check_id']} skipped without a written reason"


def test_checkov_skips_nothing_once_images_are_pinned_by_digest(checkov_reports) -> None:
    report = checkov_reports["digest"]
    assert report["results"]["failed_checks"] == [] and report["results"]["skipped_checks"] == []
    passed = {c["check_id"] for c in report["results"]["passed_checks"]}
    assert ALLOWED_SKIPS <= passed, passed


def yamllint_problems(text: str, path: str) -> list[str]:
    try:
        from yamllint import linter
        from yamllint.config import YamlLintConfig
    except ImportError:
        pytest.fail("yamllint missing: pip install yamllint")
    config = YamlLintConfig(file=str(hc.YAMLLINT_CONFIG))
    return [f"{path}:{p.line}:{p.column} {p.message} ({p.rule})" for p in linter.run(text, config, path)
            if p.level in ("warning", "error")]


@pytest.mark.parametrize("values_file", CI_FILES, ids=CI_IDS)
def test_yamllint_rendered_manifests(values_file: Path) -> None:
    problems = yamllint_problems(hc.render_text([values_file]), f"rendered/{values_file.stem}.yaml")
    problems += yamllint_problems(values_file.read_text(), str(values_file.relative_to(hc.ROOT)))
    assert not problems, "\n".join(problems)


def test_yamllint_chart_files() -> None:
    files = [hc.CHART / "values.yaml", hc.CHART / "Chart.yaml", hc.ADAPTER_RULES]
    problems = [p for f in files for p in yamllint_problems(f.read_text(), str(f.relative_to(hc.ROOT)))]
    assert not problems, "\n".join(problems)
    assert yamllint_problems("a: 1 \n", "x.yaml"), "yamllint reports nothing at all"


# -- values.schema.json: bad values fail at render time, naming the value ----------------------

@pytest.mark.parametrize(("expression", "named"), [
    ("gpu.precision=fp8", "/gpu/precision"),
    ("gpu.runtime=tensorflow", "/gpu/runtime"),
    ("triton.replicas=-1", "/triton/replicas"),
    ("autoscaling.minReplicas=0", "/autoscaling/minReplicas"),
    ("gpu.precison=fp16", "precison"),
    ("gpu.precision=fp16", "parityData"),  # FP16 needs the images of its parity report
    ("tritonn.replicas=2", "tritonn"),
    ("shm.sizeLimit=lots", "/shm/sizeLimit"),
    ("service.grpcPort=70000", "/service/grpcPort"),
    ("gateway.config.gateway.workers=0", "/gateway/config/gateway/workers"),
    ("gateway.config.gateway.host=10.0.0.1", "host"),  # the chart sets host, port, spool, url
    ("kserve.protocolVersion=v1", "/kserve/protocolVersion"),
    ("models.install[0]=sct legacy", "/models/install/0"),
    ("image.triton.digest=latest", "/image/triton/digest"),
])
def test_bad_value_fails_to_render_naming_it(expression: str, named: str) -> None:
    with pytest.raises(hc.HelmValuesError) as raised:
        hc.render(set_values=[expression])
    assert named in str(raised.value), str(raised.value)


def test_kserve_without_a_model_store_fails_with_its_reason() -> None:
    with pytest.raises(hc.HelmError, match="kserve.enabled needs kserve.storageUri"):
        hc.render(set_values={"kserve": {"enabled": True}})


def test_sources_path_without_its_volume_fails_with_its_reason() -> None:
    with pytest.raises(hc.HelmError, match="needs models.sourcesPersistentVolumeClaim"):
        hc.render(set_values={"models": {"from": "/sources/sct_models"}})


def test_values_file_defaults_pass_the_schema() -> None:
    schema = hc.chart_schema()
    assert schema["additionalProperties"] is False
    for key in ("gpu", "models", "triton", "autoscaling", "gateway", "kserve", "probes", "networkPolicy"):
        assert schema["properties"][key]["additionalProperties"] is False, key


# -- Triton: arguments, GPU, volumes, probes ---------------------------------------------------

def expected_args(config_name: str | None, gpu: bool) -> list[str]:
    return ["--model-repository=/models", *([f"--model-config-name={config_name}"] if config_name else []),
            "--grpc-port=8001", "--http-port=8000", "--metrics-port=8002", "--allow-metrics=true",
            f"--allow-gpu-metrics={'true' if gpu else 'false'}", "--strict-readiness=true", "--exit-on-error=true",
            "--log-verbose=0", "--exit-timeout-secs=110"]


@pytest.mark.parametrize(("values_file", "config_name", "gpu"), [
    ("default-values", "gpu", True), ("cpu-values", None, False), ("tensorrt-values", "tensorrt", True),
    ("no-gateway-values", "gpu", True)])
def test_triton_command_and_args(rendered, values_file: str, config_name: str | None, gpu: bool) -> None:
    server = container(triton(rendered[values_file]), "triton")
    assert server["command"] == ["tritonserver"]
    assert server["args"] == expected_args(config_name, gpu)
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert ports == {"grpc": 8001, "http": 8000, "metrics": 8002}
    env = {e["name"]: e.get("value") for e in server["env"]}
    assert env == {"HOME": "/tmp", "LESIONSEG_REPOSITORY": "/models", "LESIONSEG_MAX_VOXELS": "268435456"}


def test_exit_timeout_follows_the_grace_period() -> None:
    deployment = triton(render(set_values={"triton": {"terminationGracePeriodSeconds": 300}}))
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 300
    assert "--exit-timeout-secs=290" in container(deployment, "triton")["args"]


def gpu_limits(owner: dict) -> list:
    return [c["resources"].get("limits", {}).get("nvidia.com/gpu") for c in all_containers(owner)]


def test_gpu_limit_and_toleration_only_with_gpu(rendered) -> None:
    gpu = triton(rendered["default-values"])
    server = container(gpu, "triton")
    assert server["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert server["resources"]["requests"]["cpu"] and server["resources"]["limits"]["memory"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu["spec"]["template"]["spec"]["tolerations"]
    assert gpu_limits(gpu)[:-1] == [None, None, None], "the install containers need no GPU"
    cpu = triton(rendered["cpu-values"])
    assert gpu_limits(cpu) == [None, None, None, None]
    assert "tolerations" not in cpu["spec"]["template"]["spec"]
    assert all("nvidia.com" not in json.dumps(c["resources"]) for c in all_containers(cpu))
    custom = triton(render(set_values={"gpu": {"count": 2, "resourceName": "amd.com/gpu"}}))
    assert container(custom, "triton")["resources"]["limits"]["amd.com/gpu"] == 2


def test_install_init_containers(rendered) -> None:
    base = ["lesionseg", "models", "install"]
    gpu = triton(rendered["default-values"])["spec"]["template"]["spec"]["initContainers"]
    assert [c["command"] for c in gpu] == [
        [*base, name, "--repository", "/models", "--target", "gpu", "--precision", "fp32", "--engine-cache", "/engine-cache"]
        for name in ("sct-legacy", "sc-crop", "lesion_ms")]
    cpu = triton(rendered["cpu-values"])["spec"]["template"]["spec"]["initContainers"]
    assert [c["command"] for c in cpu] == [[*base, name, "--repository", "/models", "--target", "cpu"]
                                          for name in ("sct-legacy", "sc-crop", "lesion_ms")]
    sources = triton(rendered["no-gateway-values"])
    assert [c["command"][3:] for c in sources["spec"]["template"]["spec"]["initContainers"]] == [
        ["sct-legacy", "--repository", "/models", "--target", "gpu", "--from", "/sources/sct_models",
         "--precision", "fp32", "--engine-cache", "/engine-cache"],
        ["lesion_ms", "--repository", "/models", "--target", "gpu", "--from", "/sources/model_seg_ms_lesion_unet3d.zip",
         "--release", "r20241101", "--precision", "fp32", "--engine-cache", "/engine-cache"]]
    mounts = {m["mountPath"]: m for m in container(sources, "install-sct-legacy", init=True)["volumeMounts"]}
    assert mounts["/sources"]["readOnly"] is True
    volumes = {v["name"]: v for v in sources["spec"]["template"]["spec"]["volumes"]}
    assert volumes["sources"]["persistentVolumeClaim"] == {"claimName": "lesionseg-sources", "readOnly": True}
    release = triton(render(["cpu-values.yaml"], {"models": {"install": [{"name": "seg_sc_contrast_agnostic", "release": "v2.5"}]}}))
    (only,) = release["spec"]["template"]["spec"]["initContainers"]
    assert only["command"][3:] == ["seg_sc_contrast_agnostic", "--repository", "/models", "--target", "cpu", "--release", "v2.5"]
    for c in gpu + cpu:
        assert {e["name"]: e["value"] for e in c["env"]} == {"HOME": "/tmp", "LESIONSEG_REPOSITORY": "/models", "LESIONSEG_MAX_VOXELS": "268435456"}
    prefilled = triton(render(set_values={"models": {"install": [], "persistentVolumeClaim": "filled"}}))
    assert "initContainers" not in prefilled["spec"]["template"]["spec"]


def test_tensorrt_builds_engines_at_pod_start_with_the_gpu(rendered) -> None:
    deployment = triton(rendered["tensorrt-values"])
    build = container(deployment, "export-tensorrt", init=True)
    # each engine at its configs/gpu.pbtxt's precision: FP16 where a parity report backs it
    assert build["command"] == ["lesionseg", "export", "tensorrt", "--repository", "/models"]
    installs = {c["name"]: c["command"][3:] for c in deployment["spec"]["template"]["spec"]["initContainers"][:-1]}
    assert installs["install-sct-legacy"][-6:] == ["--precision", "fp16", "--parity-data", "/sources/sct_testing_data",
                                                   "--engine-cache", "/engine-cache"]
    assert installs["install-lesion-ms"][-4:] == ["--precision", "fp32", "--engine-cache", "/engine-cache"]
    assert build["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert deployment["spec"]["template"]["spec"]["initContainers"][-1]["name"] == "export-tensorrt"
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["engine-cache"]["persistentVolumeClaim"]["claimName"] == "lesionseg-engine-cache"
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == "lesionseg-models"
    assert not any(c["name"] == "export-tensorrt" for c in all_containers(triton(rendered["default-values"])))


def test_extra_env_reaches_triton_and_init_containers() -> None:
    deployment = triton(render(set_values={"triton": {"extraEnv": [{"name": "CUDA_MODULE_LOADING", "value": "LAZY"}]}}))
    for c in all_containers(deployment):
        assert {"name": "CUDA_MODULE_LOADING", "value": "LAZY"} in c["env"], c["name"]


def test_the_voxel_ceiling_reaches_triton_and_the_gateway() -> None:
    """limits.maxVoxels is LESIONSEG_MAX_VOXELS in Triton's and the gateway's containers (issue 23)."""
    objects = render(set_values={"limits": {"maxVoxels": 1000000}})
    for c in all_containers(triton(objects)):
        assert {"name": "LESIONSEG_MAX_VOXELS", "value": "1000000"} in c["env"], c["name"]
    (node,) = gateway(objects)["spec"]["template"]["spec"]["containers"]
    assert {"name": "LESIONSEG_MAX_VOXELS", "value": "1000000"} in node["env"]


def test_dev_shm_is_a_sized_memory_emptydir(rendered) -> None:
    for values_file in ("default-values", "cpu-values"):
        spec = triton(rendered[values_file])["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container(triton(rendered[values_file]), "triton")["volumeMounts"]}
        assert volumes[mounts["/dev/shm"]]["emptyDir"] == {"medium": "Memory", "sizeLimit": "1Gi"}
    spec = triton(render(set_values={"shm": {"sizeLimit": "4Gi"}}))["spec"]["template"]["spec"]
    assert {v["name"]: v for v in spec["volumes"]}["dshm"]["emptyDir"]["sizeLimit"] == "4Gi"


def test_volumes_models_tmp_engine_cache(rendered) -> None:
    deployment = triton(rendered["default-values"])
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["models"] == {"name": "models", "emptyDir": {"sizeLimit": "20Gi"}}
    assert volumes["tmp"]["emptyDir"] == {} and "emptyDir" in volumes["engine-cache"]
    mounts = {m["mountPath"]: m for m in container(deployment, "triton")["volumeMounts"]}
    assert set(mounts) == {"/models", "/dev/shm", "/tmp", "/engine-cache"} and mounts["/models"]["readOnly"] is True
    cpu = {v["name"] for v in triton(rendered["cpu-values"])["spec"]["template"]["spec"]["volumes"]}
    assert cpu == {"models", "dshm", "tmp"}


def test_probes_allow_long_model_loads(rendered) -> None:
    server = container(triton(rendered["default-values"]), "triton")
    startup, readiness, liveness = server["startupProbe"], server["readinessProbe"], server["livenessProbe"]
    assert startup["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert readiness["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert liveness["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 20 * 60, "engine builds need ~20 minutes"
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 60


def test_security_contexts_everywhere(rendered) -> None:
    for name, objects in rendered.items():
        for owner in pod_owners(objects):
            spec = owner["spec"]["template"]["spec"]
            where = f"{name}: {owner['kind']}/{owner['metadata']['name']}"
            assert spec["automountServiceAccountToken"] is False, where
            if owner["kind"] == "Job":  # a pre-install hook: runs before the chart's ServiceAccount exists
                assert "serviceAccountName" not in spec, where
            else:
                assert spec["serviceAccountName"] == FULLNAME, where
            pod = spec["securityContext"]
            assert pod["runAsNonRoot"] is True and pod["runAsUser"] == pod["runAsGroup"] == pod["fsGroup"] == 10001, where
            assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
            for c in all_containers(owner):
                sc = c["securityContext"]
                assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, (where, c["name"])
                assert sc["capabilities"] == {"drop": ["ALL"]}, (where, c["name"])
                words = c.get("command", []) + c.get("args", [])
                assert not {"sh", "bash", "/bin/sh", "-c"} & set(words), f"{where} {c['name']} runs a shell: {words}"
                assert c["resources"]["requests"] and c["resources"]["limits"], (where, c["name"])
        accounts = find_all(objects, "ServiceAccount")
        assert [a["automountServiceAccountToken"] for a in accounts] == [False]


def test_long_release_names_fit_kubernetes_limits() -> None:
    release = "a-release-name-that-is-fifty-three-characters-long-xx"
    assert len(release) == 53  # Helm's maximum
    for values_file in CI_FILES:
        for obj in render([values_file], release=release):
            name = obj["metadata"]["name"]
            assert len(name) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name
            if obj["kind"] in ("Deployment", "StatefulSet", "Job"):
                for c in all_containers(obj):
                    assert len(c["name"]) <= 63


# -- Services, ServiceMonitor, HPA, PDB ---------------------------------------------------------

def test_grpc_service_is_headless_and_http_service_carries_metrics(rendered) -> None:
    objects = rendered["default-values"]
    pod_labels = triton(objects)["spec"]["template"]["metadata"]["labels"]
    grpc = find(objects, "Service", f"{FULLNAME}-grpc")
    assert grpc["metadata"]["name"] == f"{FULLNAME}-grpc"
    assert grpc["spec"]["clusterIP"] == "None" and grpc["spec"]["publishNotReadyAddresses"] is False
    assert grpc["spec"]["ports"] == [{"name": "grpc", "port": 8001, "targetPort": "grpc", "protocol": "TCP"}]
    http = find(objects, "Service", f"{FULLNAME}-http")
    assert http["spec"]["type"] == "ClusterIP" and "clusterIP" not in http["spec"]
    assert {p["name"]: p["port"] for p in http["spec"]["ports"]} == {"http": 8000, "metrics": 8002}
    for service in (grpc, http):
        assert matches({"matchLabels": service["spec"]["selector"]}, pod_labels)
    selector = triton(objects)["spec"]["selector"]
    assert matches(selector, pod_labels)
    assert not matches(selector, gateway(objects)["spec"]["template"]["metadata"]["labels"])


def test_service_monitor_scrapes_the_metrics_port(rendered) -> None:
    assert not find_all(rendered["default-values"], "ServiceMonitor")
    objects = rendered["no-gateway-values"]
    (monitor,) = find_all(objects, "ServiceMonitor")
    services = [s for s in find_all(objects, "Service") if matches(monitor["spec"]["selector"], s["metadata"]["labels"])]
    assert [s["metadata"]["name"] for s in services] == [f"{FULLNAME}-http"]
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    assert "metrics" in {p["name"] for p in services[0]["spec"]["ports"]}
    both = render(set_values={"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}}})
    for monitor in find_all(both, "ServiceMonitor"):
        assert monitor["metadata"]["labels"]["release"] == "kps"
        hits = [s for s in find_all(both, "Service") if matches(monitor["spec"]["selector"], s["metadata"]["labels"])]
        assert len(hits) == 1 and "metrics" in {p["name"] for p in hits[0]["spec"]["ports"]}, monitor["metadata"]["name"]


def adapter_rule() -> dict:
    (rule,) = yaml.safe_load(hc.ADAPTER_RULES.read_text())["rules"]["custom"]
    return rule


def test_hpa_scales_on_the_queue_time_metric(rendered) -> None:
    objects = rendered["default-values"]
    hpa = find(objects, "HorizontalPodAutoscaler", "-triton")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": triton(objects)["metadata"]["name"]}
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == adapter_rule()["name"]["as"] == "lesionseg_queue_ms_per_request"
    assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "1000"}
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    down = hpa["spec"]["behavior"]["scaleDown"]
    assert down["stabilizationWindowSeconds"] >= 300 and down["policies"][0]["type"] == "Pods"
    assert "replicas" not in triton(objects)["spec"], "the HPA owns the replica count"
    fixed = triton(render(set_values={"autoscaling": {"enabled": False}, "triton": {"replicas": 3}}))
    assert fixed["spec"]["replicas"] == 3


def test_pod_disruption_budgets(rendered) -> None:
    objects = rendered["default-values"]
    budgets = {b["metadata"]["name"]: b for b in find_all(objects, "PodDisruptionBudget")}
    assert set(budgets) == {f"{FULLNAME}-triton", f"{FULLNAME}-gateway"}
    assert all(b["apiVersion"] == "policy/v1" for b in budgets.values())
    assert matches(budgets[f"{FULLNAME}-triton"]["spec"]["selector"], triton(objects)["spec"]["template"]["metadata"]["labels"])
    assert matches(budgets[f"{FULLNAME}-gateway"]["spec"]["selector"], gateway(objects)["spec"]["template"]["metadata"]["labels"])
    assert budgets[f"{FULLNAME}-triton"]["spec"]["maxUnavailable"] == 1


# -- the prometheus-adapter rule ----------------------------------------------------------------

QUERY = re.compile(
    r"^sum by \((?P<by1>[^)]*)\) \(rate\((?P<num>\w+)\{(?P<m1>[^}]*)\}\[(?P<w1>\w+)\]\)\)"
    r" / 1000"
    r" / clamp_min\(sum by \((?P<by2>[^)]*)\) \(rate\((?P<den>\w+)\{(?P<m2>[^}]*)\}\[(?P<w2>\w+)\]\)\), 1e-9\)$")


def parse_query(query: str) -> dict:
    match = QUERY.match(" ".join(query.split()))
    assert match, f"not the expected shape: {query}"
    parts = match.groupdict()
    for side in ("m1", "m2"):
        selectors = dict(re.findall(r'(\w+)=~"([^"]*)"', parts[side]))
        assert "<<.LabelMatchers>>" in parts[side], parts[side]
        parts[side] = re.compile(selectors["model"])
    return parts


def served_model_names() -> dict[str, list[str]]:
    """Triton model names as lesionseg's repository writers name them."""
    from lesionseg.core.catalogue import LEGACY_CONTRASTS, TASKS, legacy_model
    from lesionseg.server.repository.legacy import network_model
    from lesionseg.server.repository.nnunet import task_specs

    class Plan:  # task_specs only reads these
        orientation = "RPI"

        def to_json(self) -> str:
            return "{}"

        def sent_axes_spacing(self) -> tuple:
            return (1.0, 1.0, 1.0)

    legacy = [legacy_model(c) for c in LEGACY_CONTRASTS]
    steps = [spec.name for task in TASKS for spec, _ in task_specs(task, Plan()) if spec.name != task]
    networks = [network_model(n) for n in ("t2_lesion", "t2s_lesion", "t2_ax_lesion", "t2_ctr", "t2s_ctr", "dwi_ctr")]
    networks += [f"{task}_fold{k}_net" for task in TASKS for k in range(5)] + [f"{task}_net" for task in TASKS]
    return {"entry": legacy + list(TASKS), "steps": steps, "networks": networks}


def test_adapter_rule_divides_queue_time_by_the_requests_of_the_same_task_models() -> None:
    rule = adapter_rule()
    assert rule["seriesQuery"].startswith("nv_inference_queue_duration_us{")
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    query = parse_query(rule["metricsQuery"])
    assert query["num"] == "nv_inference_queue_duration_us" and query["den"] == "nv_inference_request_success"
    assert query["by1"] == query["by2"] == "<<.GroupBy>>" and query["w1"] == query["w2"]
    names = served_model_names()
    numerator, denominator = query["m1"], query["m2"]
    # one request per subject: the task models themselves, and nothing else, count requests
    assert [n for n in names["entry"] if denominator.fullmatch(n)] == names["entry"]
    assert not [n for n in names["steps"] + names["networks"] if denominator.fullmatch(n)]
    # their queues, and those of the ensembles' steps (an ensemble's own queue time is ~0)
    assert all(numerator.fullmatch(n) for n in names["entry"] + names["steps"])
    assert not [n for n in names["networks"] if numerator.fullmatch(n)], "tile networks do not count"
    assert "avg" not in rule["metricsQuery"] and not re.search(r"1\s*\+", rule["metricsQuery"])


def rule_value(query: dict, counters: dict[str, tuple[float, float]]) -> float:
    """The rule's value for one pod from per-model (queue µs, successes) over the window."""
    queued = sum(q for model, (q, _) in counters.items() if query["m1"].fullmatch(model))
    requests = sum(n for model, (_, n) in counters.items() if query["m2"].fullmatch(model))
    return queued / 1000 / max(requests, 1e-9)


def test_adapter_rule_reports_the_true_mean_wait_in_milliseconds() -> None:
    query = parse_query(adapter_rule()["metricsQuery"])
    names = served_model_names()
    idle = {name: (0.0, 0.0) for name in names["entry"] + names["steps"] + names["networks"]}
    # 4 T2* subjects waited 5 s each; the networks answered 400 tiles without waiting: 5000 ms
    busy = {**idle, "deepseg_lesion_t2s": (4 * 5e6, 4), "deepseg_lesion_t2s_net": (0.0, 400)}
    assert rule_value(query, busy) == pytest.approx(5000)
    # NVIDIA's rule on the same counters: avg over models of queue / (1 + requests)
    nvidia = sum(q / (1 + n) for q, n in busy.values()) / len(busy) / 1000
    assert nvidia < 5000 / 10, "the formula this rule replaces under-reports by ~the number of models"
    # an nnU-Net subject waits in its steps' queues; the ensemble reports ~0 queue time
    ensemble = {**idle, "lesion_ms": (0.0, 2), "lesion_ms_preprocess": (1e6, 2),
                "lesion_ms_predict": (7e6, 2), "lesion_ms_postprocess": (0.0, 2)}
    assert rule_value(query, ensemble) == pytest.approx(4000)
    assert rule_value(query, idle) == 0


def test_adapter_rules_file_is_the_chart_rule_rendered(rendered) -> None:
    objects = render(set_values={"autoscaling": {"adapterRules": {"configMap": True}}})
    config = yaml.safe_load(find(objects, "ConfigMap", "-adapter-rules")["data"]["config.yaml"])
    assert config["rules"] == [adapter_rule()]
    assert not find_all(rendered["default-values"], "ConfigMap") or all(
        not c["metadata"]["name"].endswith("-adapter-rules") for c in find_all(rendered["default-values"], "ConfigMap"))
    custom = render(set_values={"autoscaling": {"adapterRules": {"configMap": True}, "taskModels": ["my.task"], "window": "5m"}})
    query = parse_query(yaml.safe_load(find(custom, "ConfigMap", "-adapter-rules")["data"]["config.yaml"])["rules"][0]["metricsQuery"])
    assert query["w1"] == "5m" and query["m2"].fullmatch("my.task") and not query["m2"].fullmatch("myXtask")
    assert query["m1"].fullmatch("my.task_predict")


def test_task_models_are_models_lesionseg_serves() -> None:
    task_models = hc.chart_defaults()["autoscaling"]["taskModels"]
    assert sorted(task_models) == sorted(served_model_names()["entry"])


# -- NetworkPolicy -----------------------------------------------------------------------------

def allowed(policy: dict, pod_labels: dict, port: str, source_namespace: str, source_labels: dict) -> bool:
    """Whether this NetworkPolicy lets a pod (source_namespace, source_labels) reach the named port
    of a pod with pod_labels, by the NetworkPolicy rules (the policy's own namespace is NAMESPACE)."""
    spec = policy["spec"]
    if not matches(spec["podSelector"], pod_labels):
        return False
    namespace_labels = {"kubernetes.io/metadata.name": source_namespace}
    for rule in spec.get("ingress") or []:
        if "ports" in rule and port not in [p["port"] for p in rule["ports"]]:
            continue
        if "from" not in rule:
            return True
        for peer in rule["from"]:
            in_namespace = matches(peer["namespaceSelector"], namespace_labels) if "namespaceSelector" in peer \
                else source_namespace == NAMESPACE
            in_pods = matches(peer["podSelector"], source_labels) if "podSelector" in peer else True
            if in_namespace and in_pods:
                return True
    return False


def test_network_policy_lets_only_the_gateway_and_named_namespaces_reach_grpc(rendered) -> None:
    objects = render(set_values={"networkPolicy": {"clientNamespaces": ["research", NAMESPACE]}})
    policy = find(objects, "NetworkPolicy", "-triton")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    server = triton(objects)["spec"]["template"]["metadata"]["labels"]
    gateway_pod = gateway(objects)["spec"]["template"]["metadata"]["labels"]
    assert allowed(policy, server, "grpc", NAMESPACE, gateway_pod)
    assert allowed(policy, server, "grpc", "research", {"app": "batch"})
    assert allowed(policy, server, "grpc", NAMESPACE, {"app": "batch"})
    assert not allowed(policy, server, "grpc", "elsewhere", {"app": "batch"})
    assert not allowed(policy, server, "grpc", "elsewhere", gateway_pod), "the gateway's labels in another namespace"
    assert allowed(policy, server, "metrics", "monitoring", {})
    assert not allowed(policy, server, "grpc", "monitoring", {})
    for port in ("http", "metrics"):
        assert not allowed(policy, server, port, "research", {}), port
    default = find(rendered["default-values"], "NetworkPolicy", "-triton")
    assert not allowed(default, server, "grpc", NAMESPACE, {"app": "batch"})
    assert allowed(default, server, "grpc", NAMESPACE, gateway_pod)
    alone = find(render(set_values={"gateway": {"enabled": False}, "networkPolicy": {"metricsNamespaces": []}}),
                 "NetworkPolicy", "-triton")
    assert alone["spec"]["ingress"] == []
    assert not allowed(alone, server, "grpc", NAMESPACE, gateway_pod)


def test_network_policy_of_the_gateway(rendered) -> None:
    objects = rendered["default-values"]
    policy = find(objects, "NetworkPolicy", "-gateway")
    pod = gateway(objects)["spec"]["template"]["metadata"]["labels"]
    assert allowed(policy, pod, "dicom", "anywhere", {})
    assert not allowed(policy, pod, "metrics", "anywhere", {})
    restricted = find(render(set_values={"networkPolicy": {"dicomSources": [{"ipBlock": {"cidr": "10.1.0.0/16"}}]}}),
                      "NetworkPolicy", "-gateway")
    assert restricted["spec"]["ingress"][0]["from"] == [{"ipBlock": {"cidr": "10.1.0.0/16"}}]
    assert not find_all(render(set_values={"networkPolicy": {"enabled": False}}), "NetworkPolicy")


# -- the gateway -------------------------------------------------------------------------------

def gateway_toml(objects: list[dict]) -> str:
    return find(objects, "ConfigMap", "-gateway")["data"]["gateway.toml"]


def test_gateway_statefulset(rendered) -> None:
    objects = rendered["default-values"]
    statefulset = gateway(objects)
    assert statefulset["spec"]["replicas"] == 1
    c = container(statefulset, "gateway")
    assert c["image"] == "lesionseg-gateway:0.1.0"
    assert c["command"] == ["lesionseg", "gateway"]
    assert c["args"] == ["run", "--config", "/etc/lesionseg/gateway.toml", "-url", f"{FULLNAME}-grpc:8001"]
    assert {e["name"]: e["value"] for e in c["env"]} == {"HOME": "/tmp", "LESIONSEG_MAX_VOXELS": "268435456"}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"dicom": 11112, "metrics": 9464}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["tcpSocket"] == {"port": "dicom"}, probe
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts == {"/etc/lesionseg": "config", "/var/spool/lesionseg": "spool", "/tmp": "tmp"}
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "spool" and claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    service = find(objects, "Service", f"{FULLNAME}-gateway")
    assert service["spec"]["ports"] == [{"name": "dicom", "port": 11112, "targetPort": "dicom", "protocol": "TCP"}]
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    assert matches({"matchLabels": service["spec"]["selector"]}, statefulset["spec"]["template"]["metadata"]["labels"])
    annotations = statefulset["spec"]["template"]["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/config"]), "a config change must roll the pod"
    lb = find(render(set_values={"gateway": {"service": {"type": "LoadBalancer", "loadBalancerSourceRanges": ["10.0.0.0/8"]}}}),
              "Service", f"{FULLNAME}-gateway")
    assert lb["spec"]["type"] == "LoadBalancer" and lb["spec"]["externalTrafficPolicy"] == "Local"
    assert lb["spec"]["loadBalancerSourceRanges"] == ["10.0.0.0/8"]
    assert [p["name"] for p in lb["spec"]["ports"]] == ["dicom"], "metrics stay off the load balancer"
    assert not find_all(rendered["no-gateway-values"], "StatefulSet")


def test_gateway_config_loads_with_the_gateway_loader(rendered, tmp_path) -> None:
    from lesionseg.gateway.config import load_config

    text = gateway_toml(rendered["default-values"])
    tomllib.loads(text)
    (tmp_path / "gateway.toml").write_text(text)
    config = load_config(tmp_path / "gateway.toml")
    assert config.spool == Path("/var/spool/lesionseg") and config.port == 11112 and config.host == "0.0.0.0"
    assert config.url == f"{FULLNAME}-grpc:8001" and config.embedded_server is False and config.metrics_port == 9464
    assert config.callers == {"ORTHANC": ()}
    assert [r.model for r in config.routes if r.action == "segment"] == ["deepseg_lesion_t2s", "deepseg_lesion_t2_ax", "deepseg_lesion_t2"]
    assert config.destinations == ()


def test_gateway_config_values_round_trip_through_toml(tmp_path) -> None:
    from lesionseg.gateway.config import load_config

    tricky = '(?i)t2\\*|"quoted"|é|<&>|tab\there'
    objects = render(set_values={"gateway": {"url": "triton-a:8001,triton-b:8001", "dicomPort": 104, "config": {
        "gateway": {"ae_title": "LS GW", "workers": 5, "stable_age": 2.5, "qc_capture": True},
        "callers": [{"ae_title": "PACS 1", "hosts": ["10.0.0.5", "10.0.0.6"]}, {"ae_title": "MODALITY", "hosts": []}],
        "routes": [{"name": "mp2rage", "series_description": tricky, "task": "seg_ms_lesion_mp2rage",
                    "crop_to_cord": True, "cord_task": "seg_sc_contrast_agnostic", "image_type": ["ORIGINAL", "UNI"]}],
        "destinations": [{"name": "pacs", "kind": "cstore", "ae_title": "PACS", "host": "pacs.example", "port": 11112},
                         {"name": "web", "kind": "stowrs", "url": "https://pacs.example/dicom-web"}]}}})
    (tmp_path / "gateway.toml").write_text(gateway_toml(objects))
    config = load_config(tmp_path / "gateway.toml")
    assert config.ae_title == "LS GW" and config.workers == 5 and config.stable_age == 2.5 and config.qc_capture
    assert config.port == 104 and config.url == "triton-a:8001,triton-b:8001"
    assert config.callers == {"PACS 1": ("10.0.0.5", "10.0.0.6"), "MODALITY": ()}
    (route,) = config.routes
    assert route.series_description == tricky and route.crop_to_cord and route.image_type == ("ORIGINAL", "UNI")
    assert [(d.kind, d.host or d.url, d.port) for d in config.destinations] == [
        ("cstore", "pacs.example", 11112), ("stowrs", "https://pacs.example/dicom-web", 0)]
    c = container(gateway(objects), "gateway")
    assert c["args"][-1] == "triton-a:8001,triton-b:8001"
    assert {p["name"]: p["containerPort"] for p in c["ports"]}["dicom"] == 104


def test_gateway_destinations_are_checked_by_the_schema() -> None:
    with pytest.raises(hc.HelmValuesError, match="destinations"):
        render(set_values={"gateway": {"config": {"destinations": [{"name": "pacs", "kind": "cstore", "host": "x"}]}}})
    with pytest.raises(hc.HelmValuesError, match="callers"):
        render(set_values={"gateway": {"config": {"callers": []}}})
    with pytest.raises(hc.HelmValuesError, match="callers"):
        render(set_values={"gateway": {"config": {"callers": [{"ae_title": "PACS"}]}}})


# -- KServe ------------------------------------------------------------------------------------

def test_kserve_serves_the_same_triton(rendered) -> None:
    objects = rendered["kserve-values"]
    kinds = {o["kind"] for o in objects}
    assert not {"Deployment", "HorizontalPodAutoscaler"} & kinds, "KServe owns Triton's pods and scaling"
    assert not [s for s in find_all(objects, "Service") if "-grpc" in s["metadata"]["name"] or "-http" in s["metadata"]["name"]]
    runtime = find(objects, "ServingRuntime", "-triton")
    assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1"
    (served,) = runtime["spec"]["containers"]
    reference = container(triton(render(["kserve-values.yaml"], {"kserve": {"enabled": False}})), "triton")
    assert served["image"] == reference["image"] and served["command"] == reference["command"] == ["tritonserver"]
    translate = {"--model-repository=/models": "--model-repository=/mnt/models", "--grpc-port=8001": "--grpc-port=9000",
                 "--http-port=8000": "--http-port=8080"}
    assert served["args"] == [translate.get(a, a) for a in reference["args"]]
    assert served["ports"] == [{"name": "h2c", "containerPort": 9000, "protocol": "TCP"}]
    assert served["resources"] == reference["resources"] and served["securityContext"] == reference["securityContext"]
    volumes = {v["name"]: v for v in runtime["spec"]["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    service = find(objects, "InferenceService", FULLNAME)
    assert service["apiVersion"] == "serving.kserve.io/v1beta1"
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"] and model["storageUri"] == "pvc://lesionseg-models/"
    assert model["protocolVersion"] == "grpc-v2"
    assert container(gateway(objects), "gateway")["args"][-1] == f"{FULLNAME}-predictor:80"


def test_kserve_install_job_fills_the_model_store_first(rendered) -> None:
    objects = rendered["kserve-values"]
    job = find(objects, "Job", "-install")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    spec = job["spec"]["template"]["spec"]
    reference = triton(render(["kserve-values.yaml"], {"kserve": {"enabled": False}}))["spec"]["template"]["spec"]
    assert [c["command"] for c in spec["initContainers"]] == [c["command"] for c in reference["initContainers"]]
    assert container(job, "check")["command"] == ["lesionseg", "repository", "check", "/models"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == "lesionseg-models"
    assert spec["restartPolicy"] == "Never"
    policy = find(objects, "NetworkPolicy", "-install")
    assert policy["metadata"]["annotations"]["helm.sh/hook-weight"] == "-1", "in place before the Job runs"
    assert matches(policy["spec"]["podSelector"], job["spec"]["template"]["metadata"]["labels"]) and policy["spec"]["ingress"] == []
    elsewhere = render(["kserve-values.yaml"], {"kserve": {"storageUri": "s3://bucket/lesionseg"}})
    assert not find_all(elsewhere, "Job")
    assert find(elsewhere, "InferenceService", FULLNAME)["spec"]["predictor"]["model"]["storageUri"] == "s3://bucket/lesionseg"


def test_the_go_runtime_stays_out_of_the_test_process() -> None:
    """The Helm SDK's Go library renders in the worker process, never in this one (see helm_chart)."""
    assert find(render(), "Deployment", "-triton")
    mapped = Path("/proc/self/maps").read_text()
    assert "libhelm_c" not in mapped and "helm_python" not in sys.modules
