#!/usr/bin/env bash
# The embedded demo: the layer stack in rootless mode, as an ordinary user.
# Run by ./dev.sh demo with a private HOME; every command is shown before it runs.
set -euo pipefail
if [ -t 1 ]; then B=$'\033[1m' N=$'\033[0m'; else B= N=; fi
step() { printf '\n%s$ %s%s\n' "$B" "$*" "$N"; "$@"; }

step core --rootless init
step layer-shell -c 'echo "layer $LAYERSHELL_LAYER: uid $(id -u) inside"; touch /opt/pkgs/hello && echo "wrote /opt/pkgs/hello"'
step layer-shell -c 'touch /usr/bin/evil 2>&1 || echo "core /usr is read-only"'
step layer-shell --layer otto -c 'echo "layer $LAYERSHELL_LAYER: uid $(id -u)"; ls /opt/pkgs; rm /opt/pkgs/hello 2>&1 || echo "layer 1 is read-only from layer 2"'
step layer-shell --layer otto -c 'grep -E "^(CapEff|NoNewPrivs)" /proc/self/status'
step layer-shell -c 'exit 7' || echo "exit status passed through: $?"
printf '\n%sdemo finished: layers work%s\n' "$B" "$N"
