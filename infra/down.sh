#!/usr/bin/env bash
# Stop exactly the processes up.sh started (PIDs in $INFRA/run/*.pid), nothing else: an engine, registry or
# S3 server that up.sh reused is never touched. A PID whose command line is not the expected program (PID
# reuse) is left alone. dockerd stops its own containerd child and its running containers itself.
set -uo pipefail
INFRA=${INFRA:-${TMPDIR:-/tmp}/sematic-k8s-infra}
RUN=$INFRA/run

stop() { # stop NAME PATTERN TIMEOUT_S
  local name=$1 pat=$2 t=$3 f=$RUN/$1.pid pid cmd
  if [ ! -s "$f" ]; then echo "$name: no pidfile, nothing to stop"; return; fi
  pid=$(cat "$f")
  if ! kill -0 "$pid" 2>/dev/null; then echo "$name: pid $pid not running"; rm -f "$f"; return; fi
  cmd=$(tr '\0' ' ' </proc/"$pid"/cmdline 2>/dev/null || ps -o command= -p "$pid")
  case "$cmd" in
    *$pat*) ;;
    *) echo "$name: pid $pid is '$cmd', not $pat: left alone"; return ;;
  esac
  kill -TERM "$pid"
  for ((i = 0; i < t * 10; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then echo "$name: pid $pid ignored SIGTERM for ${t}s, sending SIGKILL"; kill -KILL "$pid"; fi
  rm -f "$f"
  echo "$name: stopped pid $pid"
}

stop moto moto_server 10
stop registry docker-registry 10
out=$(stop dockerd dockerd 40)
echo "$out"
if [[ $out == *"stopped pid"* ]]; then
  # dockerd leaves its default network namespace bind-mounted under its exec root.
  ns=$INFRA/docker-exec/netns/default
  if grep -qs " $ns " /proc/mounts; then umount "$ns" && echo "dockerd: unmounted $ns"; fi
fi
