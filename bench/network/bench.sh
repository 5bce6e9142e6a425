#!/usr/bin/env bash
# Network allowlist figures (root): run start-to-exit with allowlist vs none, and TCP throughput
# through a run's allowlist vs an unfiltered routed veth, side by side.
#
#   bench/network/bench.sh [path/to/safe-run]     (default: target/release/safe-run)
#
# Topology (all created here, all removed on exit; traffic only to these namespaces):
#   srbench-srv   10.214.250.2/30 behind veth srbsrv (host 10.214.250.1): iperf3 server on 5201,
#                 TCP echo on 7
#   srbench-raw   10.214.251.2/30 behind veth srbraw (host 10.214.251.1): the unfiltered client,
#                 routed by the host to srbench-srv, no nftables table, no NAT
#   the sandbox   safe-run's own veth, table and NAT, egress rule tcp 5201 to 10.214.250.2/32
# DNS: a stub on 127.0.0.1 (upstreamDns); the policies use CIDR rules, so it only proves no real
# resolver is asked.
set -euo pipefail
BIN=$(realpath "${1:-target/release/safe-run}")
OUT=$(mktemp -d /tmp/srbench-net.XXXXXX)
BYTES=${BYTES:-2G}
RUNS=${RUNS:-20}
SRV=10.214.250.2
saved_fwd=()

cleanup() {
  set +e
  [[ -n "${SRV_PID:-}" ]] && kill "$SRV_PID" 2>/dev/null
  [[ -n "${STUB_PID:-}" ]] && kill "$STUB_PID" 2>/dev/null
  ip link del srbsrv 2>/dev/null; ip link del srbraw 2>/dev/null
  ip netns del srbench-srv 2>/dev/null; ip netns del srbench-raw 2>/dev/null
  for kv in "${saved_fwd[@]}"; do sysctl -qw "$kv" 2>/dev/null; done
}
trap cleanup EXIT

host() { # name link third
  ip netns add "$1"
  ip link add "$2" type veth peer name eth0 netns "$1"
  ip addr add "10.214.$3.1/30" dev "$2"; ip link set "$2" up
  ip -n "$1" addr add "10.214.$3.2/30" dev eth0; ip -n "$1" link set eth0 up; ip -n "$1" link set lo up
  ip -n "$1" route add default via "10.214.$3.1"
}
host srbench-srv srbsrv 250
host srbench-raw srbraw 251
ip netns exec srbench-srv iperf3 -s -D -B "$SRV" --logfile "$OUT/iperf3-server.log"
SRV_PID=$(pgrep -f "iperf3 -s -D -B $SRV" | head -1)

# The unfiltered path needs forwarding on both veths (removed with them).
for ifc in srbsrv srbraw; do sysctl -qw "net.ipv4.conf.$ifc.forwarding=1"; done

python3 - "$OUT/stub.port" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0))
open(sys.argv[1], "w").write(str(s.getsockname()[1]))
while True:
    q, p = s.recvfrom(1500); s.sendto(q[:2] + b"\x81\x85" + q[4:], p)  # REFUSED
PY
STUB_PID=$!
sleep 0.5
cat > "$OUT/config.json" <<JSON
{"network": {"upstreamDns": "127.0.0.1:$(cat "$OUT/stub.port")"}}
JSON
export SAFE_RUN_CONFIG="$OUT/config.json" SAFE_RUN_WORKDIR_BASE="$OUT/runs"

policy() { # name network-block command args-json
  cat > "$OUT/$1.yaml" <<YAML
version: 1
name: bench-$1
runtime: { command: $3, args: $4, timeout: 120s }
mounts: []
network: $2
resources: { cpus: 2 }
evidence: { sign: false }
YAML
}
policy none '{ mode: none }' /bin/true '[]'
policy allow "{ mode: allowlist, egress: [ { cidr: $SRV/32, protocol: tcp, ports: [5201] } ] }" /bin/true '[]'
policy iperf "{ mode: allowlist, egress: [ { cidr: $SRV/32, protocol: tcp, ports: [5201] } ] }" /usr/bin/iperf3 \
  "[\"-c\", \"$SRV\", \"-n\", \"$BYTES\", \"-J\"]"

echo "== start-to-exit: /bin/true with network none vs allowlist ($RUNS runs each)"
hyperfine -N -w 3 -r "$RUNS" --export-json "$OUT/start_to_exit.json" \
  -n none "$BIN run --policy $OUT/none.yaml" \
  -n allowlist "$BIN run --policy $OUT/allow.yaml"

REPS=${REPS:-5}
echo "== TCP throughput, $BYTES per transfer, $REPS transfers per path (alternating), client -> $SRV:5201"
for i in $(seq "$REPS"); do
  ip netns exec srbench-raw iperf3 -c "$SRV" -n "$BYTES" -J > "$OUT/raw.$i.json"
  "$BIN" run --policy "$OUT/iperf.yaml" > "$OUT/allowlist.$i.json" 2>/dev/null
done
python3 - "$OUT" "$REPS" <<'PY'
import json, sys, glob, statistics
out, reps = sys.argv[1], int(sys.argv[2])
def gbps(path):
    d = json.load(open(path))
    return d["end"]["sum_received"]["bits_per_second"] / 1e9, d["end"]["sum_sent"]["retransmits"]
print(f"{'path':<36}{'median Gbit/s':>14}{'min':>8}{'max':>8}{'retransmits (median)':>22}")
for label, name in [("unfiltered routed veth", "raw"), ("safe-run allowlist (nft+ct+NAT)", "allowlist")]:
    xs = [gbps(f"{out}/{name}.{i}.json") for i in range(1, reps + 1)]
    g = [x[0] for x in xs]; r = [x[1] for x in xs]
    print(f"{label:<36}{statistics.median(g):>14.2f}{min(g):>8.2f}{max(g):>8.2f}{statistics.median(r):>22}")
h = json.load(open(f"{out}/start_to_exit.json"))["results"]
for r in h:
    print(f"start-to-exit {r['command']:<10} mean {r['mean']*1000:7.1f} ms  stddev {r['stddev']*1000:5.1f} ms  median {r['median']*1000:7.1f} ms")
for rep in glob.glob(f"{out}/runs/*/run_report.json"):
    r = json.load(open(rep))
    if r.get("policy", {}).get("name") == "bench-iperf":
        print("allowlist iperf run audit:", json.dumps(r["networkAudit"]["rules"])); break
PY
echo "raw outputs: $OUT"
leftover=$(nft list tables | grep -c safe_run_ || true)
echo "safe_run tables left: $leftover"
