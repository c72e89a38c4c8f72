"""Verify: a package's origin and integrity are checked before anything of it is
unpacked or cached.

Integrity: a sha256 mismatch names the file, where it came from and both digests, so
the user can tell a truncated download from a replaced file. Origin: a repository's
signature, its trusted keys, and the generation and expiry of what it signed (below,
"origin"); the one place that decides whether a repository is trusted.
"""

from __future__ import annotations

import enum
import hashlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from layershell.errors import LayershellError
from layershell.packages.repo.layout import SIGNATURE_NAME, SUMS_NAME

BLOCK = 1 << 20  # 1 MiB: large enough for throughput, small enough for any host's memory


class HashMismatch(LayershellError):
    """A file's sha256 is not the one it was expected to have."""

    exit_code = 1

    def __init__(self, name: str, source: str, expected: str, actual: str) -> None:
        self.name = name
        self.source = source
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"sha256 mismatch for {name} from {source}: expected {expected}, got {actual}",
            "the file was corrupted or replaced; the installed version is kept",
        )


def sha256_file(path: str) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


class NotATarball(LayershellError):
    exit_code = 1


def private_copy(path: str, directory: str, max_bytes: int) -> tuple[str, str]:
    """(copy, sha256): `path` copied into `directory` (the account's own) while it is
    hashed, so the bytes checked are the bytes unpacked: whoever can write the original
    cannot change it between the check and the unpack. A regular file only, opened so
    that a FIFO swapped in cannot block (O_NONBLOCK), and at most max_bytes of it: a
    sparse or growing file must not fill the disk. The caller removes the copy."""
    import stat
    import tempfile

    try:
        src_fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise NotATarball(f"{path}: cannot open it: {exc.strerror}", "check the path") from None
    with os.fdopen(src_fd, "rb") as src:
        st = os.fstat(src.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise NotATarball(f"{path}: not a regular file", "give the package's .tar.* file")
        if st.st_size > max_bytes:
            raise NotATarball(
                f"{path}: {st.st_size} bytes, more than the {max_bytes} an install may copy "
                "(the layer's disk budget and free space, and the unpack limit)",
                "make room, or raise limits.disk_budget of the layer (docs/packages.md)",
            )
        os.makedirs(directory, exist_ok=True)
        digest = hashlib.sha256()
        fd, copy = tempfile.mkstemp(dir=directory, prefix=".tarball-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                left = max_bytes
                while block := src.read(min(BLOCK, left + 1)):
                    left -= len(block)
                    if left < 0:
                        raise NotATarball(
                            f"{path}: it grew past {max_bytes} bytes while it was copied",
                            "install it once it is complete",
                        )
                    digest.update(block)
                    out.write(block)
        except BaseException:
            os.unlink(copy)
            raise
    return copy, digest.hexdigest()


def check(path: str, expected: str, source: str, *, name: str = "") -> None:
    """Raise HashMismatch unless the file at `path` has the sha256 `expected`.

    `source` is where the file came from (a URL or a path), `name` what the user calls it
    (default: the last part of `source`).
    """
    actual = sha256_file(path)
    if actual != expected.lower():
        raise HashMismatch(name or display_name(source), source, expected.lower(), actual)


def display_name(source: str) -> str:
    """The last part of a URL or path, for messages: `.../goss_v0.0.1.tar.gz` -> the name."""
    tail = source.split("?", 1)[0].rstrip("/")
    return os.path.basename(tail) or source


# --- origin: signed repositories (docs/repository.md, "Signatures") -------------------------
#
# A repository proves its origin with an OpenPGP detached signature, SHA256SUMS.gpg, over
# SHA256SUMS in each <arch> directory: the layout systemd's importctl and sysupdate read.
# SHA256SUMS lists index.json and every tarball; index.json carries a generation and an
# expiry. The check is gpgv's (no OpenPGP parsing here, only ASCII armor removed from key
# files); what gpgv reports is read from its --status-fd lines, since it exits 0 for a
# signature by an expired or revoked key too. The network code only fetches bytes: what
# to trust is decided here.

MAX_SUMS = 8 << 20  # 10,000 packages take about 1 MB
MAX_SIGNATURE = 64 << 10
MAX_KEY_FILE = 1 << 20
MAX_KEY_FILES = 64
KEY_SUFFIXES = (".asc", ".gpg", ".pgp")
GPGV_TIMEOUT = 30.0
FINGERPRINT_RE = re.compile(r"\A(?:[0-9A-F]{40}|[0-9A-F]{64})\Z")
_SUMS_LINE = re.compile(r"\A([0-9a-fA-F]{64}) [ *]([^/\x00-\x1f]+)\Z")


class Verification(str, enum.Enum):
    """How a repository's packages are checked: signed by a trusted key (the default),
    or against the repository's own index only (`verify: checksum`, warned on every use)."""

    SIGNATURE = "signature"
    CHECKSUM = "checksum"


class UntrustedRepository(LayershellError):
    """A repository whose origin is not proven: unsigned, badly signed, by a key that is
    not trusted, expired or revoked, or files that do not match what was signed."""

    exit_code = 3


class StaleRepository(LayershellError):
    """A validly signed index that is older than one already accepted (rollback, replay)
    or past its expiry (freeze)."""

    exit_code = 4


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


def parse_sums(data: bytes, where: str) -> dict[str, str]:
    """SHA256SUMS as sha256sum writes it: file name -> lower-case hex, one line each."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UntrustedRepository(
            f"{where}: {SUMS_NAME} is not UTF-8 text", "write it with sha256sum or core repo index"
        ) from None
    sums: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        found = _SUMS_LINE.match(line)
        if found is None:
            raise UntrustedRepository(
                f"{where}: {SUMS_NAME} line {number} is not `<sha256>  <file name>`",
                "write it with sha256sum or core repo index",
            )
        name = found.group(2)
        if name in sums and sums[name] != found.group(1).lower():
            raise UntrustedRepository(
                f"{where}: {SUMS_NAME} lists {name} twice, differently",
                "write it again with core repo index",
            )
        sums[name] = found.group(1).lower()
    return sums


@dataclass(frozen=True)
class Accepted:
    """One repository's <arch> directory as this host accepted it."""

    repository: str
    arch: str
    verification: Verification
    signed: Signed | None = None
    generation: int | None = None
    expires: str | None = None
    sums: dict[str, str] | None = None  # what SHA256SUMS lists, when signed
    index: bytes | None = None  # index.json's bytes, matched against SHA256SUMS

    def confirm(self, name: str, version: str, file_name: str, sha256: str | None) -> None:
        """A tarball chosen from the index is the one SHA256SUMS lists (and signed)."""
        if self.sums is None:
            return
        listed = self.sums.get(file_name)
        if listed is None or sha256 is None or listed != sha256.lower():
            what = "does not list" if listed is None else "lists another sha256 for"
            raise UntrustedRepository(
                f"{name} {version} from {self.repository}: the signed {SUMS_NAME} {what}"
                f" {file_name}",
                "the index and the signed checksums disagree: do not use this repository"
                " until its publisher runs core repo index --sign again",
            )

    def record(self) -> dict[str, object]:
        """What an installed version keeps of how it was verified (core info, list)."""
        out: dict[str, object] = {"verification": self.verification.value}
        if self.signed is not None:
            out.update(key=self.signed.fingerprint, at=round(self.signed.at, 3))
        if self.generation is not None:
            out["generation"] = self.generation
        return out


class Trust:
    """Which repositories this host trusts and how; accepts each <arch> directory once
    per operation, and remembers the newest generation it accepted of each (in
    `record_file`, the installing layer's own; with every installed version too)."""

    def __init__(
        self,
        keys_dir: str,
        settings: tuple[RepositoryTrust, ...] = (),
        *,
        record_file: str | None = None,
        warn: Callable[[str], None] | None = None,
        now: Callable[[], float] = time.time,
        history: Callable[[], dict[str, int]] | None = None,
    ) -> None:
        self.keys_dir = keys_dir
        self.settings = {s.url: s for s in settings}
        self.record_file = record_file
        self.warn = warn
        self.now = now
        self.history = history
        self._accepted: dict[tuple[str, str], Accepted] = {}
        self._warned: set[str] = set()
        self.read_only = False  # a dry run checks against the record but does not write it

    def settings_for(self, repository: str) -> RepositoryTrust:
        return self.settings.get(repository) or RepositoryTrust(repository)

    def restrictions(self, repository: str) -> dict[str, object]:
        """The manifest's `keys:` and `key_fingerprint:` for a repository, as an
        installed version records them (so that its updates keep them, `adopt`)."""
        record = self.settings_for(repository).as_record()
        return {k: v for k, v in record.items() if k in ("keys", "key_fingerprint")}

    def adopt(self, repository: str, verified: object) -> None:
        """An installed version's recorded restrictions for its repository, when the
        manifest at hand says nothing of it (an install made with --config, or a host
        manifest that does not load): a record can only narrow which keys sign, never
        opt a repository out of signatures."""
        from layershell.packages import repo

        if not isinstance(verified, dict) or verified.get("verification") != "signature":
            return
        try:
            base = repo.check_repository(repository)
        except LayershellError:
            return
        if base in self.settings:
            return
        keys, fingerprints = verified.get("keys"), verified.get("key_fingerprint")
        names = tuple(
            k for k in (keys if isinstance(keys, list) else ())
            if isinstance(k, str) and k == os.path.basename(k) and not k.startswith(".")
        )  # fmt: skip
        pins = tuple(
            f
            for f in (
                normal_fingerprint(x) if isinstance(x, str) else None
                for x in (fingerprints if isinstance(fingerprints, list) else ())
            )
            if f is not None
        )
        if names or pins:
            self.settings[base] = RepositoryTrust(base, Verification.SIGNATURE, names, pins)

    def _record(self) -> dict[str, object]:
        """repositories.json as it is; {} when there is none or it is damaged (the
        installed versions' generations still say, `history`)."""
        import json

        if self.record_file is None:
            return {}
        try:
            with open(self.record_file, encoding="utf-8") as f:
                doc = json.loads(f.read(MAX_SUMS))
        except (OSError, ValueError, RecursionError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def _generations(self) -> dict[str, int]:
        seen: dict[str, int] = dict(self.history() if self.history else {})
        for where, value in self._record().items():
            if isinstance(value, dict) and type(value.get("generation")) is int:
                seen[where] = max(seen.get(where, 0), value["generation"])
        return seen

    def _remember(self, where: str, accepted: Accepted) -> None:
        import json

        from layershell.atomic import write_atomic

        if self.record_file is None or accepted.generation is None or self.read_only:
            return
        doc = self._record()
        old = doc.get(where)
        if (
            isinstance(old, dict)
            and type(old.get("generation")) is int
            and (old["generation"] >= accepted.generation)
        ):
            return
        doc[where] = {
            "generation": accepted.generation,
            "key": accepted.signed.fingerprint if accepted.signed else None,
            "at": round(self.now(), 3),
        }
        os.makedirs(os.path.dirname(self.record_file), exist_ok=True)
        write_atomic(self.record_file, json.dumps(doc, indent=1, sort_keys=True) + "\n")

    def accept(
        self,
        repository: str,
        arch: str,
        get_small: Callable[[str], bytes | None],
        get_index: Callable[[str], bytes | None],
    ) -> Accepted:
        """The repository's <arch> directory, its origin proven (or, for `verify:
        checksum`, a warning); UntrustedRepository or StaleRepository otherwise."""
        key = (repository, arch)
        if key in self._accepted:
            return self._accepted[key]
        trust = self.settings_for(repository)
        if trust.verify is Verification.CHECKSUM:
            if repository not in self._warned and self.warn is not None:
                self._warned.add(repository)
                self.warn(
                    f"warning: {repository}: verify: checksum, so its packages are checked"
                    " only against its own index, and whoever can change the repository can"
                    " change them (sign it: core repo index --sign KEY)"
                )
            accepted = Accepted(repository, arch, Verification.CHECKSUM)
            self._accepted[key] = accepted
            return accepted
        accepted = self._signed(trust, repository, arch, get_small, get_index)
        self._remember(f"{repository}/{arch}", accepted)
        self._accepted[key] = accepted
        return accepted

    def _signed(
        self,
        trust: RepositoryTrust,
        repository: str,
        arch: str,
        get_small: Callable[[str], bytes | None],
        get_index: Callable[[str], bytes | None],
    ) -> Accepted:
        from layershell.packages import repo

        base = repo.arch_url(repository, arch)
        where = f"{repository} ({arch})"
        unsigned = (
            f"put the repository's key in {self.keys_dir}/ once it is signed (core repo index"
            " DIR --sign KEY), or opt out for this repository alone with `verify: checksum`"
            " under its entry in the manifest's repositories:"
        )
        sums = get_small(f"{base}/{SUMS_NAME}")
        if sums is None:
            raise UntrustedRepository(
                f"{where}: not signed: there is no {base}/{SUMS_NAME}", unsigned
            )
        signature = get_small(f"{base}/{SIGNATURE_NAME}")
        if signature is None:
            raise UntrustedRepository(
                f"{where}: not signed: there is no {base}/{SIGNATURE_NAME}", unsigned
            )
        if len(sums) > MAX_SUMS or len(signature) > MAX_SIGNATURE:
            raise UntrustedRepository(
                f"{where}: {SUMS_NAME} or {SIGNATURE_NAME} is too large (limits"
                f" {MAX_SUMS >> 20} MiB and {MAX_SIGNATURE >> 10} KiB)",
                "check the repository",
            )
        signed = check_signature(trust, self.keys_dir, signature, sums, where)
        listed = parse_sums(sums, where)
        if repo.INDEX_NAME not in listed:
            raise UntrustedRepository(
                f"{where}: the signed {SUMS_NAME} does not list {repo.INDEX_NAME}",
                "publish with core repo index DIR --sign KEY",
            )
        data = get_index(f"{base}/{repo.INDEX_NAME}")
        if data is None or hashlib.sha256(data).hexdigest() != listed[repo.INDEX_NAME]:
            what = "is missing" if data is None else f"does not match the signed {SUMS_NAME}"
            raise UntrustedRepository(
                f"{where}: {repo.INDEX_NAME} {what}",
                "the repository was changed after it was signed, or it is being published"
                " right now: try again later, and if it persists, do not use it",
            )
        index = repo.parse_index(data, f"{base}/{repo.INDEX_NAME}")
        if index.generation is None or index.expires is None:
            raise UntrustedRepository(
                f"{where}: its signed index has no generation or expiry",
                "publish it again with core repo index DIR --sign KEY",
            )
        expires = repo.expiry_time(index.expires) or 0.0
        keep = "the installed versions are kept"
        if expires <= self.now():
            raise StaleRepository(
                f"{where}: its signed index expired at {index.expires}: a repository whose"
                " publisher stopped re-signing it, or someone serving an old copy (a freeze)",
                f"ask its publisher to publish again (core repo index --sign); {keep}",
            )
        newest = self._generations().get(f"{repository}/{arch}", 0)
        if index.generation < newest:
            raise StaleRepository(
                f"{where}: it serves generation {index.generation}, older than the"
                f" generation {newest} this host already accepted: an old copy (a rollback"
                " or replay)",
                f"use an up-to-date mirror, or ask the publisher; {keep}",
            )
        return Accepted(
            repository,
            arch,
            Verification.SIGNATURE,
            signed,
            index.generation,
            index.expires,
            listed,
            data,
        )
