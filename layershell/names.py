"""Every rule for a name layershell reads, writes or builds a path from, in one table:
packages, versions, architectures, digests, executables, URL schemes and streams.

Each module that checks a name imports its rule from here, so a package name the
manifest accepts is one the repository, the record and the shims accept too (they
disagreed: `node_exporter` installed by reference but was refused in a manifest, and an
executable `_helper` was accepted by the manifest and dropped by the shims). It needs
re, so the `layer-shell` hot path (docs/design.md) does not import it.
"""

from __future__ import annotations

import re

# A package: letters, digits, '.', '_', '+', '-', starting with a letter or digit. The
# last '_' of `<name>_<version>` separates the two, which is why a version has none.
PACKAGE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._+-]*\Z")
PACKAGE_HINT = "use letters, digits, '.', '_', '+' or '-', starting with a letter or digit"
VERSION = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9.+~-]*\Z")
VERSION_HINT = "use letters, digits, '.', '+', '~' and '-' (for example v0.0.1)"
ARCH = re.compile(r"\A[a-z0-9][a-z0-9_]*\Z")  # as `uname -m` prints it
SHA256 = re.compile(r"\A[0-9a-f]{64}\Z")  # lower-case hex, as written
# A program in a package's bin/ that gets a shim: a file name that is not hidden and is
# not an option, nor `_name` (bash-completion and zsh treat `_name` as a function).
EXECUTABLE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._+@-]*\Z")
EXECUTABLE_HINT = "use letters, digits, '.', '_', '+', '@' or '-', starting with a letter or digit"
SCHEMES = ("file", "http", "https", "ftp")  # where a repository can be
STREAMS = ("stable", "next", "testing")  # in the order a version reaches them, last first
# In every file layershell writes where others write too (shims, units, completions,
# launcher, PAM file): what it may rewrite or remove; a file without it is someone else's.
MARKER = "# Managed by layershell"

# Commands no package may ever put on PATH, whatever the manifest says (expose_over
# cannot lift it): a shim runs package code with the caller's terminal, so a program
# under one of these names would be typed the caller's passwords or be trusted to
# change identity. Chosen as: anything that asks for a password or passphrase (sudo,
# su, sudoedit, ksu, passwd, login, ssh and its key tools, gpg and pinentry, kinit),
# anything that runs a command as another user or with privileges (run0, pkexec and
# polkit's agents, doas, runuser, setpriv, systemd-run, machinectl shell, newuidmap),
# anything that enters or makes namespaces and roots (unshare, nsenter, chroot,
# systemd-nspawn), the bus and session tools an admin uses as root (busctl, dbus-send,
# loginctl, homectl, userdbctl, systemctl), account editors, and layershell's own
# commands. A host program of the same name is refused anyway (expose_over aside);
# this list also covers hosts that do not have the tool yet.
SENSITIVE = frozenset({
    # passwords and passphrases
    "sudo", "sudoedit", "sudoreplay", "visudo", "su", "ksu", "passwd", "login", "chsh", "chfn",
    "newgrp", "sg", "gpasswd", "chpasswd", "chage", "vipw", "vigr", "kinit", "kpasswd",
    "ssh", "ssh-add", "ssh-agent", "ssh-keygen", "ssh-copy-id", "scp", "sftp",
    "gpg", "gpg2", "gpgv", "gpg-agent", "gpg-connect-agent", "gpgsm", "pinentry",
    "secret-tool", "systemd-ask-password", "systemd-tty-ask-password-agent",
    # running as someone else, or with privileges
    "run0", "pkexec", "pkttyagent", "doas", "runuser", "setpriv", "capsh", "setcap",
    "systemd-run", "machinectl", "newuidmap", "newgidmap", "fusermount", "fusermount3",
    "mount", "umount", "unshare", "nsenter", "chroot", "systemd-nspawn",
    # bus, session and account tools
    "busctl", "dbus-send", "gdbus", "loginctl", "homectl", "userdbctl", "useradd",
    "userdel", "usermod", "groupadd", "groupdel", "groupmod",
    # the host's managers, and layershell's own commands
    "core", "layer-shell", "systemctl", "portablectl", "rpm-ostree", "bootc",
})  # fmt: skip
SENSITIVE_PREFIXES = ("pinentry-", "polkit-", "ssh-", "gpg-", "sudo")


def sensitive(name: str) -> bool:
    return name in SENSITIVE or name.startswith(SENSITIVE_PREFIXES)
