#!/usr/bin/env bash
# Debian packages the test suite needs, installed only when missing (root, or sudo, for apt-get):
# PostgreSQL's server binaries, for the throwaway database servers the suite starts itself; and
# Chromium, the browser the dashboard tests drive (Playwright's own browser download needs the
# internet), with its recommended fonts so that pages render as people see them.
set -euo pipefail

missing=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
browser=()
[ -x /usr/bin/chromium ] || browser+=(chromium)

if [ ${#missing[@]} -eq 0 ] && [ ${#browser[@]} -eq 0 ]; then
    exit 0
fi
echo "installing Debian packages: ${missing[*]} ${browser[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
$sudo apt-get update -qq
if [ ${#missing[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ ${#browser[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${browser[@]}" >/dev/null
fi
