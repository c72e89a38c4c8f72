"""A repository's signature: which keys may sign it (the manifest's settings), the
trusted key files, and what gpgv says of SHA256SUMS.gpg over SHA256SUMS."""

from __future__ import annotations

import enum
import os
import re
import time
from dataclasses import dataclass

from layershell.errors import LayershellError
from layershell.packages.repo.layout import SIGNATURE_NAME, SUMS_NAME

# --- origin: signed repositories (docs/repository.md, "Signatures") -------------------------
#
# A repository proves its origin with an OpenPGP detached signature, SHA256SUMS.gpg, over
# SHA256SUMS in each <arch> directory: the layout systemd's importctl and sysupdate read.
# SHA256SUMS lists index.json and every tarball; index.json carries a generation and an
# expiry. The check is gpgv's (no OpenPGP parsing here, only ASCII armor removed from key
# files); what gpgv reports is read from its --status-fd lines, since it exits 0 for a
# signature by an expired or revoked key too. The network code only fetches bytes: what
# to trust is decided here.

MAX_SIGNATURE = 64 << 10
MAX_KEY_FILE = 1 << 20
MAX_KEY_FILES = 64
KEY_SUFFIXES = (".asc", ".gpg", ".pgp")
GPGV_TIMEOUT = 30.0
FINGERPRINT_RE = re.compile(r"\A(?:[0-9A-F]{40}|[0-9A-F]{64})\Z")


class Verification(str, enum.Enum):
    """How a repository's packages are checked: signed by a trusted key (the default),
    or against the repository's own index only (`verify: checksum`, warned on every use)."""

    SIGNATURE = "signature"
    CHECKSUM = "checksum"


class UntrustedRepository(LayershellError):
    """A repository whose origin is not proven: unsigned, badly signed, by a key that is
    not trusted, expired or revoked, or files that do not match what was signed."""

    exit_code = 3


@dataclass(frozen=True)
class RepositoryTrust:
    """What a host trusts of one repository (the manifest's `repositories:` entry)."""

    url: str
    verify: Verification = Verification.SIGNATURE
    keys: tuple[str, ...] = ()  # key files in the keys directory; () means all of them
    fingerprints: tuple[str, ...] = ()  # primary keys that may sign; () any trusted one

    def as_record(self) -> dict[str, object]:
        out: dict[str, object] = {"verify": self.verify.value}
        if self.keys:
            out["keys"] = list(self.keys)
        if self.fingerprints:
            out["key_fingerprint"] = list(self.fingerprints)
        return out


@dataclass(frozen=True)
class Signed:
    """What a verified signature said: by which key, when it was checked."""

    fingerprint: str  # the primary key's
    at: float


def normal_fingerprint(text: str) -> str | None:
    value = text.replace(" ", "").upper()
    return value if FINGERPRINT_RE.match(value) else None


def _dearmor(data: bytes, where: str, block: bytes = b"PUBLIC KEY BLOCK") -> bytes:
    """An OpenPGP key file (or, with `block` SIGNATURE, a signature) as binary packets:
    ASCII armor (RFC 4880, section 6) removed, every block of the file; binary as is."""
    import base64
    import binascii

    if not data.lstrip().startswith(b"-----BEGIN PGP"):
        return data
    out = bytearray()
    body: list[bytes] | None = None
    in_headers = False
    for raw in data.splitlines():
        line = raw.strip()
        if line.startswith(b"-----BEGIN PGP " + block):
            body, in_headers = [], True
        elif line.startswith(b"-----END PGP"):
            if body is not None:
                try:
                    out += base64.b64decode(b"".join(body), validate=True)
                except (binascii.Error, ValueError):
                    raise UntrustedRepository(
                        f"{where}: its armored key block is not valid base64",
                        "export the key again: gpg --export --armor KEY",
                    ) from None
            body = None
        elif body is not None:
            if in_headers:
                in_headers = bool(line) and b":" in line
                if in_headers or not line:
                    continue
            if line.startswith(b"="):
                continue  # the armor's CRC line
            body.append(line)
    if not out:
        raise UntrustedRepository(
            f"{where}: holds no public key block", "export the key: gpg --export --armor KEY"
        )
    return bytes(out)


def key_files(keys_dir: str, names: tuple[str, ...] = ()) -> list[str]:
    """The trusted key files: those `names` (in keys_dir), or every *.asc, *.gpg, *.pgp
    there. A named file that is missing is an error naming it."""
    if names:
        found = []
        for name in names:
            path = os.path.join(keys_dir, name)
            if not os.path.isfile(path):
                raise UntrustedRepository(
                    f"the key file {path} the manifest names does not exist",
                    f"put the repository's public key there (gpg --export --armor KEY > {path})",
                )
            found.append(path)
        return found
    try:
        listed = sorted(os.listdir(keys_dir))
    except OSError:
        return []
    return [os.path.join(keys_dir, n) for n in listed if n.endswith(KEY_SUFFIXES)][:MAX_KEY_FILES]


_SECRET_TAGS = (5, 7)  # OpenPGP secret-key and secret-subkey packets


def _first_tag(data: bytes) -> int | None:
    """The packet tag of the first packet of binary OpenPGP data (RFC 4880, 4.2)."""
    if not data or not data[0] & 0x80:
        return None
    return data[0] & 0x3F if data[0] & 0x40 else (data[0] >> 2) & 0x0F


def read_key_file(path: str) -> bytes:
    """A key file's bytes as they are, checked: a regular file (opened so that a FIFO
    cannot block), at most MAX_KEY_FILE bytes, and no secret key in it (the keys go into
    Ignition configs and a 0644 file on hosts: a secret block appended to a public key
    must never travel with it)."""
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise UntrustedRepository(
                    f"the key file {path} is not a regular file", "keep public key files only"
                )
            data = f.read(MAX_KEY_FILE + 1)
    except OSError as exc:
        raise UntrustedRepository(
            f"cannot read the key file {path}: {exc.strerror}", "check its permissions"
        ) from None
    if len(data) > MAX_KEY_FILE:
        raise UntrustedRepository(
            f"{path}: over {MAX_KEY_FILE} bytes, not a public key", "keep public keys only"
        )
    armored = data.lstrip().startswith(b"-----BEGIN PGP")
    if (b"-----BEGIN PGP PRIVATE KEY BLOCK" in data) or (
        not armored and _first_tag(data) in _SECRET_TAGS
    ):
        raise UntrustedRepository(
            f"{path} holds a secret key: it is never used, nor copied anywhere",
            "move the secret key out of the keys directory; keep only gpg --export --armor KEY",
        )
    return data


def _keyring(files: list[str]) -> bytes:
    ring = bytearray()
    for path in files:
        ring += _dearmor(read_key_file(path), path)
    return bytes(ring)


def _gpgv(ring: bytes, signature: bytes, data: bytes) -> list[list[str]]:
    """gpgv's status lines for `signature` over `data` with only `ring` trusted, grouped
    per signature (NEWSIG starts one)."""
    import shutil
    import subprocess
    import tempfile

    gpgv = shutil.which("gpgv", path="/usr/bin:/bin:/usr/local/bin")
    if gpgv is None:
        raise UntrustedRepository(
            "gpgv is not installed: signatures cannot be checked",
            "install it (Debian: apt-get install gpgv; Fedora: gnupg2)",
        )
    with tempfile.TemporaryDirectory(prefix="layershell-gpgv-") as home:
        ring_path, sig_path, data_path = (
            os.path.join(home, n) for n in ("trusted.gpg", "data.sig", "data")
        )
        for path, content in ((ring_path, ring), (sig_path, signature), (data_path, data)):
            with open(path, "wb") as f:
                f.write(content)
        try:
            done = subprocess.run(
                [
                    gpgv,
                    "--homedir",
                    home,
                    "--keyring",
                    ring_path,
                    "--status-fd",
                    "1",
                    sig_path,
                    data_path,
                ],
                capture_output=True,
                timeout=GPGV_TIMEOUT,
                check=False,
                stdin=subprocess.DEVNULL,
                env={"LANG": "C", "PATH": "/usr/bin:/bin"},
            )
        except subprocess.TimeoutExpired:
            raise UntrustedRepository(
                f"gpgv did not finish within {GPGV_TIMEOUT:g} s", "try again"
            ) from None
    groups: list[list[str]] = []
    for raw in done.stdout.decode("utf-8", "replace").splitlines():
        if not raw.startswith("[GNUPG:] "):
            continue
        words = raw[9:].split()
        if not words:
            continue
        if words[0] == "NEWSIG" or not groups:
            groups.append([])
        groups[-1].append(" ".join(words))
    return groups


MAX_SIGNATURES = 32  # a key rotation signs with two; a repository has no use for more
_SIGNATURE_TAG, _MARKER_TAG = 2, 10


def _signature_packets(signature: bytes, where: str) -> bytes:
    """The signature file's packets, binary, as gpgv is to read them; refused if they
    are anything but a few OpenPGP signature packets: the packet framing only (RFC 4880,
    4.2), never their content, which is gpgv's. gpgv gets these bytes, never the file:
    it reads every armor block of a file, and a second one (`BEGIN PGP MESSAGE`) carried
    what this check never saw.
    A compressed packet is what it keeps out: 64 KiB of it inflate to ~150,000
    signatures, over which gpgv spends minutes (every operation waited GPGV_TIMEOUT)."""
    refused = UntrustedRepository(
        f"{where}: {SIGNATURE_NAME} is not a detached signature (one to"
        f" {MAX_SIGNATURES} OpenPGP signature packets, as gpg --detach-sign writes)",
        "do not use this repository until its publisher has signed it again"
        " (core repo index DIR --sign KEY)",
    )
    try:
        data = _dearmor(signature, where, b"SIGNATURE")
    except UntrustedRepository:
        raise refused from None
    at = count = 0
    try:
        while at < len(data):
            head = data[at]
            if not head & 0x80:
                raise refused
            if head & 0x40:  # new format
                tag, first = head & 0x3F, data[at + 1]
                if first < 192:
                    length, at = first, at + 2
                elif first < 224:
                    length, at = ((first - 192) << 8) + data[at + 2] + 192, at + 3
                elif first == 255:
                    length, at = int.from_bytes(data[at + 2 : at + 6], "big"), at + 6
                else:
                    raise refused  # partial body lengths: a stream, not a signature
            else:
                tag, kind = (head >> 2) & 0x0F, head & 0x03
                if kind == 3:
                    raise refused  # indeterminate length
                size = 1 << kind
                length, at = int.from_bytes(data[at + 1 : at + 1 + size], "big"), at + 1 + size
            if tag not in (_SIGNATURE_TAG, _MARKER_TAG) or at + length > len(data):
                raise refused
            at += length
            count += tag == _SIGNATURE_TAG
    except IndexError:
        raise refused from None
    if not 0 < count <= MAX_SIGNATURES:
        raise refused
    return data


def check_signature(
    trust: RepositoryTrust, keys_dir: str, signature: bytes, data: bytes, where: str
) -> Signed:
    """The key that signed `data`, if one the host trusts for this repository did, with
    no signature over it bad and the key neither expired nor revoked; else
    UntrustedRepository naming the repository and what to do."""
    files = key_files(keys_dir, trust.keys)
    how_to_trust = (
        f"put the repository's public key in {keys_dir}/ (gpg --export --armor KEY >"
        f" {keys_dir}/NAME.asc), or, if it publishes no signature, opt out for it alone with"
        " `verify: checksum` under its entry in the manifest's repositories:"
    )
    if not files:
        raise UntrustedRepository(
            f"{where}: no trusted key to check its signature with", how_to_trust
        )
    packets = _signature_packets(signature, where)
    groups = _gpgv(_keyring(files), packets, data)
    good: list[str] = []
    problems: list[str] = []
    for group in groups:
        kinds = {line.split()[0] for line in group}
        valid = [line.split() for line in group if line.startswith("VALIDSIG ")]
        if "BADSIG" in kinds:
            raise UntrustedRepository(
                f"{where}: {SIGNATURE_NAME} does not match {SUMS_NAME} (a bad signature):"
                " the repository was changed after it was signed, or the download is damaged",
                "do not use this repository until its publisher has signed it again",
            )
        if "EXPKEYSIG" in kinds or "KEYEXPIRED" in kinds:
            problems.append("signed by a key that has expired")
        elif "REVKEYSIG" in kinds or "KEYREVOKED" in kinds:
            problems.append("signed by a key that has been revoked")
        elif "EXPSIG" in kinds:
            problems.append("its signature has expired")
        elif "GOODSIG" in kinds and valid:
            fingerprint = valid[0][-1].upper()
            if trust.fingerprints and fingerprint not in trust.fingerprints:
                problems.append(
                    f"signed by {fingerprint}, not by a key_fingerprint the manifest pins"
                )
            else:
                good.append(fingerprint)
        elif "NO_PUBKEY" in kinds or "ERRSIG" in kinds:
            issuer = next((line.split()[1] for line in group if line.startswith("ERRSIG ")), "?")
            problems.append(f"signed by key {issuer}, which is not trusted here")
        else:
            problems.append("gpgv could not check its signature")
    if good:
        return Signed(good[0], time.time())
    if not groups:
        raise UntrustedRepository(
            f"{where}: {SIGNATURE_NAME} holds no signature gpgv can read", how_to_trust
        )
    expected = ", ".join(trust.fingerprints) or ", ".join(os.path.basename(f) for f in files)
    raise UntrustedRepository(
        f"{where}: {'; '.join(dict.fromkeys(problems))} (trusted: {expected})", how_to_trust
    )
