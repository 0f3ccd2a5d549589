"""deploy/kubernetes: every manifest valid, and shaped as the deployment needs.

- Built-in kinds are checked with kubernetes-validate --strict (the API's own
  OpenAPI schemas, unknown fields rejected).
- KEDA ScaledObjects and the PodMonitor are checked with check-jsonschema
  against their CRDs' schemas, as the cloudcoil-models-keda and
  cloudcoil-models-prometheus-operator packages ship them (pydantic models
  generated from the CRDs), tightened to reject unknown fields as the API
  server's strict field validation does; the ScaledObjects' trigger metadata
  against the parameters KEDA's scaler docs list.
- kustomization.yaml lists exactly the generated manifests.
"""

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml

import deploy_files
from deploy_files import assert_worker_command, queues_of
from helpers import QUESTIONS, run
from variants import MATRIX

BIN = Path(sys.executable).parent
DEFAULT_DEPLOY = QUESTIONS["deploy"]["default"]

VARIANTS = {name: answers for name, answers in MATRIX.items() if "kubernetes" in answers.get("deploy", DEFAULT_DEPLOY)}
# The matrix's Kubernetes variants are SQLite ones: add PostgreSQL with the
# default queues (and compose, to compare), and a single queue without beat and Flower.
VARIANTS["kubernetes-redis-postgresql"] = {"deploy": ["compose", "kubernetes"]}
VARIANTS["kubernetes-one-queue-bare"] = {
    "deploy": ["kubernetes"],
    "queues": "default",
    "use_beat": False,
    "use_flower": False,
    "task_time_limit": 30,
    "task_soft_time_limit": 20,
}

# Trigger metadata KEDA's scalers accept, from their docs:
# https://keda.sh/docs/latest/scalers/redis-lists/ and .../rabbitmq-queue/
TRIGGER_METADATA = {
    "redis": {
        "allowed": {
            "address", "addressFromEnv", "host", "hostFromEnv", "port", "portFromEnv",
            "usernameFromEnv", "passwordFromEnv", "listName", "listLength",
            "activationListLength", "enableTLS", "unsafeSsl", "databaseIndex",
        },
        "required": {"listName"},
    },
    # https://keda.sh/docs/latest/scalers/redis-sentinel-lists/
    "redis-sentinel": {
        "allowed": {
            "addresses", "addressesFromEnv", "hosts", "hostsFromEnv", "ports", "portsFromEnv",
            "usernameFromEnv", "passwordFromEnv", "sentinelUsernameFromEnv", "sentinelPasswordFromEnv",
            "sentinelMaster", "sentinelMasterFromEnv", "listName", "listLength", "activationListLength",
            "enableTLS", "unsafeSsl", "databaseIndex",
        },
        "required": {"listName"},
    },
    "rabbitmq": {
        "allowed": {
            "host", "hostFromEnv", "protocol", "mode", "value", "activationValue", "queueName",
            "vhostName", "useRegex", "excludeUnacknowledged", "pageSize", "operation", "timeout",
            "unsafeSsl",
        },
        "required": {"queueName", "mode", "value"},
    },
}  # fmt: skip


def crd_schema(model, api_version: str, kind: str) -> dict:
    """A custom resource's schema, from its cloudcoil pydantic model, as JSON Schema
    that rejects unknown fields, as the API server's structural schemas do."""
    schema = model.model_json_schema(by_alias=True)

    def strict(node):
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
            for value in node.values():
                strict(value)
        elif isinstance(node, list):
            for value in node:
                strict(value)

    strict(schema)
    schema["properties"]["apiVersion"] = {"const": api_version}
    schema["properties"]["kind"] = {"const": kind}
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata", "spec"})
    return schema


def keda_schema() -> dict:
    """KEDA's ScaledObject schema, from cloudcoil-models-keda."""
    from cloudcoil.models.keda.v1alpha1 import ScaledObject

    return crd_schema(ScaledObject, "keda.sh/v1alpha1", "ScaledObject")


def pod_monitor_schema() -> dict:
    """The Prometheus Operator's PodMonitor schema, from cloudcoil-models-prometheus-operator."""
    from cloudcoil.models.prometheus_operator.v1 import PodMonitor

    return crd_schema(PodMonitor, "monitoring.coreos.com/v1", "PodMonitor")


# Kinds kubernetes-validate has no schema for, and where theirs comes from.
CUSTOM_KINDS = {"ScaledObject": keda_schema, "PodMonitor": pod_monitor_schema}


@pytest.fixture(scope="session")
def crd_schema_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("crds")
    for kind, schema in CUSTOM_KINDS.items():
        (folder / f"{kind}.schema.json").write_text(json.dumps(schema()))
    return {kind: folder / f"{kind}.schema.json" for kind in CUSTOM_KINDS}


class Manifests:
    def __init__(self, name, project):
        self.name, self.project = name, project
        self.dir = project / "deploy" / "kubernetes"
        self.answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
        self.queues = queues_of(self.answers["queues"])
        self.k8s = self.answers["project_slug"].replace("_", "-")
        self.docs = {}
        for path in sorted(self.dir.glob("*.yaml")):
            if path.name != "kustomization.yaml":
                self.docs[path.name] = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
        self.kustomization = yaml.safe_load((self.dir / "kustomization.yaml").read_text())

    def objects(self, kind=None):
        return [doc for docs in self.docs.values() for doc in docs if kind is None or doc["kind"] == kind]

    def get(self, kind, name):
        (found,) = [doc for doc in self.objects(kind) if doc["metadata"]["name"] == name]
        return found

    def worker_name(self, queue):
        return f"{self.k8s}-worker-{queue['name'].replace('_', '-')}"

    def app_workloads(self):
        """(kind, name) of every object running the project's image."""
        return [
            doc
            for doc in self.objects()
            if doc["kind"] in {"Deployment", "Job"}
            and doc["spec"]["template"]["spec"]["containers"][0]["image"] == self.answers["project_slug"]
        ]


@pytest.fixture(scope="module", params=list(VARIANTS), ids=list(VARIANTS))
def manifests(request, rendered):
    return Manifests(request.param, rendered(VARIANTS[request.param]))


# --- Validation -------------------------------------------------------------------


def test_builtin_kinds_pass_kubernetes_validate_strict(manifests):
    files = sorted(name for name, docs in manifests.docs.items() if all(d["kind"] not in CUSTOM_KINDS for d in docs))
    out = run([str(BIN / "kubernetes-validate"), "--strict", *files], manifests.dir, {"PATH": str(BIN)})
    passed = re.findall(r"^INFO (\S+) passed for resource (\S+)", out.stdout, re.M)
    expected = [(name, f"{d['kind'].lower()}/{d['metadata']['name']}") for name in files for d in manifests.docs[name]]
    assert sorted(passed) == sorted(expected), out.stdout
    # kubernetes-validate exits 0 on a kind it has no schema for: no warning allowed.
    assert "WARN" not in out.stdout + out.stderr and "ERROR" not in out.stdout + out.stderr


@pytest.mark.parametrize("kind", CUSTOM_KINDS)
def test_custom_resources_match_their_schemas(manifests, crd_schema_files, kind):
    files = sorted(n for n, docs in manifests.docs.items() if any(d["kind"] == kind for d in docs))
    assert files
    out = run(
        [str(BIN / "check-jsonschema"), "--schemafile", str(crd_schema_files[kind]), *files],
        manifests.dir,
        {"PATH": str(BIN)},
    )
    assert "ok -- validation done" in out.stdout


def test_pod_monitor_scrapes_every_metrics_port(manifests):
    """It selects the project's pods, and scrapes the port each app container names
    "metrics": web, every worker and beat, on the METRICS_PORT of the ConfigMap."""
    (monitor,) = manifests.objects("PodMonitor")
    assert monitor["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": manifests.k8s}
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]
    config = manifests.get("ConfigMap", f"{manifests.k8s}-config")["data"]
    scraped = set()
    for workload in manifests.app_workloads():
        for container in workload["spec"]["template"]["spec"]["containers"]:
            ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
            if "metrics" in ports:
                assert ports["metrics"] == int(config["METRICS_PORT"])
                scraped.add(workload["metadata"]["name"])
    expected = {f"{manifests.k8s}-web", *(manifests.worker_name(q) for q in manifests.queues)}
    if manifests.answers["use_beat"]:
        expected.add(f"{manifests.k8s}-beat")
    assert scraped == expected
    # No Service forwards it: only Prometheus, pod to pod, reaches it.
    for service in manifests.objects("Service"):
        assert all(p.get("targetPort") != "metrics" for p in service["spec"]["ports"]), service


POD_MONITOR = {
    "apiVersion": "monitoring.coreos.com/v1",
    "kind": "PodMonitor",
    "metadata": {"name": "m"},
    "spec": {"selector": {"matchLabels": {"a": "b"}}, "podMetricsEndpoints": [{"port": "metrics"}]},
}
SCALED_OBJECT = {
    "apiVersion": "keda.sh/v1alpha1",
    "kind": "ScaledObject",
    "metadata": {"name": "w"},
    "spec": {"scaleTargetRef": {"name": "w"}, "triggers": [{"type": "redis", "metadata": {"listName": "q"}}]},
}


@pytest.mark.parametrize(
    "schema, good, bad",
    [
        (
            pod_monitor_schema,
            POD_MONITOR,
            [
                {"podMetricsEndpoints": [{"prot": "metrics"}]},  # typo
                {"selector": {"matchLabel": {"a": "b"}}},
            ],
        ),
        (
            keda_schema,
            SCALED_OBJECT,
            [
                {"minReplicaCount": "1"},  # an integer
                {"triggers": [{"type": "redis", "metadata": {"listLength": 5}}]},  # strings only
                {"triggers": [{"type": "redis", "metdata": {"listName": "q"}}]},  # typo
                {"scaleTargetRef": None},  # no target
                {"scaleTargetRef": {"nme": "w"}},
            ],
        ),
    ],
    ids=["PodMonitor", "ScaledObject"],
)
def test_crd_schema_rejects_what_the_operator_would(schema, good, bad):
    """The schemas are strict enough to catch the usual mistakes: each change of
    the good spec (None removes the field) is refused."""
    import jsonschema

    schema = schema()
    jsonschema.validate(good, schema)
    for change in bad:
        spec = {key: value for key, value in {**good["spec"], **change}.items() if value is not None}
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**good, "spec": spec}, schema)


def test_kustomization_lists_exactly_the_manifests(manifests):
    k = manifests.kustomization
    assert k["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and k["kind"] == "Kustomization"
    assert set(k) <= {"apiVersion", "kind", "namespace", "labels", "resources", "images"}
    assert sorted(k["resources"]) == sorted(manifests.docs)
    assert len(k["resources"]) == len(set(k["resources"]))
    assert k["images"] == [
        {"name": manifests.answers["project_slug"], "newName": k["images"][0]["newName"], "newTag": "0.1.0"}
    ]
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", k["namespace"])


# --- Workers and KEDA ---------------------------------------------------------------------


# A file touched less than a minute ago: sh and find, no Python start.
LIVENESS_TEST = 'test -n "$(find "$WORKER_LIVENESS_FILE" -newermt \'60 seconds ago\')"'


def probe_script(probe):
    command = probe["exec"]["command"]
    assert command[:2] == ["sh", "-c"], "the shell expands $HOSTNAME"
    return command[2]


def test_one_worker_deployment_per_queue(manifests):
    names = {d["metadata"]["name"] for d in manifests.objects("Deployment") if "-worker-" in d["metadata"]["name"]}
    assert names == {manifests.worker_name(q) for q in manifests.queues}
    for queue in manifests.queues:
        deployment = manifests.get("Deployment", manifests.worker_name(queue))
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert_worker_command(container["command"], queue)
        # KEDA's HPA owns the replica count.
        assert "replicas" not in deployment["spec"]
        # Warm shutdown: running tasks get the hard time limit and more.
        assert pod["terminationGracePeriodSeconds"] > manifests.answers["task_time_limit"]
        script = probe_script(container["startupProbe"])
        assert re.fullmatch(rf"exec celery -A config inspect ping -d {queue['name']}@\$HOSTNAME -t \d+", script)
        assert container["startupProbe"]["timeoutSeconds"] > int(script.rsplit(" ", 1)[1])
        # Liveness: the age of the file ops/liveness.py touches, in the container's /tmp.
        env = {item["name"]: item["value"] for item in container["env"]}
        assert env["WORKER_LIVENESS_FILE"].startswith("/tmp/")
        assert probe_script(container["livenessProbe"]) == LIVENESS_TEST


def test_one_scaled_object_per_queue_scaling_on_its_length(manifests):
    scaled = {d["metadata"]["name"]: d for d in manifests.objects("ScaledObject")}
    assert set(scaled) == {manifests.worker_name(q) for q in manifests.queues}
    broker = manifests.answers["broker"]
    configmap = manifests.get("ConfigMap", f"{manifests.k8s}-config")["data"]
    secret_keys = secret_example_keys(manifests)
    for queue in manifests.queues:
        obj = scaled[manifests.worker_name(queue)]
        spec = obj["spec"]
        target = manifests.get("Deployment", spec["scaleTargetRef"]["name"])
        assert target["metadata"]["name"] == manifests.worker_name(queue)
        assert spec["minReplicaCount"] >= 1
        assert spec["maxReplicaCount"] >= spec["minReplicaCount"]
        (trigger,) = spec["triggers"]
        meta = trigger["metadata"]
        assert trigger["type"] == broker
        rules = TRIGGER_METADATA[broker]
        assert set(meta) <= rules["allowed"] and rules["required"] <= set(meta), meta
        if broker == "redis":
            assert meta["listName"] == queue["name"]
            assert int(meta["listLength"]) >= 1
        else:
            assert meta["queueName"] == queue["name"]
            assert (meta["mode"], meta["protocol"]) == ("QueueLength", "amqp")
            assert int(meta["value"]) >= 1
        # KEDA reads *FromEnv from the target container's environment.
        (container,) = target["spec"]["template"]["spec"]["containers"]
        sources = {ref["configMapRef"]["name"] for ref in container["envFrom"] if "configMapRef" in ref}
        assert sources == {f"{manifests.k8s}-config"}
        for key, variable in meta.items():
            if key.endswith("FromEnv"):
                assert variable in configmap or variable in secret_keys, f"{key}: {variable} is never set"


def test_redis_trigger_watches_the_brokers_database(manifests):
    if manifests.answers["broker"] != "redis":
        pytest.skip("RabbitMQ broker")
    example = secret_example(manifests)
    db = example["CELERY_BROKER_URL"].rsplit("/", 1)[1]
    host = example["CELERY_BROKER_URL"].rsplit("@", 1)[1].split("/")[0]
    configmap = manifests.get("ConfigMap", f"{manifests.k8s}-config")["data"]
    assert configmap["REDIS_ADDRESS"] == host
    for obj in manifests.objects("ScaledObject"):
        assert obj["spec"]["triggers"][0]["metadata"]["databaseIndex"] == db


def test_sentinel_component_scales_through_the_sentinels(manifests, tmp_path):
    """deploy/kubernetes/sentinel, added to the kustomization, turns every queue's
    trigger into KEDA's redis-sentinel one, fed by the ConfigMap and the Secret."""
    if manifests.answers["broker"] != "redis":
        assert not (manifests.dir / "sentinel").exists()
        pytest.skip("RabbitMQ broker")
    build = tmp_path / "kubernetes"
    shutil.copytree(manifests.dir, build)
    with (build / "kustomization.yaml").open("a") as kustomization:
        kustomization.write("components:\n  - sentinel\n")
    built = run([str(BIN / "kubectl"), "kustomize", str(build)], tmp_path, dict(os.environ)).stdout
    objects = [doc for doc in yaml.safe_load_all(built) if doc]
    (configmap,) = [o["data"] for o in objects if o["kind"] == "ConfigMap"]
    assert "REDIS_ADDRESS" not in configmap
    assert configmap["REDIS_SENTINEL_MASTER"] == "mymaster"
    assert all(address.strip().endswith(":26379") for address in configmap["REDIS_SENTINEL_ADDRESSES"].split(","))
    example = (manifests.dir / "secret.env.example").read_text()
    sentinel_secrets = set(re.findall(r"^# (\w+)=", example, re.M))
    assert re.search(r"^# CELERY_BROKER_URL=sentinel://:[^;]+/0(;sentinel://:[^;]+/0){2}$", example, re.M)
    scaled = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ScaledObject"}
    assert set(scaled) == {manifests.worker_name(q) for q in manifests.queues}
    rules = TRIGGER_METADATA["redis-sentinel"]
    for queue in manifests.queues:
        (trigger,) = scaled[manifests.worker_name(queue)]["spec"]["triggers"]
        meta = trigger["metadata"]
        assert trigger["type"] == "redis-sentinel"
        assert set(meta) <= rules["allowed"] and rules["required"] <= set(meta), meta
        assert (meta["listName"], meta["databaseIndex"]) == (queue["name"], "0")
        for key, variable in meta.items():
            if key.endswith("FromEnv"):
                assert variable in configmap or variable in secret_example_keys(manifests) | sentinel_secrets, key
    # Everything else is as without the component.
    assert {o["kind"] for o in objects} == {o["kind"] for o in manifests.objects()}


# --- Beat, web, Flower, migrations --------------------------------------------------------


def test_beat_is_a_single_replica_recreated_never_rolled(manifests):
    beats = [d for d in manifests.objects("Deployment") if d["metadata"]["name"] == f"{manifests.k8s}-beat"]
    if not manifests.answers["use_beat"]:
        assert not beats
        return
    (beat,) = beats
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    (container,) = beat["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["celery", "-A", "config", "beat", "--enable-remote-control", "--loglevel", "INFO"]
    assert "inspect ping -d celerybeat@$HOSTNAME" in probe_script(container["livenessProbe"])
    # No autoscaler may target beat.
    targets = {d["spec"]["scaleTargetRef"]["name"] for d in manifests.objects("ScaledObject")}
    assert beat["metadata"]["name"] not in targets


def service_selects(service, deployment):
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    return all(labels.get(k) == v for k, v in service["spec"]["selector"].items())


def test_web_deployment_and_service(manifests):
    web = manifests.get("Deployment", f"{manifests.k8s}-web")
    service = manifests.get("Service", f"{manifests.k8s}-web")
    assert service_selects(service, web)
    (container,) = web["spec"]["template"]["spec"]["containers"]
    assert container["command"][:2] == ["gunicorn", "config.wsgi"]
    readiness = container["readinessProbe"]["httpGet"]
    assert readiness["path"] == "/healthz/"
    host = {h["name"]: h["value"] for h in readiness["httpHeaders"]}["Host"]
    configmap = manifests.get("ConfigMap", f"{manifests.k8s}-config")["data"]
    assert host in configmap["DJANGO_ALLOWED_HOSTS"].split(",")
    assert configmap["DJANGO_DEBUG"] == "false"
    assert service["spec"]["ports"][0]["targetPort"] in {p["name"] for p in container["ports"]}
    graceful = int(container["command"][container["command"].index("--graceful-timeout") + 1])
    assert web["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > graceful


def test_flower_deployment_and_cluster_ip_service(manifests):
    name = f"{manifests.k8s}-flower"
    found = [d for d in manifests.objects() if d["metadata"]["name"] == name]
    if not manifests.answers["use_flower"]:
        assert not found
        return
    flower = manifests.get("Deployment", name)
    service = manifests.get("Service", name)
    assert service["spec"]["type"] == "ClusterIP"
    assert service_selects(service, flower)
    (container,) = flower["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["celery", "-A", "config", "flower"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/flower/healthcheck"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["FLOWER_PORT"] == str(manifests.answers["flower_port"])
    assert "FLOWER_PASSWORD" in secret_example_keys(manifests)


def test_migrate_job_runs_before_the_app_starts(manifests):
    job = manifests.get("Job", f"{manifests.k8s}-migrate")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "manage.py", "migrate", "--noinput"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    for deployment in manifests.objects("Deployment"):
        if deployment["metadata"]["name"].endswith("-flower"):
            continue
        inits = deployment["spec"]["template"]["spec"]["initContainers"]
        assert [c["command"] for c in inits] == [["python", "manage.py", "migrate", "--check"]]


# --- Secrets and security -------------------------------------------------------------------


def secret_example(manifests) -> dict[str, str]:
    lines = (manifests.dir / "secret.env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def secret_example_keys(manifests) -> set[str]:
    return set(secret_example(manifests))


def test_secrets_are_referenced_never_committed(manifests):
    assert not manifests.objects("Secret"), "no Secret manifest: it would hold values"
    example = secret_example(manifests)
    assert all(value in {"", "change-me"} or "change-me" in value for value in example.values()), example
    assert "secret.env" in (manifests.dir / ".gitignore").read_text().split()
    dotenv = (manifests.project / ".env").read_text()
    for value in re.findall(r"^\w+_(?:PASSWORD|SECRET_KEY)=(\S+)$", dotenv, re.M):
        assert value not in "".join(p.read_text() for p in manifests.dir.rglob("*") if p.is_file())
    expected = {"DJANGO_SECRET_KEY", "CELERY_BROKER_URL"}
    if manifests.answers["database"] == "postgresql":
        expected.add("DATABASE_URL")
    assert expected <= set(example)
    for workload in manifests.app_workloads():
        pod = workload["spec"]["template"]["spec"]
        for container in pod["containers"] + pod.get("initContainers", []):
            refs = {next(iter(ref)): next(iter(ref.values()))["name"] for ref in container["envFrom"]}
            assert refs == {"configMapRef": f"{manifests.k8s}-config", "secretRef": f"{manifests.k8s}-secrets"}


def test_pods_run_unprivileged_with_a_read_only_root(manifests):
    for workload in manifests.app_workloads():
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"] + pod.get("initContainers", []):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"]["drop"] == ["ALL"]
        mounts = {m["mountPath"] for m in pod["containers"][0].get("volumeMounts", [])}
        assert "/tmp" in mounts, workload["metadata"]["name"]
        if manifests.answers["database"] == "sqlite" and not workload["metadata"]["name"].endswith("-flower"):
            assert "/app/data" in mounts, workload["metadata"]["name"]


def test_commands_and_probes_are_those_compose_boots(manifests):
    """Where compose.yaml is generated too, every container runs the command of
    its compose service, and every exec probe is its compose healthcheck: the
    engine boot test (test_engine_compose.py) runs those for real."""
    if not (manifests.project / "compose.yaml").exists():
        pytest.skip("no compose.yaml in this variant")
    services = deploy_files.resolve(manifests.project)["services"]
    pairs = [("Job", f"{manifests.k8s}-migrate", "migrate"), ("Deployment", f"{manifests.k8s}-web", "web")]
    pairs += [("Deployment", manifests.worker_name(q), f"worker-{q['name']}") for q in manifests.queues]
    if manifests.answers["use_beat"]:
        pairs.append(("Deployment", f"{manifests.k8s}-beat", "beat"))
    if manifests.answers["use_flower"]:
        pairs.append(("Deployment", f"{manifests.k8s}-flower", "flower"))
    for kind, name, service in pairs:
        (container,) = manifests.get(kind, name)["spec"]["template"]["spec"]["containers"]
        assert container["command"] == services[service]["command"], name
        if "exec" in container.get("livenessProbe", {}):
            compose_check = deploy_files.healthcheck_argv(services[service])[2]
            if service.startswith("worker-"):
                # compose's check also ends the worker: compose restarts no unhealthy container.
                assert LIVENESS_TEST in compose_check, name
            else:
                assert probe_script(container["livenessProbe"]) == f"exec {compose_check}", name
