#!/usr/bin/env bash
# Render a cluster manifest: replace its ${REID3DSL_*} references by the infrastructure's values and
# leave every other `$` alone (e.g. $RAY_HEAD_IP, which Ray fills in on the node).
#
#   cluster/render.sh cluster/aws.yaml > cluster/aws.rendered.yaml
#   cluster/render.sh cluster/rayjob.yaml | kubectl apply -f -
#
# Values come from the environment; where REID3DSL_REGION is unset they are read first from
# `terraform -chdir=infra output -raw cluster_env`. A reference without a value stops it (exit 2).
set -euo pipefail

usage="usage: cluster/render.sh MANIFEST > RENDERED"
manifest=${1:?$usage}
if [[ ! -f $manifest ]]; then
    echo "error: manifest '$manifest': not found (expected e.g. cluster/aws.yaml)" >&2
    exit 2
fi

if [[ -z ${REID3DSL_REGION:-} ]]; then
    infra="$(cd "$(dirname "${BASH_SOURCE[0]}")/../infra" && pwd)"
    if ! env_lines=$(terraform -chdir="$infra" output -raw cluster_env 2>/dev/null); then
        echo "error: no REID3DSL_* values: run 'terraform apply' in $infra first (infra/README.md), or export them" >&2
        exit 2
    fi
    eval "$env_lines"
fi

# Images are pinned by digest (infra resolves image_tag to one): a tag such as :latest could change under a
# running cluster, so a manifest is never rendered with one.
if grep -q '\${REID3DSL_IMAGE}' "$manifest" && [[ -n ${REID3DSL_IMAGE:-} ]] \
        && ! [[ $REID3DSL_IMAGE =~ @sha256:[0-9a-f]{64}$ ]]; then
    echo "error: REID3DSL_IMAGE '$REID3DSL_IMAGE' (used in $manifest) is not pinned by digest: expected REPOSITORY@sha256:<64 hex>" >&2
    exit 2
fi

text=$(<"$manifest")
for name in $(grep -o '\${REID3DSL_[A-Z0-9_]*}' "$manifest" | sort -u | tr -d '${}'); do
    if [[ -z ${!name:-} ]]; then
        echo "error: $name (used in $manifest) has no value: expected it from infra's cluster_env output" >&2
        exit 2
    fi
    text=${text//"\${$name}"/"${!name}"}  # quoted: a value's `&` stays itself
done
printf '%s\n' "$text"
