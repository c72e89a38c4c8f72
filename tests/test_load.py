"""layershell.load: YAML with 1-based line/column marks for every key and value."""

from __future__ import annotations

from pathlib import Path

import pytest

from layershell.errors import ConfigError, Problem
from layershell.load import Document, KeyPath, Mark, dotted, load_file, load_text

NESTED = "\n".join(
    [
        "top:",  # 1
        "  inner:",  # 2
        "    leaf: value",  # 3
        "  list:",  # 4
        "    - a",  # 5
        "    - key: 7",  # 6
        "flow: {b: [1, true]}",  # 7
        "",
    ]
)


def problems_of(info: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return [str(p) for p in info.value.problems]


@pytest.fixture
def nested() -> Document:
    return load_text(NESTED, "n.yaml")


def test_plain_data_keeps_yaml_types(nested: Document) -> None:
    assert nested.file == "n.yaml"
    assert nested.data == {
        "top": {"inner": {"leaf": "value"}, "list": ["a", {"key": 7}]},
        "flow": {"b": [1, True]},
    }


@pytest.mark.parametrize(
    ("path", "mark"),
    [
        ((), Mark(1, 1)),
        (("top",), Mark(2, 3)),  # a block mapping starts at its first key
        (("top", "inner"), Mark(3, 5)),
        (("top", "inner", "leaf"), Mark(3, 11)),
        (("top", "list"), Mark(5, 5)),
        (("top", "list", 0), Mark(5, 7)),
        (("top", "list", 1), Mark(6, 7)),
        (("top", "list", 1, "key"), Mark(6, 12)),
        (("flow",), Mark(7, 7)),
        (("flow", "b"), Mark(7, 11)),
        (("flow", "b", 1), Mark(7, 15)),
    ],
)
def test_value_marks_are_one_based(nested: Document, path: KeyPath, mark: Mark) -> None:
    assert nested.value_marks[path] == mark
    assert nested.mark(path) == mark


@pytest.mark.parametrize(
    ("path", "mark"),
    [
        (("top",), Mark(1, 1)),
        (("top", "inner"), Mark(2, 3)),
        (("top", "inner", "leaf"), Mark(3, 5)),
        (("top", "list"), Mark(4, 3)),
        (("top", "list", 1, "key"), Mark(6, 7)),
        (("flow",), Mark(7, 1)),
        (("flow", "b"), Mark(7, 8)),
    ],
)
def test_key_marks_are_one_based(nested: Document, path: KeyPath, mark: Mark) -> None:
    assert nested.key_marks[path] == mark
    assert nested.mark(path, key=True) == mark


def test_list_items_have_no_key_mark(nested: Document) -> None:
    assert ("top", "list", 0) not in nested.key_marks
    # Asking for the key of a list item gives the item itself.
    assert nested.mark(("top", "list", 1), key=True) == Mark(6, 7)


@pytest.mark.parametrize(
    ("path", "key", "mark"),
    [
        # A missing key points at its nearest present parent's value ...
        (("top", "inner", "missing"), False, Mark(3, 5)),
        (("top", "inner", "missing", "deeper"), False, Mark(3, 5)),
        (("top", "list", 5), False, Mark(5, 5)),
        (("top", "list", 1, "nope"), False, Mark(6, 7)),
        (("nope",), False, Mark(1, 1)),
        (("nope", "deeper"), False, Mark(1, 1)),
        # ... or, when a key is asked for, at the parent's key.
        (("top", "inner", "missing"), True, Mark(2, 3)),
        (("top", "missing"), True, Mark(1, 1)),
        (("flow", "b", 9), True, Mark(7, 8)),
    ],
)
def test_mark_falls_back_to_nearest_parent(
    nested: Document, path: KeyPath, key: bool, mark: Mark
) -> None:
    assert path not in nested.value_marks
    assert nested.mark(path, key=key) == mark


def test_root_fallback_is_where_the_document_starts() -> None:
    doc = load_text("# comment\n\n  \nkey: 1\n", "c.yaml")
    assert doc.mark(()) == Mark(4, 1)
    assert doc.mark(("missing",)) == Mark(4, 1)
    assert doc.mark(("key", "sub"), key=True) == Mark(4, 1)
    assert doc.mark(("key",)) == Mark(4, 6)


def test_mark_without_any_marks_is_line_one() -> None:
    doc = Document("x.yaml", None)
    assert doc.mark(()) == Mark(1, 1)
    assert doc.mark(("a", 0), key=True) == Mark(1, 1)


def test_document_problem_uses_mark_and_dotted_key(nested: Document) -> None:
    value = nested.problem(("top", "list", 1, "key"), "bad", "fix it")
    key = nested.problem(("top", "list", 1, "key"), "bad", key=True)
    missing = nested.problem(("top", "inner", "gone"), "missing key 'gone'")
    assert str(value) == "n.yaml:6:12: top.list.1.key: bad (fix it)"
    assert str(key) == "n.yaml:6:7: top.list.1.key: bad"
    assert str(missing) == "n.yaml:3:5: top.inner.gone: missing key 'gone'"
    assert (value.line, value.column, value.key, value.hint) == (6, 12, "top.list.1.key", "fix it")


def test_dotted() -> None:
    assert dotted(()) == ""
    assert dotted(("layers", 2, "writable", "/usr/local")) == "layers.2.writable./usr/local"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "a: 1\nb: 2\na: 3\n",
            ["F:3:1: a: duplicate key (it is already set on line 1; keep one)"],
            id="top-level",
        ),
        pytest.param(
            "x:\n  y: 1\n  z: 2\n  y: 3\n",
            ["F:4:3: x.y: duplicate key (it is already set on line 2; keep one)"],
            id="nested",
        ),
        pytest.param(
            "l:\n  - k: 1\n    k: 2\n",
            ["F:3:5: l.0.k: duplicate key (it is already set on line 2; keep one)"],
            id="in-list-item",
        ),
        pytest.param(
            "x: {a: 1, a: 2}\n",
            ["F:1:11: x.a: duplicate key (it is already set on line 1; keep one)"],
            id="flow",
        ),
        pytest.param(
            "a: 1\nb:\n  c: 1\n  c: 2\n  c: 3\na: 2\n",
            [
                "F:4:3: b.c: duplicate key (it is already set on line 3; keep one)",
                "F:5:3: b.c: duplicate key (it is already set on line 3; keep one)",
                "F:6:1: a: duplicate key (it is already set on line 1; keep one)",
            ],
            id="all-reported-in-order",
        ),
        pytest.param("? [a, b]\n: 1\n", ["F:1:3: keys must be plain words"], id="sequence-key"),
        pytest.param(
            "m:\n  ? {a: 1}\n  : 1\n", ["F:2:5: m: keys must be plain words"], id="mapping-key"
        ),
    ],
)
def test_key_problems(text: str, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(text, "F")
    assert problems_of(info) == expected
    assert str(info.value) == "\n".join(expected)
    assert info.value.exit_code == 2


def test_syntax_error_has_position_and_hint() -> None:
    with pytest.raises(ConfigError) as info:
        load_text("a:\n  - b: c: d\n", "F")
    assert problems_of(info) == [
        "F:2:9: not valid YAML: mapping values are not allowed here (check indentation and quoting)"
    ]


def test_load_file_reads_utf8(tmp_path: Path) -> None:
    path = tmp_path / "u.yaml"
    path.write_text("name: Jürgen\nlist: [1]\n", encoding="utf-8")
    doc = load_file(str(path))
    assert doc.file == str(path)
    assert doc.data == {"name": "Jürgen", "list": [1]}
    assert doc.mark(("list", 0)) == Mark(2, 8)


def test_load_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: J\u00fcrgen\n".encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_file(str(path))
    assert problems_of(info) == [
        f"{path}:1:8: not UTF-8 text (invalid start byte) (save it as UTF-8)"
    ]


def test_a_bad_byte_is_reported_where_it_is(tmp_path: Path) -> None:
    """It was reported at 1:1 whatever its line (issue 11)."""
    path = tmp_path / "later.yaml"
    path.write_bytes(b"a: 1\nb: 2\nc: 3\nd: 4\ne: 5\nname: J\xfcrgen\n")
    with pytest.raises(ConfigError) as info:
        load_file(str(path))
    assert problems_of(info) == [
        f"{path}:6:8: not UTF-8 text (invalid start byte) (save it as UTF-8)"
    ]


# Bounded input: root validates the host's manifest on every install.

BOMB = "".join(
    [
        "a: &a [x, x, x, x, x, x, x, x, x]\n",
        *(
            f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n"
            for p, c in zip("abcdefg", "bcdefgh", strict=True)
        ),
        "i: [*h, *h, *h, *h, *h, *h, *h, *h, *h]\n",
    ]
)


def test_an_alias_bomb_is_refused_before_it_grows(tmp_path: Path) -> None:
    """A 652-byte bomb grew to 3.7 GB in 30 s: the walk stops at a number of values."""
    with pytest.raises(ConfigError) as info:
        load_text(BOMB, "F")
    (problem,) = problems_of(info)
    assert problem.startswith("F:") and problem.endswith(
        ": expands to more than 100000 values (through aliases) (write it without aliases)"
    ), problem


def test_too_many_aliases_are_refused() -> None:
    text = "a: &a 1\nb: [" + ", ".join(["*a"] * 101) + "]\n"
    with pytest.raises(ConfigError) as info:
        load_text(text, "F")
    (problem,) = problems_of(info)
    assert problem.startswith("F:2:") and "more than 100 aliases (*name)" in problem


def test_ten_thousand_nested_levels_are_refused() -> None:
    """500 flow levels gave a RecursionError traceback."""
    with pytest.raises(ConfigError) as info:
        load_text("a: " + "[" * 10_000 + "]" * 10_000 + "\n", "F")
    assert problems_of(info) == ["F:1:67: nested more than 64 levels deep (flatten it)"]


def test_a_fifty_megabyte_file_is_refused_by_its_size(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with open(path, "w") as f:
        f.write("a: " + "x" * (50 << 20) + "\n")
    with pytest.raises(ConfigError) as info:
        load_file(str(path))
    (problem,) = problems_of(info)
    assert "more than the 1048576 a configuration file may be" in problem


def test_load_file_missing(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError) as info:
        load_file(str(path))
    assert problems_of(info) == [f"{path}: file not found (check the path)"]
    assert info.value.problems[0].line == 0


def test_load_file_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_file(str(tmp_path))
    assert problems_of(info) == [f"{tmp_path}: cannot read: Is a directory"]


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "   \n"])
def test_empty_file_gives_none(tmp_path: Path, text: str) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text(text, encoding="utf-8")
    doc = load_file(str(path))
    assert doc.data is None
    assert doc.value_marks == {}
    assert doc.key_marks == {}
    assert doc.mark(()) == Mark(1, 1)


def test_explicit_null_document_is_marked() -> None:
    doc = load_text("\n~\n", "F")
    assert doc.data is None
    assert doc.value_marks == {(): Mark(2, 1)}


def test_problem_equality_is_by_text() -> None:
    assert Problem("F", 1, 2, "k", "m", "h") == Problem("F", 1, 2, "k", "m", "h")
    assert Problem("F", 1, 2, "k", "m", "h") != Problem("F", 1, 3, "k", "m", "h")
    assert str(Problem("F", 0, 5, "", "whole file")) == "F: whole file"


# Values that PyYAML's constructor rejects are problems with a position, not tracebacks.
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("shell: !custom /bin/sh\n", "F:1:8: shell: cannot read this value: "
                     "could not determine a constructor for the tag '!custom' "
                     "(quote it to make it text)", id="unknown-tag"),
        pytest.param("shell: !!int abc\n", "F:1:8: shell: cannot read this value: "
                     "invalid literal for int() with base 10: 'abc' (quote it to make it text)",
                     id="bad-int"),
        pytest.param("when: 2020-13-45\n", "F:1:7: when: cannot read this value: "
                     "month must be in 1..12 (quote it to make it text)", id="bad-date"),
        pytest.param("a: &x [*x]\n", "F:1:4: a.0: an alias refers to itself (expand it by hand)",
                     id="recursive-alias"),
    ],
)  # fmt: skip
def test_unconstructible_values_are_config_errors(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(text, "F")
    assert [str(p) for p in info.value.problems] == [expected]


@pytest.mark.parametrize(
    "kind",
    ["an alias bomb", "a 50 MB manifest", "10,000 nested levels"],
)
def test_core_check_refuses_each_hostile_manifest_in_bounded_memory(
    tmp_path: Path, kind: str
) -> None:
    """The acceptance, as a user meets it: `core check FILE` on each hostile manifest
    exits 2 with the file named, and its whole process stays under 100 MB (measured
    by the kernel: ru_maxrss of the child). A CPU limit only guards against a hang; the
    time it took is printed, not asserted (tests never assert timings)."""
    import os
    import subprocess
    import sys
    import time

    path = tmp_path / "composable.yaml"
    if kind == "an alias bomb":
        path.write_text(
            "composable:\n  x:\n" + "".join("    " + line + "\n" for line in BOMB.splitlines())
        )
    elif kind == "a 50 MB manifest":
        with open(path, "w") as f:
            f.write("composable:\n  packages:\n")
            f.write("    - {name: p, version: '1'}\n" * ((50 << 20) // 29))
    else:
        path.write_text("composable: " + "[" * 10_000 + "]" * 10_000 + "\n")

    start = time.monotonic()
    measured = tmp_path / "usage"
    # A fork of this (large) pytest process would count its memory as the child's
    # (ru_maxrss keeps the high-water mark across exec): a small Python forks it.
    r = subprocess.run(
        [sys.executable, "-I", "-S", "-c", MEASURE, str(measured), sys.executable,
         "-m", "layershell", "--rootless", "check", str(path)],
        capture_output=True,
        env={**os.environ, "HOME": str(tmp_path)},
        timeout=120,
        check=False,
    )  # fmt: skip
    text = (r.stdout + r.stderr).decode()
    maxrss_kb, returncode = (int(x) for x in measured.read_text().split())
    print(f"{kind}: {time.monotonic() - start:.2f} s, {maxrss_kb // 1024} MB")
    assert returncode == 2, text
    assert str(path) in text and "Traceback" not in text, text
    assert maxrss_kb < 100 * 1024, f"{kind}: {maxrss_kb // 1024} MB"


MEASURE = """
import os, resource, sys
pid = os.fork()
if pid == 0:
    resource.setrlimit(resource.RLIMIT_CPU, (30, 30))  # a hang guard, not a timing
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(f"{usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}")
"""
