"""The deployment's security properties, checked without a cloud or a Docker daemon by parsing the files (issue 17,
infrastructure part): MLflow behind authentication on the private network only, secrets from Secrets Manager and
never on a command line or in Terraform's state, the autoscaler limited to the cluster's own instances, nodes
limited in S3, images and dependencies pinned by digest and hash, Terraform's state kept out of git."""

from __future__ import annotations

import json
import re
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_deploy_static import (
    CLUSTER,
    INFRA,
    ROOT,
    arg_defaults,
    cluster_env_exports,
    dockerfile_instructions,
    dockerignore_excludes,
    fake_env,
    render,
    rendered,
    stages,
    terraform,
)

DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# EC2 calls that start, change or end an instance (what the autoscaler may do only to its own cluster's).
EC2_MUTATING = {"ec2:RunInstances", "ec2:TerminateInstances", "ec2:StopInstances", "ec2:StartInstances",
                "ec2:CreateTags", "ec2:DeleteTags", "ec2:ModifyInstanceAttribute", "ec2:RebootInstances"}


def unquote(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip('"')
    if isinstance(value, list):
        return [unquote(v) for v in value]
    return value


def policy(name: str) -> list[dict[str, Any]]:
    """The statements of infra's aws_iam_policy_document `name`, strings unquoted."""
    doc = terraform()["data"][("aws_iam_policy_document", name)]
    return [{k: unquote(v) for k, v in s.items()} for s in doc["statement"]]


def conditions(statement: dict[str, Any]) -> dict[str, list[str]]:
    """variable → values of a statement's conditions (StringEquals only: the tests want exact matches)."""
    found = {}
    for cond in statement.get("condition", []):
        assert unquote(cond["test"]) == "StringEquals", f"{statement.get('sid')}: a condition that is not exact"
        found[unquote(cond["variable"])] = unquote(cond["values"])
    return found


def infra_text() -> str:
    """Every infra/*.tf file without its comment lines."""
    lines = [line for p in sorted(INFRA.glob("*.tf")) for line in p.read_text().splitlines()]
    return "\n".join(line for line in lines if not line.lstrip().startswith("#"))


def mlflow_container() -> str:
    """The MLflow task's container definition, as the HCL expression text python-hcl2 returns."""
    return str(terraform()["resource"][("aws_ecs_task_definition", "mlflow")]["container_definitions"])


# --- autoscaler: only the cluster's own instances -----------------------------------------------------------------


def test_autoscaler_changes_only_instances_tagged_with_the_clusters_name() -> None:
    from ray.autoscaler.tags import TAG_RAY_CLUSTER_NAME

    assert unquote(terraform()["locals"]["ray_cluster_tag"]) == TAG_RAY_CLUSTER_NAME, "not the tag Ray sets"
    tagged = {f"aws:RequestTag/{TAG_RAY_CLUSTER_NAME}", f"ec2:ResourceTag/{TAG_RAY_CLUSTER_NAME}"}
    launches_tagged = False
    for s in policy("autoscaler"):
        mutating = EC2_MUTATING & set(s["actions"])
        if not mutating:
            continue
        sid = s.get("sid")
        # A list of ARNs, or one HCL expression (e.g. concat(...)) kept as text.
        resources = s["resources"] if isinstance(s["resources"], list) else [s["resources"]]
        assert not any(r == "*" or re.search(r'"\*"|:\*"', r) for r in resources), f"{sid}: {sorted(mutating)} on *"
        if not any(":instance/" in r for r in resources):
            # Only RunInstances may name the launch's other resources (subnet, group, image, volume ...).
            assert mutating == {"ec2:RunInstances"}, f"{sid}: {sorted(mutating)} beyond instances"
            continue
        conds = conditions(s)
        cluster = {k: v for k, v in conds.items() if k.replace("${local.ray_cluster_tag}", TAG_RAY_CLUSTER_NAME) in
                   tagged}
        if cluster:
            assert list(cluster.values()) == [["${var.name}"]], f"{sid}: not the cluster's own name"
            launches_tagged |= "ec2:RunInstances" in mutating and any("RequestTag" in k for k in cluster)
        else:
            # Tagging as part of the launch only: that launch itself must carry the cluster's tag (above).
            assert mutating == {"ec2:CreateTags"} and conds == {"ec2:CreateAction": ["RunInstances"]}, (
                f"{sid}: {sorted(mutating)} on instances without the cluster's tag as a condition"
            )
    assert launches_tagged, "RunInstances on instances must require the ray-cluster-name tag in the request"


def test_nothing_but_describe_and_read_calls_on_every_resource() -> None:
    """EC2's Describe calls have no resource-level permissions; nothing else in any policy may name `*`."""
    for (rtype, name), _ in terraform()["data"].items():
        if rtype != "aws_iam_policy_document":
            continue
        for s in policy(name):
            if unquote(s.get("effect", "Allow")) != "Allow" or "resources" not in s:
                continue
            for action in s["actions"]:
                assert not action.endswith("*"), f"{name}/{s.get('sid')}: wildcard action {action}"
            if s["resources"] == ["*"]:
                assert all(a.split(":")[1].startswith("Describe") for a in s["actions"]), f"{name}/{s.get('sid')}"


def test_head_hands_only_the_worker_role_to_ec2() -> None:
    (passing,) = [s for s in policy("autoscaler") if "iam:PassRole" in s["actions"]]
    assert passing["resources"] == ["${aws_iam_role.worker.arn}"]
    assert conditions(passing) == {"iam:PassedToService": ["ec2.amazonaws.com"]}


def test_cluster_launcher_uses_infras_name_as_its_cluster_name() -> None:
    """The tag condition holds only if Ray tags the instances with the name the policy names."""
    assert "${REID3DSL_CLUSTER_NAME}" in (CLUSTER / "aws.yaml").read_text()
    assert cluster_env_exports()["REID3DSL_CLUSTER_NAME"] == "${var.name}"
    (config,) = rendered("aws.yaml")
    assert config["cluster_name"] == fake_env()["REID3DSL_CLUSTER_NAME"]


# --- S3 ---------------------------------------------------------------------------------------------------------------


def test_nodes_cannot_erase_checkpoint_history_or_touch_other_prefixes() -> None:
    """With versioning on, a node's overwrite or delete leaves the old version; nodes may not remove versions,
    change the bucket, or write outside checkpoints/ (IAM cannot tell one job from another on shared nodes)."""
    for s in policy("node_s3"):
        for action in s["actions"]:
            assert "Version" not in action and "Bucket" not in action.replace("s3:ListBucket", "").replace(
                "s3:GetBucketLocation", ""
            ), f"{s['sid']}: {action}"
            if re.search(r"Put|Delete|Abort", action):
                assert s["resources"] == ["${local.bucket_arn}/checkpoints/*"], s["sid"]
    res = terraform()["resource"]
    assert res[("aws_s3_bucket_versioning", "data")]["versioning_configuration"][0]["status"] == '"Enabled"'


# --- secrets ---------------------------------------------------------------------------------------------------------


def test_generated_passwords_are_write_only_and_never_in_state() -> None:
    tf = terraform()
    assert not [k for k in tf["resource"] if k[0] == "random_password"], "a random_password resource is in the state"
    assert {k for k in tf["ephemeral"] if k[0] == "random_password"} == {
        ("random_password", "db"), ("random_password", "mlflow"), ("random_password", "checkpoint_key")}
    for name in ("db_password", "mlflow_password", "checkpoint_key"):
        version = tf["resource"][("aws_secretsmanager_secret_version", name)]
        assert "secret_string" not in version and version["secret_string_wo"].startswith("${ephemeral.")
    db = tf["resource"][("aws_db_instance", "mlflow")]
    assert "password" not in db and db["password_wo"].startswith("${ephemeral."), "the database password is in state"
    assert not [k for k in tf["resource"] if k[0] == "aws_ssm_parameter"], "one secret store: Secrets Manager"
    required = re.search(r'required_version\s*=\s*">=\s*1\.(\d+)', (INFRA / "versions.tf").read_text())
    assert required and int(required.group(1)) >= 11, "write-only arguments need Terraform >= 1.11"


def test_mlflow_task_gets_its_passwords_as_secrets_and_has_none_on_its_command_line() -> None:
    container = mlflow_container()
    assert "entryPoint" not in container, "the image's own entry point (mlflow server --app-name basic-auth) runs"
    secrets = dict(re.findall(r'\{name = "([A-Z_]+)", valueFrom = (aws_secretsmanager_secret\.[a-z_]+\.arn)\}',
                              container))
    assert secrets == {
        "PGPASSWORD": "aws_secretsmanager_secret.db_password.arn",
        "MLFLOW_AUTH_ADMIN_PASSWORD": "aws_secretsmanager_secret.mlflow_password.arn",
    }
    environment = re.search(r"environment = \[(.*?)\]", container)
    assert environment and "PASSWORD" not in environment.group(1)
    command = re.search(r"command = \[(.*?)\]", container)
    assert command, "no command in the container definition"
    # No secret, no shell and no shell variable (Terraform's own ${var.…} is filled in before the task exists).
    assert not re.search(r'PASSWORD|\$\$|\$\{?[A-Z_]|postgresql://[^"]+@|"sh"|"-c"', command.group(1)), command.group(1)
    assert '"--backend-store-uri", "postgresql://"' in command.group(1), "the connection comes from PG* variables"


def test_nothing_secret_is_written_in_the_terraform_or_the_manifests() -> None:
    text = infra_text()
    assert not re.search(r"\bpassword\s*=", text), "a password argument that is not write-only"
    assert not re.search(r"://[^/\s\"]*:[^@/\s\"]+@", text), "credentials in a URI"
    for manifest in CLUSTER.glob("*.yaml"):
        body = manifest.read_text()
        assert not re.search(r"(PASSWORD|TOKEN)=[A-Za-z0-9]", body), f"{manifest.name}: a literal secret"
    # Outputs hold ARNs and names only.
    for name, out in terraform()["output"].items():
        assert "password.result" not in str(out) and "secret_string" not in str(out), name


def test_nodes_read_only_mlflows_password_and_the_checkpoint_key_and_mlflow_reads_only_its_two() -> None:
    (node,) = policy("node_secrets")
    assert node["actions"] == ["secretsmanager:GetSecretValue"]
    # Not the database's password: only MLflow's task reads that.
    assert sorted(node["resources"]) == ["${aws_secretsmanager_secret.checkpoint_key.arn}",
                                         "${aws_secretsmanager_secret.mlflow_password.arn}"]
    attached = terraform()["resource"][("aws_iam_role_policy_attachment", "node_secrets")]
    assert "head" in str(attached["for_each"]) and "worker" in str(attached["for_each"])
    (task,) = policy("mlflow_secret")
    assert task["actions"] == ["secretsmanager:GetSecretValue"]
    assert sorted(task["resources"]) == ["${aws_secretsmanager_secret.db_password.arn}",
                                         "${aws_secretsmanager_secret.mlflow_password.arn}"]


def test_cluster_launcher_reads_mlflows_password_and_the_checkpoint_key_into_a_private_file_and_no_command_line(
    tmp_path: Path
) -> None:
    """Runs the rendered initialization command with a fake `aws` as the only program on PATH (it answers each
    secret's ARN with its own value): the password and the key reach a mode-600 env file that Docker reads
    (--env-file), and no program gets either as an argument."""
    (config,) = rendered("aws.yaml")
    env_file_option = [o for o in config["docker"]["run_options"] if o.startswith("--env-file ")]
    assert len(env_file_option) == 1
    env_file = env_file_option[0].split(None, 1)[1]
    (command,) = [c for c in config["initialization_commands"] if "secretsmanager" in c]
    assert env_file in command
    env = fake_env()
    password, key = "Pw0rdFromSecretsManager0123456789abcdef", "CheckpointKeyFromSecretsManager0123456789"
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    calls = tmp_path / "calls"
    (fake_bin / "aws").write_text(f'#!/bin/bash\necho "$*" >> {calls}\n'
                                  f'case "$*" in *{env["REID3DSL_CHECKPOINT_SECRET"]}*) echo {key} ;; '
                                  f'*) echo {password} ;; esac\n')
    (fake_bin / "aws").chmod(0o755)
    local_file = tmp_path / "home" / "reid3dsl-secrets.env"
    local_file.parent.mkdir()
    done = subprocess.run(["/bin/bash", "-c", command.replace(env_file, str(local_file))],
                          env={"PATH": str(fake_bin)}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert local_file.read_text() == f"MLFLOW_TRACKING_USERNAME={env['REID3DSL_MLFLOW_USER']}\n" \
                                     f"MLFLOW_TRACKING_PASSWORD={password}\nREID3DSL_CHECKPOINT_KEY={key}\n"
    assert stat.S_IMODE(local_file.stat().st_mode) == 0o600
    argv = calls.read_text()
    assert env["REID3DSL_MLFLOW_SECRET"] in argv and env["REID3DSL_CHECKPOINT_SECRET"] in argv
    assert password not in argv and key not in argv
    assert password not in command and key not in command


def test_cluster_launcher_stops_when_the_secret_cannot_be_read(tmp_path: Path) -> None:
    (config,) = rendered("aws.yaml")
    (command,) = [c for c in config["initialization_commands"] if "secretsmanager" in c]
    env_file = next(o for o in config["docker"]["run_options"] if o.startswith("--env-file ")).split(None, 1)[1]
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "aws").write_text("#!/bin/bash\necho 'AccessDeniedException' >&2\nexit 254\n")
    (fake_bin / "aws").chmod(0o755)
    local_file = tmp_path / "reid3dsl-secrets.env"
    done = subprocess.run(["/bin/bash", "-c", command.replace(env_file, str(local_file))],
                          env={"PATH": str(fake_bin)}, capture_output=True, text=True)
    assert done.returncode != 0 and not local_file.exists()


def test_kuberay_pods_get_mlflows_credentials_and_the_checkpoint_key_from_kubernetes_secrets() -> None:
    (job,) = [d for d in rendered("rayjob.yaml") if d["kind"] == "RayJob"]
    spec = job["spec"]
    pods = [spec["submitterPodTemplate"], spec["rayClusterSpec"]["headGroupSpec"]["template"]]
    pods += [g["template"] for g in spec["rayClusterSpec"]["workerGroupSpecs"]]
    for pod in pods:
        variables = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
        for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "REID3DSL_CHECKPOINT_KEY"):
            assert "secretKeyRef" in variables[name]["valueFrom"], name
    header = (CLUSTER / "rayjob.yaml").read_text().split("apiVersion")[0]
    assert "--from-literal=auth_token" not in header and "--from-file=password=/dev/stdin" in header
    assert "--from-file=key=/dev/stdin" in header and "$REID3DSL_CHECKPOINT_SECRET" in header


# --- MLflow: authentication, private network ---------------------------------------------------------------------


def mlflow_auth_ini() -> str:
    runs = " ".join(args for instr, args in stages()["mlflow"] if instr == "RUN")
    match = re.search(r"printf '(\[mlflow\][^']*)'\s*>\s*(\S+)", runs)
    assert match, "the mlflow stage must write its basic-auth config"
    return match.group(1).replace("\\n", "\n")


def test_mlflow_image_starts_the_basic_auth_app_with_a_config_that_holds_no_password(tmp_path: Path,
                                                                                     monkeypatch: pytest.MonkeyPatch
                                                                                     ) -> None:
    import importlib.metadata
    import importlib.util

    from mlflow.utils.plugins import get_entry_points

    stage = stages()["mlflow"]
    (entrypoint,) = [json.loads(args) for instr, args in stage if instr == "ENTRYPOINT"]
    assert entrypoint[:2] == ["mlflow", "server"] and entrypoint[2:4] == ["--app-name", "basic-auth"]
    assert "basic-auth" in [e.name for e in get_entry_points("mlflow.app")]
    ini = mlflow_auth_ini()
    assert "password" not in ini.lower()
    env = " ".join(args for instr, args in stage if instr == "ENV")
    (tmp_path / "basic_auth.ini").write_text(ini)
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(tmp_path / "basic_auth.ini"))
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_USERNAME", "reid3dsl")
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    # MLflow's own reader of that file; loaded alone, as mlflow.server.auth itself imports the auth app's extras.
    spec = importlib.util.find_spec("mlflow.server.auth")
    assert spec and spec.submodule_search_locations
    loader = importlib.util.spec_from_file_location(
        "mlflow_auth_config", Path(spec.submodule_search_locations[0]) / "config.py"
    )
    assert loader and loader.loader
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    config = module.read_auth_config()
    assert config.database_uri == "postgresql://", "the auth store must use the PG* environment like the runs"
    assert config.admin_password is None, "the admin password must come only from the task's secret"
    assert config.default_permission in ("READ", "NO_PERMISSIONS")
    assert re.search(r"MLFLOW_AUTH_CONFIG_PATH=(\S+)", env).group(1) == re.search(
        r">\s*(\S+)", " ".join(a for i, a in stage if i == "RUN" and "basic_auth.ini" in a)
    ).group(1)
    # The auth app imports its extras (Flask-WTF ...) at start: the image's lock must hold every one of them.
    lock = (ROOT / "requirements-mlflow.lock").read_text().lower()
    extras = [r for r in importlib.metadata.requires("mlflow") or [] if re.search(r"extra\s*==\s*.auth.", r)]
    assert extras, "mlflow declares no auth extra"
    for requirement in extras:
        name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0).lower().replace("_", "-")
        assert re.search(rf"^{re.escape(name)}==", lock, re.M), f"{name} (mlflow[auth]) is not in the lock"


def test_mlflow_is_reachable_only_from_the_clusters_security_groups() -> None:
    res = terraform()["resource"]
    rules = [b for (t, _), b in res.items() if t == "aws_vpc_security_group_ingress_rule"
             and b["security_group_id"] in ("${aws_security_group.mlflow.id}", "${aws_security_group.db.id}")]
    assert rules
    for rule in rules:
        assert "cidr_ipv4" not in rule and "cidr_ipv6" not in rule, "MLflow or its database open to addresses"
        assert "referenced_security_group_id" in rule
    assert res[("aws_db_instance", "mlflow")]["publicly_accessible"] is False
    assert res[("aws_db_instance", "mlflow")]["storage_encrypted"] is True
    assert 'name = "PGSSLMODE", value = "require"' in mlflow_container(), "the database connection must use TLS"
    assert terraform()["locals"]["tracking_uri"].startswith('"http://${local.mlflow_host}'), "a private name"
    assert unquote(res[("aws_service_discovery_private_dns_namespace", "internal")]["vpc"]) == \
        "${data.aws_vpc.selected.id}"


# --- images: immutable tags, digests -----------------------------------------------------------------------------


def test_ecr_tags_are_immutable() -> None:
    repo = terraform()["resource"][("aws_ecr_repository", "image")]
    assert repo["image_tag_mutability"] == '"IMMUTABLE"'


def test_images_are_referenced_by_digest_and_never_as_latest() -> None:
    tf = terraform()
    for name in ("node_image", "mlflow_image"):
        assert re.search(r"@\$\{data\.aws_ecr_image\.image\[\"(node|mlflow)\"\]\.image_digest\}",
                         tf["locals"][name]), name
    assert cluster_env_exports()["REID3DSL_IMAGE"] == "${local.node_image}"
    assert "image     = local.mlflow_image" in (INFRA / "main.tf").read_text()
    tag = tf["variable"]["image_tag"]
    assert tag["default"] is None, "no default tag (in particular not latest)"
    assert '!= "latest"' in str(tag["validation"])
    for path in [*INFRA.glob("*.tf"), *CLUSTER.glob("*.yaml"), ROOT / "Dockerfile"]:
        assert not re.search(r":latest\b", path.read_text()), f"{path.name} names a :latest image"
    def images(node: Any) -> list[str]:
        if isinstance(node, dict):
            return [v for k, v in node.items() if k == "image" and isinstance(v, str)] + [
                i for v in node.values() for i in images(v)
            ]
        return [i for v in node for i in images(v)] if isinstance(node, list) else []

    for manifest in ("aws.yaml", "rayjob.yaml"):
        found = images(rendered(manifest))
        assert found and all(re.search(r"@sha256:[0-9a-f]{64}$", i) for i in found), (manifest, found)


@pytest.mark.parametrize("image", ["123456789012.dkr.ecr.us-west-2.amazonaws.com/reid3dsl:latest",
                                   "123456789012.dkr.ecr.us-west-2.amazonaws.com/reid3dsl:3f2a9c1d0b7e",
                                   "123456789012.dkr.ecr.us-west-2.amazonaws.com/reid3dsl@sha256:abc"])
def test_render_refuses_an_image_not_pinned_by_digest(image: str) -> None:
    done = render("aws.yaml", {**fake_env(), "REID3DSL_IMAGE": image})
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "REID3DSL_IMAGE" in done.stderr and "digest" in done.stderr


def test_every_base_image_is_pinned_by_a_digest() -> None:
    """A literal @sha256:… or a digest build argument that has no default (the build then needs it) or a
    sha256 one; the digests were not resolved on these machines, so none is made up here."""
    defaults = arg_defaults()
    declared = {args.split("=", 1)[0] for instr, args in dockerfile_instructions() if instr == "ARG"}
    names = list(stages())
    for instr, args in dockerfile_instructions():
        if instr != "FROM":
            continue
        ref = args.split()[0]
        if ref in names:
            continue
        assert "@" in ref, f"FROM {ref}: not pinned by digest"
        image, digest = ref.split("@", 1)
        if digest.startswith("${"):
            arg = digest.strip("${}")
            assert arg in declared, f"FROM {ref}: {arg} is not declared"
            assert arg not in defaults or DIGEST.fullmatch(defaults[arg]), f"{arg}={defaults.get(arg)}"
        else:
            assert DIGEST.fullmatch(digest), ref
        base = defaults.get(image.strip("${}"), image)
        assert ":" in base and not base.endswith(":latest"), f"FROM {base}: name a version tag beside the digest"
    first = (ROOT / "Dockerfile").read_text().splitlines()[0]
    assert not first.startswith("# syntax=") or "@sha256:" in first, "the frontend image is pulled by tag"


def test_build_without_digests_names_an_invalid_reference_instead_of_pulling_by_tag() -> None:
    """With the digest arguments unset, every external FROM ends in a bare `@`: Docker refuses it."""
    defaults = arg_defaults()
    for instr, args in dockerfile_instructions():
        if instr == "FROM" and args.split()[0] not in stages():
            ref = args.split()[0]
            image, digest = ref.split("@", 1)
            resolved = defaults.get(image.strip("${}"), image) + "@" + defaults.get(digest.strip("${}"), "")
            assert resolved.endswith("@") or DIGEST.search(resolved), resolved


# --- dependencies: locked with hashes ----------------------------------------------------------------------------


@pytest.mark.parametrize("lock", ["requirements.lock", "requirements-mlflow.lock"])
def test_lock_files_pin_every_distribution_with_hashes(lock: str) -> None:
    entries = re.split(r"\n(?=[A-Za-z0-9])", (ROOT / lock).read_text().split("\n", 2)[2].strip())
    assert len(entries) > 10
    for entry in entries:
        if entry.startswith("#"):
            continue
        assert re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[^\]]*\])?==\S+", entry), entry.splitlines()[0]
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", entry), f"{entry.splitlines()[0]}: no hash"


def test_every_install_in_the_images_checks_hashes_or_installs_only_the_project() -> None:
    for stage, instructions in stages().items():
        for instr, args in instructions:
            if instr != "RUN" or "install" not in args:
                continue
            for command in re.split(r"&&|;", args):
                if re.search(r"\bpip install\b", command):
                    project = "--no-deps" in command and "--no-build-isolation" in command and "-r" not in command
                    locked = "--require-hashes" in command and re.search(r"-r \S+\.lock\b", command)
                    assert project or locked, f"{stage}: {command.strip()}"
                if "uv venv" in command:
                    assert "--seed" not in command, f"{stage}: --seed installs pip unpinned"


def test_gitignore_keeps_terraform_state_plans_variables_and_crash_logs_out_and_the_lock_file_in() -> None:
    ignored = ["infra/terraform.tfstate", "infra/terraform.tfstate.backup", "infra/terraform.tfstate.1700000000.backup",
               "infra/.terraform/providers/registry.terraform.io/hashicorp/aws/x", "infra/prod.tfvars",
               "infra/secrets.auto.tfvars.json", "infra/plan.tfplan", "infra/crash.log", "infra/crash.1700.log",
               "infra/.terraform.tfstate.lock.info"]
    kept = ["infra/main.tf", "infra/.terraform.lock.hcl", "infra/variables.tf"]

    def is_ignored(rel: str) -> bool:
        done = subprocess.run(["git", "check-ignore", "-q", "--no-index", rel], cwd=ROOT)
        assert done.returncode in (0, 1)
        return done.returncode == 0

    assert [p for p in ignored if not is_ignored(p)] == []
    assert [p for p in kept if is_ignored(p)] == []
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert not re.search(r"\.tfstate|\.tfvars|\.tfplan|/\.terraform/", tracked)
    # Nor into an image: .dockerignore has its own list (Docker does not read .gitignore).
    assert [p for p in ignored if not p.endswith(".log") and not dockerignore_excludes(p)] == []
