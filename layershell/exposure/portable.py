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
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from layershell.atomic import read_json_map, write_json
from layershell.errors import LayershellError
from layershell.exposure import image as images
from layershell.exposure import units
from layershell.exposure.portable_record import attached
from layershell.exposure.settle import journal, wait_all_active
from layershell.exposure.unit_keys import matches
from layershell.packages.state import Installed
from layershell.paths import Paths

UNIT_DIRS = units.UNIT_DIRS
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
    texts: tuple[tuple[str, bytes], ...] = ()  # the units as checked: the image gets these

    @property
    def image_name(self) -> str:
        return f"{self.name}_{self.version}"


def units_in(tree: str) -> list[str]:
    found: set[str] = set()
    for d in UNIT_DIRS:
        try:
            found.update(e for e in os.listdir(os.path.join(tree, d)) if e.endswith(UNIT_SUFFIXES))
        except (FileNotFoundError, NotADirectoryError):
            continue
    return sorted(found)


def check_package(row: Installed) -> units.Report:
    """What units.py says of the package tree of `row`, read by root without following
    any link (the tree is the layer account's)."""
    fd = images.open_package(row.path)
    try:
        return units.check_tree(fd, row.name)
    except OSError as exc:
        raise PortableError(f"{row.name} {row.version}: cannot read its units: {exc}") from None
    finally:
        os.close(fd)


def portable_image(row: Installed) -> Image | None:
    """The package as a portable image, or None when it ships no units; a package whose
    units break a rule of units.py is refused with every problem, by file and line."""
    if os.path.basename(row.path) != f"{row.name}_{row.version}":
        raise PortableError(f"{row.name} {row.version}: recorded at {row.path!r}")
    report = check_package(row)
    if report.problems:
        listed = "\n".join(f"  {p}" for p in report.problems)
        raise PortableError(
            f"{row.name} {row.version}: not attached, its units leave what layershell can "
            f"sandbox:\n{listed}",
            "see docs/exposure.md (portable services) for the units and keys accepted",
        )
    if not report.units:
        return None
    has_os_release = any(os.path.lexists(os.path.join(row.path, p)) for p in OS_RELEASE)
    return Image(
        row.name,
        row.version,
        tuple(u.name for u in report.units),
        generated=not has_os_release,
        texts=tuple((u.name, u.data) for u in report.units),
    )


def generate_image(row: Installed, target: str, pkgs_inner: str) -> None:
    """An image for a code package that ships units but no os-release: an os-release, the
    empty mount points, a copy of the package tree where shims see it, and the package's
    checked units with core's /usr and /etc bound read-only, so its programs run from the
    host's /usr as a shim's do (image.py builds it)."""
    image = portable_image(row)
    if image is None:
        raise PortableError(f"{row.name} {row.version}: no units to attach")
    images.build(row.path, target, dict(image.texts), _generated(image, pkgs_inner))


def _generated(image: Image, pkgs_inner: str) -> images.Generated | None:
    return images.Generated(image.name, image.version, pkgs_inner) if image.generated else None


# Where systemd makes, as root, what a unit named after the package asks for: sockets in
# /run/<name>/, RuntimeDirectory=, StateDirectory= (DynamicUser: /var/lib/private), ...
HOST_DIRS = ("/run", "/var/lib", "/var/lib/private", "/var/cache", "/var/log")
HOST_UNIT_DIRS = ("/usr/lib/systemd/system", "/lib/systemd/system", "/etc/systemd/system")


OVERRIDES_HINT = (
    "remove it: the units `core expose --service` set are forgotten and each package "
    "gets its manifest's enable/start; set them again with that command"
)
NAMES_HINT = (
    "remove it: it only remembers which names were attached before, so the check of "
    "host paths under a package's name runs again at its next attach"
)


def host_claims(paths: Paths, name: str, host: str = "/") -> list[str]:
    """The host paths under a package's name that exist although no attach of it made
    them: a package named `dbus` would have its socket bound at /run/dbus/... in place
    of the host's bus. Once a name was attached here, what exists is its own (a stopped
    socket leaves /run/<name> behind), so only the first attach of a name is checked."""
    import glob

    if name in read_json_map(paths.portable_names_file, hint=NAMES_HINT) or name in attached(paths):
        return []
    found = []
    for d in HOST_DIRS:
        where = os.path.join(host, d.lstrip("/"))
        # NAME and NAME-x (StateDirectory=NAME-x is accepted too: polkit -> polkit-1)
        for path in [os.path.join(where, name), *glob.glob(os.path.join(where, f"{name}-*"))]:
            if os.path.lexists(path):
                found.append(d + path[len(where) :])
    # A host unit of that name owns that name's directories even while they do not
    # exist (RuntimeDirectory= is made when it starts, /run is empty after a boot).
    for d in HOST_UNIT_DIRS:
        where = os.path.join(host, d.lstrip("/"))
        for sep in (".", "-", "@"):
            found += [d + p[len(where) :] for p in glob.glob(os.path.join(where, name + sep + "*"))]
    return sorted(set(found))


def _claim(paths: Paths, name: str) -> None:
    names = read_json_map(paths.portable_names_file, hint=NAMES_HINT)
    if name not in names:
        _save(paths, {**names, name: True}, paths.portable_names_file)


def _save(paths: Paths, record: Mapping[str, object], file: str | None = None) -> None:
    write_json(file or paths.portables_file, record)


def failed(paths: Paths) -> dict[str, str]:
    """package -> the version whose start failed: a full sync does not retry it (that
    would fail every later operation); installing the package again does."""
    return {k: str(v) for k, v in read_json_map(paths.portables_failed_file, strict=False).items()}


def _mark_failed(paths: Paths, name: str, version: str | None) -> None:
    marks = failed(paths)
    if version is None:
        if marks.pop(name, None) is None:
            return
    else:
        marks[name] = version
    _save(paths, marks, paths.portables_failed_file)


def clear_failed(paths: Paths, names: Sequence[str]) -> None:
    """Forget the failure marks of `names`: root is switching them deliberately (install,
    rollback), which retries a version whose start failed."""
    marks = failed(paths)
    if any(n in marks for n in names):
        _save(
            paths, {k: v for k, v in marks.items() if k not in names}, paths.portables_failed_file
        )


def _check(result: subprocess.CompletedProcess[str], what: str) -> None:
    if result.returncode != 0:
        raise PortableError(
            f"{what} failed (exit {result.returncode}): {(result.stderr or result.stdout).strip()}",
            f"command: {' '.join(result.args)}",
        )


def _conflicts(image: Image, record: dict[str, str]) -> list[str]:
    """Units another image (not this package's older version) already put on the host."""
    out = []
    for unit in image.units:
        for where in (ATTACHED, "/etc/systemd/system", "/run/systemd/system.attached"):
            path = os.path.join(where, unit)
            if os.path.lexists(path) and record.get(image.name) is None:
                out.append(path)
    return out


def _profile_and_method(paths: Paths, row: Installed, image: Image) -> tuple[str, str]:
    """The profile and --copy method root attaches `image` with, refused if unknown."""
    # Root's word only (grants.py): the record may ask for a stricter profile, never
    # choose units, the install method or a looser profile.
    from layershell.packages import grants

    policy = grants.Table.load(paths, [row.name]).policy(row)
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
    return profile, method


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
    started = _start(paths, row, image, run=run, log=log, pkgs_inner=pkgs_inner)
    _finish(paths, started, _settle([started], run, start_timeout), run, log)


class _Started:
    """An image attached and its units started, not yet known to stay up."""

    def __init__(self, image: Image, target: str, enable: list[str], start: list[str],
                 previous: str | None) -> None:  # fmt: skip
        self.image, self.target, self.enable, self.start = image, target, enable, start
        self.previous = previous


def _start(
    paths: Paths,
    row: Installed,
    image: Image,
    *,
    run: Run,
    log: Callable[[str], None],
    pkgs_inner: str,
) -> _Started:
    """attach's first half: checked, attached, enabled and started (not waited for)."""
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
    if row.path != os.path.join(paths.pkgs_dir, image.image_name):  # root reads only there
        raise PortableError(f"{image.name}: recorded at {row.path!r}, not in {paths.pkgs_dir}")
    profile, method = _profile_and_method(paths, row, image)
    taken = host_claims(paths, image.name)
    if taken:
        raise PortableError(
            f"{image.name}: the host already has {', '.join(taken)}; a package of that name "
            "would have systemd (as root) put its sockets and directories there, over the "
            "host's own",
            "give the package a name no host service uses",
        )
    _claim(paths, image.name)  # from here on, what appears under its name is its own
    # Built only once the policy allows the attach: a refusal leaves no image behind.
    texts = images.ensure(row.path, target, dict(image.texts), _generated(image, pkgs_inner))
    enable = _units(row, "enable", paths, image)
    start = _units(row, "start", paths, image)
    previous = record.get(image.name)
    verb = "reattach" if previous and previous != image.version else "attach"
    if previous == image.version:
        verb = "attach"
    argv = ["portablectl", verb, "--profile", profile, f"--copy={method}", target]
    before = images.attached_names(ATTACHED)
    if previous != image.version or not _is_attached(image, run):
        log(f"{verb}ing {image.image_name} (profile {profile}, --copy={method})")
        _check(run(argv), f"portablectl {verb} {image.image_name}")
    started = _Started(image, target, enable, start, previous)
    try:
        _verify_attached(image, target, texts, before)
        for unit in enable:
            _check(run(["systemctl", "enable", unit]), f"systemctl enable {unit}")
        for unit in start:
            _check(run(["systemctl", "restart", unit]), f"systemctl start {unit}")
    except PortableError:
        _failed(paths, started, run, log)
        raise
    return started


def _settle(started: list[_Started], run: Run, timeout: float) -> dict[str, str]:
    """Each started unit's state once it has stayed active for a while (or stopped): one
    wait for all of them, so attaching N services costs one settling time, not N."""
    units = [u for s in started for u in s.start]
    return wait_all_active(units, run, timeout) if units else {}


def _finish(
    paths: Paths, s: _Started, states: dict[str, str], run: Run, log: Callable[[str], None]
) -> None:
    """attach's second half: kept if its units stayed up, else undone (raises)."""
    image = s.image
    for unit in s.start:
        state = states.get(unit, "")
        if state != "active":
            lines = journal(unit, run)
            _failed(paths, s, run, log)
            raise PortableError(
                f"{unit} did not start (state: {state or 'unknown'}); "
                f"{image.image_name} was detached. Its last log lines:\n{lines}",
                f"journalctl -u {unit}",
            )
    if s.previous and s.previous != image.version:
        shutil.rmtree(
            os.path.join(paths.portables_dir, f"{image.name}_{s.previous}"), ignore_errors=True
        )
    record = attached(paths)  # read again: other images' attaches wrote it meanwhile
    record[image.name] = image.version
    _save(paths, record)
    if failed(paths).get(image.name) == image.version:
        _mark_failed(paths, image.name, None)  # a retry worked; another version's mark stays


def _failed(paths: Paths, s: _Started, run: Run, log: Callable[[str], None]) -> None:
    """Undo a failed attach: the image detached, its record and mark saying so."""
    image = s.image
    _undo(image, s.target, s.enable, s.start, run)
    if s.previous and s.previous != image.version:
        log(f"{image.name}: {image.version} failed; {s.previous} stays detached")
    record = attached(paths)
    record.pop(image.name, None)
    _save(paths, record)
    _mark_failed(paths, image.name, image.version)


def service_overrides(paths: Paths) -> dict[str, list[str]]:
    """package -> the units core expose/unexpose --service set (enabled and started),
    in place of the manifest's enable/start."""
    data = read_json_map(paths.services_file, hint=OVERRIDES_HINT)
    return {k: [str(u) for u in v] for k, v in data.items() if isinstance(v, list)}


def save_service_overrides(paths: Paths, overrides: dict[str, list[str]]) -> None:
    _save(paths, overrides, paths.services_file)


def _granted_trusted(paths: Paths, name: str) -> bool:
    """Root attaches with `trusted` only what root's own manifest says is trusted."""
    from layershell.packages import manifest

    try:
        spec = manifest.load_manifest(paths.manifest_file).get(name)
    except LayershellError:
        return False
    return spec is not None and spec.profile.value == "trusted"


def unit_refusal(unit: object, image: Image) -> str:
    """Why root must not hand `unit` to systemctl for `image` ("" if it may): a plain
    unit name (never a path, never an option), named after the package, and a unit of
    its image (or an instance of a template there)."""
    from layershell.packages import manifest

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
    from layershell.packages import grants

    chosen: list[str] = []
    override = service_overrides(paths).get(row.name) if paths is not None else None
    if override is not None:
        chosen = list(override)
    elif paths is not None:
        policy = grants.Table.load(paths, [row.name]).policy(row)
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
            state = wait_all_active([unit], run, start_timeout)[unit]
            if state != "active":
                errors.append(f"{unit} did not start (state: {state}):\n{journal(unit, run)}")
    return errors


def _verify_attached(image: Image, target: str, texts: dict[str, bytes], before: set[str]) -> None:
    """What systemd attached must be exactly what layershell checked (raises, and attach
    rolls back, on any difference)."""
    wrong = images.verify_attached(ATTACHED, target, texts, before)
    if wrong:
        raise PortableError(
            f"{image.image_name}: what portablectl attached is not what layershell checked; "
            "detached:\n" + "\n".join(f"  {w}" for w in wrong),
            f"ls -l {ATTACHED}",
        )


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
    started: list[_Started] = []
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
        from layershell.exposure.shims import trusted_row

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
            started.append(_start(paths, row, image, run=run, log=log, pkgs_inner=pkgs_inner))
        except LayershellError as exc:
            errors.append(_message(exc))
    states = _settle(started, run, START_TIMEOUT)
    for one in started:
        try:
            _finish(paths, one, states, run, log)
        except LayershellError as exc:
            errors.append(_message(exc))
    return errors


def _message(exc: LayershellError) -> str:
    return exc.message + (f"\n  hint: {exc.hint}" if exc.hint else "")
