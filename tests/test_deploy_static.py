"""Deployment files checked without a cloud or a Docker daemon: the Dockerfile, .dockerignore, the cluster
manifests (through cluster/render.sh), cluster/local.sh and the Terraform of infra/."""

from __future__ import annotations

import fnmatch
import importlib.metadata
import importlib.util
import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
INFRA = ROOT / "infra"
VAR_REF = re.compile(r"\$\{(REID3DSL_[A-Z0-9_]+)\}")


# --- Dockerfile and .dockerignore ---------------------------------------------------------------------------


def dockerfile_instructions(path: Path = ROOT / "Dockerfile") -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    joined, current = [], ""
    for line in path.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        joined.append(current + line)
        current = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1].strip()) for text in joined]


def stages() -> dict[str, list[tuple[str, str]]]:
    """The Dockerfile's stages by name, in order, each with its instructions (the FROM first)."""
    found: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for instr, args in dockerfile_instructions():
        if instr == "FROM":
            name = args.split()[-1] if " AS " in args.upper() else f"stage{len(found)}"
            current = found.setdefault(name, [])
        if current is not None:
            current.append((instr, args))
    return found


def dockerignore_excludes(rel: str) -> bool:
    """Whether .dockerignore keeps `rel` (a path relative to the build context) out of the context."""
    patterns = [
        p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")
    ]
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        for prefix in prefixes:
            if fnmatch.fnmatch(prefix, pattern) or (
                pattern.startswith("**/") and fnmatch.fnmatch(prefix.split("/")[-1], pattern[3:])
            ):
                return True
    return False


def arg_defaults() -> dict[str, str]:
    return dict(args.split("=", 1) for instr, args in dockerfile_instructions() if instr == "ARG" and "=" in args)


def test_node_image_is_the_default_target_on_a_cuda_runtime_matching_torch() -> None:
    names = list(stages())
    assert names[-1] == "node", "`docker build .` must give the Ray node image: its stage comes last"
    base = stages()["node"][0][1].split()[0].split("@")[0]  # the digest: tests/test_deploy_security.py
    image = arg_defaults().get(base.strip("${}"), base)
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-(?:cudnn-)?runtime-ubuntu\d+\.\d+", image)
    assert match, f"node base image {image}: expected an nvidia/cuda runtime tag"
    # torch/version.py read, not imported: torch takes seconds to import.
    torch_dir = importlib.util.find_spec("torch").submodule_search_locations[0]  # type: ignore[union-attr,index]
    torch_version = (Path(torch_dir) / "version.py").read_text()
    torch_cuda = re.search(r"^cuda: .*'(\d+)\.(\d+)'", torch_version, re.M)
    assert torch_cuda, "torch/version.py names no CUDA version"
    assert match.groups()[:2] == torch_cuda.groups(), f"{image} does not match torch's CUDA {torch_cuda.groups()}"


def test_node_image_runs_as_a_non_root_user_with_ray_on_path() -> None:
    node = stages()["node"]
    users = [args for instr, args in node if instr == "USER"]
    assert users and users[-1] not in ("root", "0"), "the node image must end on a non-root USER"
    env = " ".join(args for instr, args in node if instr == "ENV")
    venv = re.search(r"VIRTUAL_ENV=(\S+)", env)
    assert venv and f"PATH={venv.group(1)}/bin:" in env, "the venv holding ray must lead PATH"
    runs = " ".join(args for instr, args in node if instr == "RUN")
    assert "ray --version" in runs, "the build must prove `ray` runs"
    assert "python install 3.11" in runs


def locked(path: Path) -> dict[str, str]:
    """Distribution name (normalised) → version of a `make lock` file."""
    return {
        re.sub(r"[-_.]+", "-", m.group(1)).lower(): m.group(2)
        for m in re.finditer(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", path.read_text(), re.M)
    }


def test_image_installs_the_locked_stack_and_the_project_itself() -> None:
    node = stages()["node"]
    copies = [args.split() for instr, args in node if instr == "COPY" and "--from" not in args]
    assert any(c[0] == "requirements.lock" for c in copies), "the stack must come from the lock of pyproject.toml"
    runs = [args for instr, args in node if instr == "RUN"]
    assert any("pip install" in r and "-r /tmp/reid3dsl/requirements.lock" in r for r in runs)
    workdir = [args for instr, args in node if instr == "WORKDIR"][-1]
    assert any("--no-deps" in r and workdir in r for r in runs), "the project itself must be installed"


def test_lock_holds_every_pyproject_dependency_at_an_allowed_version() -> None:
    """requirements.lock is pyproject.toml resolved (`make lock`): a pin changed in one place only fails here."""
    import tomllib

    from packaging.requirements import Requirement

    lock = locked(ROOT / "requirements.lock")
    for line in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        req = Requirement(line)
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert name in lock, f"{req.name}: in pyproject.toml, not in requirements.lock (run `make lock`)"
        assert req.specifier.contains(lock[name], prereleases=True), f"{req.name}=={lock[name]} breaks {line!r}"


def test_every_copy_source_exists_and_is_in_the_build_context() -> None:
    for instr, args in dockerfile_instructions():
        if instr != "COPY" or "--from" in args:
            continue
        sources = [a for a in args.split() if not a.startswith("--")][:-1]
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
            if source != ".":
                assert not dockerignore_excludes(source), f"COPY {source}: excluded by .dockerignore"


@pytest.mark.parametrize(
    "kept_out",
    [
        ".venv/bin/python",
        "data/shards/x.tar",
        "mlflow.db",
        "mlruns/0/meta.yaml",
        "runs/reid3dsl/checkpoint",
        ".git/HEAD",
        "reid3dsl/__pycache__/a.pyc",
    ],
)
def test_dockerignore_keeps_data_venvs_and_mlflow_stores_out(kept_out: str) -> None:
    assert dockerignore_excludes(kept_out)


def test_dockerignore_keeps_every_tracked_project_file() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    wanted = [
        p
        for p in tracked.split()
        if p.split("/")[0] in {"reid3dsl", "shards", "configs", "pyproject.toml", "README.md", "ray_job.py"}
    ]
    assert wanted, "no tracked project files found"
    assert [p for p in wanted if dockerignore_excludes(p)] == []


def test_ray_job_upload_is_the_code_without_history_environments_data_stores_or_terraform_state(
    tmp_path: Path,
) -> None:
    """`ray job submit --working-dir .` packs what .gitignore and .rayignore leave, with Ray's own packer."""
    from zipfile import ZipFile

    from ray._private.runtime_env.packaging import create_package

    project = tmp_path / "project"
    ignore_files = (".gitignore", ".rayignore")
    code = ["ray_job.py", "reid3dsl/config.py", "shards/__main__.py", "configs/smoke.yaml", "cluster/local.sh",
            *ignore_files]
    left_out = [".git/HEAD", ".venv/bin/python", "data/shards/smoke/train-000000.tar", "runs/smoke/state.json",
                "mlflow.db", "mlartifacts/1/pictures/a.png", "infra/.terraform/providers/aws",
                "infra/terraform.tfstate", "infra/terraform.tfstate.backup", "smpl/SMPL_NEUTRAL.pkl",
                "amass/walk.npz", "shards-out/train-000000.tar", "reid3dsl/__pycache__/config.pyc"]
    for rel in code + left_out:
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_bytes((ROOT / rel).read_bytes() if rel in ignore_files else b"x")
    create_package(str(project), tmp_path / "pkg.zip", include_gitignore=True)
    assert sorted(ZipFile(tmp_path / "pkg.zip").namelist()) == sorted(code)


def test_mlflow_image_runs_the_same_mlflow_as_the_nodes() -> None:
    runs = " ".join(args for instr, args in stages()["mlflow"] if instr == "RUN")
    assert "-r /tmp/requirements-mlflow.lock" in runs
    server, nodes = locked(ROOT / "requirements-mlflow.lock"), locked(ROOT / "requirements.lock")
    assert server["mlflow"] == nodes["mlflow"], "requirements-mlflow.lock must be compiled against requirements.lock"
    assert all(server[n] == nodes[n] for n in server if n in nodes), "the server's shared packages drifted"
    assert "psycopg2-binary" in server and "boto3" in server, "the server needs PostgreSQL and S3 clients"


# --- cluster manifests ------------------------------------------------------------------------------------------


def cluster_env_exports() -> dict[str, str]:
    """Variable → Terraform expression of infra's `cluster_env` output."""
    outputs = {
        k.strip('"'): v for block in hcl2.load((INFRA / "outputs.tf").open())["output"] for k, v in block.items()
    }
    text = outputs["cluster_env"]["value"]
    return dict(re.findall(r"export (REID3DSL_[A-Z0-9_]+)=(\S*)", text))


def fake_env() -> dict[str, str]:
    """A plausible value for every exported variable, as `terraform output` would give them."""
    values = {
        "REID3DSL_REGION": "us-west-2",
        "REID3DSL_REGISTRY": "123456789012.dkr.ecr.us-west-2.amazonaws.com",
        "REID3DSL_CLUSTER_NAME": "reid3dsl",
        "REID3DSL_IMAGE": "123456789012.dkr.ecr.us-west-2.amazonaws.com/reid3dsl@sha256:" + "0123456789abcdef" * 4,
        "REID3DSL_BUCKET": "my-reid-bucket",
        "REID3DSL_MLFLOW_URI": "http://mlflow.reid3dsl.internal:5000",
        "REID3DSL_MLFLOW_USER": "reid3dsl",
        "REID3DSL_MLFLOW_SECRET": "arn:aws:secretsmanager:us-west-2:123456789012:secret:reid3dsl/mlflow/pw-AbCdEf",
        "REID3DSL_CHECKPOINT_SECRET": "arn:aws:secretsmanager:us-west-2:123456789012:secret:reid3dsl/ckpt-AbCdEf",
        "REID3DSL_AMI": "ami-0123456789abcdef0",
        "REID3DSL_SUBNET": "subnet-0123456789abcdef0",
        "REID3DSL_SECURITY_GROUP": "sg-0123456789abcdef0",
        "REID3DSL_HEAD_PROFILE": "arn:aws:iam::123456789012:instance-profile/reid3dsl-ray-head",
        "REID3DSL_WORKER_PROFILE": "arn:aws:iam::123456789012:instance-profile/reid3dsl-ray-worker",
        "REID3DSL_HEAD_INSTANCE_TYPE": "m6i.2xlarge",
        "REID3DSL_WORKER_INSTANCE_TYPE": "p4d.24xlarge",
        "REID3DSL_MAX_WORKERS": "4",
        "REID3DSL_NAMESPACE": "default",
        "REID3DSL_SERVICE_ACCOUNT": "reid3dsl-ray",
        "REID3DSL_PODS_ROLE_ARN": "arn:aws:iam::123456789012:role/reid3dsl-ray-pods",
    }
    assert set(values) == set(cluster_env_exports()), "keep this test's values in step with outputs.tf"
    return values


def render(manifest: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REID3DSL_")}
    return subprocess.run(
        [str(CLUSTER / "render.sh"), str(CLUSTER / manifest)], env={**clean, **env}, capture_output=True, text=True
    )


def rendered(manifest: str) -> list[dict[str, Any]]:
    done = render(manifest, fake_env())
    assert done.returncode == 0, done.stderr
    assert VAR_REF.search(done.stdout) is None, "a reference was left unrendered"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def test_every_manifest_variable_is_exported_by_the_infrastructure_and_every_export_is_used() -> None:
    used = {m for f in CLUSTER.glob("*.yaml") for m in VAR_REF.findall(f.read_text())}
    exported = set(cluster_env_exports())
    assert used - exported == set(), "manifest variables that infra/outputs.tf does not export"
    assert exported - used == set(), "exports that no manifest uses"


def test_render_leaves_other_dollar_references_alone() -> None:
    (config,) = rendered("aws.yaml")
    assert any("$RAY_HEAD_IP" in cmd for cmd in config["worker_start_ray_commands"])


def test_render_stops_with_one_line_on_a_variable_without_value() -> None:
    env = {**fake_env(), "REID3DSL_PODS_ROLE_ARN": ""}
    done = render("rayjob.yaml", env)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "REID3DSL_PODS_ROLE_ARN" in done.stderr


def test_cluster_launcher_config_passes_rays_own_schema() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    (config,) = rendered("aws.yaml")
    # What `ray up` does before anything else; raises on any key or type the launcher would reject.
    validate_config(prepare_config(config))
    env = fake_env()
    assert config["docker"]["image"] == env["REID3DSL_IMAGE"]
    head = config["available_node_types"][config["head_node_type"]]
    workers = [t for name, t in config["available_node_types"].items() if name != config["head_node_type"]]
    assert workers and all(t["max_workers"] == int(env["REID3DSL_MAX_WORKERS"]) for t in workers)
    assert head["node_config"]["IamInstanceProfile"]["Arn"] == env["REID3DSL_HEAD_PROFILE"]
    assert all(t["node_config"]["IamInstanceProfile"]["Arn"] == env["REID3DSL_WORKER_PROFILE"] for t in workers)
    assert all(t["node_config"]["InstanceType"] == env["REID3DSL_WORKER_INSTANCE_TYPE"] for t in workers)


def test_cluster_launcher_keeps_token_auth_on_and_no_keys_in_files() -> None:
    (config,) = rendered("aws.yaml")
    assert "--env RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    assert "~/.ray/auth_token" in config["file_mounts"]
    text = (CLUSTER / "aws.yaml").read_text()
    assert not re.search(r"AWS_(SECRET_)?ACCESS_KEY|aws_access_key_id|KeyName", text)


def test_cluster_launcher_setup_commands_are_repeatable() -> None:
    (config,) = rendered("aws.yaml")
    for cmd in config["setup_commands"] + config["initialization_commands"]:
        # Appending to files or installing packages would change the node on every `ray up`.
        assert ">>" not in cmd and "pip install" not in cmd and "apt-get install" not in cmd, cmd


def test_rayjob_is_a_kuberay_rayjob_with_the_image_token_and_service_account_everywhere() -> None:
    docs = rendered("rayjob.yaml")
    (job,) = [d for d in docs if d["kind"] == "RayJob"]
    (account,) = [d for d in docs if d["kind"] == "ServiceAccount"]
    env = fake_env()
    assert job["apiVersion"] == "ray.io/v1"
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == env["REID3DSL_PODS_ROLE_ARN"]
    spec = job["spec"]
    cluster = spec["rayClusterSpec"]
    pods = [spec["submitterPodTemplate"], cluster["headGroupSpec"]["template"]]
    pods += [g["template"] for g in cluster["workerGroupSpecs"]]
    for pod in pods:
        assert pod["spec"]["serviceAccountName"] == account["metadata"]["name"]
        (container,) = pod["spec"]["containers"]
        assert container["image"] == env["REID3DSL_IMAGE"]
        variables = {e["name"]: e for e in container["env"]}
        assert variables["RAY_AUTH_MODE"]["value"] == "token"
        assert "secretKeyRef" in variables["RAY_AUTH_TOKEN"]["valueFrom"], "the token comes from a Secret"
    assert "command" not in pods[0]["spec"]["containers"][0], "KubeRay fills in the submitter's command"
    assert all(
        int(g["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]) > 0
        for g in cluster["workerGroupSpecs"]
    )
    assert cluster["rayVersion"].rsplit(".", 1)[0] == importlib.metadata.version("ray").rsplit(".", 1)[0]


def test_rayjob_runs_in_the_images_project_folder() -> None:
    (job,) = [d for d in rendered("rayjob.yaml") if d["kind"] == "RayJob"]
    working_dir = yaml.safe_load(job["spec"]["runtimeEnvYAML"])["working_dir"]
    assert working_dir == [args for instr, args in stages()["node"] if instr == "WORKDIR"][-1]


def test_rayjob_entrypoint_names_an_existing_script_config_and_valid_overrides() -> None:
    from reid3dsl.config import load_config

    (job,) = [d for d in rendered("rayjob.yaml") if d["kind"] == "RayJob"]
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["python", "ray_job.py"] and (ROOT / argv[1]).is_file()
    config = argv[argv.index("--config") + 1]
    assert (ROOT / config).is_file(), f"{config}: the training job's config is missing"
    overrides = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    cfg = load_config(ROOT / config, overrides, env={})
    assert cfg.data.root.startswith("s3://") and cfg.cluster.storage_path.startswith("s3://")
    assert cfg.tracking.uri == fake_env()["REID3DSL_MLFLOW_URI"]
    assert cfg.cluster.use_gpu is True


@pytest.mark.parametrize("script", ["local.sh", "render.sh"])
def test_cluster_scripts_pass_bash_syntax_check(script: str) -> None:
    done = subprocess.run(["bash", "-n", str(CLUSTER / script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert os.access(CLUSTER / script, os.X_OK), f"cluster/{script} is not executable"


def test_local_sh_without_a_command_prints_usage_and_exits_2() -> None:
    done = subprocess.run([str(CLUSTER / "local.sh")], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("usage:")


def test_submitted_jobs_get_the_configs_relative_paths_pinned_to_the_checkout(tmp_path: Path) -> None:
    """What local.sh adds to its submit line: a job in Ray's copy of the checkout must use the checkout's data,
    body, checkpoints and sqlite store; absolute paths and URLs stay as they are."""
    from reid3dsl.config import load_config
    from reid3dsl.train.driver import pinned_paths

    cfg = load_config(ROOT / "configs" / "smoke.yaml", [
        "body.prior_path=/opt/amass", "data.train_urls=[extra/train-000000.tar, s3://b/train-000001.tar]",
    ], env={})
    pins = pinned_paths(cfg, tmp_path)
    pinned = load_config(ROOT / "configs" / "smoke.yaml", pins, env={})
    assert pinned.data.root == str(tmp_path / "data" / "shards" / "smoke")
    assert pinned.body.standin_dir == str(tmp_path / "data" / "body")
    assert pinned.cluster.storage_path == str(tmp_path / "runs")
    assert pinned.data.train_urls == [str(tmp_path / "extra" / "train-000000.tar"), "s3://b/train-000001.tar"]
    assert pinned.tracking.uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert not any(p.startswith(("body.prior_path=", "body.model_path=")) for p in pins)


# --- Terraform ----------------------------------------------------------------------------------------------------


def terraform() -> dict[str, Any]:
    """Declarations of every infra/*.tf file, merged: {"variable": {...}, "resource": {(type, name): body}, ...}."""
    merged: dict[str, Any] = {"variable": {}, "locals": {}, "resource": {}, "data": {}, "ephemeral": {}, "output": {}}
    for path in sorted(INFRA.glob("*.tf")):
        parsed = hcl2.load(path.open())
        for kind in ("variable", "output"):
            for block in parsed.get(kind, []):
                merged[kind].update({name.strip('"'): body for name, body in block.items()})
        for block in parsed.get("locals", []):
            merged["locals"].update({k: v for k, v in block.items() if not k.startswith("__")})
        for kind in ("resource", "data", "ephemeral"):
            for block in parsed.get(kind, []):
                for rtype, named in block.items():
                    for name, body in named.items():
                        merged[kind][(rtype.strip('"'), name.strip('"'))] = body
    return merged


def test_terraform_parses_and_every_reference_is_declared() -> None:
    tf = terraform()
    text = "\n".join(
        line
        for path in INFRA.glob("*.tf")
        for line in path.read_text().splitlines()
        if not line.lstrip().startswith("#")
    )
    for name in set(re.findall(r"\bvar\.([a-z0-9_]+)", text)):
        assert name in tf["variable"], f"var.{name} is not declared in variables.tf"
    for name in set(re.findall(r"\blocal\.([a-z0-9_]+)", text)):
        assert name in tf["locals"], f"local.{name} is not declared"
    for kind in ("data", "ephemeral"):
        for rtype, name in set(re.findall(rf"\b{kind}\.([a-z0-9_]+)\.([a-z0-9_]+)", text)):
            assert (rtype, name) in tf[kind], f"{kind}.{rtype}.{name} is not declared"
    for rtype, name in set(re.findall(r"(?<![.\w])((?:aws|random)_[a-z0-9_]+)\.([a-z0-9_]+)", text)):
        assert (rtype, name) in tf["resource"], f"{rtype}.{name} is not declared"
    declared = set(re.findall(r'^variable "([a-z0-9_]+)"', (INFRA / "variables.tf").read_text(), re.M))
    assert declared - set(re.findall(r"\bvar\.([a-z0-9_]+)", text)) == set(), "variables nobody uses"


def test_infrastructure_has_variables_for_region_bucket_and_instance_types() -> None:
    variables = terraform()["variable"]
    for name in ("region", "bucket_name", "head_instance_type", "worker_instance_type"):
        assert name in variables
    assert "default" not in variables["bucket_name"], "a bucket name must be chosen, never defaulted"


def test_bucket_is_versioned_encrypted_private_and_expires_old_checkpoints() -> None:
    res = terraform()["resource"]
    assert res[("aws_s3_bucket_versioning", "data")]["versioning_configuration"][0]["status"] == '"Enabled"'
    sse = res[("aws_s3_bucket_server_side_encryption_configuration", "data")]["rule"][0]
    assert sse["apply_server_side_encryption_by_default"][0]["sse_algorithm"] in ('"AES256"', '"aws:kms"')
    block = res[("aws_s3_bucket_public_access_block", "data")]
    assert all(
        block[k] is True
        for k in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets")
    )
    rules = res[("aws_s3_bucket_lifecycle_configuration", "data")]["rule"]
    expiring = [r for r in rules if "expiration" in r]
    assert [r["filter"][0]["prefix"] for r in expiring] == ['"checkpoints/"']
    assert any("noncurrent_version_expiration" in r for r in rules)


def test_node_policy_reads_shards_and_writes_only_checkpoints() -> None:
    (doc,) = [b for (t, n), b in terraform()["data"].items() if (t, n) == ("aws_iam_policy_document", "node_s3")]
    for statement in doc["statement"]:
        actions = " ".join(a.strip('"') for a in statement["actions"])
        resources = " ".join(r.strip('"') for r in statement["resources"])
        assert "s3:*" not in actions
        if re.search(r"Put|Delete", actions):
            assert resources == "${local.bucket_arn}/checkpoints/*", f"{statement['sid']}: writes outside checkpoints/"
        if "shards" in resources:
            assert actions == "s3:GetObject"


def test_mlflow_server_uses_a_database_backend_and_the_bucket_for_artifacts() -> None:
    task = terraform()["resource"][("aws_ecs_task_definition", "mlflow")]
    definition = str(task["container_definitions"])
    assert '"--backend-store-uri", "postgresql://"' in definition
    assert '"--artifacts-destination", "s3://${var.bucket_name}/mlflow"' in definition
    assert 'name = "PGHOST", value = aws_db_instance.mlflow.address' in definition
    assert ("aws_db_instance", "mlflow") in terraform()["resource"]
