#!/bin/sh
# deb2pkg.sh OUT.tar.gz DEB...: repack Debian binary packages (a program and the shared
# libraries it needs that the host may not have) as one layershell package.
# docs/packaging.md explains the layout; tests/test_real_programs.py runs this.
#
#   apt-get download jq libjq1 libonig5
#   examples/deb2pkg.sh jq_1.6.tar.gz jq_*.deb libjq1_*.deb libonig5_*.deb
#   core repo index DIR    # with jq_1.6.tar.gz in DIR/<arch>/
#
# The package gets the programs of usr/bin in libexec/, their libraries in lib/, a
# wrapper per program in bin/ (what the shims run) that puts lib/ first on
# LD_LIBRARY_PATH inside the layer, the manual pages in share/man/ and the shell
# completions in share/bash-completion/, share/zsh/site-functions/ and
# share/fish/vendor_completions.d/.
set -eu
if [ $# -lt 2 ]; then
  echo "usage: $0 OUT.tar.gz DEB..." >&2
  exit 2
fi
out=$1
shift
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for deb in "$@"; do
  dpkg-deb -x "$deb" "$work/root"
done
pkg=$work/pkg
mkdir -p "$pkg/bin" "$pkg/libexec" "$pkg/lib"
for program in "$work"/root/usr/bin/*; do
  [ -f "$program" ] && cp -P "$program" "$pkg/libexec/"
done
for dir in "$work"/root/usr/lib/*-linux-gnu "$work"/root/usr/lib; do
  [ -d "$dir" ] || continue
  find "$dir" -maxdepth 1 -name '*.so*' -exec cp -P {} "$pkg/lib/" \;
done
# Debian's place for a file -> the package's (zsh's vendor-completions is Debian's name)
for pair in man:man bash-completion:bash-completion zsh/vendor-completions:zsh/site-functions \
    fish/vendor_completions.d:fish/vendor_completions.d; do
  from=$work/root/usr/share/${pair%%:*} to=$pkg/share/${pair#*:}
  if [ -d "$from" ]; then
    mkdir -p "$(dirname "$to")"
    cp -R "$from" "$to"
  fi
done
for program in "$pkg"/libexec/*; do
  name=$(basename "$program")
  cat > "$pkg/bin/$name" <<EOF
#!/bin/sh
# $name from Debian, with the libraries this package carries
here=\$(dirname "\$(readlink -f "\$0")")
LD_LIBRARY_PATH="\$here/../lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "\$here/../libexec/$name" "\$@"
EOF
  chmod 0755 "$pkg/bin/$name"
done
tar -C "$pkg" --owner=0 --group=0 --numeric-owner -czf "$out" .
