#!/usr/bin/env bash
# A plain (non-editable) install of the project in a fresh venv serves the shipped sample from
# another directory: the sample log and the demo page are found as package data.
# Usage: scripts/check_plain_install.sh   (exit 0 when /healthz answered and / served the page)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
pid=
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q "$repo"
rm -rf "$repo/build"  # setuptools builds in the source tree
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cd "$work"
XDG_CACHE_HOME="$work/cache" "$work/venv/bin/qac" serve --port "$port" > "$work/serve.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do  # the first start builds the sample: about 50 s of CPU
  if python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/healthz', timeout=2)" 2>/dev/null; then
    python3 -c "import urllib.request as u; assert b'qac-client.js' in u.urlopen('http://127.0.0.1:$port/').read()"
    echo "plain install: qac serve answered /healthz and / from $work"
    exit 0
  fi
  kill -0 "$pid" 2>/dev/null || break
  sleep 1
done
echo "plain install: qac serve did not answer /healthz; its log:" >&2
cat "$work/serve.log" >&2
exit 1
