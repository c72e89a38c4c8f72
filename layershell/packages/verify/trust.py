"""Trust: which repositories this host accepts, each <arch> directory once per
operation: its signature (signature.py), SHA256SUMS matched against index.json and each
tarball, and the generation and expiry of what was signed, remembered across runs."""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from layershell.errors import LayershellError
from layershell.packages.repo.layout import SIGNATURE_NAME, SUMS_NAME
from layershell.packages.verify.signature import (
    MAX_SIGNATURE,
    RepositoryTrust,
    Signed,
    UntrustedRepository,
    Verification,
    check_signature,
    normal_fingerprint,
)

MAX_SUMS = 8 << 20  # 10,000 packages take about 1 MB
_SUMS_LINE = re.compile(r"\A([0-9a-fA-F]{64}) [ *]([^/\x00-\x1f]+)\Z")


class StaleRepository(LayershellError):
    """A validly signed index that is older than one already accepted (rollback, replay)
    or past its expiry (freeze)."""

    exit_code = 4


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
