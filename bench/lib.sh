# Shared by the benchmarks (proxy.sh, gateway.sh): tools (installed when missing), the machine
# header, process helpers and one load measurement with oha. The functions read the caller's
# WORK, RESULTS, SERVER_CPU, LOADGEN_CPU, DURATION, PIDS, TARGET (pair -> port) and PROXIES
# (pair -> pids) when they run.
# shellcheck shell=bash

bash "$(dirname "$0")/install-tools.sh"
export PATH="$HOME/.cargo/bin:$PATH"
if oha --help 2>/dev/null | grep -q -- '--output-format'; then
  OHA_JSON=(--output-format json)
else
  OHA_JSON=(--json)
fi

# Optional per pair: the URL to load (default http://127.0.0.1:${TARGET[$pair]}/), and extra
# oha flags (e.g. --insecure for TLS). PER_PAIR: proxies per pair the CPU and RSS are divided by.
declare -gA URL=()
OHA_EXTRA=()
PER_PAIR="${PER_PAIR:-2}"

# The proxy binary (built with the `dist` profile the images ship, or MIZZEN_BIN prebuilt), a work directory WORK readable by
# nginx's `nobody` workers, and an exit trap that stops every process in PIDS and removes WORK.
bench_prologue() { # work-dir-name
  if [ -z "${MIZZEN_BIN:-}" ]; then
    cargo build -q --profile dist -p mizzen-proxy --bin mizzen-proxy --example hyper_floor
  fi
  MIZZEN="${MIZZEN_BIN:-$CARGO_TARGET_DIR/dist/mizzen-proxy}"
  # The bare hyper forwarder (proxy/examples/hyper_floor.rs): what the HTTP stack costs alone.
  FLOOR="${FLOOR_BIN:-$(dirname "$MIZZEN")/examples/hyper_floor}"
  WORK="$(mktemp -d "/tmp/$1.XXXXXX")"
  chmod 755 "$WORK"
  PIDS=()
  trap bench_cleanup EXIT
}

bench_cleanup() {
  for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}

machine_header() {
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
  echo "versions: $(oha --version | head -1); $(haproxy -v | head -1); $(nginx -v 2>&1)"
}

nginx_conf() { # name body
  cat >"$WORK/$1.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/$1.pid;
error_log $WORK/$1.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx-tmp; proxy_temp_path $WORK/nginx-tmp;
  fastcgi_temp_path $WORK/nginx-tmp; uwsgi_temp_path $WORK/nginx-tmp; scgi_temp_path $WORK/nginx-tmp;
  keepalive_requests 100000;
  $2
}
EOF
}
# One HAProxy in HTTP mode, one thread, keep-alive to its backend (WORK/<name>.cfg).
haproxy_conf() { # name listen-port target-port [bind-options] [server-options]
  cat >"$WORK/$1.cfg" <<EOF
global
  nbthread 1
  maxconn 4000
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend f
  bind 127.0.0.1:$2 ${4:-}
  default_backend b
backend b
  server s 127.0.0.1:$3 ${5:-}
EOF
}

start() { # name command... ; records the pid in PID_<name>
  local name=$1
  shift
  taskset -c "$SERVER_CPU" "$@" >"$WORK/$name.out" 2>&1 &
  PIDS+=($!)
  printf -v "PID_$name" '%s' "$!"
}
wait_port() {
  for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0
    sleep 0.1
  done
  echo "nothing answers on port $1" >&2
  exit 1
}

# nginx and haproxy fork/keep a master: measure every process of each instance.
pids_of() { # pid -> pid and its children
  echo "$1"
  pgrep -P "$1" || true
}
# CPU time of the processes: "<ns on CPU> <user ticks> <system ticks>". The nanoseconds come
# from the scheduler (every thread's schedstat) and are what the figures use: clock ticks are
# 10 ms, a few per cent of a measurement. The ticks give the user/system split.
cpu_times() { # pids...
  local ns=0 user=0 sys=0 p t f
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] || continue
    for t in /proc/"$p"/task/*/schedstat; do
      read -r f _ <"$t" 2>/dev/null && ns=$((ns + f))
    done
    # The fields after the command name, which is in parentheses and may hold spaces:
    # utime and stime are the 12th and 13th of them.
    f=$(<"/proc/$p/stat")
    read -r -a f <<<"${f##*) }"
    user=$((user + f[11])) sys=$((sys + f[12]))
  done
  echo "$ns $user $sys"
}
rss_kib() { # field pids...
  local f=$1 t=0
  shift
  for p in "$@"; do
    [ -r "/proc/$p/status" ] && t=$((t + $(awk -v f="$f:" '$1 == f {print $2}' "/proc/$p/status")))
  done
  echo "$t"
}

measure() { # pair connections rate round
  local pair=$1 conns=$2 rate=$3 round=$4 pids=()
  for p in ${PROXIES[$pair]}; do mapfile -t -O "${#pids[@]}" pids < <(pids_of "$p"); done
  local before="0 0 0"
  ((${#pids[@]})) && before=$(cpu_times "${pids[@]}")
  # Peak RSS per measurement, not since start: reset each process's high-water mark (Linux 4.0+;
  # needs the processes to be ours). Without it a 1000 rps figure would carry the peak of an
  # earlier 64-connection or highest-rate run.
  for p in "${pids[@]}"; do echo 5 >"/proc/$p/clear_refs" 2>/dev/null || true; done
  taskset -c "$LOADGEN_CPU" oha --no-tui "${OHA_JSON[@]}" ${OHA_EXTRA[@]+"${OHA_EXTRA[@]}"} -z "$DURATION" -q "$rate" -c "$conns" \
    --latency-correction "${URL[$pair]:-http://127.0.0.1:${TARGET[$pair]}/}" >"$WORK/oha.json"
  local after="0 0 0" hwm=0 rss=0
  if ((${#pids[@]})); then
    after=$(cpu_times "${pids[@]}")
    hwm=$(rss_kib VmHWM "${pids[@]}")
    rss=$(rss_kib VmRSS "${pids[@]}")
  fi
  python3 - "$WORK/oha.json" "$pair" "$conns" "$rate" "$round" "$before" "$after" "$hwm" "$rss" "$PER_PAIR" >>"$RESULTS" <<'EOF'
import json, sys
f, pair, conns, rate, rnd, before, after, hwm, rss, per = sys.argv[1:]
per = int(per)
ns, user, system = (a - b for a, b in zip(map(int, after.split()), map(int, before.split())))
user_share = user / (user + system) if user + system else 0.0
d = json.load(open(f))
s = d["summary"]
ok = sum(int(v) for k, v in d.get("statusCodeDistribution", {}).items() if k.startswith("2"))
# Requests still open when the duration ends are cut off by oha itself, not failures.
errors = sum(v for k, v in d.get("errorDistribution", {}).items() if "deadline" not in k) + sum(
    int(v) for k, v in d.get("statusCodeDistribution", {}).items() if not k.startswith("2"))
lp = d["latencyPercentiles"]
total = max(ok + errors, 1)
print(json.dumps({"kind": "load", "pair": pair, "conns": int(conns), "rate": int(rate), "round": rnd,
    "p50": lp["p50"] * 1000, "p90": lp["p90"] * 1000, "p99": lp["p99"] * 1000,
    "errors": errors, "requests": total, "rps": s.get("requestsPerSec", 0),
    "cpu_ms_per_1000": ns / 1e6 / total * 1000 / per,
    "user_ms_per_1000": ns * user_share / 1e6 / total * 1000 / per,
    "hwm_kib": int(hwm) / per, "rss_kib": int(rss) / per}))
EOF
}

# The mesh certificates of the mTLS pairs (issue 6) in DIR: one root; a client and a server
# leaf (ECDSA P-256) with SPIFFE ids, and a DNS name on the server leaf for nginx's name check.
# Every pair uses these files: root.pem, {client,server}.{pem,key,bundle.pem}.
mesh_certs() { # dir
  local C=$1 who san
  mkdir -p "$C"
  openssl ecparam -name prime256v1 -genkey -noout -out "$C/root.key" 2>/dev/null
  openssl req -x509 -new -key "$C/root.key" -subj "/O=cluster.local/CN=bench root" -days 2 \
    -addext "basicConstraints=critical,CA:true" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$C/root.pem" 2>/dev/null
  for who in client server; do
    openssl ecparam -name prime256v1 -genkey -noout -out "$C/$who.key.sec1" 2>/dev/null
    openssl pkcs8 -topk8 -nocrypt -in "$C/$who.key.sec1" -out "$C/$who.key"
    san="URI:spiffe://cluster.local/ns/bench/sa/$who"
    [ "$who" = server ] && san="$san,DNS:bench.mesh"
    openssl req -new -key "$C/$who.key" -subj "/O=cluster.local" -out "$C/$who.csr" 2>/dev/null
    printf 'basicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=%s\n' "$san" >"$C/$who.ext"
    openssl x509 -req -in "$C/$who.csr" -CA "$C/root.pem" -CAkey "$C/root.key" -CAcreateserial \
      -days 1 -extfile "$C/$who.ext" -out "$C/$who.pem" 2>/dev/null
    cat "$C/$who.pem" "$C/$who.key" >"$C/$who.bundle.pem" # HAProxy's crt: certificate then key
  done
  chmod 644 "$C"/*
}

# A sidecar's config for the pairs: the service `bench` (its one endpoint the inbound proxy at
# INBOUND-PORT; with MESHED=1 labelled as a sidecar, so the outbound proxy speaks mTLS to it)
# and 99 more services with routes and subsets, so memory and lookups reflect a real config.
mizzen_config() { # path inbound-port meshed(0|1)
python3 - "$1" "$2" "$3" <<'EOF'
import json, sys
path, inbound, meshed = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
def svc(name, endpoints):
    return {"host": f"{name}.default.svc.cluster.local", "aliases": [name],
            "namespace": "default", "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
            "endpoints": endpoints}
# A meshed endpoint carries the injector's label: the outbound proxy then speaks mTLS to it.
labels = {"security.istio.io/tlsMode": "istio"} if meshed else {}
services = [svc("bench", [{"address": "127.0.0.1", "ports": {"http": inbound}, "labels": labels}])]
# 99 more services with routes and subsets, so memory reflects a realistic config.
for i in range(99):
    s = svc(f"svc{i:02d}", [{"address": f"10.1.{i}.{j}", "labels": {"version": f"v{j % 2 + 1}"}} for j in range(3)])
    s["subsets"] = [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}]
    s["httpRoutes"] = [{"name": f"default/svc{i:02d}/0", "action": {"route": [
        {"destination": {"host": s["host"], "subset": "v1"}, "weight": 90},
        {"destination": {"host": s["host"], "subset": "v2"}, "weight": 10}]}}]
    services.append(s)
services.sort(key=lambda s: s["host"])
json.dump({"format": "mizzen.io/proxy-config/v1", "namespace": "default", "services": services}, open(path, "w"))
EOF
}

# The ingress gateway's benchmark setup, shared by bench/gateway.sh and bench/callgrind.sh: one
# self-signed ECDSA P-256 certificate (a Kubernetes TLS Secret's files), and the gateway section
# as the operator renders it: an HTTPS/SIMPLE server on 443 with a VirtualService to the backend.
GATEWAY_ARGS=(--label istio=ingressgateway --no-access-log --concurrency 1 --drain-duration 0)

gateway_cert() { # dir: writes tls.crt and tls.key
  mkdir -p "$1"
  openssl ecparam -name prime256v1 -genkey -noout -out "$1/key.sec1" 2>/dev/null
  openssl pkcs8 -topk8 -nocrypt -in "$1/key.sec1" -out "$1/tls.key"
  openssl req -x509 -new -key "$1/tls.key" -subj "/CN=bench.example.com" -days 2 \
    -addext "subjectAltName=DNS:bench.example.com" -out "$1/tls.crt" 2>/dev/null
}

gateway_config() { # path backend-port
python3 - "$1" "$2" <<'EOF'
import json, sys
path, backend = sys.argv[1], int(sys.argv[2])
host = "bench.default.svc.cluster.local"
service = {"host": host, "aliases": ["bench"], "namespace": "default",
           "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
           "endpoints": [{"address": "127.0.0.1", "ports": {"http": backend}}]}
server = {"gateway": "default/bench-gateway", "selector": {"istio": "ingressgateway"},
          "port": 443, "name": "https", "protocol": "HTTPS", "hosts": ["*"],
          "tls": {"mode": "SIMPLE", "credentialName": "bench-cert"},
          "virtualHosts": [{"virtualService": "default/bench", "hosts": ["*"], "routes": [
              {"name": "default/bench/0", "action": {"route": [
                  {"destination": {"host": host, "port": 80}, "weight": 100}]}}]}]}
json.dump({"format": "mizzen.io/proxy-config/v1", "namespace": "istio-system",
           "services": [service], "gateway": {"servers": [server]}}, open(path, "w"))
EOF
}
