#!/usr/bin/env bash
# The demo: builds busybox:latest offline, applies specs/demo.yaml, shows it serving, then deletes it.
# The runtime is $ORCHESTR_RUNTIME (default native: no container engine needed); DEMO_KEEP=1 leaves the demo running at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PWD/.venv/bin:$PATH

export ORCHESTR_RUNTIME=${ORCHESTR_RUNTIME:-native}  # get, logs and delete use it too
RUNTIME=$ORCHESTR_RUNTIME
SPEC=specs/demo.yaml
URL=http://127.0.0.1:18080/  # the edge service's published port in $SPEC

step() { printf '\n==> %s\n' "$*"; }

tmp=$(mktemp -d)
applied=""
cleanup() {
    rm -rf "$tmp"
    # Leave nothing behind when a step failed halfway.
    if [[ -n $applied ]]; then
        step "cleaning up after a failed step"
        orchestr delete -f "$SPEC" || true
    fi
}
trap cleanup EXIT

step "building busybox:latest offline and importing it into the $RUNTIME runtime"
python scripts/mkimage.py "$tmp/busybox.tar" --ref busybox:latest
orchestr images import --runtime "$RUNTIME" "$tmp/busybox.tar"

step "orchestr apply -f $SPEC --runtime $RUNTIME"
applied=yes
orchestr apply -f "$SPEC" --runtime "$RUNTIME"

step "orchestr get -n demo"
orchestr get -n demo

step "fetching $URL"
python - "$URL" <<'EOF'
import sys, time, urllib.request

url = sys.argv[1]
for attempt in range(50):  # the web server may take a moment to bind
    try:
        with urllib.request.urlopen(url, timeout=2) as page:
            print(page.read().decode().strip())
            break
    except OSError as exc:
        error = exc
        time.sleep(0.2)
else:
    sys.exit(f"demo: {url} did not answer: {error}")
EOF

step "orchestr logs -n demo worker-0 --tail 3"
sleep 1
orchestr logs -n demo worker-0 --tail 3

step "applying again: the planner finds nothing to do"
orchestr apply -f "$SPEC" --runtime "$RUNTIME"

if [[ ${DEMO_KEEP:-} == 1 ]]; then
    applied=""
    step "left running; remove it with: orchestr delete -f $SPEC"
    exit 0
fi

step "orchestr delete -f $SPEC"
orchestr delete -f "$SPEC"
applied=""
