"""Portable services: a package whose tree is a portable image runs as systemd portable
services under its profile (`portablectl attach --profile P --copy M`).

Only root attaches (systemd's rule). The image goes to /var/lib/portables/<name>_<version>
(the SELinux context there is right on Fedora; images under $HOME are refused), units are
attached, the manifest's `enable` units enabled and `start` units started, and a start is
*checked*: `attach --now` returns 0 even when the unit fails (TESTBED.md), so each
`start` unit is polled until active, and a failure is rolled back (stopped, disabled,
detached, image removed) with the unit's last journal lines in the message.

layershell's own record (<state>/portables.json: package -> attached version) is the
truth: systemd 252 matches images by name prefix, so `portablectl list` can name an old
image after a reattach and `detach OLD` would detach the new units (TESTBED.md A.5).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from layershell.atomic import read_json_map, write_json
from layershell.errors import LayershellError
from layershell.paths import Paths
from layershell.state import Installed

UNIT_DIRS = ("usr/lib/systemd/system", "lib/systemd/system", "etc/systemd/system")
UNIT_SUFFIXES = (".service", ".socket", ".timer", ".path", ".target")
OS_RELEASE = ("usr/lib/os-release", "etc/os-release")
ATTACHED = "/etc/systemd/system.attached"
START_TIMEOUT = 15.0

Run = Callable[[Sequence[str]], subprocess.CompletedProcess[str]]


class PortableError(LayershellError):
    exit_code = 1


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SYSTEMD_PAGER": "cat", "SYSTEMD_COLORS": "0"}
    return subprocess.run(list(argv), capture_output=True, text=True, check=False, env=env)


@dataclass(frozen=True)
class Image:
    name: str
    version: str
    units: tuple[str, ...]
    generated: bool = False  # a code package's units in an image that shares core's /usr

    @property
    def image_name(self) -> str:
        return f"{self.name}_{self.version}"


def matches(unit: str, name: str) -> bool:
    """systemd attaches only units named after the image: NAME.x, NAME-x, NAME@x."""
    return any(unit.startswith(name + sep) for sep in (".", "-", "@"))


def units_in(tree: str) -> list[str]:
    found: set[str] = set()
    for d in UNIT_DIRS:
        try:
            found.update(e for e in os.listdir(os.path.join(tree, d)) if e.endswith(UNIT_SUFFIXES))
        except (FileNotFoundError, NotADirectoryError):
            continue
    return sorted(found)


EXEC_KEYS = ("ExecStart", "ExecStartPre", "ExecStartPost", "ExecReload", "ExecStop",
             "ExecStopPost", "ExecCondition")  # fmt: skip
MAX_UNIT_BYTES = 1 << 20


def _read_unit(tree: str, unit: str) -> tuple[str, str]:
    """(unit directory, text) of a package's unit: a regular file inside the tree, read
    without following links (root reads it; a link to /etc/shadow must not be)."""
    for d in UNIT_DIRS:
        path = os.path.join(tree, d, unit)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise PortableError(f"{unit}: not a regular file in the package ({exc.strerror})",
                                "a unit must be a plain file") from None  # fmt: skip
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise PortableError(f"{unit}: not a regular file in the package")
            data = f.read(MAX_UNIT_BYTES + 1)
        if len(data) > MAX_UNIT_BYTES or os.path.realpath(os.path.dirname(path)) != (
            os.path.join(os.path.realpath(tree), d)
        ):
            raise PortableError(f"{unit}: too large or outside the package tree")
        return d, data.decode("utf-8", errors="replace")
    raise PortableError(f"{unit}: not found in the package")


def check_unit(unit: str, text: str) -> None:
    """Refuse what would let a unit escape its profile: systemd runs an Exec line with a
    '+' prefix (and '!'/'!!') with full privileges, outside User=, DynamicUser=,
    capability and namespace settings, and PermissionsStartOnly= does that for the
    others. A package's unit runs under its profile, never as plain root."""
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep:
            continue
        if key in EXEC_KEYS:
            prefix = value.strip()
            while prefix and prefix[0] in "@-:+!|":
                if prefix[0] in "+!":
                    raise PortableError(
                        f"{unit}:{number}: {key}= with a '{prefix[0]}' prefix would run "
                        "outside the service's profile, with full privileges",
                        "remove the prefix; a package's service runs under its profile",
                    )
                prefix = prefix[1:]
        if key == "PermissionsStartOnly":
            raise PortableError(
                f"{unit}:{number}: PermissionsStartOnly= would run commands outside the profile",
                "remove it",
            )


def portable_image(row: Installed) -> Image | None:
    """The package as a portable image, or None when its tree is not one."""
    units = units_in(row.path)
    has_os_release = any(os.path.lexists(os.path.join(row.path, p)) for p in OS_RELEASE)
    if not units:
        return None
    for unit in units:
        check_unit(unit, _read_unit(row.path, unit)[1])
    wrong = [u for u in units if not matches(u, row.name)]
    if wrong:
        raise PortableError(
            f"{row.name} {row.version}: units {', '.join(wrong)} do not start with the "
            f"package name; portablectl would not attach them",
            f"name them {row.name}.service, {row.name}-x.service or {row.name}@.service",
        )
    return Image(row.name, row.version, tuple(units), generated=not has_os_release)


# Mount points the portable profiles bind onto (TESTBED.md A.3: missing ones fail).
SKELETON_DIRS = ("usr", "proc", "sys", "dev", "run", "tmp", "var/tmp", "etc", "opt/pkgs")
SKELETON_FILES = ("etc/machine-id", "etc/resolv.conf")


def generate_image(row: Installed, target: str, pkgs_inner: str) -> None:
    """An image for a code package that ships units but no os-release: an os-release, the
    empty mount points, and the package's units with core's /usr, /etc and the package
    tree bound read-only, so its programs run from the host's /usr as a shim's do."""
    os.makedirs(target)
    for d in SKELETON_DIRS:
        os.makedirs(os.path.join(target, d), exist_ok=True)
    for name in SKELETON_FILES:
        open(os.path.join(target, name), "w").close()
    for link, dest in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"),
                       ("lib64", "usr/lib64")):  # fmt: skip
        os.symlink(dest, os.path.join(target, link))
    os.makedirs(os.path.join(target, "usr/lib/systemd/system"), exist_ok=True)
    release = (
        f"ID=layershell-{row.name}\nVERSION_ID={row.version}\n"
        f'PORTABLE_PRETTY_NAME="{row.name} {row.version} (layershell package)"\n'
    )
    with open(os.path.join(target, "usr/lib/os-release"), "w", encoding="utf-8") as out:
        out.write(release)
    tree = f"{pkgs_inner}/{row.name}_{row.version}"
    binds = (
        "\n[Service]\n"
        "# Added by layershell: this image shares core's /usr and /etc, read-only, and\n"
        "# sees its package where shims see it.\n"
        "BindReadOnlyPaths=/usr /etc/passwd /etc/group /etc/nsswitch.conf /etc/ld.so.cache\n"
        f"BindReadOnlyPaths={row.path}:{tree} {row.path}:{pkgs_inner}/{row.name}\n"
    )
    for unit in units_in(row.path):
        _, text = _read_unit(row.path, unit)
        check_unit(unit, text)
        out_path = os.path.join(target, "usr/lib/systemd/system", unit)
        fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text + (binds if unit.endswith(".service") else ""))


def _record_file(paths: Paths) -> str:
    return os.path.join(paths.state_dir, "portables.json")


def attached(paths: Paths) -> dict[str, str]:
    return {k: str(v) for k, v in read_json_map(_record_file(paths)).items()}


def _save(paths: Paths, record: Mapping[str, object], file: str | None = None) -> None:
    write_json(file or _record_file(paths), record)


def _failed_file(paths: Paths) -> str:
    return os.path.join(paths.state_dir, "portables-failed.json")


def failed(paths: Paths) -> dict[str, str]:
    """package -> the version whose start failed: a full sync does not retry it (that
    would fail every later operation); installing the package again does."""
    return {k: str(v) for k, v in read_json_map(_failed_file(paths), strict=False).items()}


def _mark_failed(paths: Paths, name: str, version: str | None) -> None:
    marks = failed(paths)
    if version is None:
        if marks.pop(name, None) is None:
            return
    else:
        marks[name] = version
    _save(paths, marks, _failed_file(paths))


def clear_failed(paths: Paths, names: Sequence[str]) -> None:
    """Forget the failure marks of `names`: root is switching them deliberately (install,
    rollback), which retries a version whose start failed."""
    marks = failed(paths)
    if any(n in marks for n in names):
        _save(paths, {k: v for k, v in marks.items() if k not in names}, _failed_file(paths))


def _check(result: subprocess.CompletedProcess[str], what: str) -> None:
    if result.returncode != 0:
        raise PortableError(
            f"{what} failed (exit {result.returncode}): {(result.stderr or result.stdout).strip()}",
            f"command: {' '.join(result.args)}",
        )


def _journal(unit: str, run: Run) -> str:
    result = run(["journalctl", "--no-pager", "-o", "cat", "-n", "15", "-u", unit])
    return "\n".join("    " + line for line in result.stdout.splitlines()[-15:])


def _wait_active(unit: str, run: Run, timeout: float, settle: float = 1.5) -> str:
    """'active' once the unit has stayed active for `settle` seconds; a simple service
    is active the moment it forks, so one look would miss a program that exits at once."""
    deadline = time.monotonic() + timeout
    active_since: float | None = None
    state = ""
    while time.monotonic() < deadline:
        state = run(["systemctl", "is-active", unit]).stdout.strip()
        now = time.monotonic()
        if state == "failed" or (state == "inactive" and active_since is not None):
            return state
        if state != "active":
            active_since = None
        elif active_since is None:
            active_since = now
        elif now - active_since >= settle:
            return state
        time.sleep(0.2)
    return state


def _conflicts(image: Image, record: dict[str, str]) -> list[str]:
    """Units another image (not this package's older version) already put on the host."""
    out = []
    for unit in image.units:
        for where in (ATTACHED, "/etc/systemd/system", "/run/systemd/system.attached"):
            path = os.path.join(where, unit)
            if os.path.lexists(path) and record.get(image.name) is None:
                out.append(path)
    return out


def attach(
    paths: Paths,
    row: Installed,
    image: Image,
    *,
    run: Run = _run,
    log: Callable[[str], None] = lambda _: None,
    start_timeout: float = START_TIMEOUT,
    pkgs_inner: str = "/opt/pkgs",
) -> None:
    """Attach (or move to) `row`'s version; on a failed start, leave things as before."""
    record = attached(paths)
    clash = _conflicts(image, record)
    if clash:
        raise PortableError(
            f"{image.name}: {', '.join(clash)} already exist on the host (another image or "
            "the host ships the same unit name); systemd refuses to attach over them",
            "remove or rename the other unit, or rename this package's units",
        )
    target = os.path.join(paths.portables_dir, image.image_name)
    if not paths.portables_dir.startswith(("/var/lib/portables", "/etc/portables")):
        log(f"note: {paths.portables_dir} is not /var/lib/portables (SELinux on Fedora needs it)")
    os.makedirs(paths.portables_dir, mode=0o700, exist_ok=True)
    if not os.path.isdir(target):
        tmp = target + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        if image.generated:
            generate_image(row, tmp, pkgs_inner)
        else:
            shutil.copytree(row.path, tmp, symlinks=True)
        os.rename(tmp, target)
    # Root's word only (grants.py): the record may ask for a stricter profile, never
    # choose units, the install method or a looser profile.
    from layershell import grants

    policy = grants.Table.load(paths).policy(row)
    profile, method = policy.profile, policy.install_method
    if profile not in grants.PROFILE_ORDER:
        raise PortableError(f"{image.name}: unknown profile {profile!r}")
    if method not in grants.METHODS:
        raise PortableError(f"{image.name}: unknown install_method {method!r}")
    if profile == "trusted" and not _granted_trusted(paths, image.name):
        raise PortableError(
            f"{image.name}: the trusted profile (no sandbox) must come from the host's "
            f"manifest, {paths.manifest_file}; the layer's own record cannot grant it",
            "add it there with profile: trusted, or use another profile",
        )
    enable = _units(row, "enable", paths, image)
    start = _units(row, "start", paths, image)
    previous = record.get(image.name)
    verb = "reattach" if previous and previous != image.version else "attach"
    if previous == image.version:
        verb = "attach"
    argv = ["portablectl", verb, "--profile", profile, f"--copy={method}", target]
    if previous != image.version or not _is_attached(image, run):
        log(f"{verb}ing {image.image_name} (profile {profile}, --copy={method})")
        _check(run(argv), f"portablectl {verb} {image.image_name}")
    try:
        for unit in enable:
            _check(run(["systemctl", "enable", unit]), f"systemctl enable {unit}")
        for unit in start:
            _check(run(["systemctl", "restart", unit]), f"systemctl start {unit}")
            state = _wait_active(unit, run, start_timeout)
            if state != "active":
                raise PortableError(
                    f"{unit} did not start (state: {state or 'unknown'}); "
                    f"{image.image_name} was detached. Its last log lines:\n{_journal(unit, run)}",
                    f"journalctl -u {unit}",
                )
    except PortableError:
        _undo(image, target, enable, start, run)
        if previous and previous != image.version:
            log(f"{image.name}: {image.version} failed; {previous} stays detached")
        record.pop(image.name, None)
        _save(paths, record)
        _mark_failed(paths, image.name, image.version)
        raise
    if previous and previous != image.version:
        shutil.rmtree(
            os.path.join(paths.portables_dir, f"{image.name}_{previous}"), ignore_errors=True
        )
    record[image.name] = image.version
    _save(paths, record)
    if failed(paths).get(image.name) == image.version:
        _mark_failed(paths, image.name, None)  # a retry worked; another version's mark stays


def _services_file(paths: Paths) -> str:
    return os.path.join(paths.state_dir, "services.json")


def service_overrides(paths: Paths) -> dict[str, list[str]]:
    """package -> the units core expose/unexpose --service set (enabled and started),
    in place of the manifest's enable/start."""
    data = read_json_map(_services_file(paths))
    return {k: [str(u) for u in v] for k, v in data.items() if isinstance(v, list)}


def save_service_overrides(paths: Paths, overrides: dict[str, list[str]]) -> None:
    _save(paths, overrides, _services_file(paths))


def _granted_trusted(paths: Paths, name: str) -> bool:
    """Root attaches with `trusted` only what root's own manifest says is trusted."""
    from layershell import manifest

    try:
        spec = manifest.load_manifest(paths.manifest_file).get(name)
    except LayershellError:
        return False
    return spec is not None and spec.profile.value == "trusted"


def unit_refusal(unit: object, image: Image) -> str:
    """Why root must not hand `unit` to systemctl for `image` ("" if it may): a plain
    unit name (never a path, never an option), named after the package, and a unit of
    its image (or an instance of a template there)."""
    from layershell import manifest

    if not isinstance(unit, str) or "/" in unit or not manifest.UNIT_RE.match(unit):
        return f"{unit!r} is not a unit name"
    if unit.startswith("-") or not matches(unit, image.name):
        return f"{unit!r} is not one of {image.name}'s units (they start with {image.name})"
    stem, _, kind = unit.rpartition(".")
    template = stem.partition("@")[0] + "@." + kind if "@" in stem else ""
    if unit not in image.units and template not in image.units:
        return f"{unit!r} is not a unit of {image.image_name}"
    return ""


def _units(
    row: Installed, key: str, paths: Paths | None = None, image: Image | None = None
) -> list[str]:
    """The units root enables (key "enable") or starts ("start") for `row`: root's own
    choice (core expose --service), else root's grant (grants.py), never the record;
    with `image`, only the units of that image (checked again here, right before
    root hands them to systemctl)."""
    from layershell import grants

    chosen: list[str] = []
    override = service_overrides(paths).get(row.name) if paths is not None else None
    if override is not None:
        chosen = list(override)
    elif paths is not None:
        policy = grants.Table.load(paths).policy(row)
        chosen = list(policy.enable if key == "enable" else policy.start)
    if image is None:
        return [u for u in chosen if isinstance(u, str) and "/" not in u]
    refused = [why for why in (unit_refusal(u, image) for u in chosen) if why]
    if refused:
        raise PortableError(
            f"{image.name}: not enabling or starting: {'; '.join(refused)}",
            "name units of the package's image, as in "
            f"{image.name}.service, in the host's manifest or core expose --service",
        )
    return chosen


def wanted_services(paths: Paths, row: Installed) -> list[str]:
    """The units that should be enabled and running for `row` (root's word only)."""
    return sorted(set(_units(row, "enable", paths)) | set(_units(row, "start", paths)))


def apply_services(
    before: Sequence[str],
    after: Sequence[str],
    *,
    run: Run = _run,
    start_timeout: float = START_TIMEOUT,
) -> list[str]:
    """Enable and start units added, disable and stop units removed; errors returned."""
    errors = []
    for unit in sorted(set(before) - set(after)):
        run(["systemctl", "disable", "--now", unit])
    for unit in sorted(set(after) - set(before)):
        for argv in (["systemctl", "enable", unit], ["systemctl", "restart", unit]):
            result = run(argv)
            if result.returncode != 0:
                errors.append(f"{' '.join(argv)}: {(result.stderr or result.stdout).strip()}")
                break
        else:
            state = _wait_active(unit, run, start_timeout)
            if state != "active":
                errors.append(f"{unit} did not start (state: {state}):\n{_journal(unit, run)}")
    return errors


def _is_attached(image: Image, run: Run) -> bool:
    return any(os.path.lexists(os.path.join(ATTACHED, u)) for u in image.units)


def _undo(image: Image, target: str, enable: list[str], start: list[str], run: Run) -> None:
    for unit in start:
        run(["systemctl", "stop", unit])
    for unit in enable:
        run(["systemctl", "disable", unit])
    run(["portablectl", "detach", target])
    for unit in image.units:
        run(["systemctl", "reset-failed", unit])
    shutil.rmtree(target, ignore_errors=True)


def detach(
    paths: Paths,
    name: str,
    units: Sequence[str],
    *,
    run: Run = _run,
    log: Callable[[str], None] = lambda _: None,
) -> None:
    """Detach what layershell's record says is attached for `name` (never by prefix)."""
    record = attached(paths)
    version = record.get(name)
    if version is None:
        return
    target = os.path.join(paths.portables_dir, f"{name}_{version}")
    log(f"detaching {name}_{version}")
    for unit in units:
        run(["systemctl", "disable", "--now", unit])
    result = run(["portablectl", "detach", "--now", target])
    if result.returncode != 0 and "not attached" not in (result.stderr + result.stdout).lower():
        _check(result, f"portablectl detach {name}_{version}")
    for unit in units:
        run(["systemctl", "reset-failed", unit])
    shutil.rmtree(target, ignore_errors=True)
    del record[name]
    _save(paths, record)
    _mark_failed(paths, name, None)  # removed: a later install starts afresh


def sync(
    paths: Paths,
    rows: list[Installed],
    *,
    run: Run = _run,
    log: Callable[[str], None] = lambda _: None,
    only: set[str] | None = None,
    pkgs_inner: str = "/opt/pkgs",
) -> list[str]:
    """Attach active portable packages and detach what is no longer installed; returns
    error messages (each package's failure is its own)."""
    errors: list[str] = []
    active = {r.name: r for r in rows if r.active}
    record = attached(paths)
    marks = failed(paths)
    for name in sorted(set(record) - set(active)):
        if only is not None and name not in only:
            continue
        try:
            image_dir = os.path.join(paths.portables_dir, f"{name}_{record[name]}")
            detach(paths, name, units_in(image_dir), run=run, log=log)
        except LayershellError as exc:
            errors.append(exc.message)
    for name, row in sorted(active.items()):
        if only is not None and name not in only:
            continue
        from layershell.shims import trusted_row

        why = trusted_row(paths, row)
        if why:
            errors.append(f"not attaching {why}")
            continue
        try:
            image = portable_image(row)
            if image is None:
                continue
            if record.get(name) == row.version and _is_attached(image, run):
                continue
            if only is None and marks.get(name) == row.version:
                log(f"note: {name} {row.version} is not attached: its start failed; "
                    f"install it again to retry")  # fmt: skip
                continue
            attach(paths, row, image, run=run, log=log, pkgs_inner=pkgs_inner)
        except LayershellError as exc:
            errors.append(exc.message + (f"\n  hint: {exc.hint}" if exc.hint else ""))
    return errors
