"""Issue 14's interop case: a repository `core repo index --sign` published is verified
by an independent implementation, systemd-importd (`machinectl pull-tar
--verify=signature`), in the systemd testbed, with the key in importd's keyring; and the
same call refuses a repository signed by a key importd does not have. The repository is
served over HTTP on the container's own loopback (the testbed has a private network)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import signing, testbed
from tests.packages import ARCH, Repository, program
from tests.support import make_shared_dir

pytestmark = pytest.mark.slow
PORT = 8751


@pytest.fixture(scope="module")
def importd() -> Iterator[testbed.Testbed]:
    testbed.require_testbed()
    work = make_shared_dir("layershell-importd-")
    good = Repository(work / "srv/good")
    good.add("sig", "1.0", program("sig", "1.0"))
    good.index()  # by `core repo index --sign`'s code, with the suite's key
    bad = Repository(work / "srv/bad")
    bad.add("sig", "1.0", program("sig", "1.0"))
    bad.index(sign=signing.other())
    ring = signing.key().gpg("--export", signing.key().fingerprint).stdout
    tb = testbed.Testbed()

    def prepare(root: Path) -> None:
        shutil.copytree(work / "srv", root / "srv", dirs_exist_ok=True)
        # importd's own keyring (systemd: /etc/systemd/import-pubring.gpg first).
        (root / "etc/systemd/import-pubring.gpg").write_bytes(ring)

    try:
        tb.start(prepare=prepare)
        served = tb.exec(
            "systemd-run",
            "--unit=repo-http",
            "python3",
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            "--directory",
            "/srv",
            str(PORT),
        )
        assert served.returncode == 0, served.stderr
        up = tb.exec(
            "sh",
            "-c",
            f"for i in $(seq 50); do curl -sf -o /dev/null "
            f"http://127.0.0.1:{PORT}/good/{ARCH}/SHA256SUMS && exit 0; sleep 0.1;"
            " done; exit 1",
        )
        assert up.returncode == 0, tb.exec("journalctl", "-u", "repo-http", "--no-pager").stdout
        yield tb
    finally:
        tb.stop()
        shutil.rmtree(work, ignore_errors=True)


def pull(tb: testbed.Testbed, which: str, name: str) -> tuple[int, str]:
    url = f"http://127.0.0.1:{PORT}/{which}/{ARCH}/sig_1.0.tar.gz"
    r = tb.exec("machinectl", "pull-tar", "--verify=signature", url, name, timeout=180)
    return r.returncode, r.stdout + r.stderr


def test_importd_accepts_a_repository_core_signed(importd: testbed.Testbed) -> None:
    code, said = pull(importd, "good", "sig-good")
    assert code == 0, said
    unpacked = importd.host_path("/var/lib/machines/sig-good/bin/sig")
    assert unpacked.read_text() == program("sig", "1.0")["bin/sig"]


def test_importd_refuses_a_repository_signed_by_another_key(importd: testbed.Testbed) -> None:
    code, said = pull(importd, "bad", "sig-bad")
    assert code != 0, said
    journal = importd.exec("journalctl", "--no-pager", "-o", "cat", "-u", "systemd-importd").stdout
    assert "signature" in (said + journal).lower(), said + journal
    assert not importd.host_path("/var/lib/machines/sig-bad").exists()
