"""Issue 14: repositories are verified by signature by default, over file://, http:// and
ftp://, and each way a repository can lie is refused with a message naming it and what
to do, while the installed version stays active and working (docs/repository.md,
"Signatures"). Real gpg signs, real gpgv checks; the keys are tests/signing.py's."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from layershell.packages import repo
from tests import signing
from tests.packages import Repository, program
from tests.servers import FtpRepo, HttpRepo
from tests.support import Identity, python_cmd, rootless_store

NAME = "sig"


def manifest(ident: Identity, url: str, extra: str = "", version: str = "latest") -> Path:
    path = ident.home / "composable.yaml"
    path.write_text(
        f"composable:\n  default_repository: {url}\n{extra}  packages:\n"
        f"    - name: {NAME}\n      version: {version}\n"
    )
    path.chmod(0o644)
    return path


def install(ident: Identity, config: Path) -> subprocess.CompletedProcess[bytes]:
    return ident.run(python_cmd("install", "--config", str(config)), timeout=120)


def says(ident: Identity) -> str:
    """What the installed program prints: which version is active and working."""
    return ident.run([NAME]).stdout.decode().strip()


@pytest.fixture
def published(fresh_rootless: Identity, shared_dir: Path) -> Iterator[tuple[Identity, Repository]]:
    """v1 signed and installed from a file:// repository; v2 published next to it."""
    ident = fresh_rootless
    r = Repository(shared_dir / "repo")
    r.add(NAME, "1.0", program(NAME, "1.0"))
    r.index()
    done = install(ident, manifest(ident, r.file_url))
    assert done.returncode == 0, done.stderr.decode()
    assert says(ident) == f"{NAME} 1.0"
    r.add(NAME, "2.0", program(NAME, "2.0"))
    yield ident, r


def refused(ident: Identity, r: Repository, *words: str, code: int = 3) -> str:
    done = install(ident, manifest(ident, r.file_url))
    err = done.stderr.decode()
    assert done.returncode == code, err
    assert r.file_url in err, err  # names the repository
    for word in words:
        assert word in err, err
    assert "Traceback" not in err
    assert says(ident) == f"{NAME} 1.0"  # the installed version stays active and working
    return err


@pytest.mark.parametrize("scheme", ["http", "ftp"])
def test_a_signed_repository_installs_over_the_network(
    fresh_rootless: Identity, shared_dir: Path, scheme: str
) -> None:
    r = Repository(shared_dir / "repo")
    r.add(NAME, "1.0", program(NAME, "1.0"))
    r.index()
    server = HttpRepo(shared_dir) if scheme == "http" else FtpRepo(shared_dir)
    with server:
        done = install(fresh_rootless, manifest(fresh_rootless, f"{server.url}/repo"))
    assert done.returncode == 0, done.stderr.decode()
    assert says(fresh_rootless) == f"{NAME} 1.0"


def test_installed_versions_say_which_key_verified_them(
    published: tuple[Identity, Repository],
) -> None:
    ident, _ = published
    listed = json.loads(ident.run(python_cmd("list", "--json")).stdout)
    (row,) = [p for p in listed if p["name"] == NAME]
    verified = row["spec"]["verified"]
    assert verified["verification"] == "signature"
    assert verified["key"] == signing.key().fingerprint
    assert verified["generation"] == 1 and verified["at"] > 0
    info = ident.run(python_cmd("info", NAME)).stdout.decode()
    assert signing.key().fingerprint in info, info


def test_a_repository_whose_key_is_not_trusted_is_refused(
    published: tuple[Identity, Repository],
) -> None:
    ident, r = published
    r.index()
    (ident.home / ".config/layershell/keys" / signing.TEST_KEY_FILE).unlink()
    refused(ident, r, "no trusted key", ".config/layershell/keys")


def test_a_repository_without_its_signature_is_refused(
    published: tuple[Identity, Repository],
) -> None:
    ident, r = published
    r.index()
    (r.arch_dir / repo.SIGNATURE_NAME).unlink()
    refused(ident, r, "not signed", repo.SIGNATURE_NAME, "verify: checksum")


def test_an_unsigned_repository_is_refused_and_installs_with_verify_checksum(
    published: tuple[Identity, Repository],
) -> None:
    ident, r = published
    r.index(sign=False)
    refused(ident, r, "not signed")
    opt_out = f"  repositories:\n    - url: {r.file_url}\n      verify: checksum\n"
    done = install(ident, manifest(ident, r.file_url, opt_out))
    assert done.returncode == 0, done.stderr.decode()
    assert "warning:" in done.stderr.decode() and "verify: checksum" in done.stderr.decode()
    assert says(ident) == f"{NAME} 2.0"
    # Without the opt-out the same repository is refused again, and 2.0 stays.
    r.add(NAME, "3.0", program(NAME, "3.0"))
    r.index(sign=False)
    again = install(ident, manifest(ident, r.file_url))
    assert again.returncode == 3 and "not signed" in again.stderr.decode()
    assert says(ident) == f"{NAME} 2.0"


@pytest.mark.parametrize("victim", ["index.json", "SHA256SUMS", "tarball"])
def test_one_byte_changed_after_signing_is_refused(
    published: tuple[Identity, Repository], victim: str
) -> None:
    ident, r = published
    r.index()
    path = r.arch_dir / (f"{NAME}_2.0.tar.gz" if victim == "tarball" else victim)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    if victim == "tarball":
        # The index and its signature are intact: the tarball fails its sha256.
        done = install(ident, manifest(ident, r.file_url))
        assert done.returncode != 0 and "sha256 mismatch" in done.stderr.decode()
        assert says(ident) == f"{NAME} 1.0"
    else:
        refused(ident, r, "SHA256SUMS" if victim == "SHA256SUMS" else "index.json")


def test_a_tarball_the_signed_sums_do_not_vouch_for_is_refused(
    published: tuple[Identity, Repository],
) -> None:
    """index.json and SHA256SUMS rewritten together but not signed again: the signature
    no longer matches."""
    ident, r = published
    r.index()
    sums = (r.arch_dir / repo.SUMS_NAME).read_text()
    (r.arch_dir / repo.SUMS_NAME).write_text(sums.replace(f"{NAME}_2.0", f"{NAME}_2.0x"))
    refused(ident, r, "bad signature")


def test_a_repository_signed_by_another_key_is_refused(
    published: tuple[Identity, Repository],
) -> None:
    ident, r = published
    r.index(sign=signing.other())
    refused(ident, r, "not trusted here", signing.TEST_KEY_FILE)


def test_a_pinned_fingerprint_refuses_another_trusted_key(
    published: tuple[Identity, Repository],
) -> None:
    ident, r = published
    signing.other().trust(
        ident.home / ".config/layershell/keys", (ident.uid, ident.gid), name="other.asc"
    )
    r.index(sign=signing.other())
    fpr = signing.key().fingerprint
    pin = f"  repositories:\n    - url: {r.file_url}\n      key_fingerprint: {fpr}\n"
    done = install(ident, manifest(ident, r.file_url, pin))
    assert done.returncode == 3 and "key_fingerprint" in done.stderr.decode(), done.stderr
    assert says(ident) == f"{NAME} 1.0"


def test_a_repository_signed_by_an_expired_key_is_refused(
    published: tuple[Identity, Repository],
) -> None:
    import time

    ident, r = published
    key = signing.expiring()
    key.trust(ident.home / ".config/layershell/keys", (ident.uid, ident.gid), name="exp.asc")
    r.index(sign=key)
    time.sleep(max(0.0, 2.5))  # past the key's one-second life
    refused(ident, r, "expired")


def test_a_revoked_key_is_refused(
    published: tuple[Identity, Repository],
) -> None:
    ident, r = published
    key = signing.make("revoked")
    r.index(sign=key)
    # The admin replaces the trusted key file with the key and its revocation.
    rev = Path(key.home) / "openpgp-revocs.d" / f"{key.fingerprint}.rev"
    cert = rev.read_text().replace(":-----BEGIN", "-----BEGIN")
    cert_file = Path(key.home) / "revoked.rev"
    cert_file.write_text(cert)
    key.gpg("--import", str(cert_file))
    revoked = key.gpg("--armor", "--export", key.fingerprint).stdout
    keys = ident.home / ".config/layershell/keys"
    (keys / "revoked.asc").write_bytes(revoked)
    refused(ident, r, "revoked")


def test_rollback_to_an_older_generation_is_refused(
    published: tuple[Identity, Repository],
) -> None:
    ident, r = published
    r.index(generation=5)
    done = install(ident, manifest(ident, r.file_url))
    assert done.returncode == 0, done.stderr.decode()
    assert says(ident) == f"{NAME} 2.0"
    # A validly signed older publication, as a mirror keeping last month's copy serves.
    r.add(NAME, "3.0", program(NAME, "3.0"))
    r.index(generation=4)
    again = install(ident, manifest(ident, r.file_url))
    err = again.stderr.decode()
    assert again.returncode == 4 and "generation 4" in err and "generation 5" in err, err
    assert says(ident) == f"{NAME} 2.0"
    # The record of generation 5 is the layer's own, and survives in the store.
    kept = rootless_store(ident) / "repositories.json"
    record = json.loads(kept.read_text())
    assert record[f"{r.file_url}/{repo.host_arch()}"]["generation"] == 5
    # Lost, the record is what the installed versions say: 2.0 was verified at 5.
    kept.unlink()
    lost = install(ident, manifest(ident, r.file_url))
    assert lost.returncode == 4 and "generation 5" in lost.stderr.decode(), lost.stderr
    assert says(ident) == f"{NAME} 2.0"


def test_an_expired_index_is_refused(published: tuple[Identity, Repository]) -> None:
    ident, r = published
    import time

    r.index(now=time.time() - 40 * 86400)  # signed 40 days ago, valid for 30
    refused(ident, r, "expired", "freeze", code=4)


def test_a_repository_signed_by_hand_with_gpg_is_accepted(
    published: tuple[Identity, Repository],
) -> None:
    """`core repo index` without --sign, then the real gpg, with no layershell involved in
    signing: the layout importctl and sysupdate read."""
    ident, r = published
    r.index(sign=False)
    assert not (r.arch_dir / repo.SIGNATURE_NAME).exists()
    key = signing.key()
    key.gpg(
        "--local-user",
        key.fingerprint,
        "--detach-sign",
        "--output",
        str(r.arch_dir / repo.SIGNATURE_NAME),
        str(r.arch_dir / repo.SUMS_NAME),
    )
    (r.arch_dir / repo.SIGNATURE_NAME).chmod(0o644)
    # And sha256sum agrees with what core repo index wrote.
    check = subprocess.run(
        ["sha256sum", "--check", "--strict", repo.SUMS_NAME],
        cwd=r.arch_dir,
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    done = install(ident, manifest(ident, r.file_url))
    assert done.returncode == 0, done.stderr.decode()
    assert says(ident) == f"{NAME} 2.0"


def test_a_tarball_named_on_the_command_line_is_installed_as_given(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    r = Repository(shared_dir / "repo")
    path = r.add(NAME, "1.0", program(NAME, "1.0"))
    done = fresh_rootless.run(python_cmd("install", str(path)))
    assert done.returncode == 0, done.stderr.decode()
    assert "no signature was checked" in done.stderr.decode()


def test_core_repo_index_signs_with_gpg(shared_dir: Path) -> None:
    """The command itself, with the key in GNUPGHOME: gpgv accepts what it signed."""
    from tests.support import python_cmd as cmd

    r = Repository(shared_dir / "repo")
    r.add(NAME, "1.0", program(NAME, "1.0"))
    key = signing.key()
    done = subprocess.run(
        cmd("repo", "index", str(r.arch_dir), "--sign", key.fingerprint, "--expires", "7d"),
        env={"GNUPGHOME": key.home, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "generation 1" in done.stdout and "SHA256SUMS.gpg" in done.stdout
    ring = shared_dir / "ring.gpg"
    ring.write_bytes(key.gpg("--export", key.fingerprint).stdout)
    gpgv = subprocess.run(
        [
            "gpgv",
            "--keyring",
            str(ring),
            str(r.arch_dir / repo.SIGNATURE_NAME),
            str(r.arch_dir / repo.SUMS_NAME),
        ],
        capture_output=True,
        check=False,
    )
    assert gpgv.returncode == 0, gpgv.stderr
    index = json.loads((r.arch_dir / "index.json").read_text())
    assert index["generation"] == 1 and index["expires"].endswith("Z")
    again = subprocess.run(
        cmd("repo", "index", str(r.arch_dir)), capture_output=True, text=True, check=False
    )
    assert "generation 2" in again.stdout and not (r.arch_dir / repo.SIGNATURE_NAME).exists()
    assert "removed the old SHA256SUMS.gpg" in again.stderr
