#!/usr/bin/env bash
# Schemathesis against a real `safe-run serve` on loopback: property-based requests generated
# from the served OpenAPI document (/v1/openapi.json), checking that no answer is a 5xx and every
# answer conforms to the document (status, content type, headers, body schema). Bounded: at most
# MAX_TIME seconds (default 120) and MAX_EXAMPLES per operation. Needs root (the daemon makes
# real sandboxes) and network access to PyPI once (schemathesis goes into .venv-schemathesis).
#
#   bench/serve/schemathesis.sh            # a debug build; 120 s
#   MAX_TIME=600 bench/serve/schemathesis.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
MAX_TIME=${MAX_TIME:-120}
MAX_EXAMPLES=${MAX_EXAMPLES:-50}
VENV=.venv-schemathesis
[[ -x $VENV/bin/st ]] || { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q schemathesis==4.32.5; }
cargo build -q -p sr-cli
BIN=$PWD/target/debug/safe-run
WORK=$(mktemp -d /tmp/sr-schemathesis.XXXXXX)
export SAFE_RUN_WORKDIR_BASE=$WORK/runs SAFE_RUN_CONFIG=$WORK/config.json
echo '{"allowedMountPrefixes": ["'"$WORK"'/share"]}' > "$SAFE_RUN_CONFIG"
TOKEN=$("$BIN" token create --scopes admin --tokens "$WORK/tokens.json" 2>/dev/null)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BIN" serve --socket "$WORK/serve.sock" --listen "127.0.0.1:$PORT" --tokens "$WORK/tokens.json" 2>"$WORK/serve.log" &
DAEMON=$!
trap 'kill -TERM $DAEMON 2>/dev/null; wait $DAEMON 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
# The PTY route is a WebSocket (schemathesis speaks HTTP only); the rest is generated.
set +e
"$VENV/bin/st" run "http://127.0.0.1:$PORT/v1/openapi.json" \
  -H "Authorization: Bearer $TOKEN" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance \
  --exclude-path-regex '/pty$' \
  --max-time "$MAX_TIME" --max-examples "$MAX_EXAMPLES" --workers 2 \
  --suppress-health-check all
rc=$?
set -e
echo "schemathesis exit: $rc; daemon alive: $(kill -0 $DAEMON 2>/dev/null && echo yes || echo no)"
exit $rc
