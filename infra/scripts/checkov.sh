#!/usr/bin/env bash
# Static security scan of infra/terraform with a pinned checkov.
#
# checkov pins its own (old) boto3 and friends, so it lives in its own venv, never in the project's:
#   CHECKOV_VENV    venv to use/create (default: <repo>/.venv-checkov); reused while it holds CHECKOV_VERSION
#   CHECKOV_PYTHON  interpreter that creates the venv (default: python3)
# Extra arguments go to checkov, e.g. `infra/scripts/checkov.sh -o json`.
# Exit status is checkov's: non-zero when any check fails. Suppressions are inline, each with its reason:
#   grep -rn 'checkov:skip' infra/terraform
set -euo pipefail

CHECKOV_VERSION="3.3.30"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${CHECKOV_VENV:-$ROOT/.venv-checkov}"
PYTHON="${CHECKOV_PYTHON:-python3}"

installed_version() {
  "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("checkov"))' 2>/dev/null || true
}

if [ ! -x "$VENV/bin/checkov" ] || [ "$(installed_version)" != "$CHECKOV_VERSION" ]; then
  echo "checkov.sh: installing checkov==$CHECKOV_VERSION into $VENV" >&2
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION" >&2
fi

cd "$ROOT"
# --skip-download: no Prisma Cloud calls (guidelines, severities); the scan itself is fully offline.
exec "$VENV/bin/checkov" \
  -d infra/terraform \
  --framework terraform \
  --quiet \
  --compact \
  --skip-download \
  "$@"
