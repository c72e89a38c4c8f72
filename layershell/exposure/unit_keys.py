"""The allow-list of a package's units (units.py says why there is one): per unit type and
section, the keys layershell can sandbox, each with the rule its value must meet (a
Rule: the value and its Context in, why it is refused out, "" when it is allowed); and
for the keys people reach for, why they are refused. A key in no table is refused."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

PLAIN_UNIT_RE = re.compile(r"\A[A-Za-z0-9:_.-]+(@[A-Za-z0-9:_.-]*)?\.[a-z]+\Z")  # no escape


def matches(unit: str, name: str) -> bool:
    """systemd attaches only units named after the image: NAME.x, NAME-x, NAME@x."""
    return any(unit.startswith(name + sep) for sep in (".", "-", "@"))


TRUE = ("1", "yes", "y", "true", "t", "on")  # systemd's parse_boolean, case-insensitive
FALSE = ("0", "no", "n", "false", "f", "off")
SAFE_TARGETS = frozenset(
    f"{t}.target"
    for t in ("network", "network-online", "network-pre", "nss-lookup", "nss-user-lookup",
              "remote-fs", "local-fs", "time-set", "time-sync", "sockets", "timers",
              "paths", "basic", "sysinit", "multi-user", "default")
)  # fmt: skip


@dataclass(frozen=True)
class Context:
    name: str  # the package
    own: frozenset[str]  # its unit names
    suffix: str  # the unit's type, e.g. ".socket"
    key: str = ""


Rule = Callable[[str, Context], str]  # value -> why it is refused ("" when allowed)


def anything(value: str, ctx: Context) -> str:
    return ""


RELAXED = {
    "DynamicUser": "would run the service as root or a host user, not as its own dynamic user",
    "PrivateUsers": "would map the host's users into the service",
    "NoNewPrivileges": "would let the service gain privileges through setuid programs",
}


def true_only(value: str, ctx: Context) -> str:
    """A sandboxing switch a unit may turn on (the profile may too), never off."""
    if value == "" or value.lower() in TRUE:
        return ""
    why = RELAXED.get(ctx.key, "would relax the sandbox")
    return f"={value} {why}; only yes is accepted"


def one_of(*choices: str) -> Rule:
    def rule(value: str, ctx: Context) -> str:
        if value == "" or value in choices or (value.lower() in TRUE and "yes" in choices):
            return ""
        if value.lower() in FALSE:
            return f"={value} would relax the sandbox; one of {', '.join(choices)} is accepted"
        return f"={value} is not accepted here; one of: {', '.join(choices)}"

    return rule


def _own(unit: str, ctx: Context) -> bool:
    if unit in ctx.own:
        return True
    prefix, at, rest = unit.partition("@")  # an instance of one of its templates
    template = f"{prefix}@{rest[rest.rfind('.') :]}"
    return bool(at) and "%" not in prefix and template in ctx.own and "/" not in rest


def own_units(value: str, ctx: Context) -> str:
    bad = [u for u in value.split() if not _own(u, ctx)]
    return f"{', '.join(bad)}: only units of this package may be named here" if bad else ""


def dependencies(value: str, ctx: Context) -> str:
    bad = [u for u in value.split() if not _own(u, ctx) and u not in SAFE_TARGETS]
    if not bad:
        return ""
    return (
        f"{', '.join(bad)}: a unit of the host, which this would start or hold up; only "
        f"this package's units and the targets {', '.join(sorted(SAFE_TARGETS))} may be "
        f"named"
    )


def aliases(value: str, ctx: Context) -> str:
    """An alias is a link `systemctl enable` makes in /etc/systemd/system: a plain unit
    name (systemd 252 still reads a path as a legacy X.wants/ link) of the package."""
    bad = [
        a
        for a in value.split()
        if not PLAIN_UNIT_RE.match(a) or not matches(a, ctx.name) or not a.endswith(ctx.suffix)
    ]
    return (
        f"{', '.join(bad)}: an alias must be a plain unit name starting with the package name"
        if bad
        else ""
    )


def exec_line(value: str, ctx: Context) -> str:
    """systemd runs a '+', '!' or '!!' command with full privileges, outside User=,
    DynamicUser=, capabilities and namespaces; '@', '-' and ':' change nothing of that.
    One line may hold several commands, separated by a lone ';', each with its prefixes,
    and systemd unquotes and unescapes a command's first word before it reads them."""
    words = value.split()  # a superset of systemd's separators: never fewer commands
    # A quoted or escaped ';' is an argument to systemd; taken as a separator here too.
    starts = [0] + [i + 1 for i, w in enumerate(words) if w in (";", "';'", '";"', "\\;")]
    for i in starts:
        if i >= len(words):
            continue
        word = words[i]
        if any(c in word for c in "\"'\\"):
            return (
                f"{word!r}: a quoted or escaped command, which systemd unquotes before it "
                "reads the prefixes; write the command's path plainly"
            )
        rest = word.lstrip("@-:")
        if rest[:1] in ("+", "!"):
            return (
                f"a '{rest[0]}' prefix would run the command outside the service's profile, "
                f"with full privileges"
            )
        if rest.startswith("%"):
            return f"{word!r}: a specifier as the command; write the command's path plainly"
    return ""


def package_dirs(value: str, ctx: Context) -> str:
    """StateDirectory=NAME makes /var/lib/NAME the service's (moved to private/ and chowned
    to its dynamic user): a host directory of another name must never be. One component
    only: for NAME/sub systemd (root) makes NAME and follows whatever NAME/sub is then,
    and NAME is the service's to change."""
    bad = []
    for word in value.split():
        # ':' names a link systemd makes (SOURCE:LINK): a host path of any name; '/'
        # a second level; '%', '\\' and quotes are expanded by systemd first.
        plain = FILE_NAME_RE.match(word) and (word == ctx.name or matches(word, ctx.name))
        if not plain or ":" in word:
            bad.append(word)
    if bad:
        return (
            f"{', '.join(bad)}: systemd would make and hand this host directory to the "
            f"service; it must be one directory named after the package ({ctx.name} or "
            f"{ctx.name}-x), no path"
        )
    return ""


FILE_NAME_RE = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_.@+-]*\Z")  # no '/', '.', '..', '%', '\\'
SUN_PATH_MAX = 107  # sockaddr_un.sun_path, its NUL excluded


def socket_path(value: str, ctx: Context) -> str:
    """A listening socket is made by systemd as root on the host, outside the profile
    (network included), and systemd first makes every missing directory above it: only
    a file right in /run/<name>/, a directory systemd makes in root's own /run. A
    second level would be a directory in /run/<name>, which the service (or, with a
    loose DirectoryMode=, anyone) could swap for a link that root then follows."""
    parts = value.split("/")
    if (
        len(parts) == 4
        and parts[:3] == ["", "run", ctx.name]
        and FILE_NAME_RE.match(parts[3])
        and len(value) <= SUN_PATH_MAX
    ):
        return ""
    return (
        f"{value!r}: systemd makes this socket, and the directories above it, as root "
        f"outside the profile; only a unix socket file right in /run/{ctx.name}/ "
        f"(/run/{ctx.name}/FILE) is accepted"
    )


MODE_RE = re.compile(r"\A[0-7]{1,5}\Z")


def mode_at_most(limit: int, what: str) -> Rule:
    """An octal mode (systemd's parse_mode) with no bit outside `limit`: no group or
    other write, no setuid, setgid or sticky bit."""

    def rule(value: str, ctx: Context) -> str:
        if value == "":
            return ""  # back to systemd's default, within the limit
        if MODE_RE.match(value) and int(value, 8) <= 0o7777 and not int(value, 8) & ~limit:
            return ""
        return (
            f"={value}: systemd makes the {what} as root with this mode; only modes "
            f"within {limit:04o} are accepted (no group/other write, no special bits)"
        )

    return rule


def false_only(why: str) -> Rule:
    """A switch that makes systemd act on host paths as root: only off."""

    def rule(value: str, ctx: Context) -> str:
        if value == "" or value.lower() in FALSE:
            return ""
        return f"={value} {why}; only no is accepted"

    return rule


def unit_names(value: str, ctx: Context) -> str:
    """`systemctl enable` makes a link in /etc/systemd/system per name (X.wants/NAME):
    plain unit names only, no path, specifier, escape or quote."""
    bad = [u for u in value.split() if not PLAIN_UNIT_RE.match(u) or len(u) > 255]
    return f"{', '.join(bad)}: not a plain unit name" if bad else ""


def instance(value: str, ctx: Context) -> str:
    if value == "" or FILE_NAME_RE.match(value):
        return ""
    return f"{value!r}: not a plain instance name"


def nice(value: str, ctx: Context) -> str:
    return "" if value == "" or value.isdigit() else "a negative Nice= would raise its priority"


def std_output(value: str, ctx: Context) -> str:
    if value in ("", "journal", "null", "inherit", "kmsg"):
        return ""
    return f"{value!r}: systemd would open it as root on the host; use journal or null"


UNIT_KEYS: dict[str, Rule] = {
    # After=, PartOf=, ReloadPropagatedFrom=, StopPropagatedFrom= name host units, but
    # act on this unit only (it waits for them, stops or reloads with them).
    **{k: anything for k in (
        "Description", "Documentation", "After", "PartOf", "ReloadPropagatedFrom",
        "StopPropagatedFrom", "IgnoreOnIsolate", "StopWhenUnneeded",
        "RefuseManualStart", "RefuseManualStop", "DefaultDependencies", "CollectMode",
        "JobTimeoutSec", "JobRunningTimeoutSec", "StartLimitIntervalSec", "StartLimitBurst",
        "SourcePath")},
    # Before=sshd.service with a oneshot that never ends would hold sshd's start at boot.
    **{k: dependencies for k in ("Wants", "Requires", "Requisite", "BindsTo", "Before")},
    # flush would cancel every queued job of the host; isolate stop all other units.
    "OnFailureJobMode": one_of("fail", "replace", "replace-irreversibly"),
    **{k: own_units for k in ("Conflicts", "OnFailure", "OnSuccess", "Upholds",
                              "PropagatesReloadTo", "PropagatesStopTo")},
}  # fmt: skip
INSTALL_KEYS: dict[str, Rule] = {
    "WantedBy": unit_names,  # X.wants/ in /etc/systemd/system: makes X want this unit
    "DefaultInstance": instance,
    "RequiredBy": own_units,  # a host unit requiring the package fails with it
    "UpheldBy": own_units,
    "Also": own_units,  # `systemctl enable` would enable those too
    "Alias": aliases,
}
SERVICE_KEYS: dict[str, Rule] = {
    "Type": one_of("simple", "exec", "forking", "oneshot", "notify", "idle"),
    **{k: exec_line for k in ("ExecStart", "ExecStartPre", "ExecStartPost", "ExecCondition",
                              "ExecReload", "ExecStop", "ExecStopPost")},
    **{k: anything for k in (
        "Restart", "RestartSec", "RestartPreventExitStatus", "RestartForceExitStatus",
        "SuccessExitStatus", "RemainAfterExit", "GuessMainPID", "TimeoutSec",
        "TimeoutStartSec", "TimeoutStopSec", "TimeoutAbortSec", "TimeoutStartFailureMode",
        "TimeoutStopFailureMode", "RuntimeMaxSec", "RuntimeRandomizedExtraSec", "WatchdogSec",
        "NotifyAccess", "KillSignal", "RestartKillSignal", "FinalKillSignal",
        "WatchdogSignal", "SendSIGKILL", "SendSIGHUP", "Environment", "UnsetEnvironment",
        "WorkingDirectory", "UMask", "SyslogIdentifier", "SyslogFacility", "SyslogLevel",
        "SyslogLevelPrefix", "LogLevelMax", "LogRateLimitIntervalSec", "LogRateLimitBurst",
        "FileDescriptorStoreMax", "OOMPolicy", "LimitNOFILE", "MemoryMax", "MemoryHigh",
        "MemorySwapMax", "CPUQuota", "TasksMax", "ReadOnlyPaths", "InaccessiblePaths")},
    **{k: mode_at_most(0o755, "directory") for k in (
        "StateDirectoryMode", "CacheDirectoryMode", "LogsDirectoryMode",
        "RuntimeDirectoryMode")},
    # A preserved /run/NAME outlives the dynamic user, whose uid a later service gets.
    "RuntimeDirectoryPreserve": false_only(
        "would keep /run/NAME after the service, owned by a dynamic uid systemd reuses"),
    "KillMode": one_of("control-group", "mixed", "process"),
    "Nice": nice,
    "StandardOutput": std_output,
    "StandardError": std_output,
    "StandardInput": one_of("null"),
    "Sockets": own_units,
    **{k: package_dirs for k in ("StateDirectory", "CacheDirectory", "LogsDirectory",
                                 "RuntimeDirectory")},
    **{k: true_only for k in (
        "DynamicUser", "PrivateUsers", "PrivateTmp", "PrivateDevices", "PrivateNetwork",
        "PrivateIPC", "PrivateMounts", "NoNewPrivileges", "RestrictSUIDSGID",
        "LockPersonality", "MemoryDenyWriteExecute", "RestrictRealtime", "RemoveIPC",
        "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
        "ProtectControlGroups", "ProtectClock", "ProtectHostname", "RestrictNamespaces",
        "MountAPIVFS")},
    "ProtectSystem": one_of("yes", "full", "strict"),
    "ProtectHome": one_of("yes", "read-only", "tmpfs"),
    "ProtectProc": one_of("invisible", "ptraceable", "noaccess"),
    "ProcSubset": one_of("pid"),
}  # fmt: skip
SOCKET_KEYS: dict[str, Rule] = {
    **{k: socket_path for k in ("ListenStream", "ListenDatagram", "ListenSequentialPacket")},
    **{k: anything for k in (
        "Accept", "MaxConnections", "MaxConnectionsPerSource", "Backlog",
        "FileDescriptorName", "PassCredentials", "PassSecurity", "PassPacketInfo",
        "KeepAlive", "NoDelay", "ReceiveBuffer", "SendBuffer", "TriggerLimitIntervalSec",
        "TriggerLimitBurst", "Timestamping")},
    # /run/NAME: root's, not writable by others. The socket: any local user may connect
    # (what a socket is for; the service decides what to answer), but no x or special bit.
    "DirectoryMode": mode_at_most(0o755, "socket's directory /run/NAME"),
    "SocketMode": mode_at_most(0o666, "socket"),
    "RemoveOnStop": false_only(
        "would make systemd remove the socket's paths as root when it stops"),
    "Service": own_units,
}  # fmt: skip
TIMER_KEYS: dict[str, Rule] = {
    **{k: anything for k in (
        "OnActiveSec", "OnBootSec", "OnStartupSec", "OnUnitActiveSec", "OnUnitInactiveSec",
        "OnCalendar", "AccuracySec", "RandomizedDelaySec", "FixedRandomDelay",
        "OnClockChange", "OnTimezoneChange", "Persistent", "RemainAfterElapse")},
    "Unit": own_units,
}  # fmt: skip
SECTIONS: dict[str, dict[str, dict[str, Rule]]] = {
    ".service": {"Unit": UNIT_KEYS, "Service": SERVICE_KEYS, "Install": INSTALL_KEYS},
    ".socket": {"Unit": UNIT_KEYS, "Socket": SOCKET_KEYS, "Install": INSTALL_KEYS},
    ".timer": {"Unit": UNIT_KEYS, "Timer": TIMER_KEYS, "Install": INSTALL_KEYS},
    ".target": {"Unit": UNIT_KEYS, "Install": INSTALL_KEYS},
}

# Why the keys people reach for are refused: the message names the escape.
REFUSED: Mapping[str, str] = {
    **{k: "would choose the service's user or groups; the profile runs it as its own "
          "dynamic user" for k in ("User", "Group", "SupplementaryGroups")},
    **{k: "would bind host paths into the service: list settings add to the profile's"
       for k in ("BindPaths", "BindReadOnlyPaths", "TemporaryFileSystem", "ReadWritePaths",
                 "MountImages", "ExtensionImages", "ExtensionDirectories")},
    **{k: "would replace the image portablectl attaches" for k in (
        "RootDirectory", "RootImage", "RootImageOptions", "RootHash", "RootHashSignature",
        "RootVerity")},
    **{k: "would give the service capabilities the profile does not"
       for k in ("CapabilityBoundingSet", "AmbientCapabilities", "SecureBits")},
    **{k: "adds to the profile's allow-list, widening it" for k in (
        "SystemCallFilter", "SystemCallArchitectures", "SystemCallErrorNumber",
        "RestrictAddressFamilies", "IPAddressAllow", "IPAddressDeny", "DeviceAllow",
        "DevicePolicy", "RestrictFileSystems", "SocketBindAllow", "SocketBindDeny")},
    "PermissionsStartOnly": "would run the Exec lines other than ExecStart= with full "
    "privileges, outside the profile",
    **{k: "systemd would read this host file as root for the service" for k in (
        "EnvironmentFile", "LoadCredential", "LoadCredentialEncrypted", "SetCredential",
        "SetCredentialEncrypted", "ImportCredential", "PIDFile", "TTYPath", "PAMName",
        "ListenSpecial", "ListenFIFO", "ListenMessageQueue", "ListenUSBFunction",
        "USBFunctionDescriptors", "USBFunctionStrings")},
    **{k: "systemd would make, chown or remove this host path as root" for k in (
        "Symlinks", "SocketUser", "SocketGroup", "ConfigurationDirectory",
        "ConfigurationDirectoryMode")},
    **{k: "could reboot or power off the host" for k in (
        "FailureAction", "SuccessAction", "StartLimitAction", "JobTimeoutAction",
        "RebootArgument", "JobTimeoutRebootArgument", "FailureActionExitStatus",
        "SuccessActionExitStatus", "AllowIsolate", "WakeSystem")},
    **{k: "reaches outside the service's own unit, namespace or cgroup" for k in (
        "JoinsNamespaceOf", "Slice", "Delegate", "RequiresMountsFor", "OOMScoreAdjust",
        "Personality", "KeyringMode", "IOSchedulingClass", "CPUSchedulingPolicy",
        "CPUSchedulingPriority", "BindToDevice",
        "Transparent", "FreeBind", "Mark", "ListenNetlink", "BusName", "NetworkNamespacePath",
        "IPCNamespacePath")},
}  # fmt: skip


def refusal(key: str, suffix: str, section: str) -> tuple[str, str]:
    if key.startswith("Exec") and suffix != ".service":
        return (
            f"in a {suffix} unit this would run outside the profile, as host root "
            f"(systemd adds the profile to .service units only)",
            "move the command to the package's .service unit",
        )
    if key in REFUSED:
        return REFUSED[key], "remove it; the profile decides"
    return (
        f"not a key layershell can sandbox in [{section}] of a {suffix} unit",
        "see docs/exposure.md for the keys accepted",
    )
