# Runs inside layer arne as its pseudo-root, in its own pid namespace, and may write
# its own package directory only ($PKG_DIR): not other packages, /usr/local or a home.
echo "cowsay-lite install.sh: uid $(id -u), writing $PKG_DIR/share/installed-by.txt"
mkdir -p "$PKG_DIR/share" && echo "installed by cowsay-lite" > "$PKG_DIR/share/installed-by.txt"
