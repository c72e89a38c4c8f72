#!/usr/bin/env bash
# dev.sh: set up layershell on Debian 12 and run its demo or its tests.
#
#   ./dev.sh demo   install system packages (with sudo if needed) and layershell, then
#                   run the embedded demo in rootless mode (no accounts are created)
#   ./dev.sh test   the same installation plus test tools, then the whole test suite
#   ./dev.sh install   installation only
#   ./dev.sh sysext    build the system extension image build/sysext/layershell-<version>-<arch>.raw
#                      (docs/boot.md, "The system extension image")
#
# As root, layershell goes to /opt/layershell/venv (readable by the layer accounts that
# the tests create) and `core`/`layer-shell` are linked into /usr/local/bin; as a user it
# goes to ~/.local/share/layershell/venv. The interpreter is Debian's /usr/bin/python3.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"

APT_PACKAGES=(
  python3 python3-venv gcc libc6-dev       # interpreter; C compiler: building the wheel (hatch_build.py)
  util-linux mount passwd login sudo       # unshare, setpriv, prlimit, mount, useradd, su
  libpam-modules libpam-runtime            # PAM session for core shell
  procps iproute2 ca-certificates bubblewrap  # tests and bench baselines
  man-db bash-completion zsh fish          # man and the shells: the packages' pages and completions (tests/test_real_programs.py)
  systemd                                  # systemctl: core init enables units by preset
  mmdebstrap systemd-container             # the systemd testbed (tests/testbed.py)
  squashfs-tools libpython3.11 git         # ./dev.sh sysext: mksquashfs, PyInstaller's libpython, the commit time
  binutils                                 # readelf, objdump: tests/test_prebuilt.py inspects the built executables
  gpg gpg-agent gpgv                       # signed repositories: gpgv checks them, gpg signs them (core repo index --sign, the tests)
  rpm                                      # rpmbuild, rpm2archive: tests/test_packaging.py builds packaging/layershell.spec
  zstd                                     # bench/bench_install.py: the baseline of its .tar.zst row (tar --zstd)
)

log() { printf '==> %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if [ "$(id -u)" = 0 ]; then
  VENV=${LAYERSHELL_VENV:-/opt/layershell/venv}
else
  VENV=${LAYERSHELL_VENV:-${XDG_DATA_HOME:-$HOME/.local/share}/layershell/venv}
fi

install_system() {
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

install_python() {  # $1: pip extra ("" or "[test]")
  if [ ! -x "$VENV/bin/python" ]; then
    log "python venv $VENV"
    mkdir -p "$(dirname "$VENV")"
    /usr/bin/python3 -m venv "$VENV"
  fi
  log "pip install layershell$1 into $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check ".$1"
  # A real (non-editable) install that always matches this checkout: the layer accounts
  # run this copy, and the checkout itself may sit where they cannot read (/root).
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --force-reinstall .
  if [ "$(id -u)" = 0 ]; then
    chmod -R a+rX "$(dirname "$VENV")"
    ln -sf "$VENV/bin/core" /usr/local/bin/core
  fi
}

demo() {
  # Rootless mode needs an ordinary identity. As root, borrow uid 65534 with a private
  # HOME rather than creating an account on this machine.
  local run=()
  DEMO_HOME=$(mktemp -d /var/tmp/layershell-demo-XXXXXX)
  local home=$DEMO_HOME
  chmod 755 "$home"
  if [ "$(id -u)" = 0 ]; then
    chown 65534:65534 "$home"
    run=(setpriv --reuid=65534 --regid=65534 --clear-groups --)
  fi
  trap 'rm -rf "$DEMO_HOME"' EXIT
  env -i HOME="$home" PATH="$home/.local/bin:$VENV/bin:/usr/bin:/bin" LANG=C.UTF-8 \
    TERM="${TERM:-dumb}" "${run[@]}" bash demo/run.sh
}

case "${1:-}" in
  install) install_system; install_python "" ;;
  demo)    install_system; install_python ""; demo ;;
  test)
    install_system; install_python "[test]"
    log "pytest"
    exec "$VENV/bin/python" -m pytest -q -rs "${@:2}" ;;
  sysext)
    install_system
    exec /usr/bin/python3 -m layershell.host.sysext "${@:2}" ;;
  *) sed -n '2,15p' "$0"; exit 2 ;;
esac
