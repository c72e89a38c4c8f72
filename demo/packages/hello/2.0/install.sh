# Runs inside layer arne as its pseudo-root when hello 2.0 is installed.
echo "hello 2.0 install.sh: uid $(id -u) in $PWD"
