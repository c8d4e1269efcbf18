# reid3dsl images. Two targets:
#   node   (default) the image of every Ray node — head and GPU workers, cluster launcher and KubeRay alike:
#          CUDA 13 runtime (torch 2.12.1 is a cu130 build), Python 3.11, the pinned stack installed from
#          requirements.lock (pyproject.toml's stack with every version and hash fixed: `make lock`), the project
#          itself, `ray` on PATH, a non-root user `ray`.
#   mlflow the MLflow tracking server of infra/ (basic-auth app, PostgreSQL backend, S3 artifact store), from
#          requirements-mlflow.lock.
#
# Every base image is pinned by digest, and the digests are build arguments without defaults: they were not
# resolved on the project's machines (no registry but PyPI is reachable there), and a made-up digest would be
# worse than none. Resolve each tag once where Docker Hub / ghcr.io are reachable, check it, and pass it (or
# commit it as the ARG's default):
#   docker buildx imagetools inspect nvidia/cuda:13.0.2-runtime-ubuntu24.04      # the line "Digest: sha256:..."
#   docker build --build-arg CUDA_DIGEST=sha256:... --build-arg UV_DIGEST=sha256:... -t IMAGE .
#   docker build --target mlflow --build-arg PYTHON_DIGEST=sha256:... -t MLFLOW_IMAGE .
# Without them `FROM name:tag@` is an invalid reference and the build stops before anything is pulled.
#
# Not built on the project's own machines (no Docker daemon); tests/test_deploy_static.py and
# tests/test_deploy_security.py check it statically.

ARG CUDA_IMAGE=nvidia/cuda:13.0.2-runtime-ubuntu24.04
ARG CUDA_DIGEST
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.8
ARG UV_DIGEST
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG PYTHON_DIGEST

FROM ${UV_IMAGE}@${UV_DIGEST} AS uv

# ---------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}@${PYTHON_DIGEST} AS mlflow
# MLflow at requirements.lock's version (requirements-mlflow.lock is held to it); psycopg2 for the PostgreSQL
# backend, boto3 for the S3 artifacts. Every file's hash is checked.
COPY requirements-mlflow.lock /tmp/requirements-mlflow.lock
RUN pip install --no-cache-dir --require-hashes -r /tmp/requirements-mlflow.lock \
    && useradd --uid 1000 --create-home mlflow
# The basic-auth app's settings: users, roles and permissions live in the same PostgreSQL database as the runs
# (their own tables and migration table), reached like the tracking store through libpq's PG* environment
# (PGHOST, PGUSER, PGDATABASE, PGPASSWORD, PGSSLMODE: infra/main.tf), so no password is in a file, an image
# or a command line. The admin user is created on the first start from MLFLOW_AUTH_ADMIN_USERNAME and
# MLFLOW_AUTH_ADMIN_PASSWORD (a secret); signed-in users may read what others logged.
RUN mkdir -p /etc/mlflow \
    && printf '[mlflow]\ndefault_permission = READ\ndatabase_uri = postgresql://\nauthorization_function = mlflow.server.auth:authenticate_request_basic_auth\n' \
        > /etc/mlflow/basic_auth.ini
ENV MLFLOW_AUTH_CONFIG_PATH=/etc/mlflow/basic_auth.ini
USER mlflow
WORKDIR /home/mlflow
EXPOSE 5000
ENTRYPOINT ["mlflow", "server", "--app-name", "basic-auth"]
CMD ["--host", "0.0.0.0", "--port", "5000"]

# ---------------------------------------------------------------------------------------------------------
FROM ${CUDA_IMAGE}@${CUDA_DIGEST} AS node

ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_PREFERENCE=only-managed \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# rsync and ssh: the Ray cluster launcher syncs files into the container and the head reaches the workers
# with ssh; wget: KubeRay's probes; g++: the ops DeepSpeed and Triton compile on first use.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        bash ca-certificates rsync openssh-client wget g++ \
    && rm -rf /var/lib/apt/lists/*

COPY --from=uv /uv /uvx /usr/local/bin/

# Python 3.11 (ubuntu 24.04 ships 3.12) managed by uv under /opt, readable by every user (uv checks the
# download against the checksum it carries for that release).
RUN uv python install 3.11 \
    && uv venv --python 3.11 "$VIRTUAL_ENV"

# The locked stack first (its own layer: it changes only with requirements.lock), then the project. Every
# distribution's hash is checked; pip (for Ray runtime environments that ask for packages) and the build
# backend come from the lock too, and the project is built without build isolation, so nothing is fetched
# unpinned.
COPY requirements.lock /tmp/reid3dsl/requirements.lock
RUN uv pip install --no-cache --require-hashes -r /tmp/reid3dsl/requirements.lock

# uid 1000 as in Ray's own images (KubeRay's examples assume it); ubuntu 24.04 gives it to `ubuntu`.
RUN (userdel --remove ubuntu 2>/dev/null || true) \
    && useradd --uid 1000 --create-home --shell /bin/bash ray
WORKDIR /home/ray/reid3dsl
COPY --chown=ray:ray . /home/ray/reid3dsl
RUN uv pip install --no-cache --no-deps --no-build-isolation /home/ray/reid3dsl \
    && python -c "import reid3dsl, torch, torchvision, pytorch3d, smplx, deepspeed, ray.train, webdataset, mlflow" \
    && ray --version

USER ray
CMD ["bash"]
