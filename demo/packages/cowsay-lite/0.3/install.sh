# Runs inside layer arne as its pseudo-root: writes only where arne may.
echo "cowsay-lite install.sh: uid $(id -u), writing /usr/local/share/cowsay-lite.txt"
mkdir -p /usr/local/share && echo "installed by cowsay-lite" > /usr/local/share/cowsay-lite.txt
