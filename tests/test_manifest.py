"""layershell.packages.manifest: composable.yaml validation with exact `FILE:LINE:COL: key: message`
problems, all reported at once, and the Manifest it becomes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from layershell.errors import ConfigError, LayershellError
from layershell.packages import manifest, manifest_exposure, manifest_repositories
from layershell.packages.manifest import (
    InstallMethod,
    Manifest,
    PackageSpec,
    Profile,
    TrackStream,
    VersionKind,
)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "composable.yaml"

# One expected problem: (line, column, "key: message (hint)"); the file is prepended.
Expected = list[tuple[int, int, str]]


def yml(*lines: str) -> str:
    """A document whose line N is the N-th argument, so line numbers can be read off."""
    return "\n".join(lines) + "\n"


TOP = ("composable:", "  default_repository: https://composable.example", "  packages:")  # 1-3
GOSS = ("    - name: goss", "      version: v0.0.1")  # lines 4-5; the entry starts at 4:7
P0 = "composable.packages.0"

DIGEST = "0123456789abcdef" * 4
NO_DOCUMENT = "must be a mapping with a 'composable:' key (start the file with composable:)"
NOT_MANIFEST = (
    "composable: must be a mapping with default_repository: and packages:"
    " (indent them below composable:)"
)
NOT_PACKAGE = f"{P0}: each package must be a mapping (name:, version:, ...)"
NAME_HINT = "(use letters, digits, '.', '_', '+' or '-', starting with a letter or digit)"
VERSION_HINT = "(for example v0.0.1, or latest, or os to follow the host OS version)"
URL_EXAMPLE = "(for example https://composable.example or file:///run/media/usb/repo)"
UNIT_TYPES = "(end it in .service, .socket, .timer, .path, .target)"
NO_REPOSITORY = (
    f"{P0}: no repository: the package has none and there is no default_repository"
    " (add repository: to the package, or default_repository: under composable:)"
)
BAD_SHA = (
    f"{P0}.sha256: must be a SHA-256 digest: 64 hex digits, optionally after 'sha256:'"
    " (copy it from `sha256sum FILE`)"
)
PROTOCOLS = "(use file://, http://, https:// or ftp://)"
EXECUTABLE_HINT = (
    "(use letters, digits, '.', '_', '+', '@' or '-', starting with a letter or digit)"
)


def prefix(unit: str) -> str:
    return (
        f"unit {unit!r} does not start with the package name 'goss' (systemd portable"
        " services only attach units whose name starts with the image name and '-', '.' or"
        " '@', as in goss.socket, goss-serve.service or goss@.service)"
    )


def with_repository(url: str) -> str:
    return yml(*TOP, *GOSS, f"      repository: {url}")


BAD: list[Any] = [
    # --- the document ---------------------------------------------------------------
    pytest.param("", [(1, 1, NO_DOCUMENT)], id="document-empty"),
    pytest.param(yml("- goss"), [(1, 1, NO_DOCUMENT)], id="document-is-list"),
    pytest.param(yml("", "goss v0.0.1"), [(2, 1, NO_DOCUMENT)], id="document-is-text"),
    pytest.param(
        yml("composeable:", "  packages: []"),
        [(1, 1, NO_DOCUMENT), (1, 1, "composeable: unknown key (did you mean 'composable'?)")],
        id="top-key-typo",
    ),
    pytest.param(
        yml("packages: []"),
        [(1, 1, NO_DOCUMENT), (1, 1, "packages: unknown key (known keys: composable)")],
        id="top-packages-without-composable",
    ),
    pytest.param("composable:\n", [(1, 12, NOT_MANIFEST)], id="composable-null"),
    pytest.param("composable: goss\n", [(1, 13, NOT_MANIFEST)], id="composable-text"),
    pytest.param(
        yml(*TOP, *GOSS, "version: 2"),
        [(6, 1, "version: unknown key (known keys: composable)")],
        id="top-key-unknown",
    ),
    pytest.param(
        yml(*TOP, *GOSS, "composable: {}"),
        [(6, 1, "composable: duplicate key (it is already set on line 1; keep one)")],
        id="top-key-duplicate",
    ),
    # --- the composable: mapping ----------------------------------------------------
    pytest.param(
        yml("composable:", "  default_repo: https://composable.example", "  packages:", *GOSS),
        [
            (
                2,
                3,
                "composable.default_repo: unknown key (did you mean 'default_repository'?)",
            ),
            (4, 7, NO_REPOSITORY),
        ],
        id="manifest-key-typo",
    ),
    pytest.param(
        yml(*TOP[:2]),
        [
            (
                2,
                3,
                "composable: missing key 'packages'"
                " (list them under packages:, or write packages: [] for none)",
            )
        ],
        id="packages-missing",
    ),
    pytest.param(
        yml(*TOP),
        [
            (
                3,
                12,
                "composable.packages: must be a list of packages, not empty"
                " (start each package with '- name:'; use packages: [] for none)",
            )
        ],
        id="packages-null",
    ),
    pytest.param(
        yml(*TOP[:2], "  packages: goss"),
        [
            (
                3,
                13,
                "composable.packages: must be a list of packages, not text"
                " (start each package with '- name:'; use packages: [] for none)",
            )
        ],
        id="packages-text",
    ),
    pytest.param(
        yml(*TOP, "    name: goss"),
        [
            (
                4,
                5,
                "composable.packages: must be a list of packages, not a mapping"
                " (start each package with '- name:'; use packages: [] for none)",
            )
        ],
        id="packages-mapping",
    ),
    # --- a package's own keys -------------------------------------------------------
    pytest.param(yml(*TOP, "    - goss"), [(4, 7, NOT_PACKAGE)], id="package-text"),
    pytest.param(yml(*TOP, "    - [goss, v0.0.1]"), [(4, 7, NOT_PACKAGE)], id="package-list"),
    pytest.param(
        yml(*TOP, "    - version: v0.0.1"),
        [(4, 7, f"{P0}: missing key 'name' (for example name: goss)")],
        id="name-missing",
    ),
    pytest.param(
        yml(*TOP, "    - name: goss"),
        [(4, 7, f"{P0}: missing key 'version' {VERSION_HINT}")],
        id="version-missing",
    ),
    pytest.param(
        yml(*TOP, "    - name: goss", "      verison: v0.0.1"),
        [
            (4, 7, f"{P0}: missing key 'version' {VERSION_HINT}"),
            (5, 7, f"{P0}.verison: unknown key (did you mean 'version'?)"),
        ],
        id="package-key-typo",
    ),
    pytest.param(
        yml(*TOP, *GOSS, "      version: v0.0.2"),
        [(6, 7, f"{P0}.version: duplicate key (it is already set on line 5; keep one)")],
        id="package-key-duplicate",
    ),
    pytest.param(
        yml(*TOP, "    - name: 42", "      version: v0.0.1"),
        [(4, 13, f"{P0}.name: invalid package name 42 {NAME_HINT}")],
        id="name-number",
    ),
    pytest.param(
        yml(*TOP, "    - name: -goss", "      version: v0.0.1"),
        [(4, 13, f"{P0}.name: invalid package name '-goss' {NAME_HINT}")],
        id="name-leading-dash",
    ),
    pytest.param(
        yml(*TOP, "    - name: goss", "      version: v0_1"),
        [
            (
                5,
                16,
                f"{P0}.version: invalid version 'v0_1': '_' separates name and version in"
                " file names (use '.', '+', '~' or '-' instead)",
            )
        ],
        id="version-underscore",
    ),
    pytest.param(
        yml(*TOP, "    - name: goss", "      version: v0/1"),
        [
            (
                5,
                16,
                f"{P0}.version: invalid version 'v0/1': a version may not contain '/'"
                f" {VERSION_HINT}",
            )
        ],
        id="version-slash",
    ),
    pytest.param(
        yml(*TOP, "    - name: goss", "      version: ~rc1"),
        [
            (
                5,
                16,
                f"{P0}.version: invalid version '~rc1' (use letters, digits, '.', '+', '~' or"
                " '-', starting with a letter or digit)",
            )
        ],
        id="version-leading-tilde",
    ),
    pytest.param(
        yml(*TOP, "    - name: goss", "      version: 1.10"),
        [(5, 16, f"{P0}.version: must be text, not a number (put it in quotes)")],
        id="version-number",
    ),
    pytest.param(
        yml(*TOP, "    - name: goss", "      version:"),
        [(5, 15, f"{P0}.version: needs a value {VERSION_HINT}")],
        id="version-empty",
    ),
    pytest.param(
        yml(*TOP, *GOSS, "    - name: goss", "      version: v0.0.2"),
        [
            (
                6,
                13,
                "composable.packages.1.name: package 'goss' is listed twice (first on line 4)"
                " (keep one entry per package)",
            )
        ],
        id="name-duplicate",
    ),
    # --- repositories ---------------------------------------------------------------
    pytest.param(
        yml("composable:", "  packages:", *GOSS),
        [(3, 7, NO_REPOSITORY)],
        id="repository-none-at-all",
    ),
    pytest.param(
        with_repository("sftp://localhost/repo"),
        [(6, 19, f"{P0}.repository: unsupported protocol 'sftp' {PROTOCOLS}")],
        id="repository-sftp",
    ),
    pytest.param(
        with_repository("composable.example"),
        [
            (
                6,
                19,
                f"{P0}.repository: 'composable.example' is not a file://, http://, https://"
                f" or ftp:// URL {URL_EXAMPLE}",
            )
        ],
        id="repository-no-scheme",
    ),
    pytest.param(
        with_repository("file://media/usb/repo"),
        [
            (
                6,
                19,
                f"{P0}.repository: a file:// URL needs an absolute path and no host"
                " (use three slashes, as in file:///run/media/usb/repo)",
            )
        ],
        id="repository-file-with-host",
    ),
    pytest.param(
        with_repository("https:///repo"),
        [
            (
                6,
                19,
                f"{P0}.repository: a https:// URL needs a host"
                " (for example https://composable.example)",
            )
        ],
        id="repository-https-without-host",
    ),
    pytest.param(
        with_repository("ftp://localhost:99999"),
        [
            (
                6,
                19,
                f"{P0}.repository: not a valid URL: Port out of range 0-65535 {URL_EXAMPLE}",
            )
        ],
        id="repository-port-out-of-range",
    ),
    pytest.param(
        with_repository("https://composable.example/repo?channel=stable"),
        [
            (
                6,
                19,
                f"{P0}.repository: must not have a query ('?') or fragment ('#')"
                " (name the directory that holds the package files)",
            )
        ],
        id="repository-query",
    ),
    pytest.param(
        with_repository('"https://composable.example/#top"'),
        [
            (
                6,
                19,
                f"{P0}.repository: must not have a query ('?') or fragment ('#')"
                " (name the directory that holds the package files)",
            )
        ],
        id="repository-fragment",
    ),
    pytest.param(
        with_repository('"file:///run/media/my usb"'),
        [
            (
                6,
                19,
                f"{P0}.repository: must not contain spaces or control characters"
                " (percent-encode them, as in %20)",
            )
        ],
        id="repository-space",
    ),
    pytest.param(
        with_repository(""),
        [(6, 18, f"{P0}.repository: needs a value {URL_EXAMPLE}")],
        id="repository-null",
    ),
    pytest.param(
        yml("composable:", "  default_repository: composable.example", "  packages:", *GOSS),
        [
            (
                2,
                23,
                "composable.default_repository: 'composable.example' is not a file://,"
                f" http://, https:// or ftp:// URL {URL_EXAMPLE}",
            )
        ],
        id="default-repository-invalid",
    ),
    pytest.param(
        yml("composable:", "  default_repository: [https://composable.example]", "  packages: []"),
        [(2, 23, f"composable.default_repository: must be text, not a list {URL_EXAMPLE}")],
        id="default-repository-list",
    ),
    # --- choices --------------------------------------------------------------------
    pytest.param(
        yml(*TOP, *GOSS, "      track_stream: stabel"),
        [(6, 21, f"{P0}.track_stream: unknown track stream 'stabel' (did you mean 'stable'?)")],
        id="track-stream-typo",
    ),
    pytest.param(
        yml(*TOP, *GOSS, "      track_stream: nightly"),
        [
            (
                6,
                21,
                f"{P0}.track_stream: unknown track stream 'nightly'"
                " (use one of stable, next, testing)",
            )
        ],
        id="track-stream-unknown",
    ),
    pytest.param(
        yml(*TOP, *GOSS, "      profile: root"),
        [
            (
                6,
                16,
                f"{P0}.profile: unknown profile 'root'"
                " (use one of default, nonetwork, strict, trusted)",
            )
        ],
        id="profile-unknown",
    ),
    pytest.param(
        yml(*TOP, *GOSS, "      profile: no-network"),
        [(6, 16, f"{P0}.profile: unknown profile 'no-network' (did you mean 'nonetwork'?)")],
        id="profile-typo",
    ),
    pytest.param(
        yml(*TOP, *GOSS, "      install_method: hardlink"),
        [
            (
                6,
                23,
                f"{P0}.install_method: unknown install method 'hardlink'"
                " (use one of copy, symlink, auto)",
            )
        ],
        id="install-method-unknown",
    ),
    pytest.param(
        yml(*TOP, *GOSS, "      install_method: true"),
        [
            (
                6,
                23,
                f"{P0}.install_method: unknown install method True"
                " (use one of copy, symlink, auto)",
            )
        ],
        id="install-method-boolean",
    ),
    # --- units ----------------------------------------------------------------------
    pytest.param(
        yml(*TOP, *GOSS, "      enable: goss.service"),
        [(6, 15, f"{P0}.enable: must be a list (use a list: [goss.service])")],
        id="enable-text",
    ),
    pytest.param(
        yml(*TOP, *GOSS, "      start: goss.socket"),
        [(6, 14, f"{P0}.start: must be a list (use a list: [goss.socket])")],
        id="start-text",
    ),
    pytest.param(
        yml(*TOP, *GOSS, "      start: {goss: socket}"),
        [(6, 14, f"{P0}.start: must be a list, not a mapping (for example [goss.service])")],
        id="start-mapping",
    ),
    pytest.param(
        yml(*TOP, *GOSS, "      enable: [serve.service, gossip.service]"),
        [
            (6, 16, f"{P0}.enable.0: {prefix('serve.service')}"),
            (6, 31, f"{P0}.enable.1: {prefix('gossip.service')}"),
        ],
        id="enable-not-prefixed",
    ),
    pytest.param(
        yml(*TOP, *GOSS, "      start: [goss, goss.mount]"),
        [
            (6, 15, f"{P0}.start.0: unit 'goss' is not a portable unit type {UNIT_TYPES}"),
            (6, 21, f"{P0}.start.1: unit 'goss.mount' is not a portable unit type {UNIT_TYPES}"),
        ],
        id="start-unit-type",
    ),
    pytest.param(
        yml(*TOP, *GOSS, '      enable: ["goss serve.service"]'),
        [
            (
                6,
                16,
                f"{P0}.enable.0: invalid unit name 'goss serve.service'"
                " (use letters, digits, ':', '_', '.', '@' or '-', as in goss-serve.service)",
            )
        ],
        id="enable-unit-space",
    ),
    pytest.param(
        yml(*TOP, "    - name: goss+x", "      version: v0.0.1", "      enable: [goss+x.service]"),
        [
            (
                6,
                15,
                f"{P0}.enable: package 'goss+x' cannot have systemd units: unit names may not"
                " contain '+' (rename the package without '+' to enable or start its units)",
            )
        ],
        id="enable-package-name-with-plus",
    ),
    pytest.param(
        yml(*TOP, *GOSS, "      start: [goss@.service]"),
        [
            (
                6,
                15,
                f"{P0}.start.0: cannot start the template 'goss@.service' without an instance"
                " (name an instance, as in goss@main.service)",
            )
        ],
        id="start-template",
    ),
    pytest.param(
        yml(*TOP, *GOSS, "      enable: [goss.service, 8080, ]"),
        [(6, 30, f"{P0}.enable.1: must be a name, not a number")],
        id="enable-number",
    ),
    # --- checksum, user, expose -----------------------------------------------------
    pytest.param(
        yml(*TOP, *GOSS, f"      sha256: {DIGEST[:-1]}"),
        [(6, 15, BAD_SHA)],
        id="sha256-short",
    ),
    pytest.param(
        yml(*TOP, *GOSS, f"      sha256: md5:{DIGEST}"),
        [(6, 15, BAD_SHA)],
        id="sha256-other-prefix",
    ),
    pytest.param(
        yml(*TOP, *GOSS, f"      sha256: {DIGEST[:-1]}g"),
        [(6, 15, BAD_SHA)],
        id="sha256-not-hex",
    ),
    pytest.param(
        yml(*TOP, *GOSS, '      user: "Arne Smith"'),
        [(6, 13, f"{P0}.user: invalid account name 'Arne Smith' (name a layer account,"
                 " as in user: arne)")],
        id="user-invalid",
    ),
    pytest.param(
        yml(*TOP, *GOSS, "      user: 1001"),
        [(6, 13, f"{P0}.user: must be text, not a number (put it in quotes)")],
        id="user-number",
    ),
    pytest.param(
        yml(*TOP, *GOSS, "      expose: goss"),
        [(6, 15, f"{P0}.expose: must be a list (use a list: [goss])")],
        id="expose-text",
    ),
    pytest.param(
        yml(*TOP, *GOSS, "      expose: [bin/goss]"),
        [
            (
                6,
                16,
                f"{P0}.expose.0: 'bin/goss' is a path, not a file name"
                " (name the executable in the package's bin/, as in goss)",
            )
        ],
        id="expose-path",
    ),
    pytest.param(
        yml(*TOP, *GOSS, "      expose: [goss, .goss, -x, _helper]"),
        [
            (6, 22, f"{P0}.expose.1: invalid executable name '.goss' {EXECUTABLE_HINT}"),
            (6, 29, f"{P0}.expose.2: invalid executable name '-x' {EXECUTABLE_HINT}"),
            (6, 33, f"{P0}.expose.3: invalid executable name '_helper' {EXECUTABLE_HINT}"),
        ],
        id="expose-hidden-and-option",
    ),
    pytest.param(
        yml(*TOP, *GOSS, "      expose:"),
        [(6, 14, f"{P0}.expose: needs a value (for example [goss], or [] for none)")],
        id="expose-null",
    ),
    pytest.param(
        yml(*TOP, *GOSS, "      expose_over: [ls]"),
        [(6, 20, f"{P0}.expose_over: needs an expose: list naming those programs"
                 " (add expose: [ls] to the package)")],
        id="expose-over-without-expose",
    ),
    pytest.param(
        yml(*TOP, *GOSS, "      expose: [goss, ls]", "      expose_over: [ls, python3]"),
        [(7, 25, f"{P0}.expose_over.1: 'python3' is not in the package's expose: list"
                 " (add it to expose: too, or remove it here (expose: [goss, ls]))")],
        id="expose-over-not-exposed",
    ),
    pytest.param(
        yml(*TOP, *GOSS, "      expose: [goss, sudoedit]", "      expose_over: [sudoedit]"),
        [(7, 21, f"{P0}.expose_over.0: 'sudoedit' asks for passwords or changes identity:"
                 " never put on PATH (remove it; a package's program can run under another"
                 " name)")],
        id="expose-over-identity-tool",
    ),
    pytest.param(
        yml(*TOP, *GOSS, "      expose: [ls]", "      expose_over: ls"),
        [(7, 20, f"{P0}.expose_over: must be a list (use a list: [ls])")],
        id="expose-over-text",
    ),
    pytest.param(
        yml(*TOP, *GOSS, "      expose: [ls]", "      expose_over: [bin/ls]"),
        [(7, 21, f"{P0}.expose_over.0: 'bin/ls' is a path, not a file name"
                 " (name the executable in the package's bin/, as in goss)")],
        id="expose-over-path",
    ),
    # --- many problems at once, in file order ---------------------------------------
    pytest.param(
        yml(
            "composable:",
            "  default_repository: https://",
            "  packages:",
            "    - name: goss 1",
            "      version: latest",
            "      track_stream: beta",
            "      enable: goss.service",
            "      expose: [../goss]",
            "      colour: blue",
            "    - name: otto",
            "      repository: file:relative",
            "      version: os",
            "      sha256: abc",
            "      start: [otto.socket, serve.service]",
            "    - name: otto",
        ),
        [
            (2, 23, "composable.default_repository: a https:// URL needs a host"
                    " (for example https://composable.example)"),
            (4, 13, f"{P0}.name: invalid package name 'goss 1' {NAME_HINT}"),
            (6, 21, f"{P0}.track_stream: unknown track stream 'beta'"
                    " (use one of stable, next, testing)"),
            (7, 15, f"{P0}.enable: must be a list (use a list: [goss.service])"),
            (8, 16, f"{P0}.expose.0: '../goss' is a path, not a file name"
                    " (name the executable in the package's bin/, as in goss)"),
            (9, 7, f"{P0}.colour: unknown key (known keys: name, repository, version,"
                   " track_stream, enable, start, profile, install_method, sha256, user,"
                   " expose, expose_over, env, writable)"),
            (11, 19, "composable.packages.1.repository: 'file:relative' is not a file://,"
                     f" http://, https:// or ftp:// URL {URL_EXAMPLE}"),
            (13, 15, BAD_SHA.replace(P0, "composable.packages.1")),
            (14, 28, "composable.packages.1.start.1: unit 'serve.service' does not start with"
                     " the package name 'otto' (systemd portable services only attach units"
                     " whose name starts with the image name and '-', '.' or '@', as in"
                     " otto.socket, otto-serve.service or otto@.service)"),
            (15, 7, f"composable.packages.2: missing key 'version' {VERSION_HINT}"),
            (15, 13, "composable.packages.2.name: package 'otto' is listed twice"
                     " (first on line 10) (keep one entry per package)"),
        ],
        id="many-problems-at-once",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_bad_manifest(tmp_path: Path, text: str, expected: Expected) -> None:
    path = tmp_path / "composable.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        manifest.load_manifest(str(path))
    lines = [f"{path}:{line}:{column}: {rest}" for line, column, rest in expected]
    assert [str(p) for p in info.value.problems] == lines
    assert str(info.value) == "\n".join(lines)
    assert info.value.exit_code == 2


def test_bad_cases_are_many_and_distinct() -> None:
    texts = [case.values[0] for case in BAD]
    assert len(texts) >= 30
    assert len(set(texts)) == len(texts)
    assert max(len(case.values[1]) for case in BAD) >= 5


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "composable.yaml"
    with pytest.raises(ConfigError) as info:
        manifest.load_manifest(str(path))
    assert [str(p) for p in info.value.problems] == [f"{path}: file not found (check the path)"]


# --- valid files --------------------------------------------------------------------

PROPOSAL = """\
composable:
  default_repository: https://composable.example
  packages:
    - name: goss
      repository: ftp://localhost:2121
      version: v0.0.1
      track_stream: stable
      enable: [goss-serve.service]
      start: [goss.socket, goss-serve.service]
      profile: default
      install_method: auto
"""

PROPOSAL_GOSS = PackageSpec(
    name="goss",
    repository="ftp://localhost:2121",
    version="v0.0.1",
    version_kind=VersionKind.pinned,
    track_stream=TrackStream.stable,
    enable=("goss-serve.service",),
    start=("goss.socket", "goss-serve.service"),
    profile=Profile.default,
    install_method=InstallMethod.auto,
    sha256=None,
    user=None,
    expose=None,
    profile_given=True,
    line=4,
)


def load(tmp_path: Path, text: str) -> Manifest:
    path = tmp_path / "composable.yaml"
    path.write_text(text, encoding="utf-8")
    return manifest.load_manifest(str(path))


def test_proposal_example(tmp_path: Path) -> None:
    loaded = load(tmp_path, PROPOSAL)
    assert loaded == Manifest(
        str(tmp_path / "composable.yaml"), "https://composable.example", (PROPOSAL_GOSS,)
    )
    assert loaded.get("goss") is loaded.packages[0]
    assert loaded.get("otto") is None
    assert loaded.repository_for(loaded.packages[0]) == "ftp://localhost:2121"


def test_examples_file() -> None:
    loaded = manifest.load_manifest(str(EXAMPLE))
    assert loaded.default_repository == "https://composable.example"
    goss, dgoss = loaded.packages
    # The proposal's entry is in the example unchanged, with comments around it.
    assert goss == PackageSpec(**{**PROPOSAL_GOSS.__dict__, "line": goss.line})
    assert dgoss.name == "dgoss"
    assert dgoss.repository is None
    assert loaded.repository_for(dgoss) == "https://composable.example"
    assert (dgoss.version, dgoss.version_kind) == ("latest", VersionKind.latest)
    assert dgoss.track_stream is TrackStream.testing
    assert dgoss.user == "arne"
    assert dgoss.expose == ("dgoss",)
    assert dgoss.sha256 is None
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    assert lines[goss.line - 1].strip().startswith("- name: goss")
    assert lines[dgoss.line - 1].strip().startswith("- name: dgoss")


def test_examples_file_sha256_line_works_when_uncommented(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    assert "      # sha256: sha256:" in text
    loaded = load(tmp_path, text.replace("      # sha256: sha256:", "      sha256: sha256:"))
    assert loaded.packages[1].sha256 == "0123456789abcdef" * 4


def test_defaults_filled_in(tmp_path: Path) -> None:
    loaded = load(tmp_path, yml(*TOP, *GOSS))
    assert loaded.packages == (
        PackageSpec(
            name="goss",
            repository=None,
            version="v0.0.1",
            version_kind=VersionKind.pinned,
            track_stream=TrackStream.stable,
            enable=(),
            start=(),
            profile=Profile.default,
            install_method=InstallMethod.auto,
            sha256=None,
            user=None,
            expose=None,
            line=4,
        ),
    )
    assert loaded.repository_for(loaded.packages[0]) == "https://composable.example"


def test_empty_package_list(tmp_path: Path) -> None:
    loaded = load(tmp_path, yml("composable:", "  packages: []"))
    assert loaded.default_repository is None
    assert loaded.packages == ()


def test_every_key_set(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        yml(
            "composable:",
            "  packages:",
            "    - name: goss.d-2",
            "      repository: FILE:///run/media/usb/repo//",
            "      version: 1.2.3~rc1+build-4",
            "      track_stream: next",  # a pinned version with a non-default stream is fine
            "      enable: [goss.d-2@.service, goss.d-2-x.timer]",
            "      start: [goss.d-2.socket, goss.d-2@main.service, goss.d-2.target]",
            "      profile: strict",
            "      install_method: symlink",
            f"      sha256: sha256:{DIGEST.upper()}",
            "      user: otto",
            "      expose: []",
        ),
    )
    assert loaded.packages == (
        PackageSpec(
            name="goss.d-2",
            repository="file:///run/media/usb/repo",
            version="1.2.3~rc1+build-4",
            version_kind=VersionKind.pinned,
            track_stream=TrackStream.next,
            enable=("goss.d-2@.service", "goss.d-2-x.timer"),
            start=("goss.d-2.socket", "goss.d-2@main.service", "goss.d-2.target"),
            profile=Profile.strict,
            profile_given=True,
            install_method=InstallMethod.symlink,
            sha256=DIGEST,
            user="otto",
            expose=(),
            line=3,
        ),
    )


def test_expose_over_is_kept(tmp_path: Path) -> None:
    loaded = load(tmp_path, yml(*TOP, *GOSS, "      expose: [goss, ls]", "      expose_over: [ls]"))
    assert (loaded.packages[0].expose, loaded.packages[0].expose_over) == (("goss", "ls"), ("ls",))


def test_plus_in_a_package_name_is_fine_without_units(tmp_path: Path) -> None:
    loaded = load(tmp_path, yml(*TOP, "    - name: g++", "      version: 13.2+fc40"))
    assert (loaded.packages[0].name, loaded.packages[0].version) == ("g++", "13.2+fc40")


def test_version_kinds(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        yml(
            *TOP,
            *GOSS,
            "    - name: otto",
            "      version: latest",
            "    - name: arne",
            "      version: os",
            "      track_stream: testing",
            "    - name: core",
            '      version: "2024"',
        ),
    )
    assert [(p.name, p.version, p.version_kind, p.line) for p in loaded.packages] == [
        ("goss", "v0.0.1", VersionKind.pinned, 4),
        ("otto", "latest", VersionKind.latest, 6),
        ("arne", "os", VersionKind.os, 8),
        ("core", "2024", VersionKind.pinned, 11),
    ]


def test_sha256_prefix_stripped(tmp_path: Path) -> None:
    loaded = load(tmp_path, yml(*TOP, *GOSS, f"      sha256: sha256:{DIGEST}"))
    assert loaded.packages[0].sha256 == DIGEST
    loaded = load(tmp_path, yml(*TOP, *GOSS, f"      sha256: {DIGEST}"))
    assert loaded.packages[0].sha256 == DIGEST


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ("https://composable.example/", "https://composable.example"),
        ("https://composable.example/repo///", "https://composable.example/repo"),
        ("HTTP://composable.example:8080/repo/", "http://composable.example:8080/repo"),
        ("ftp://user@localhost:2121/", "ftp://user@localhost:2121"),
        ("https://[::1]:8443/pkgs", "https://[::1]:8443/pkgs"),
        ("file:///run/media/usb/repo/", "file:///run/media/usb/repo"),
        ("file:///", "file:///"),
    ],
)
def test_trailing_slash_stripped(tmp_path: Path, written: str, stored: str) -> None:
    loaded = load(
        tmp_path,
        yml(
            "composable:",
            f"  default_repository: {written}",
            "  packages:",
            *GOSS,
            f"      repository: {written}",
        ),
    )
    assert loaded.default_repository == stored
    assert loaded.packages[0].repository == stored


# --- helpers ------------------------------------------------------------------------


def test_parse_sha256() -> None:
    assert manifest.parse_sha256(DIGEST) == DIGEST
    assert manifest.parse_sha256("sha256:" + DIGEST) == DIGEST
    assert manifest.parse_sha256(DIGEST.upper()) == DIGEST
    assert manifest.parse_sha256("SHA256:" + DIGEST) is None
    assert manifest.parse_sha256(DIGEST + "0") is None
    assert manifest.parse_sha256(" " + DIGEST) is None
    assert manifest.parse_sha256("") is None


def test_parse_repository_raises_with_a_hint() -> None:
    assert manifest_repositories.parse_repository("ftp://localhost:2121/") == "ftp://localhost:2121"
    with pytest.raises(LayershellError) as info:
        manifest_repositories.parse_repository("gopher://example")
    assert info.value.message == "unsupported protocol 'gopher'"
    assert info.value.hint == "use file://, http://, https:// or ftp://"


def test_validate_takes_a_loaded_document() -> None:
    from layershell import load as loader

    doc = loader.load_text(PROPOSAL, "inline.yaml")
    assert manifest.validate(doc).packages == (PROPOSAL_GOSS,)
    assert manifest.validate(doc).file == "inline.yaml"


def test_repository_for_without_any_repository() -> None:
    spec = PackageSpec("goss", None, "v0.0.1", VersionKind.pinned)
    with pytest.raises(LayershellError, match="has no repository"):
        Manifest("m.yaml", None, (spec,)).repository_for(spec)


def test_enums_are_the_words_users_type() -> None:
    assert [m.value for m in TrackStream] == ["stable", "next", "testing"]
    assert [m.value for m in Profile] == ["default", "nonetwork", "strict", "trusted"]
    assert [m.value for m in InstallMethod] == ["copy", "symlink", "auto"]
    assert [m.value for m in VersionKind] == ["pinned", "latest", "os"]
    assert TrackStream("testing") == "testing"


REPOS = "composable.repositories"


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (("  repositories: https://x",), [(5, 17, f"{REPOS}: must be a list, not text")]),
        (
            ("  repositories:", "    - verify: checksum"),
            [
                (
                    6,
                    7,
                    f"{REPOS}.0: needs url: (the repository's base URL, as in default_repository:)",
                )
            ],
        ),
        (
            ("  repositories:", "    - url: https://composable.example", "      verify: gpg"),
            [(7, 15, f"{REPOS}.0.verify: unknown verification 'gpg'")],
        ),
        (
            (
                "  repositories:",
                "    - url: https://composable.example",
                "      key_fingerprint: abc",
            ),
            [(7, 24, f"{REPOS}.0.key_fingerprint: 'abc' is not an OpenPGP fingerprint")],
        ),
        (
            ("  repositories:", "    - url: https://composable.example", "      keys: [../k.asc]"),
            [(7, 14, f"{REPOS}.0.keys.0: '../k.asc' is not a key file name")],
        ),
        (
            (
                "  repositories:",
                "    - url: https://composable.example",
                "      verify: checksum",
                "      keys: [a.asc]",
            ),
            [
                (
                    7,
                    15,
                    f"{REPOS}.0.verify: is checksum, so keys: and key_fingerprint:",
                )
            ],
        ),
        (
            (
                "  repositories:",
                "    - url: https://composable.example",
                "    - url: https://composable.example/",
            ),
            [(7, 12, f"{REPOS}.1.url: https://composable.example is listed twice")],
        ),
        (
            ("  repositories:", "    - url: https://composable.example", "      colour: blue"),
            [(7, 7, f"{REPOS}.0.colour: unknown key")],
        ),
        (
            ("  repositories:", "    - url: https://u:secret@composable.example"),
            [(6, 12, f"{REPOS}.0.url:")],
        ),
    ],
    ids=[
        "not-a-list",
        "no-url",
        "bad-verify",
        "bad-fingerprint",
        "bad-key-file",
        "checksum-with-keys",
        "twice",
        "unknown-key",
        "password",
    ],
)
def test_bad_repositories(tmp_path: Path, lines: tuple[str, ...], expected: Expected) -> None:
    text = yml(TOP[0], TOP[1], "  packages:", "    - {name: goss, version: v0.0.1}", *lines)
    path = tmp_path / "composable.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        manifest.load_manifest(str(path))
    got = [str(p) for p in info.value.problems]
    assert len(got) == len(expected), got
    for shown, (line, column, start) in zip(got, expected, strict=True):
        assert shown.startswith(f"{path}:{line}:{column}: {start}"), shown
    assert "secret" not in "\n".join(got)
    assert info.value.exit_code == 2


def test_repositories_become_trust_settings(tmp_path: Path) -> None:
    from layershell.packages.verify.signature import RepositoryTrust, Verification

    fpr = "0D8A 1B2C 3D4E 5F60 7182 93A4 B5C6 D7E8 F901 2345"
    text = yml(
        *TOP,
        *GOSS,
        "  repositories:",
        "    - url: https://composable.example/",
        f"      key_fingerprint: {fpr}",
        "      keys: [fleet.asc]",
        "    - url: file:///media/usb",
        "      verify: checksum",
    )
    loaded = load(tmp_path, text)
    assert loaded.repositories == (
        RepositoryTrust(
            "https://composable.example",
            Verification.SIGNATURE,
            ("fleet.asc",),
            (fpr.replace(" ", ""),),
        ),
        RepositoryTrust("file:///media/usb", Verification.CHECKSUM),
    )


def test_a_package_name_the_repository_accepts_the_manifest_accepts(tmp_path: Path) -> None:
    """One rule (layershell/names.py): `node_exporter` installed by reference but was
    refused in a manifest, and `_helper` was accepted by the manifest and silently
    dropped by the shims."""
    from layershell.exposure import shims
    from layershell.packages import repo

    text = yml(*TOP, "    - name: node_exporter", "      version: 1.7.0",
               "    - name: Goss", "      version: v0.0.1")  # fmt: skip
    assert [p.name for p in load(tmp_path, text).packages] == ["node_exporter", "Goss"]
    assert repo.parse_reference("https://r.example/x86_64/node_exporter_1.7.0").name == (
        "node_exporter"
    )
    for name in ("_helper", ".hidden", "-x"):
        assert not manifest_exposure.EXECUTABLE_RE.match(name) and not shims.BIN_NAME_RE.match(name)
    assert manifest.NAME_RE is repo.NAME_RE and manifest_exposure.EXECUTABLE_RE is shims.BIN_NAME_RE
