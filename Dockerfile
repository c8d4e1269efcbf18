# syntax=docker/dockerfile:1
# reid3dsl images. Two targets:
#   node   (default) the image of every Ray node — head and GPU workers, cluster launcher and KubeRay alike:
#          CUDA 13 runtime (torch 2.12.1 is a cu130 build), Python 3.11, the pinned stack installed from
#          this project's pyproject.toml, the project itself, `ray` on PATH, a non-root user `ray`.
#   mlflow the MLflow tracking server of infra/ (PostgreSQL backend, S3 artifact store).
#
#   docker build -t reid3dsl:latest .
#   docker build --target mlflow -t reid3dsl-mlflow:latest .
#
# Not built on the project's own machines (no Docker daemon, no registry but PyPI); tests/test_deploy_static.py
# checks it statically.

ARG CUDA_IMAGE=nvidia/cuda:13.0.2-runtime-ubuntu24.04
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.8

FROM ${UV_IMAGE} AS uv

# ---------------------------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS mlflow
# The same MLflow line as pyproject.toml; psycopg2 for the PostgreSQL backend, boto3 for the S3 artifacts.
RUN pip install --no-cache-dir "mlflow>=3.17,<3.18" boto3 psycopg2-binary \
    && useradd --uid 1000 --create-home mlflow
USER mlflow
WORKDIR /home/mlflow
EXPOSE 5000
ENTRYPOINT ["mlflow", "server"]
CMD ["--host", "0.0.0.0", "--port", "5000"]

# ---------------------------------------------------------------------------------------------------------
FROM ${CUDA_IMAGE} AS node

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

# Python 3.11 (ubuntu 24.04 ships 3.12) managed by uv under /opt, readable by every user; --seed brings pip
# for Ray runtime environments that ask for packages.
RUN uv python install 3.11 \
    && uv venv --seed --python 3.11 "$VIRTUAL_ENV"

# The pinned stack first (its own layer: it changes only with pyproject.toml), then the project.
COPY pyproject.toml /tmp/reid3dsl/pyproject.toml
RUN uv pip install --no-cache -r /tmp/reid3dsl/pyproject.toml

# uid 1000 as in Ray's own images (KubeRay's examples assume it); ubuntu 24.04 gives it to `ubuntu`.
RUN (userdel --remove ubuntu 2>/dev/null || true) \
    && useradd --uid 1000 --create-home --shell /bin/bash ray
WORKDIR /home/ray/reid3dsl
COPY --chown=ray:ray . /home/ray/reid3dsl
RUN uv pip install --no-cache --no-deps /home/ray/reid3dsl \
    && python -c "import reid3dsl, torch, torchvision, pytorch3d, smplx, deepspeed, ray.train, webdataset, mlflow" \
    && ray --version

USER ray
CMD ["bash"]
