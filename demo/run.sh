#!/usr/bin/env bash
# The embedded demo, in rootless mode as an ordinary user (./dev.sh demo gives it a
# private HOME): the layers, then a manifest installed from a repository built from
# demo/packages/. Every command is shown before it runs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ -t 1 ]; then B=$'\033[1m' N=$'\033[0m'; else B= N=; fi
step() { printf '\n%s$ %s%s\n' "$B" "$*" "$N"; "$@"; }
say() { printf '\n%s# %s%s\n' "$B" "$*" "$N"; }

say "1. The layers: arne (1) is pseudo-root, otto (2) a plain user; core's /usr is read-only"
step core --rootless init
step layer-shell -c 'echo "layer $LAYERSHELL_LAYER: uid $(id -u) inside"; touch /usr/bin/x 2>&1 || true'
step layer-shell --layer otto -c 'echo "layer $LAYERSHELL_LAYER: uid $(id -u)"; grep -E "^(CapEff|NoNewPrivs)" /proc/self/status'

say "2. A signed repository: <repo>/<arch>/<name>_<version>.tar.gz, an index with sha256s, SHA256SUMS and its OpenPGP signature"
export GNUPGHOME="$HOME/.demo-publisher-gnupg"  # the publisher's key, made for the demo
mkdir -m 700 -p "$GNUPGHOME"
step gpg --batch --quiet --pinentry-mode loopback --passphrase '' \
  --quick-gen-key "layershell demo publisher <demo@layershell.invalid>" ed25519 sign 1d
mkdir -p "$HOME/.config/layershell/keys"
step gpg --armor --export --output "$HOME/.config/layershell/keys/demo.asc" demo@layershell.invalid
arch=$(uname -m)
repo="$HOME/demo-repo"
mkdir -p "$repo/$arch"
for dir in "$here"/packages/*/*/; do
  name=$(basename "$(dirname "$dir")"); version=$(basename "$dir")
  tar -C "$dir" -czf "$repo/$arch/${name}_${version}.tar.gz" .
done
step core repo index --streams "$here/streams.yaml" --sign demo@layershell.invalid "$repo/$arch"
gpgconf --kill gpg-agent

say "3. The manifest, checked, then installed (signature and sha256 verified, unpacked as you, install.sh in layer arne)"
sed "s|@REPO@|file://$repo|" "$here/composable.yaml" > "$HOME/composable.yaml"
step core check "$HOME/composable.yaml"
step core install --config "$HOME/composable.yaml"
step core list

say "4. The packages run in layer otto and cannot change themselves"
step layer-shell --layer otto -- /opt/pkgs/hello/bin/hello demo
step layer-shell --layer otto -c 'rm /opt/pkgs/hello/bin/hello 2>&1 || echo "layer 1 is read-only from layer 2"'

say "5. Streams: the testing stream has hello 2.0"
sed -i 's/track_stream: stable/track_stream: testing/' "$HOME/composable.yaml"
step core install --config "$HOME/composable.yaml" hello
step layer-shell --layer otto -- /opt/pkgs/hello/bin/hello
step core info hello

say "6. Shims: the programs are on PATH and feel native, while running in layer otto"
step command -v hello cowsay-lite
step head -2 "$(command -v hello)"
step hello from the shim
step cowsay-lite "layers work"

printf '\n%sdemo finished%s\n' "$B" "$N"
