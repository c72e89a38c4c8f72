from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import support


@pytest.fixture(scope="session")
def rootless() -> Iterator[support.Identity]:
    """An ordinary identity with `core --rootless init` done in a private HOME."""
    if not support.userns_available():
        pytest.skip("unprivileged user namespaces are disabled on this kernel")
    with support.rootless_identity() as ident:
        yield ident


@pytest.fixture(scope="session")
def system() -> Iterator[support.SystemStack]:
    """A system-mode stack: real accounts, real PAM service, relocated root."""
    if not support.IS_ROOT:
        pytest.skip("needs root: creates accounts and a PAM service (CI runs as root)")
    with support.system_stack() as stack:
        yield stack
