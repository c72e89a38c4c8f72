"""layershell.layers.config: layers.yaml validation with exact `FILE:LINE:COL: key: message`
problems, the shipped stack, and the compiled stack cache in layershell.layers.stack."""

from __future__ import annotations

import marshal
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from layershell.errors import ConfigError
from layershell.layers import config, model, stack
from layershell.layers.model import Layer, LayerStack
from layershell.paths import Paths

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "profiles" / "layers.yaml"

# One expected problem: (line, column, "key: message (hint)"); the file is prepended.
Expected = list[tuple[int, int, str]]


def yml(*lines: str) -> str:
    """A document whose line N is the N-th argument, so line numbers can be read off."""
    return "\n".join(lines) + "\n"


HOST = ("layers:", "  - name: core", "    account: core")  # lines 1-3
ARNE = ("  - name: arne", "    account: arne", "    parent: core")  # lines 4-6

SYNTAX = "(check indentation and quoting)"
NOT_MAPPING = "must be a mapping with a 'layers:' list"
TWO_LAYERS = (
    "layers: must list at least two layers: the host, then a layer above it"
    " (see profiles/layers.yaml for the shipped core -> arne -> otto stack)"
)
NOT_A_LAYER = "each layer must be a mapping (name:, account:, ...)"
NAME_HINT = "(use lower-case letters, digits, '-' or '_', starting with a letter)"
ON_HOST = "the host layer (level 0) has no sandbox settings (move it to a layer above the host)"
PLACEHOLDERS = "(use one of {store}, {pkgs}, {state})"
NOT_ABSOLUTE = (
    "must be an absolute path or start with a placeholder and a slash (for example {store}/home)"
)
NOT_NORMALISED = "must be an absolute, normalised path"
WRITABLE_MAPPING = (
    "must be a mapping of paths in the layer to host paths"
    ' (for example  /usr/local: "{store}/usr-local")'
)


def reserved(path: str) -> str:
    return (
        f"{path} belongs to the host view and cannot be a layer's writable tree"
        " (use a directory below it, such as /usr/local)"
    )


BAD: list[Any] = [
    # --- YAML syntax ----------------------------------------------------------------
    pytest.param(
        yml("layers:", "\t- name: core"),
        [(2, 1, f"not valid YAML: found character '\\t' that cannot start any token {SYNTAX}")],
        id="syntax-tab",
    ),
    pytest.param(
        yml("layers:", "  - name: core: x", "    account: core"),
        [(2, 15, f"not valid YAML: mapping values are not allowed here {SYNTAX}")],
        id="syntax-mapping-value",
    ),
    pytest.param(
        yml("layers: [core, arne"),
        [(2, 1, f"not valid YAML: expected ',' or ']', but got '<stream end>' {SYNTAX}")],
        id="syntax-unclosed-flow",
    ),
    pytest.param(
        yml("layers:", '  - name: "core', "    account: core"),
        [(4, 1, f"not valid YAML: found unexpected end of stream {SYNTAX}")],
        id="syntax-unclosed-quote",
    ),
    # --- the document ---------------------------------------------------------------
    pytest.param(yml("- core", "- arne"), [(1, 1, NOT_MAPPING)], id="document-is-list"),
    pytest.param(yml("", "core -> arne"), [(2, 1, NOT_MAPPING)], id="document-is-text"),
    pytest.param("", [(1, 1, NOT_MAPPING)], id="document-empty"),
    pytest.param(
        yml("layer:", *HOST[1:], *ARNE),
        [(1, 1, "layer: unknown key (did you mean 'layers'?)"), (1, 1, TWO_LAYERS)],
        id="top-key-typo",
    ),
    pytest.param(
        yml(*HOST, *ARNE, "version: 2"),
        [(7, 1, "version: unknown key (known keys: layers)")],
        id="top-key-unknown",
    ),
    pytest.param(
        yml(*HOST, *ARNE, "layers: []"),
        [(7, 1, "layers: duplicate key (it is already set on line 1; keep one)")],
        id="top-key-duplicate",
    ),
    pytest.param("{}\n", [(1, 1, TWO_LAYERS)], id="layers-missing"),
    pytest.param("layers:\n", [(1, 8, TWO_LAYERS)], id="layers-null"),
    pytest.param("layers: core\n", [(1, 9, TWO_LAYERS)], id="layers-not-list"),
    pytest.param(yml(*HOST), [(2, 3, TWO_LAYERS)], id="layers-only-one"),
    # --- a layer's own keys ---------------------------------------------------------
    pytest.param(yml(*HOST, "  - arne"), [(4, 5, f"layers.1: {NOT_A_LAYER}")], id="layer-text"),
    pytest.param(
        yml(*HOST, "  - [arne, arne]"), [(4, 5, f"layers.1: {NOT_A_LAYER}")], id="layer-list"
    ),
    pytest.param(
        yml(*HOST, "  - account: arne", "    parent: core"),
        [(4, 5, "layers.1: missing key 'name'")],
        id="missing-name",
    ),
    pytest.param(
        yml(*HOST, "  - name: arne", "    parent: core"),
        [(4, 5, "layers.1: missing key 'account'")],
        id="missing-account",
    ),
    pytest.param(
        yml(*HOST, "  - parent: core"),
        [(4, 5, "layers.1: missing key 'name'"), (4, 5, "layers.1: missing key 'account'")],
        id="missing-name-and-account",
    ),
    pytest.param(
        yml(*HOST, "  - name: Arne", "    account: arne", "    parent: core"),
        [(4, 11, f"layers.1.name: invalid layer name 'Arne' {NAME_HINT}")],
        id="name-upper-case",
    ),
    pytest.param(
        yml(*HOST, "  - name: 42", "    account: arne", "    parent: core"),
        [(4, 11, f"layers.1.name: invalid layer name 42 {NAME_HINT}")],
        id="name-number",
    ),
    pytest.param(
        yml(*HOST, "  - name: a" + "x" * 32, "    account: arne", "    parent: core"),
        [(4, 11, f"layers.1.name: invalid layer name 'a{'x' * 32}' {NAME_HINT}")],
        id="name-too-long",
    ),
    pytest.param(
        yml(*HOST, "  - name: arne", '    account: "arne smith"', "    parent: core"),
        [(5, 14, "layers.1.account: invalid account name 'arne smith'")],
        id="account-space",
    ),
    pytest.param(
        yml("layers:", "  - name: core", "    account: -core", *ARNE),
        [(3, 14, "layers.0.account: invalid account name '-core'")],
        id="account-leading-dash",
    ),
    pytest.param(
        yml(*HOST, *ARNE, "    netwrok: false"),
        [(7, 5, "layers.1.netwrok: unknown key (did you mean 'network'?)")],
        id="layer-key-typo",
    ),
    pytest.param(
        yml(*HOST, *ARNE, "    account: otto"),
        [(7, 5, "layers.1.account: duplicate key (it is already set on line 5; keep one)")],
        id="layer-key-duplicate",
    ),
    # --- the host layer -------------------------------------------------------------
    pytest.param(
        yml(*HOST, "    parent: root", *ARNE),
        [
            (
                4,
                13,
                "layers.0.parent: the first layer is the host (level 0) and has no parent"
                " (remove 'parent' or list the host layer first)",
            )
        ],
        id="host-parent",
    ),
    pytest.param(
        yml(*HOST, "    network: false", "    home: /home/core", *ARNE),
        [(4, 5, f"layers.0.network: {ON_HOST}"), (5, 5, f"layers.0.home: {ON_HOST}")],
        id="host-sandbox-keys",
    ),
    pytest.param(
        yml(*HOST, "    writable:", '      /srv: "{store}/srv"', *ARNE),
        [(4, 5, f"layers.0.writable: {ON_HOST}")],
        id="host-writable",
    ),
    # --- stacking -------------------------------------------------------------------
    pytest.param(
        yml(*HOST, "  - name: arne", "    account: arne"),
        [(4, 5, "layers.1: missing key 'parent' (layers stack in order: parent: core)")],
        id="missing-parent",
    ),
    pytest.param(
        yml(*HOST, *ARNE, "  - name: otto", "    account: otto", "    parent: core"),
        [
            (
                9,
                13,
                "layers.2.parent: parent must be the layer listed just before it ('arne'),"
                " not 'core' (list the layers in stack order, host first)",
            )
        ],
        id="wrong-parent",
    ),
    pytest.param(
        yml(*HOST, *ARNE, "  - name: arne", "    account: otto", "    parent: arne"),
        [(7, 11, "layers.2.name: layer 'arne' is already defined at layers.1")],
        id="duplicate-name",
    ),
    pytest.param(
        yml(*HOST, "  - name: core", "    account: arne", "    parent: core"),
        [(4, 11, "layers.1.name: layer 'core' is already defined at layers.0")],
        id="duplicate-host-name",
    ),
    pytest.param(
        yml(*HOST, *ARNE, "  - name: otto", "    account: arne", "    parent: arne"),
        [
            (
                8,
                14,
                "layers.2.account: account 'arne' already belongs to layer 'arne'"
                " (each layer needs its own account (rootless mode maps them all to you))",
            )
        ],
        id="duplicate-account",
    ),
    # --- sandbox settings -----------------------------------------------------------
    pytest.param(
        yml(*HOST, *ARNE, '    network: "true"'),
        [(7, 14, "layers.1.network: must be true or false")],
        id="network-text",
    ),
    pytest.param(
        yml(*HOST, *ARNE, "    network: 1"),
        [(7, 14, "layers.1.network: must be true or false")],
        id="network-number",
    ),
    pytest.param(
        yml(*HOST, *ARNE, "    shell: bash"),
        [(7, 12, "layers.1.shell: must be an absolute path to a shell")],
        id="shell-relative",
    ),
    pytest.param(
        yml(*HOST, *ARNE, "    shell: 0"),
        [(7, 12, "layers.1.shell: must be an absolute path to a shell")],
        id="shell-number",
    ),
    pytest.param(
        yml(*HOST, *ARNE, '    home: "{stor}/home"'),
        [(7, 11, f"layers.1.home: unknown placeholder {{stor}} {PLACEHOLDERS}")],
        id="home-bad-placeholder",
    ),
    pytest.param(
        yml(*HOST, *ARNE, '    home: "/home/{user}"'),
        [(7, 11, f"layers.1.home: unknown placeholder {{user}} {PLACEHOLDERS}")],
        id="home-placeholder-inside",
    ),
    pytest.param(
        yml(*HOST, *ARNE, "    home: home/arne"),
        [(7, 11, f"layers.1.home: {NOT_ABSOLUTE}")],
        id="home-relative",
    ),
    pytest.param(
        yml(*HOST, *ARNE, '    home: ""'),
        [(7, 11, "layers.1.home: must be a path (text)")],
        id="home-empty",
    ),
    # --- writable -------------------------------------------------------------------
    pytest.param(
        yml(*HOST, *ARNE, "    writable: /usr/local"),
        [(7, 15, f"layers.1.writable: {WRITABLE_MAPPING}")],
        id="writable-text",
    ),
    pytest.param(
        yml(*HOST, *ARNE, "    writable:", "      - /usr/local"),
        [(8, 7, f"layers.1.writable: {WRITABLE_MAPPING}")],
        id="writable-list",
    ),
    pytest.param(
        yml(*HOST, *ARNE, "    writable:", '      usr/local: "{store}/usr-local"'),
        [(8, 7, f"layers.1.writable.usr/local: {NOT_NORMALISED}")],
        id="writable-key-relative",
    ),
    pytest.param(
        yml(*HOST, *ARNE, "    writable:", '      /usr/local/: "{store}/usr-local"'),
        [(8, 7, f"layers.1.writable./usr/local/: {NOT_NORMALISED}")],
        id="writable-key-trailing-slash",
    ),
    pytest.param(
        yml(*HOST, *ARNE, "    writable:", '      /opt/../usr: "{store}/usr"'),
        [(8, 7, f"layers.1.writable./opt/../usr: {NOT_NORMALISED}")],
        id="writable-key-dotdot",
    ),
    pytest.param(
        yml(*HOST, *ARNE, "    writable:", '      /usr: "{store}/usr"'),
        [(8, 7, f"layers.1.writable./usr: {reserved('/usr')}")],
        id="writable-key-usr",
    ),
    pytest.param(
        yml(*HOST, *ARNE, "    writable:", '      /opt/pkgs: "{pkgs}"', '      /: "{store}"'),
        [(9, 7, f"layers.1.writable./: {reserved('/')}")],
        id="writable-key-root",
    ),
    pytest.param(
        yml(*HOST, *ARNE, "    writable:", '      /opt/pkgs: "{packages}"'),
        [(8, 18, f"layers.1.writable./opt/pkgs: unknown placeholder {{packages}} {PLACEHOLDERS}")],
        id="writable-value-placeholder",
    ),
    pytest.param(
        yml(*HOST, *ARNE, "    writable:", "      /opt/pkgs: pkgs"),
        [(8, 18, f"layers.1.writable./opt/pkgs: {NOT_ABSOLUTE}")],
        id="writable-value-relative",
    ),
    pytest.param(
        yml(*HOST, *ARNE, "    writable:", '      /opt/pkgs: "pkgs/{pkg}"'),
        [(8, 18, f"layers.1.writable./opt/pkgs: unknown placeholder {{pkg}} {PLACEHOLDERS}")],
        id="writable-value-placeholder-only-once",
    ),
    pytest.param(
        yml(*HOST, *ARNE, "    writable:", "      /opt/pkgs: 5"),
        [(8, 18, "layers.1.writable./opt/pkgs: must be a path (text)")],
        id="writable-value-number",
    ),
    # --- limits (issue 10: install limits of the installing layer) ---------------------
    pytest.param(
        yml(*HOST, *ARNE, "    limits:", "      disk_budget: lots"),
        [
            (
                8,
                20,
                "layers.1.limits.disk_budget: must be a size such as 20G, 512M or a number "
                "of bytes, not 'lots'",
            )
        ],
        id="limits-size-not-a-size",
    ),
    pytest.param(
        yml(*HOST, *ARNE, "    limits:", "      disk_budget: 10K"),
        [(8, 20, "layers.1.limits.disk_budget: must be between 1M and 1024T, not '10K'")],
        id="limits-size-too-small",
    ),
    pytest.param(
        yml(*HOST, *ARNE, "    limits:", "      max_depth: 1000", "      script_timeout: true"),
        [
            (8, 18, "layers.1.limits.max_depth: must be between 1 and 256, not 1000"),
            (9, 23, "layers.1.limits.script_timeout: must be a number of seconds, not True"),
        ],
        id="limits-numbers",
    ),
    pytest.param(
        yml(*HOST, *ARNE, "    limits:", "      disk_budge: 20G", "      min_free: 90%"),
        [
            (8, 7, "layers.1.limits.disk_budge: unknown key (did you mean 'disk_budget'?)"),
            (9, 17, "layers.1.limits.min_free: must be between 0% and 50%, not '90%'"),
        ],
        id="limits-unknown-key-and-percent",
    ),
    pytest.param(
        yml(*HOST, *ARNE, "    limits: 20G"),
        [(7, 13, "layers.1.limits: must be a mapping of limits (for example  disk_budget: 20G)")],
        id="limits-not-a-mapping",
    ),
    pytest.param(
        yml(
            *HOST,
            *ARNE,
            "  - name: otto",
            "    account: otto",
            "    parent: arne",
            "    limits:",
            "      max_depth: 8",
        ),
        [
            (
                10,
                5,
                "layers.2.limits: only a layer that installs packages (the one just above "
                "the host) has install limits (move limits: to that layer)",
            )
        ],
        id="limits-on-a-user-layer",
    ),
    pytest.param(
        yml(*HOST, "    limits:", "      max_depth: 8", *ARNE),
        [(4, 5, f"layers.0.limits: {ON_HOST}")],
        id="limits-on-the-host",
    ),
    # --- several problems at once, in document order per layer -----------------------
    pytest.param(
        yml(
            "layers:",  # 1
            "  - name: core",  # 2
            "    account: core",  # 3
            "    shell: /bin/zsh",  # 4
            "  - name: arne",  # 5
            '    account: "Arne!"',  # 6
            "    parent: core",  # 7
            "    netwrk: true",  # 8
            "  - name: otto",  # 9
            "    account: otto",  # 10
            "    parent: arne",  # 11
            "    writable:",  # 12
            '      /usr: "{store}/usr"',  # 13
            '      /srv/data: "{stash}/data"',  # 14
            "extra: 1",  # 15
        ),
        [
            (15, 1, "extra: unknown key (known keys: layers)"),
            (4, 5, f"layers.0.shell: {ON_HOST}"),
            (8, 5, "layers.1.netwrk: unknown key (did you mean 'network'?)"),
            (6, 14, "layers.1.account: invalid account name 'Arne!'"),
            (13, 7, f"layers.2.writable./usr: {reserved('/usr')}"),
            (14, 18, f"layers.2.writable./srv/data: unknown placeholder {{stash}} {PLACEHOLDERS}"),
        ],
        id="multiple-problems",
    ),
    pytest.param(
        yml(
            *HOST,  # 1-3
            *ARNE,  # 4-6
            "    shell: sh",  # 7
            "    network: no-way",  # 8
            "  - name: otto",  # 9
            "    account: otto",  # 10
            "    parent: core",  # 11
        ),
        [
            (8, 14, "layers.1.network: must be true or false"),
            (7, 12, "layers.1.shell: must be an absolute path to a shell"),
            (
                11,
                13,
                "layers.2.parent: parent must be the layer listed just before it ('arne'),"
                " not 'core' (list the layers in stack order, host first)",
            ),
        ],
        id="multiple-broken-layer-still-checked-against",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_bad_layers_yaml(tmp_path: Path, text: str, expected: Expected) -> None:
    path = tmp_path / "layers.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        config.load_stack(str(path))
    lines = [f"{path}:{line}:{column}: {rest}" for line, column, rest in expected]
    assert [str(p) for p in info.value.problems] == lines
    assert str(info.value) == "\n".join(lines)
    assert info.value.exit_code == 2


def test_bad_cases_are_many_and_distinct() -> None:
    texts = [case.values[0] for case in BAD]
    assert len(texts) >= 25
    assert len(set(texts)) == len(texts)


# --- valid files --------------------------------------------------------------------


def test_shipped_stack() -> None:
    layers = config.load_stack(str(SHIPPED))
    core = Layer("core", 0, "core")
    arne = Layer(
        "arne",
        1,
        "arne",
        parent="core",
        home="{store}/home",
        writable=(("/opt/pkgs", "{pkgs}"), ("/usr/local", "{store}/usr-local")),
        network=True,
        shell="/bin/bash",
    )
    otto = Layer("otto", 2, "otto", parent="arne")
    assert layers.layers == (core, arne, otto)
    assert [x.as_tuple() for x in layers.layers] == [
        ("core", 0, "core", "", "", (), True, "/bin/bash", ()),
        (
            "arne",
            1,
            "arne",
            "core",
            "{store}/home",
            (("/opt/pkgs", "{pkgs}"), ("/usr/local", "{store}/usr-local")),
            True,
            "/bin/bash",
            (),
        ),
        ("otto", 2, "otto", "arne", "", (), True, "/bin/bash", ()),
    ]
    assert layers.names == ("core", "arne", "otto")
    assert [x.kind for x in layers.layers] == [model.HOST, model.PSEUDO_ROOT, model.USER]
    assert layers.ancestors(otto) == (arne,)
    assert layers.source == str(SHIPPED)


def test_shipped_file_is_the_default_when_there_is_no_operator_file(tmp_path: Path) -> None:
    assert Path(stack.shipped_layers_file()).read_bytes() == SHIPPED.read_bytes()
    assert stack.stack_file(str(tmp_path / "absent.yaml")) == stack.shipped_layers_file()
    mine = tmp_path / "layers.yaml"
    mine.write_text("x\n", encoding="utf-8")
    assert stack.stack_file(str(mine)) == str(mine)


CUSTOM = yml(
    "# a four-layer stack",
    "layers:",
    "  - name: base",
    "    account: base_admin",
    "  - name: build",
    "    account: builder",
    "    parent: base",
    '    home: "{state}/homes/build"',
    "    writable:",
    '      /opt/tools: "{pkgs}/tools"',
    "      /srv/cache: /var/cache/build",
    "    network: false",
    "    shell: /bin/sh",
    "    limits:",
    "      disk_budget: 20G",
    "      max_depth: 32",
    "      script_timeout: 90.5",
    "      script_memory: 1.5GiB",
    "      min_free: 5%",
    "  - name: run-1",
    "    account: runner$",
    "    parent: build",
    "    network: yes",  # YAML 1.1 boolean
    "  - name: run_2",
    "    account: _run2",
    "    parent: run-1",
    '    home: "{store}"',
)


def test_valid_custom_file(tmp_path: Path) -> None:
    path = tmp_path / "layers.yaml"
    path.write_text(CUSTOM, encoding="utf-8")
    layers = config.load_stack(str(path))
    assert layers.source == str(path)
    assert [x.as_tuple() for x in layers.layers] == [
        ("base", 0, "base_admin", "", "", (), True, "/bin/bash", ()),
        (
            "build",
            1,
            "builder",
            "base",
            "{state}/homes/build",
            (("/opt/tools", "{pkgs}/tools"), ("/srv/cache", "/var/cache/build")),
            False,
            "/bin/sh",
            (
                ("disk_budget", 20 << 30),
                ("max_depth", 32),
                ("script_timeout", 90.5),
                ("script_memory", 3 << 29),
                ("min_free_percent", 5.0),
            ),
        ),
        ("run-1", 2, "runner$", "build", "", (), True, "/bin/bash", ()),
        ("run_2", 3, "_run2", "run-1", "{store}", (), True, "/bin/bash", ()),
    ]
    assert [x.kind for x in layers.layers] == [model.HOST, model.PSEUDO_ROOT, model.USER, "user"]


# --- the compiled cache -------------------------------------------------------------


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = Path(Paths.system(str(tmp_path)).layers_file)
    path.parent.mkdir(parents=True)
    path.write_text(CUSTOM, encoding="utf-8")
    return path


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return Path(Paths.system(str(tmp_path)).stack_cache)  # the directory does not exist yet


def same(a: LayerStack | None, b: LayerStack) -> bool:
    """LayerStack has no __eq__; compare what it holds."""
    return a is not None and a.layers == b.layers and a.source == b.source


def test_cache_round_trip(source: Path, cache: Path) -> None:
    layers = config.load_stack(str(source))
    assert stack.write_cache(str(cache), layers)
    assert cache.is_file()
    got = stack.read_cache(str(cache), str(source))
    assert got is not None
    assert got is not layers
    assert same(got, layers)
    assert [x.as_tuple() for x in got.layers] == [x.as_tuple() for x in layers.layers]


def test_cache_invalidated_by_edit(source: Path, cache: Path) -> None:
    assert stack.write_cache(str(cache), config.load_stack(str(source)))
    assert stack.read_cache(str(cache), str(source)) is not None
    with source.open("a", encoding="utf-8") as f:
        f.write("    network: false\n")
    assert stack.read_cache(str(cache), str(source)) is None


def test_cache_invalidated_by_mtime_alone(source: Path, cache: Path) -> None:
    assert stack.write_cache(str(cache), config.load_stack(str(source)))
    st = source.stat()
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert source.stat().st_size == st.st_size
    assert stack.read_cache(str(cache), str(source)) is None


def test_cache_invalidated_by_size_alone(source: Path, cache: Path) -> None:
    assert stack.write_cache(str(cache), config.load_stack(str(source)))
    st = source.stat()
    with source.open("a", encoding="utf-8") as f:
        f.write("# edited\n")
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns))  # an edit within one clock tick
    assert source.stat().st_mtime_ns == st.st_mtime_ns
    assert stack.read_cache(str(cache), str(source)) is None


def test_cache_belongs_to_its_source(tmp_path: Path, source: Path, cache: Path) -> None:
    assert stack.write_cache(str(cache), config.load_stack(str(source)))
    twin = tmp_path / "twin.yaml"
    shutil.copy2(source, twin)  # same content, size and mtime; another path
    assert twin.stat().st_mtime_ns == source.stat().st_mtime_ns
    assert stack.read_cache(str(cache), str(twin)) is None
    assert stack.read_cache(str(cache), str(source)) is not None


def test_cache_missing_or_garbage(source: Path, cache: Path) -> None:
    assert stack.read_cache(str(cache), str(source)) is None
    cache.parent.mkdir(parents=True)
    for garbage in (b"", b"\x00garbage", b"\xff" * 16):
        cache.write_bytes(garbage)
        assert stack.read_cache(str(cache), str(source)) is None


def test_cache_source_gone(source: Path, cache: Path) -> None:
    assert stack.write_cache(str(cache), config.load_stack(str(source)))
    source.unlink()
    assert stack.read_cache(str(cache), str(source)) is None


def _drop_layers(d: dict[str, Any]) -> None:
    del d["layers"]


def _drop_fingerprint(d: dict[str, Any]) -> None:
    del d["fingerprint"]


def _newer_format(d: dict[str, Any]) -> None:
    d["format"] = stack.CACHE_FORMAT + 1


def _short_rows(d: dict[str, Any]) -> None:
    d["layers"] = [row[:2] for row in d["layers"]]


def _unchanged(d: dict[str, Any]) -> None:
    pass


@pytest.mark.parametrize(
    ("mutate", "usable"),
    [
        (_unchanged, True),  # the control: rewriting alone keeps the cache usable
        (_newer_format, False),
        (_drop_fingerprint, False),
        (_drop_layers, False),
        (_short_rows, False),
    ],
)
def test_cache_contents_checked(
    source: Path, cache: Path, mutate: Callable[[dict[str, Any]], None], usable: bool
) -> None:
    assert stack.write_cache(str(cache), config.load_stack(str(source)))
    data = marshal.loads(cache.read_bytes())
    mutate(data)
    cache.write_bytes(marshal.dumps(data))
    assert (stack.read_cache(str(cache), str(source)) is not None) is usable


def test_write_cache_failure_is_reported_and_cleaned_up(source: Path, cache: Path) -> None:
    cache.mkdir(parents=True)  # a directory where the cache file should go
    assert not stack.write_cache(str(cache), config.load_stack(str(source)))
    assert [p.name for p in cache.parent.iterdir()] == [cache.name]  # no temporary left


def _no_yaml(path: str) -> LayerStack:
    raise AssertionError(f"parsed {path} although the cache is fresh")


def test_load_uses_fresh_cache(monkeypatch: pytest.MonkeyPatch, source: Path, cache: Path) -> None:
    # A cache that differs from the YAML proves which one load() read.
    marked = config.load_stack(str(source)).with_account("from-cache")
    assert stack.write_cache(str(cache), marked)
    monkeypatch.setattr(config, "load_stack", _no_yaml)
    got = stack.load(Paths.system(str(cache.parents[4])))
    assert [x.account for x in got.layers] == ["from-cache"] * 4
    assert got.source == str(source)


def test_load_writes_cache_then_reuses_it(
    monkeypatch: pytest.MonkeyPatch, source: Path, cache: Path
) -> None:
    cache.parent.mkdir(parents=True)  # as core init makes it
    first = stack.load(Paths.system(str(cache.parents[4])))
    assert first.names == ("base", "build", "run-1", "run_2")
    assert same(stack.read_cache(str(cache), str(source)), first)
    monkeypatch.setattr(config, "load_stack", _no_yaml)
    assert same(stack.load(Paths.system(str(cache.parents[4]))), first)


def test_load_reparses_stale_cache(source: Path, cache: Path) -> None:
    marked = config.load_stack(str(source)).with_account("from-cache")
    assert stack.write_cache(str(cache), marked)
    with source.open("a", encoding="utf-8") as f:
        f.write("# edited\n")
    got = stack.load(Paths.system(str(cache.parents[4])))
    assert [x.account for x in got.layers] == ["base_admin", "builder", "runner$", "_run2"]
    assert same(stack.read_cache(str(cache), str(source)), got)  # rewritten


def test_load_makes_no_cache_directory(tmp_path: Path, source: Path, cache: Path) -> None:
    """A stack read under a root core init never prepared (a mistyped --root) leaves it
    as it was: the cache goes only into a directory that exists."""
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    assert stack.load(Paths.system(str(tmp_path))).names == ("base", "build", "run-1", "run_2")
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before
    assert not cache.parent.exists()


def test_load_invalid_file_raises_and_writes_no_cache(source: Path, cache: Path) -> None:
    source.write_text(yml(*HOST), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        stack.load(Paths.system(str(cache.parents[4])))
    assert [str(p) for p in info.value.problems] == [f"{source}:2:3: {TWO_LAYERS}"]
    assert not cache.exists()


def test_load_without_operator_file_uses_shipped(tmp_path: Path, cache: Path) -> None:
    cache.parent.mkdir(parents=True)  # as core init makes it
    got = stack.load(Paths.system(str(tmp_path)))
    assert got.source == stack.shipped_layers_file()
    assert got.names == ("core", "arne", "otto")
    assert same(stack.read_cache(str(cache), stack.shipped_layers_file()), got)


# --- paths that once slipped through validation ----------------------------------------


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        pytest.param(
            ("    writable:", '      //usr: "{store}/usr"'),
            "8:7: layers.1.writable.//usr: must be an absolute, normalised path",
            id="double-slash-usr",
        ),
        pytest.param(
            ('    home: "{store/home"',),
            "7:11: layers.1.home: must be an absolute path or start with a placeholder and a"
            " slash (for example {store}/home)",
            id="unclosed-placeholder",
        ),
        pytest.param(
            ('    home: "{store}home"',),
            "7:11: layers.1.home: must be an absolute path or start with a placeholder and a"
            " slash (for example {store}/home)",
            id="placeholder-without-slash",
        ),
        pytest.param(
            ('    home: "{store}/../otto"',),
            "7:11: layers.1.home: must not contain '..' (name the directory directly)",
            id="dotdot",
        ),
    ],
)
def test_rejected_paths(tmp_path: Path, extra: tuple[str, ...], expected: str) -> None:
    path = tmp_path / "layers.yaml"
    path.write_text(yml(*HOST, *ARNE, *extra), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        config.load_stack(str(path))
    assert [str(p) for p in info.value.problems] == [f"{path}:{expected}"]


def test_read_cache_of_non_mapping_is_a_miss(source: Path, cache: Path) -> None:
    cache.parent.mkdir(parents=True)
    cache.write_bytes(marshal.dumps(None))
    assert stack.read_cache(str(cache), str(source)) is None


def test_write_cache_to_bare_file_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, source: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    assert stack.write_cache("stack.marshal", config.load_stack(str(source)))
