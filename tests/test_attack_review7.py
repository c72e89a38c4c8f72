"""Review 7: attacks on signed repositories (docs/repository.md, "Signatures").

Each test is written as the attack and asserts what should happen; before the fixes in
this branch they failed (see the commit that added this file and the review report)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from layershell.packages import fetch, repo, verify
from layershell.packages.verify.signature import (
    MAX_SIGNATURE,
    RepositoryTrust,
    UntrustedRepository,
    check_signature,
)
from tests import signing
from tests.packages import Repository, program
from tests.servers import HttpRepo
from tests.support import Identity, python_cmd, rootless_store
from tests.test_signed_repos import NAME, install, manifest, published, says  # noqa: F401

KEYS = ".config/layershell/keys"


def pin(url: str, fingerprint: str) -> str:
    return f"  repositories:\n    - url: {url}\n      key_fingerprint: {fingerprint}\n"


def trust_other(ident: Identity) -> None:
    """A second key the host trusts (for another repository, say)."""
    signing.other().trust(ident.home / KEYS, (ident.uid, ident.gid), name="other.asc")


# --- 1. core update forgets the key pin of the manifest that installed -----------------


def pinned_repository(ident: Identity, shared_dir: Path) -> Repository:
    """1.0 signed by the suite's key, with the other key trusted too (for some other
    repository): what a pin on this one must keep out."""
    trust_other(ident)
    r = Repository(shared_dir / "repo")
    r.add(NAME, "1.0", program(NAME, "1.0"))
    r.index()
    return r


def test_update_keeps_the_key_pin_the_install_was_made_with(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    ident = fresh_rootless
    r = pinned_repository(ident, shared_dir)
    config = manifest(ident, r.file_url, pin(r.file_url, signing.key().fingerprint))
    done = install(ident, config)
    assert done.returncode == 0, done.stderr.decode()
    # The holder of the other key (trusted here for some other repository) publishes 2.0.
    r.add(NAME, "2.0", program(NAME, "2.0"))
    r.index(sign=signing.other(), generation=10)
    again = install(ident, config)
    assert again.returncode == 3 and "key_fingerprint" in again.stderr.decode()
    assert says(ident) == f"{NAME} 1.0"
    # The daily update must refuse it just the same.
    update = ident.run(python_cmd("update"), timeout=120)
    assert says(ident) == f"{NAME} 1.0", update.stdout.decode() + update.stderr.decode()


def test_a_broken_host_manifest_does_not_drop_its_key_pins(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    ident = fresh_rootless
    r = pinned_repository(ident, shared_dir)
    host = ident.home / ".config/layershell/composable.yaml"
    text = manifest(ident, r.file_url, pin(r.file_url, signing.key().fingerprint)).read_text()
    host.write_text(text)
    done = ident.run(python_cmd("install"), timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    r.add(NAME, "2.0", program(NAME, "2.0"))
    r.index(sign=signing.other(), generation=10)
    update = ident.run(python_cmd("update"), timeout=120)
    assert says(ident) == f"{NAME} 1.0", update.stderr.decode()  # the pin holds
    # One unknown key in the manifest (a typo, a newer layershell's setting): the
    # update must not fall back to "every key for every repository".
    host.write_text(text.replace("composable:\n", "composable:\n  colour: red\n"))
    update = ident.run(python_cmd("update"), timeout=120)
    assert says(ident) == f"{NAME} 1.0", update.stdout.decode() + update.stderr.decode()


# --- 2. rollback protection resets when repositories.json is lost ----------------------


def test_rollback_is_refused_after_repositories_json_is_lost(
    published: tuple[Identity, Repository],  # noqa: F811
) -> None:
    ident, r = published
    r.index(generation=5)
    done = install(ident, manifest(ident, r.file_url))
    assert done.returncode == 0 and says(ident) == f"{NAME} 2.0", done.stderr.decode()
    # The record of generation 5 is gone (a restore from backup, a damaged file): the
    # installed version still says it was verified at generation 5 (verify.Trust's
    # `history`, "the installed versions still say").
    (rootless_store(ident) / "repositories.json").write_text("{damaged")
    r.add(NAME, "3.0", program(NAME, "3.0"))
    r.index(generation=4)  # last month's copy, still within its expiry
    again = install(ident, manifest(ident, r.file_url))
    assert again.returncode == 4, again.stderr.decode()
    assert says(ident) == f"{NAME} 2.0"


# --- 3. hangs: a FIFO in a file:// repository, a trickling HTTP mirror ----------------


def test_a_fifo_for_sha256sums_does_not_hang_the_install(
    published: tuple[Identity, Repository],  # noqa: F811
) -> None:
    ident, r = published
    r.index()
    sums = r.arch_dir / repo.SUMS_NAME
    sums.unlink()
    os.mkfifo(sums, 0o644)
    try:
        done = ident.run(
            python_cmd("install", "--config", str(manifest(ident, r.file_url))), timeout=20
        )
    except subprocess.TimeoutExpired:
        pytest.fail("core install blocked on a FIFO named SHA256SUMS (holding the layer lock)")
    assert done.returncode != 0 and "Traceback" not in done.stderr.decode()
    assert says(ident) == f"{NAME} 1.0"


def test_a_trickling_mirror_cannot_stall_signature_checks(tmp_path: Path) -> None:
    """A mirror (or anyone on an http:// path) sends SHA256SUMS one byte at a time, each
    within the read timeout: the small-file fetch has no deadline, unlike a tarball."""
    r = Repository(tmp_path / "repo")
    r.add(NAME, "1.0", program(NAME, "1.0"))
    r.index()
    keys = tmp_path / "keys"
    signing.key().trust(keys)
    with HttpRepo(tmp_path) as server:
        server.slow(f"/repo/{r.arch_dir.name}/{repo.SUMS_NAME}", 0.2)  # ~250 bytes: ~50 s
        fetcher = fetch.Fetcher(
            str(tmp_path / "cache"), read_timeout=2, retries=0, min_rate=1000, grace=3
        )
        trust = verify.Trust(str(keys))
        # Abandoned by the deadline, as a tarball would be; before, the fetch went on for
        # as long as the mirror liked (~50 s here) and then verified.
        with pytest.raises(fetch.FetchError, match="slower than the minimum"):
            trust.accept(f"{server.url}/repo", r.arch_dir.name, fetcher.get_text, fetcher.get_index)


# --- 4. gpgv made to burn its whole timeout by a 64 KiB signature ----------------------


def test_a_compressed_signature_bomb_is_refused_quickly(tmp_path: Path) -> None:
    """150,000 copies of one signature by an untrusted key, deflated into one compressed
    packet, fit in 63 KB; gpgv takes minutes over them (quadratic), so every operation
    waits the full GPGV_TIMEOUT and is then told to "try again"."""
    import struct
    import zlib

    data = b"sums\n"
    sig_file = tmp_path / "one.sig"
    data_file = tmp_path / "data"
    data_file.write_bytes(data)
    signing.other().gpg("--detach-sign", "--output", str(sig_file), str(data_file))
    inner = sig_file.read_bytes() * 150_000
    packer = zlib.compressobj(9, wbits=-15)
    body = b"\x01" + packer.compress(inner) + packer.flush()
    bomb = b"\xc8\xff" + struct.pack(">I", len(body)) + body
    assert len(bomb) < MAX_SIGNATURE
    keys = tmp_path / "keys"
    signing.key().trust(keys)
    # Refused by its framing, before gpgv sees it (gpgv used to spin to its timeout).
    with pytest.raises(UntrustedRepository, match="is not a detached signature"):
        check_signature(RepositoryTrust("file:///r"), str(keys), bomb, data, "r")


# --- 5. core ignition publishes whatever else a key file holds ------------------------


def test_ignition_never_embeds_a_secret_key(tmp_path: Path, units: Path) -> None:  # noqa: F811
    """A key file that holds the public key and, after it, the secret key (a backup made
    with >>): verification uses only the public block, and the file as a whole went into
    the Ignition config (user data, readable by whoever can read it; and 0644 on the host)."""
    from tests.test_ignition import by_path, decode, one_package, run, write_manifest

    r = Repository(tmp_path / "repo")
    r.add("goss", "v0.0.1")
    r.index()
    key = signing.key()
    secret = key.gpg(
        "--pinentry-mode", "loopback", "--passphrase", "", "--armor",
        "--export-secret-keys", key.fingerprint,
    ).stdout  # fmt: skip
    keys = tmp_path / "host/etc/layershell/keys"
    keys.mkdir(parents=True)
    (keys / "fleet.asc").write_bytes(key.public + secret)
    out = tmp_path / "config.ign"
    result = run(tmp_path, str(write_manifest(tmp_path, one_package(r.file_url))), "-o", str(out))
    if result.exit_code != 0:  # refused, saying why: nothing is written
        assert "secret key" in result.output + result.stderr and not out.exists()
        return
    import json

    files = by_path(json.loads(out.read_text())["storage"]["files"])
    embedded = {p: decode(f["contents"]["source"]) for p, f in files.items() if "/keys/" in p}
    assert embedded, files.keys()
    for path, content in embedded.items():
        assert b"PRIVATE KEY" not in content, path


# --- 6. a `verify: checksum` repository crashes the parser with a traceback ------------


def test_a_deeply_nested_index_is_refused_without_a_traceback(
    published: tuple[Identity, Repository],  # noqa: F811
) -> None:
    ident, r = published
    (r.arch_dir / repo.INDEX_NAME).write_bytes(b"[" * 100_000)
    opt_out = f"  repositories:\n    - url: {r.file_url}\n      verify: checksum\n"
    done = install(ident, manifest(ident, r.file_url, opt_out))
    err = done.stderr.decode()
    assert done.returncode != 0 and "Traceback" not in err, err
    assert says(ident) == f"{NAME} 1.0"


# The `units` fixture of the Ignition tests (the shipped units, placeholders for others).
from tests.test_ignition import units  # noqa: E402, F401


def test_a_fifo_for_the_tarball_does_not_hang_the_install(
    fresh_rootless: Identity, shared_dir: Path
) -> None:
    """The tarball's own path too (the index names it, the FIFO replaces it)."""
    r = Repository(shared_dir / "repo")
    tarball = r.add("fifo", "1.0", program("fifo", "1.0"))
    r.index()
    tarball.unlink()
    os.mkfifo(tarball, 0o644)
    config = fresh_rootless.home / "fifo.yaml"
    config.write_text(f"composable:\n  default_repository: {r.file_url}\n  packages:\n"
                      "    - name: fifo\n      version: '1.0'\n")  # fmt: skip
    done = fresh_rootless.run(python_cmd("install", "--config", str(config)), timeout=60)
    assert done.returncode != 0 and b"not a regular file" in done.stderr, done.stderr
