#!/usr/bin/env bash
# Bring up, on loopback only and idempotently, what the tests, `make bench` and .ci/run need:
#   a Docker engine  $DOCKER_HOST, else unix://$DOCKER_SOCK (default /var/run/docker.sock)
#   a registry       http://$REGISTRY_ADDR        (default 127.0.0.1:5000; Debian's docker-registry, plain HTTP)
#   an S3 API        http://127.0.0.1:$S3_PORT     (default 9000; moto's server, in memory)
# Whatever already answers is reused and never touched: a running Docker engine (Docker Desktop, a system
# dockerd, $DOCKER_HOST), a registry or an S3 server. Only what is missing is installed (apt, as root) and
# started: dockerd without its bridge or iptables rules, with its data under $INFRA. PIDs go to $INFRA/run/,
# logs to $INFRA/logs/; down.sh stops exactly those. Writes $INFRA/env.sh for `source`.
# Overridable: INFRA, DOCKER_HOST, DOCKER_SOCK, REGISTRY_ADDR, S3_PORT, MOTO_VENV, DOCKER_SOCK_WAIT (seconds to
# wait for an existing but silent socket before giving up; default 20). See infra/README.md.
set -euo pipefail

INFRA=${INFRA:-${TMPDIR:-/tmp}/sematic-k8s-infra}
RUN=$INFRA/run
LOGS=$INFRA/logs
DOCKER_SOCK=${DOCKER_SOCK:-/var/run/docker.sock}
REGISTRY_ADDR=${REGISTRY_ADDR:-127.0.0.1:5000}
S3_PORT=${S3_PORT:-9000}
MOTO_VENV=${MOTO_VENV:-$INFRA/venv}
DOCKER_SOCK_WAIT=${DOCKER_SOCK_WAIT:-20}

# An explicit DOCKER_HOST names the engine: a unix socket (we may start dockerd there when nothing owns it),
# or a remote engine (tcp://, ssh://), which must already answer.
REMOTE_DOCKER=""
case "${DOCKER_HOST:-}" in
  "") ;;
  unix://*) DOCKER_SOCK=${DOCKER_HOST#unix://} ;;
  *) REMOTE_DOCKER=$DOCKER_HOST ;;
esac

mkdir -p "$RUN" "$LOGS"

die() { echo "up.sh: $*" >&2; exit 1; }
now() { date +%s.%N 2>/dev/null || date +%s; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.2fs", b-a}'; }
alive() { # alive PIDFILE PROGRAM: the recorded process runs and is PROGRAM (not a zombie, not a reused PID)
  local pid
  [ -s "$1" ] && pid=$(cat "$1") && kill -0 "$pid" 2>/dev/null || return 1
  [ -r "/proc/$pid/cmdline" ] || return 0  # no /proc (macOS): kill -0 is all there is
  [[ "$(tr '\0' ' ' <"/proc/$pid/cmdline")" == *"$2"* ]]
}
# `detach CMD... &`: CMD in its own session; exec, so that $! is CMD's PID.
detach() { if command -v setsid >/dev/null; then exec setsid "$@"; else exec nohup "$@"; fi; }
docker_ok() {
  if [ -n "$REMOTE_DOCKER" ]; then
    if command -v docker >/dev/null; then docker version --format '{{.Server.Version}}'
    else case $REMOTE_DOCKER in tcp://*) curl -sf --max-time 2 "http://${REMOTE_DOCKER#tcp://}/_ping" ;; *) false ;; esac
    fi
  else
    curl -sf --max-time 2 --unix-socket "$DOCKER_SOCK" http://localhost/_ping
  fi
}
socket_stale() { # no process holds DOCKER_SOCK open as a listener: connecting is refused, and no dockerd runs
  local rc=0
  curl -s --max-time 2 --unix-socket "$DOCKER_SOCK" -o /dev/null http://localhost/_ping || rc=$?
  [ "$rc" = 7 ] || return 1                   # 7: could not connect; a hung engine times out (28) instead
  if command -v ss >/dev/null; then ! ss -xl 2>/dev/null | grep -qF " $DOCKER_SOCK "; return; fi
  ! pgrep -x dockerd >/dev/null 2>&1
}
registry_ok() { curl -sf --max-time 2 "http://$REGISTRY_ADDR/v2/"; }
moto_ok() { curl -sf --max-time 2 "http://127.0.0.1:$S3_PORT/moto-api/"; }
s3_answers() { curl -s --max-time 2 -o /dev/null "http://127.0.0.1:$S3_PORT/"; }  # any HTTP reply (MinIO, ...)
start() { # start NAME PROGRAM TIMEOUT_S OK_FN CMD...: run CMD unless our recorded NAME runs, until OK_FN answers
  local name=$1 program=$2 timeout=$3 ok=$4 pidfile=$RUN/$1.pid starts=0 t0 end
  shift 4
  t0=$(now) end=$((SECONDS + timeout))
  until "$ok" >/dev/null 2>&1; do
    if ! alive "$pidfile" "$program"; then  # not started yet, or it exited (e.g. while stopping)
      ((starts < 2)) || die "$name exited at start-up (see $LOGS/$name.log)"
      starts=$((starts + 1))
      detach "$@" </dev/null >>"$LOGS/$name.log" 2>&1 &
      echo $! >"$pidfile"
    fi
    ((SECONDS < end)) || die "timeout waiting for $name (see $LOGS/$name.log)"
    sleep 0.1
  done
  printf '%-9s started      pid %s  in %s\n' "$name" "$(cat "$pidfile")" "$(since "$t0")"
}
reused() { # reused NAME PROGRAM WHERE
  if alive "$RUN/$1.pid" "$2"; then printf '%-9s already up   pid %s  %s\n' "$1" "$(cat "$RUN/$1.pid")" "$3"
  else printf '%-9s reusing %s (not started by up.sh)\n' "$1" "$3"; fi
}

command -v curl >/dev/null || die "curl is missing (apt-get install curl)"

docker_up=0 registry_up=0 s3_up=0
docker_ok >/dev/null 2>&1 && docker_up=1
registry_ok >/dev/null 2>&1 && registry_up=1
{ moto_ok || s3_answers; } >/dev/null 2>&1 && s3_up=1
if ((!docker_up)) && [ -n "$REMOTE_DOCKER" ]; then
  die "DOCKER_HOST=$REMOTE_DOCKER does not answer: start that engine, or unset DOCKER_HOST to use a local one"
fi

# ---- 0. packages: only what is missing for a service that does not answer -------------------------
need=()
((docker_up)) || command -v dockerd >/dev/null || need+=(docker.io)
((registry_up)) || command -v docker-registry >/dev/null || need+=(docker-registry)
if ((${#need[@]})); then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    die "${need[*]} missing and not installable here (needs root and apt-get): start a Docker engine and a registry" \
        "on $REGISTRY_ADDR yourself (e.g. docker run -d -p $REGISTRY_ADDR:5000 registry:2), then run this again"
  fi
  # Never let the packages' init scripts start dockerd with its default bridge (172.17.0.0/16) or the
  # registry on 0.0.0.0:5000: make invoke-rc.d refuse service starts while installing.
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made_policy=1; fi
  apt-get update -q >"$LOGS/apt-update.log" 2>&1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >"$LOGS/apt-install.log" 2>&1
  if ((made_policy)); then rm -f /usr/sbin/policy-rc.d; fi
fi
if ((!s3_up)) && [ ! -x "$MOTO_VENV/bin/moto_server" ]; then
  [ -x "$MOTO_VENV/bin/python" ] || python3 -m venv "$MOTO_VENV"
  "$MOTO_VENV/bin/pip" install -q 'moto[server]' boto3 >"$LOGS/pip-moto.log" 2>&1 \
    || die "pip install 'moto[server]' into $MOTO_VENV failed (see $LOGS/pip-moto.log)"
fi

# ---- 1. the Docker engine: reuse any that answers; never start a second daemon over a running one ---
if ((docker_up)); then
  reused dockerd dockerd "${REMOTE_DOCKER:-unix://$DOCKER_SOCK}"
elif alive "$RUN/dockerd.pid" dockerd; then  # ours, still starting
  t0=$(now) end=$((SECONDS + 60))
  until docker_ok >/dev/null 2>&1; do ((SECONDS < end)) || die "timeout waiting for dockerd (see $LOGS/dockerd.log)"; sleep 0.1; done
  printf '%-9s up           pid %s  unix://%s  in %s\n' dockerd "$(cat "$RUN/dockerd.pid")" "$DOCKER_SOCK" "$(since "$t0")"
elif [ -e "$DOCKER_SOCK" ] && socket_stale; then
  # Left behind by an engine that was killed (no process listens, connections are refused): remove it.
  echo "dockerd   $DOCKER_SOCK is stale (no process listens on it): removing it"
  rm -f "$DOCKER_SOCK"
fi
if ((docker_up)) || alive "$RUN/dockerd.pid" dockerd; then
  :
elif [ -e "$DOCKER_SOCK" ]; then
  # Something else owns the socket: an engine still starting, or a hung one. Wait for it; never replace it.
  end=$((SECONDS + DOCKER_SOCK_WAIT))
  until docker_ok >/dev/null 2>&1; do
    ((SECONDS < end)) || die "$DOCKER_SOCK exists but does not answer /_ping: a Docker engine may be starting or hung." \
                             "Start or fix it, or remove the socket if no daemon runs, then run this again"
    sleep 0.2
  done
  reused dockerd dockerd "unix://$DOCKER_SOCK"
else
  [ "$(id -u)" = 0 ] || die "no Docker engine answers on $DOCKER_SOCK and starting dockerd needs root:" \
                            "start Docker (or set DOCKER_HOST), or run this as root"
  t0=$(now) end=$((SECONDS + 60))
  # The exec root holds only run-time state (sockets, pid files, the host netns mount). One left by an engine
  # that was killed makes the new dockerd wait on a dead containerd: clear it (no engine of ours runs here).
  if [ -d "$INFRA/docker-exec" ]; then
    awk -v root="$INFRA/docker-exec/" 'index($2, root) == 1 {print $2}' /proc/mounts 2>/dev/null \
      | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$INFRA/docker-exec"
  fi
  mkdir -p "$INFRA/docker-data" "$INFRA/docker-exec"
  rm -f "$RUN/dockerd.pid"  # dockerd writes it itself
  detach dockerd \
    --bridge=none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false --userland-proxy=false \
    --data-root "$INFRA/docker-data" --exec-root "$INFRA/docker-exec" \
    --pidfile "$RUN/dockerd.pid" -H "unix://$DOCKER_SOCK" \
    </dev/null >>"$LOGS/dockerd.log" 2>&1 &
  dockerd_pid=$!
  until docker_ok >/dev/null 2>&1; do
    kill -0 "$dockerd_pid" 2>/dev/null || die "dockerd exited at start-up (see $LOGS/dockerd.log)"
    ((SECONDS < end)) || die "timeout waiting for dockerd (see $LOGS/dockerd.log)"
    sleep 0.1
  done
  printf '%-9s started      pid %s  unix://%s  in %s\n' dockerd "$dockerd_pid" "$DOCKER_SOCK" "$(since "$t0")"
fi

# ---- 2. the registry ------------------------------------------------------------------------------
if ((registry_up)); then
  reused registry docker-registry "http://$REGISTRY_ADDR"
else
  mkdir -p "$INFRA/registry-data"
  # Our own config: Debian's default listens on :5000 on every interface, with htpasswd auth.
  cat >"$INFRA/registry-config.yml" <<CONF
version: 0.1
log:
  level: info
  fields: {service: registry}
storage:
  cache: {blobdescriptor: inmemory}
  filesystem: {rootdirectory: $INFRA/registry-data}
  delete: {enabled: true}
http:
  addr: $REGISTRY_ADDR
  headers:
    X-Content-Type-Options: [nosniff]
CONF
  start registry docker-registry 30 registry_ok docker-registry serve "$INFRA/registry-config.yml"
fi

# ---- 3. S3 ----------------------------------------------------------------------------------------
if ((s3_up)); then
  reused moto moto_server "http://127.0.0.1:$S3_PORT"
else
  start moto moto_server 30 moto_ok "$MOTO_VENV/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT"
fi

# Written to a temporary file and renamed, so whoever sources it never reads half of it.
cat >"$INFRA/env.sh.tmp.$$" <<ENV
# source $INFRA/env.sh   (written by up.sh)
export DOCKER_HOST=${REMOTE_DOCKER:-unix://$DOCKER_SOCK}
export REGISTRY=$REGISTRY_ADDR
export AWS_ENDPOINT_URL_S3=http://127.0.0.1:$S3_PORT
export AWS_ACCESS_KEY_ID=\${AWS_ACCESS_KEY_ID:-test} AWS_SECRET_ACCESS_KEY=\${AWS_SECRET_ACCESS_KEY:-test} AWS_DEFAULT_REGION=\${AWS_DEFAULT_REGION:-us-east-1}
ENV
mv -f "$INFRA/env.sh.tmp.$$" "$INFRA/env.sh"
echo "env       source $INFRA/env.sh"
