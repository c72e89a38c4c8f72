#!/bin/sh
# mk-portable-package.sh DIR NAME VERSION [listen PORT] [fail]
# Builds, from the running system's own binaries, a package tree that is a portable
# service image: os-release, NAME.service (a loop that logs its version), optionally
# NAME-listen.service (python3 listening on 127.0.0.1:PORT) and, with "fail", a
# NAME.service that exits 1 at once. Runs inside the testbed container.
set -eu
DIR=$1 NAME=$2 VER=$3; shift 3
PORT= FAIL=
while [ $# -gt 0 ]; do
  case $1 in listen) PORT=$2; shift 2;; fail) FAIL=1; shift;; *) exit 2;; esac
done
rm -rf "$DIR"; mkdir -p "$DIR"; cd "$DIR"
mkdir -p usr/bin usr/lib/systemd/system usr/lib64 etc proc sys dev run tmp var/tmp var/lib
: > etc/machine-id; : > etc/resolv.conf
ln -s usr/bin bin; ln -s usr/bin sbin; ln -s usr/lib lib; ln -s usr/lib64 lib64
copy_bin() {
  for f in "$1" $(ldd "$1" | awk '/=>/ {print $3} /^[ \t]*\/lib/ && !/=>/ {print $1}'); do
    r=$(readlink -f "$f"); case "$f" in /lib/*|/lib64/*|/bin/*) f=/usr$f;; esac
    mkdir -p "$DIR$(dirname "$f")"; cp -L "$r" "$DIR$f"
  done
}
copy_bin /usr/bin/dash; ln -sf dash usr/bin/sh
copy_bin /usr/bin/sleep
printf 'ID=%s\nVERSION_ID=%s\nPORTABLE_PRETTY_NAME="%s %s"\n' "$NAME" "$VER" "$NAME" "$VER" \
  > usr/lib/os-release
ln -s ../usr/lib/os-release etc/os-release
if [ -n "$FAIL" ]; then
  exec_start="/usr/bin/sh -c 'echo \"$NAME $VER is broken on purpose\"; exit 1'"
else
  exec_start="/usr/bin/sh -c 'while :; do echo \"$NAME $VER running\"; sleep 1; done'"
fi
cat > "usr/lib/systemd/system/$NAME.service" <<U
[Unit]
Description=$NAME $VER (layershell test)
[Service]
ExecStart=$exec_start
[Install]
WantedBy=multi-user.target
U
if [ -n "$PORT" ]; then
  copy_bin /usr/bin/python3.11; ln -sf python3.11 usr/bin/python3
  cp -a /usr/lib/python3.11 usr/lib/python3.11
  for so in usr/lib/python3.11/lib-dynload/*.so; do copy_bin "/$so" 2>/dev/null || true; done
  # Drop what a listener does not need (and test suites with odd files).
  rm -rf usr/lib/python3.11/test usr/lib/python3.11/idlelib usr/lib/python3.11/tkinter \
         usr/lib/python3.11/ensurepip usr/lib/python3.11/lib2to3
  find usr/lib/python3.11 -name __pycache__ -prune -exec rm -rf {} +
  mkdir -p srv; echo "hello from $NAME $VER" > srv/index.html
  cat > "usr/lib/systemd/system/$NAME-listen.service" <<U
[Unit]
Description=$NAME $VER listener (layershell test)
[Service]
ExecStart=/usr/bin/python3 -m http.server --bind 127.0.0.1 --directory /srv $PORT
U
fi
# Debian links a few files to /etc (sitecustomize.py): a package may not carry them.
find . -type l -lname '/*' -delete
echo "built $DIR"
