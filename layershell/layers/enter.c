/* layershell-enter: build a layer's view in fresh namespaces and exec a program in it.
 *
 * The executor of layershell/layers/sandbox.py, which alone decides WHAT a layer is (the
 * mounts, ids, network, environment) and passes it here as arguments; this file only
 * carries them out, the same way for `layer-shell` and for shims. It is C because a
 * shim must cost a few milliseconds (Python alone starts in ~7 ms; docs/design.md).
 *
 * Steps (docs/design.md, "Entering a layer"):
 *  1. unshare(USER|NS[|NET]); map the caller to 0, so it may mount in its namespace;
 *  2. a tmpfs on --view, then every mount operation in order (all nosuid, all but
 *     --rbind nodev; read-only where asked, keeping flags the kernel locked);
 *  3. optionally bind the caller's cwd (--bind-cwd) unless the view shows it already
 *     or it lies under a --cwd-deny path;
 *  4. pivot_root into the view and detach the old root;
 *  5. unshare(USER|NS) again, mapping the program's ids onto the caller: the copy of the
 *     mount table in a less privileged namespace locks every mount;
 *  6. chdir (the cwd if the view shows the same directory, else --home, else /),
 *     no_new_privs, the environment, exec. No process stays behind: the program keeps
 *     this pid, so signals, exit status and the terminal are the caller's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#define MAX_OPS 512
#define MAX_ENV 512
#define MAX_DENY 128
#define MAX_KEEP 128 /* keep and setenv each: a manifest's 64 beyond the profile's own */
#define MAX_PATH_ENV 8192

enum kind { RO_BIND, BIND, RBIND, RO_RBIND, TMPFS, DIR_OP, SYMLINK_OP, BIND_HOME, DEV_OWN,
             BIND_XDG, BIND_WRITABLE };

struct op {
    enum kind kind;
    const char *src;
    const char *dst;
    mode_t mode;
};

#ifndef MARKER
#define MARKER "# Managed by layershell"
#endif
/* Proves ownership: core init replaces only a file that carries this line. */
__attribute__((used)) static const char marker[] = MARKER ": the layer executor";

/* The handshake with core init (layershell/host/binaries.py): the build id hatch_build.py
 * computed from this file, the compiler and its flags, and recorded in the package.
 * `--version` prints it; core init also reads it from the bytes, without running it. */
#ifndef LAYERSHELL_BUILD_ID
#define LAYERSHELL_BUILD_ID "unrecorded" /* a build by hand (bench/) */
#endif
__attribute__((used)) static const char build_id[] = "layershell-enter build " LAYERSHELL_BUILD_ID;

static const char *layer = "?";
static const char *prog_name = "layershell";

__attribute__((format(printf, 2, 3), noreturn)) static void die(int code, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "%s: ", prog_name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(code);
}

static void die_errno(const char *what, const char *path) {
    die(1, "layer %s: %s %s: %s", layer, what, path ? path : "", strerror(errno));
}

static void write_file(const char *path, const char *text, int tolerate_eperm) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        if (tolerate_eperm && (errno == EPERM || errno == EACCES))
            return;
        die_errno("cannot open", path);
    }
    ssize_t n = write(fd, text, strlen(text));
    if (n < 0 && !(tolerate_eperm && (errno == EPERM || errno == EACCES)))
        die_errno("cannot write", path);
    close(fd);
}

static void map_ids(unsigned inside_uid, unsigned outside_uid, unsigned inside_gid,
                    unsigned outside_gid) {
    char buf[64];
    /* A nested namespace inherits "deny" and may not write it again. */
    write_file("/proc/self/setgroups", "deny", 1);
    snprintf(buf, sizeof buf, "%u %u 1", inside_uid, outside_uid);
    write_file("/proc/self/uid_map", buf, 0);
    snprintf(buf, sizeof buf, "%u %u 1", inside_gid, outside_gid);
    write_file("/proc/self/gid_map", buf, 0);
}

/* The host path of `dest` inside the view, following links as the layer would (Fedora
 * CoreOS: /usr/local -> ../var/usrlocal); ".." stops at the view's root and an
 * absolute link restarts there, so no link leads out of the view. */
/* snprintf, or die rather than act on a path cut short (it could name an ancestor). */
#define FIT(buf, ...)                                                                     \
    do {                                                                                  \
        int fit_n = snprintf((buf), sizeof(buf), __VA_ARGS__);                            \
        if (fit_n < 0 || (size_t)fit_n >= sizeof(buf))                                    \
            die(1, "layer %s: a path is too long (over %zu bytes)", layer, sizeof(buf));  \
    } while (0)

static void in_view(const char *view, const char *dest, char *out, size_t outlen) {
    char pending[PATH_MAX * 2];
    char resolved[PATH_MAX] = "";
    int hops = 0;
    FIT(pending, "%s", dest);
    char *rest = pending;
    while (*rest) {
        while (*rest == '/')
            rest++;
        if (!*rest)
            break;
        char *slash = strchr(rest, '/');
        size_t len = slash ? (size_t)(slash - rest) : strlen(rest);
        char part[NAME_MAX + 1];
        if (len > NAME_MAX)
            die(1, "layer %s: path component too long in %s", layer, dest);
        memcpy(part, rest, len);
        part[len] = 0;
        rest += len;
        if (strcmp(part, ".") == 0)
            continue;
        if (strcmp(part, "..") == 0) {
            char *last = strrchr(resolved, '/');
            if (last)
                *last = 0;
            continue;
        }
        char candidate[PATH_MAX * 2];
        FIT(candidate, "%s%s/%s", view, resolved, part);
        char link[PATH_MAX];
        ssize_t n = readlink(candidate, link, sizeof link - 1);
        if (n >= 0) {
            if (++hops > 40)
                die(1, "layer %s: too many symbolic links resolving %s", layer, dest);
            link[n] = 0;
            char next[PATH_MAX * 2];
            FIT(next, "%s/%s", link, rest);
            if (link[0] == '/')
                resolved[0] = 0;
            FIT(pending, "%s", next);
            rest = pending;
            continue;
        }
        size_t used = strlen(resolved);
        int added = snprintf(resolved + used, sizeof resolved - used, "/%s", part);
        if (added < 0 || (size_t)added >= sizeof resolved - used)
            die(1, "layer %s: a path is too long: %s", layer, dest);
    }
    int total = snprintf(out, outlen, "%s%s", view, resolved);
    if (total < 0 || (size_t)total >= outlen)
        die(1, "layer %s: a path is too long: %s", layer, dest);
}

static void mkdir_failed(const char *path) {
    die(1, "layer %s: cannot create mount point %s: %s (a layer's writable path must lie "
           "in a writable part of the view or exist in core)",
        layer, path, strerror(errno));
}

/* mkdir -p, from the end back: most mount points exist or lack only their last
 * component, and walking from / forward cost every call some 200 mkdir(2)s that all
 * said EEXIST. The components are made forward again once one exists. */
static void mkdir_p(const char *path, mode_t mode) {
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    size_t len = strlen(buf);
    char *p = buf + len;
    for (;;) {
        if (mkdir(buf, p == buf + len ? mode : 0755) == 0 || errno == EEXIST)
            break;
        char *slash = strrchr(buf, '/');
        if (errno != ENOENT || !slash || slash == buf)
            mkdir_failed(buf);
        *slash = 0;
        p = slash;
    }
    while (p < buf + len) {
        *p = '/';
        if (mkdir(buf, strlen(buf) == len ? mode : 0755) < 0 && errno != EEXIST)
            mkdir_failed(buf);
        p += strlen(p);
    }
}

static void make_mountpoint(const char *target, int is_dir) {
    if (is_dir) {
        mkdir_p(target, 0755);
        return;
    }
    struct stat st;
    if (lstat(target, &st) == 0)
        return;
    char parent[PATH_MAX];
    snprintf(parent, sizeof parent, "%s", target);
    char *slash = strrchr(parent, '/');
    if (slash && slash != parent) {
        *slash = 0;
        mkdir_p(parent, 0755);
    }
    int fd = open(target, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        die_errno("cannot create mount point", target);
    close(fd);
}

/* Flags the kernel locked on the source mount must be kept on a remount. */
static unsigned long kept_flags(const char *path) {
    struct statvfs sv;
    if (statvfs(path, &sv) < 0)
        die_errno("cannot statvfs", path);
    unsigned long f = 0;
    if (sv.f_flag & ST_RDONLY) f |= MS_RDONLY;
    if (sv.f_flag & ST_NOSUID) f |= MS_NOSUID;
    if (sv.f_flag & ST_NODEV) f |= MS_NODEV;
    if (sv.f_flag & ST_NOEXEC) f |= MS_NOEXEC;
    if (sv.f_flag & ST_NOATIME) f |= MS_NOATIME;
    if (sv.f_flag & ST_NODIRATIME) f |= MS_NODIRATIME;
    if (sv.f_flag & ST_RELATIME) f |= MS_RELATIME;
    return f;
}

static void bind(const char *src, const char *target, int recursive, int readonly, int nodev) {
    if (mount(src, target, NULL, MS_BIND | (recursive ? MS_REC : 0), NULL) < 0)
        die(1, "layer %s: cannot bind %s: %s", layer, src, strerror(errno));
    unsigned long flags = MS_REMOUNT | MS_BIND | MS_NOSUID | (nodev ? MS_NODEV : 0) |
                          (readonly ? MS_RDONLY : 0) | kept_flags(target);
    if (mount(NULL, target, NULL, flags, NULL) < 0)
        die(1, "layer %s: cannot remount %s: %s", layer, src, strerror(errno));
}

static const char *cwd_deny[64];
static int ndeny = 0;

static int under(const char *path, const char *prefix);

static const struct op *all_ops;
static int all_nops; /* how many operations are already in place when a bind happens */
static int total_ops; /* how many there are in all */

/* A caller's directory (cwd or home) may be bound into the view only if it is not one
 * of the protected trees or inside one, AND does not contain one: a bind of a parent
 * would cover, from above, the mounts that protect what lies below it (the stores'
 * tmpfs, the read-only /opt/pkgs, ~/.local/bin). */
static int denied_as(const char *path, const char *check, int containing_too) {
    for (int k = 0; k < ndeny; k++)
        if (under(check, cwd_deny[k]) || under(path, cwd_deny[k]) ||
            (containing_too && (under(cwd_deny[k], check) || under(cwd_deny[k], path))))
            return 1;
    for (int k = 0; k < all_nops; k++) {
        const char *dst = all_ops[k].dst;
        if (dst && dst[0] == '/' && dst[1] && (under(dst, check) || under(dst, path)))
            return 1;
    }
    return 0;
}

static int denied(const char *path, int containing_too) {
    char real[PATH_MAX];
    return denied_as(path, realpath(path, real) ? real : path, containing_too);
}

/* denied() for a path known to be its own real path: no second resolution (the shim
 * path: bind_xdg runs for every call). */
static int denied_resolved(const char *real, int containing_too) {
    return denied_as(real, real, containing_too);
}

static const char *home_mode; /* how the caller's home was bound, NULL if it was not */
static int home_position;    /* and where among the operations */
static char home_real[PATH_MAX];   /* its real path, */
static char home_target[PATH_MAX]; /* and where the view shows it */

/* The path the kernel has for an open descriptor (a directory's: no " (deleted)"). */
static int fd_realpath(int fd, char *out, size_t len) {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, out, len - 1);
    if (n <= 0 || (size_t)n >= len - 1 || out[0] != '/')
        return 0;
    out[n] = 0;
    return 1;
}

/* Whether `real` (a resolved path) is, holds or lies in one of the colon-separated
 * directories of `list` (each resolved too). */
static int meets_any(const char *real, const char *list) {
    for (const char *p = list ? list : ""; *p;) {
        size_t len = strcspn(p, ":");
        char dir[PATH_MAX], resolved[PATH_MAX];
        if (len > 0 && len < sizeof dir && p[0] == '/') {
            memcpy(dir, p, len);
            dir[len] = 0;
            if (realpath(dir, resolved) && (under(real, resolved) || under(resolved, real)))
                return 1;
        }
        p += len;
        if (*p == ':')
            p++;
    }
    return 0;
}

/* Whether `real` is, holds or lies in a place where the caller's servers keep their
 * sockets: /tmp, /run (/run/user/UID), /dev/shm, $XDG_RUNTIME_DIR. */
static int socket_place(const char *real) {
    static const char *const places[] = {"/tmp", "/run", "/dev/shm"};
    for (size_t k = 0; k < sizeof places / sizeof places[0]; k++)
        if (under(real, places[k]) || under(places[k], real))
            return 1;
    return meets_any(real, getenv("XDG_RUNTIME_DIR"));
}

/* Whether a cwd (`real_cwd`, resolved) may be bound read-write (--bind-cwd rw), wherever
 * it is, as for a native program, but never what the host runs code from: a directory
 * on the caller's PATH or holding one (and ~/bin, which Debian's ~/.profile puts on PATH
 * as soon as it exists), the caller's XDG base directories, and, below a read-only
 * home, the home itself and anything in one of its hidden directories (~/.config,
 * ~/.local, ~/.ssh). Checked for every cwd, shown by the view or not. */
static int cwd_writable(const char *real_cwd, const char *mode) {
    if (strcmp(mode, "rw") != 0)
        return 0;
    /* The rules that need no system call first: most calls stop here (a shim run from
     * the home itself). */
    if (home_mode && strcmp(home_mode, "ro") == 0 && home_real[0] &&
        under(real_cwd, home_real)) {
        const char *below = real_cwd + strlen(home_real);
        while (*below == '/')
            below++;
        if (*below == 0 || *below == '.')
            return 0;
    }
    if (meets_any(real_cwd, getenv("PATH")))
        return 0;
    static const char *const xdg[] = {"XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME",
                                      "XDG_CACHE_HOME", "XDG_RUNTIME_DIR"};
    for (size_t k = 0; k < sizeof xdg / sizeof xdg[0]; k++)
        if (meets_any(real_cwd, getenv(xdg[k])))
            return 0;
    if (home_real[0]) {
        char bin[PATH_MAX];
        FIT(bin, "%s/bin", home_real);
        if (meets_any(real_cwd, bin))
            return 0;
    }
    return 1;
}

/* The caller's $HOME, as the program starts: never "/", never a denied path. */
static void bind_home(const char *view, const char *mode, int position) {
    const char *home = getenv("HOME");
    struct stat st;
    all_nops = position; /* only what is mounted before the home can be covered by it */
    /* Protected trees inside the home are covered again by operations after this one
     * (shims.py puts the stores' tmpfs after the home), so only what is already
     * mounted counts here. */
    char real[PATH_MAX];
    if (!home || home[0] != '/' || strcmp(home, "/") == 0 || denied(home, 0) ||
        stat(home, &st) < 0 || !S_ISDIR(st.st_mode) || !realpath(home, real) ||
        strcmp(real, "/") == 0)
        return;
    /* Shown where it really is, and at $HOME too if that differs (Fedora CoreOS: /home
     * -> var/home): the program's getcwd() names the real path, and a cwd the view did
     * not show there would be bound again, read-write, over the home. */
    char target[PATH_MAX];
    in_view(view, real, target, sizeof target);
    mkdir_p(target, 0755);
    bind(real, target, 0, strcmp(mode, "ro") == 0, 1);
    FIT(home_real, "%s", real);
    FIT(home_target, "%s", target);
    if (strcmp(real, home) != 0) {
        /* $HOME as a link to the real path, not a second bind: what is mounted inside
         * the home later (the credential masks, the stores' tmpfs, the read-only config
         * and shims) then covers it under both names. A second bind showed them bare. */
        char shown[PATH_MAX];
        FIT(shown, "%s", target);
        in_view(view, home, target, sizeof target);
        if (strcmp(target, shown) != 0) { /* not already a link to it (a second call) */
            char parent[PATH_MAX];
            FIT(parent, "%s", target);
            char *slash = strrchr(parent, '/');
            if (slash && slash != parent) {
                *slash = 0;
                mkdir_p(parent, 0755);
            }
            if (symlink(real, target) < 0) {
                if (errno != EEXIST)
                    die_errno("cannot create symlink", home);
                mkdir_p(target, 0755); /* something of the view's is there: bind as before */
                bind(real, target, 0, strcmp(mode, "ro") == 0, 1);
            }
        }
    }
    home_mode = mode;
    home_position = position;
}

/* A /dev of the program's own (--dev): the usual nodes bound from the host, a new
 * devpts instance (its own ptys, and none of the caller's other terminals: each of those
 * can be read by its owner, and so could the program, a password typed there included),
 * a private /dev/shm. The caller's terminal stays reachable through the descriptors and
 * /dev/tty, which the kernel resolves to the controlling terminal, not through devpts. */
static void own_dev(const char *view, const char *dest) {
    static const char *const nodes[] = {"null", "zero", "full", "random", "urandom", "tty"};
    char dev[PATH_MAX], path[PATH_MAX], host[64];
    in_view(view, dest, dev, sizeof dev);
    mkdir_p(dev, 0755);
    if (mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755") < 0)
        die_errno("cannot mount a tmpfs on", dest);
    for (size_t k = 0; k < sizeof nodes / sizeof nodes[0]; k++) {
        FIT(path, "%s/%s", dev, nodes[k]);
        FIT(host, "/dev/%s", nodes[k]);
        make_mountpoint(path, 0);
        bind(host, path, 0, 0, 0); /* nodev would make the very nodes useless */
    }
    FIT(path, "%s/pts", dev);
    mkdir_p(path, 0755);
    if (mount("devpts", path, "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620") < 0)
        die_errno("cannot mount a devpts instance on", "/dev/pts");
    FIT(path, "%s/shm", dev);
    mkdir_p(path, 0755);
    if (mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777") < 0)
        die_errno("cannot mount a tmpfs on", "/dev/shm");
    static const char *const links[][2] = {
        {"pts/ptmx", "ptmx"}, {"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"},
        {"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"},
    };
    for (size_t k = 0; k < sizeof links / sizeof links[0]; k++) {
        FIT(path, "%s/%s", dev, links[k][1]);
        if (symlink(links[k][0], path) < 0)
            die_errno("cannot create symlink", path);
    }
}

/* Whether `path` lies in something mounted inside the home (the stores' tmpfs, the
 * read-only config and shims, the credential masks): layershell's own, never made. */
static int inside_home_op(const char *path) {
    for (int k = 0; k < total_ops; k++) {
        const char *dst = all_ops[k].dst;
        if (dst && dst[0] == '/' && home_real[0] && under(dst, home_real) &&
            strcmp(dst, home_real) != 0 && under(path, dst))
            return 1;
    }
    return 0;
}

/* A directory of the caller's own, made with its parents (0700) on a program's first
 * use, best effort, unlike a mount point: a home the caller cannot write (or a full
 * disk) leaves the program without its directory, not without its run. Nothing is made
 * where a protected tree lies. 0 if refused. */
static int make_own_dir(const char *path) {
    if (denied(path, 1))
        return 0;
    char buf[PATH_MAX];
    FIT(buf, "%s", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            (void)mkdir(buf, 0700);
            *p = '/';
        }
    (void)mkdir(buf, 0700);
    return 1;
}

/* --bind-xdg NAME: the program's own state, writable at its native paths in a home the
 * view shows read-only: $XDG_CONFIG_HOME/NAME, $XDG_DATA_HOME/NAME, $XDG_STATE_HOME/NAME
 * and $XDG_CACHE_HOME/NAME (~/.config, ~/.local/share, ~/.local/state, ~/.cache when
 * unset, relative or outside the home). What is shown there is kept apart on the host,
 * in ~/.local/share/layershell-programs/NAME/{config,data,state,cache}, made as the
 * caller on first use: the host's own ~/.config/NAME is never written, since host
 * programs and the login session read code from such places (~/.config/tmux,
 * ~/.config/autostart, ~/.config/environment.d: the attack review). */
static void bind_xdg(const char *name) {
    static const char *const bases[][3] = {
        {"XDG_CONFIG_HOME", ".config", "config"}, {"XDG_DATA_HOME", ".local/share", "data"},
        {"XDG_STATE_HOME", ".local/state", "state"}, {"XDG_CACHE_HOME", ".cache", "cache"},
    };
    static const char *last; /* a program named as its package: its directories once */
    if (last && strcmp(last, name) == 0)
        return;
    last = name;
    if (!home_mode || strcmp(home_mode, "ro") != 0 || !home_real[0] || strchr(name, '/') ||
        name[0] == '.' || !name[0] || !strcmp(name, "layershell-programs") ||
        !strncmp(name, "layershell", 10))
        return;
    int saved = all_nops;
    all_nops = total_ops; /* every protected tree counts, mounted yet or not */
    for (size_t k = 0; k < sizeof bases / sizeof bases[0]; k++) {
        const char *base = getenv(bases[k][0]);
        char shown[PATH_MAX], kept[PATH_MAX], real[PATH_MAX], target[PATH_MAX * 2];
        char source[64];
        if (base && base[0] == '/' && realpath(base, real) && under(real, home_real) &&
            strcmp(real, home_real) != 0)
            FIT(shown, "%s/%s", real, name);
        else
            FIT(shown, "%s/%s/%s", home_real, bases[k][1], name);
        FIT(kept, "%s/.local/share/layershell-programs/%s/%s", home_real, name, bases[k][2]);
        if (inside_home_op(shown) || inside_home_op(kept))
            continue;
        /* Both opened first, and made only when missing: a call with the directories in
         * place (every call but the first) spends no stat or realpath on them. */
        int fd = open(kept, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 && errno == ENOENT && make_own_dir(kept))
            fd = open(kept, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int sfd = fd < 0 ? -1 : open(shown, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (fd >= 0 && sfd < 0 && errno == ENOENT && make_own_dir(shown))
            sfd = open(shown, O_PATH | O_DIRECTORY | O_CLOEXEC);
        /* Pinned, checked and bound through a descriptor, as the cwd is. The kept one
         * is itself, with no link on the way: a program that could write its parent (it
         * cannot, the parent is in a hidden directory) must not point it elsewhere. The
         * shown one is where its path leads, inside the home. */
        struct stat st;
        char place[PATH_MAX];
        int ok = fd >= 0 && fd_realpath(fd, real, sizeof real) && strcmp(real, kept) == 0 &&
                 !denied_resolved(real, 1) && fstat(fd, &st) == 0 && st.st_uid == getuid();
        ok = ok && sfd >= 0 && fd_realpath(sfd, place, sizeof place) &&
             under(place, home_real) && strcmp(place, home_real) != 0 &&
             !inside_home_op(place) && !denied_resolved(place, 1);
        if (ok) {
            FIT(target, "%s%s", home_target, place + strlen(home_real));
            FIT(source, "/proc/self/fd/%d", fd);
            bind(source, target, 0, 0, 1);
        }
        if (sfd >= 0)
            close(sfd);
        if (fd >= 0)
            close(fd);
    }
    all_nops = saved;
}

/* --bind-writable REL: $HOME/REL (a file or a directory the manifest's `writable:`
 * names) writable in a home the view shows read-only. Only when it exists and no link
 * lies on the way to it (the path is its own real path): a program that can write near
 * it could otherwise point it at ~/.bashrc for the next run. Never a protected tree. */
static void bind_writable(const char *rel) {
    if (!home_mode || strcmp(home_mode, "ro") != 0 || !home_real[0] || rel[0] == '/' || !rel[0])
        return;
    char path[PATH_MAX], real[PATH_MAX], target[PATH_MAX * 2], source[64];
    FIT(path, "%s/%s", home_real, rel);
    int fd = open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    int saved = all_nops;
    all_nops = total_ops;
    int ok = fd >= 0 && fd_realpath(fd, real, sizeof real) && strcmp(real, path) == 0 &&
             fstat(fd, &st) == 0 && (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) &&
             st.st_uid == getuid() && !denied_resolved(real, 1);
    all_nops = saved;
    if (ok) {
        FIT(target, "%s/%s", home_target, rel);
        FIT(source, "/proc/self/fd/%d", fd);
        bind(source, target, 0, 0, 1);
    }
    if (fd >= 0)
        close(fd);
}

static void run_op(const char *view, const struct op *op) {
    char target[PATH_MAX];
    if (op->kind == BIND_WRITABLE) {
        bind_writable(op->src);
        return;
    }
    if (op->kind == BIND_XDG) {
        bind_xdg(op->src);
        return;
    }
    if (op->kind == DEV_OWN) {
        own_dev(view, op->dst);
        return;
    }
    if (op->kind == BIND_HOME) {
        bind_home(view, op->src, (int)(op - all_ops));
        return;
    }
    if (op->kind == SYMLINK_OP) {
        snprintf(target, sizeof target, "%s%s", view, op->dst);
        if (symlink(op->src, target) < 0)
            die_errno("cannot create symlink", op->dst);
        return;
    }
    in_view(view, op->dst, target, sizeof target);
    if (op->kind == TMPFS || op->kind == DIR_OP) {
        mkdir_p(target, 0755);
        if (op->kind == TMPFS) {
            char data[32];
            snprintf(data, sizeof data, "mode=%o", (unsigned)op->mode);
            if (mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, data) < 0)
                die_errno("cannot mount tmpfs on", op->dst);
        } else if (chmod(target, op->mode) < 0) {
            die_errno("cannot chmod", op->dst);
        }
        return;
    }
    struct stat st;
    if (stat(op->src, &st) < 0)
        die(1, "layer %s: %s does not exist (wanted at %s); run `core init` to create the "
               "layer's store",
            layer, op->src, op->dst);
    make_mountpoint(target, S_ISDIR(st.st_mode));
    int recursive = op->kind == RBIND || op->kind == RO_RBIND;
    int readonly = op->kind == RO_BIND || op->kind == RO_RBIND;
    bind(op->src, target, recursive, readonly, op->kind != RBIND);
}

static int same_dir(const char *path, dev_t dev, ino_t ino) {
    struct stat st;
    return stat(path, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

static int under(const char *path, const char *prefix) {
    size_t n = strlen(prefix);
    while (n > 1 && prefix[n - 1] == '/')
        n--;
    return strncmp(path, prefix, n) == 0 && (path[n] == 0 || path[n] == '/');
}

/* Modes are octal, as sandbox.py writes them ("1777"): base 0 read that as decimal. */
static unsigned parse_mode(const char *text) {
    char *end;
    errno = 0;
    unsigned long v = strtoul(text, &end, 8);
    if (errno || *end || end == text || v > 07777)
        die(2, "bad mode: %s", text);
    return (unsigned)v;
}

/* The seccomp filter every layer program runs under: TIOCSTI pushes bytes into a
 * terminal's input queue and TIOCLINUX (selection paste) does the same on a virtual
 * console, so a program that still has its caller's terminal could type commands into
 * the caller's shell (CVE-2017-5226 for Flatpak, which blocks them the same way). They
 * fail with EPERM, and so do TIOCSETD, and TIOCSPGRP/TIOCSCTTY unless the program is an
 * interactive shell (block_terminal_injection says why); every other ioctl, window size
 * included, is untouched, and the caller's own job control of the program works. The kernel compares only the low 32 bits of an ioctl's request (it is an
 * unsigned int), so the filter does too: setting high bits cannot slip past it
 * (CVE-2019-10063). Syscalls of another ABI than the executable's (i386 on x86_64,
 * arm on arm64, s390 on s390x) are checked with that ABI's numbers; x32 and unknown
 * ABIs are refused. These are Fedora CoreOS's architectures. */
#if defined(__x86_64__)
#define NATIVE_ARCH AUDIT_ARCH_X86_64
#define NATIVE_IOCTL 16
#define COMPAT_ARCH AUDIT_ARCH_I386
#define COMPAT_IOCTL 54
#define X32_BIT 0x40000000u
#elif defined(__aarch64__)
#define NATIVE_ARCH AUDIT_ARCH_AARCH64
#define NATIVE_IOCTL 29
#define COMPAT_ARCH AUDIT_ARCH_ARM
#define COMPAT_IOCTL 54
#elif defined(__s390x__)
#define NATIVE_ARCH AUDIT_ARCH_S390X
#define NATIVE_IOCTL 54
#define COMPAT_ARCH AUDIT_ARCH_S390
#define COMPAT_IOCTL 54
#elif defined(__powerpc64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define NATIVE_ARCH AUDIT_ARCH_PPC64LE
#define NATIVE_IOCTL 54
#define COMPAT_ARCH NATIVE_ARCH /* no 32-bit ABI: a second look at the arch fails */
#define COMPAT_IOCTL 54
#else
#error "layershell-enter: add this architecture's seccomp numbers (see block_terminal_injection)"
#endif
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define ARG1_LOW (offsetof(struct seccomp_data, args) + sizeof(__u64))
#else
#define ARG1_LOW (offsetof(struct seccomp_data, args) + sizeof(__u64) + sizeof(__u32))
#endif

/* Instruction indexes of the filter below; a jump skips (target - next) instructions. */
enum { I_ARCH, I_IS_NATIVE, I_NR, I_X32, I_IS_IOCTL, I_COMPAT, I_COMPAT_NR, I_COMPAT_IOCTL,
       I_REQUEST, I_STI, I_LINUX, I_SETD, I_SPGRP, I_SCTTY, I_ALLOW, I_EPERM, I_NOSYS };
#define TO(from, to) ((unsigned char)((to) - (from) - 1))

/* job_control: the program may make a process group the terminal's foreground
 * (TIOCSPGRP) and take a controlling terminal (TIOCSCTTY), as a shell running jobs must.
 * Only an interactive layer shell gets that: anything else could, from a child left
 * behind, take its caller's terminal back after it exited and read what the caller types
 * next. TIOCSETD (line disciplines: a dead terminal, kernel modules) is never needed. */
static void block_terminal_injection(int job_control) {
    unsigned spgrp = job_control ? TIOCSTI : TIOCSPGRP; /* a repeat of TIOCSTI: no-op */
    unsigned sctty = job_control ? TIOCSTI : TIOCSCTTY;
    struct sock_filter code[] = {
        [I_ARCH] = BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        [I_IS_NATIVE] = BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_ARCH, 0,
                                 TO(I_IS_NATIVE, I_COMPAT)),
        [I_NR] = BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
#ifdef X32_BIT
        [I_X32] = BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, X32_BIT, TO(I_X32, I_NOSYS), 0),
#else
        [I_X32] = BPF_JUMP(BPF_JMP | BPF_JA, 0, 0, 0),
#endif
        [I_IS_IOCTL] = BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_IOCTL,
                                TO(I_IS_IOCTL, I_REQUEST), TO(I_IS_IOCTL, I_ALLOW)),
        [I_COMPAT] = BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, COMPAT_ARCH, 0, TO(I_COMPAT, I_NOSYS)),
        [I_COMPAT_NR] = BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        [I_COMPAT_IOCTL] = BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, COMPAT_IOCTL, 0,
                                    TO(I_COMPAT_IOCTL, I_ALLOW)),
        [I_REQUEST] = BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG1_LOW),
        [I_STI] = BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, TIOCSTI, TO(I_STI, I_EPERM), 0),
        [I_LINUX] = BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, TIOCLINUX, TO(I_LINUX, I_EPERM), 0),
        [I_SETD] = BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, TIOCSETD, TO(I_SETD, I_EPERM), 0),
        [I_SPGRP] = BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, spgrp, TO(I_SPGRP, I_EPERM), 0),
        [I_SCTTY] = BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, sctty, TO(I_SCTTY, I_EPERM), 0),
        [I_ALLOW] = BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        [I_EPERM] = BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
        [I_NOSYS] = BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA)),
    };
    struct sock_fprog prog = {.len = (unsigned short)(sizeof code / sizeof code[0]),
                              .filter = code};
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) < 0)
        die_errno("cannot install the seccomp filter", NULL);
}

/* Whether the colon-separated `list` has the entry `dir`. */
static int path_has(const char *list, const char *dir) {
    size_t n = strlen(dir);
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, ":");
        if (len == n && !strncmp(p, dir, n))
            return 1;
        p += len;
        if (*p == ':')
            p++;
    }
    return 0;
}

static const char *need(int argc, char **argv, int i, const char *opt) {
    if (i >= argc)
        die(2, "%s needs a value", opt);
    return argv[i];
}

/* A shim started by the kernel through its first line, "#!EXECUTOR --shim": argv is
 * EXECUTOR --shim SHIM ARGS. The shim's exec line (shims.py: shlex.join of the command
 * line, then "$@") holds this program's options; they are read here, words as sh would
 * read them, instead of starting sh for it. Only the quoting shlex writes is accepted. */
#define SHIM_MAX (256 * 1024)
#define SHIM_WORDS 4096

static char *shim_word(const char **p, const char *end, const char *shim) {
    char *out = malloc((size_t)(end - *p) + 1), *o = out;
    if (out == NULL)
        die(1, "out of memory");
    while (*p < end && **p != ' ' && **p != '\n') {
        char c = *(*p)++;
        if (c == '\'' || c == '"') {
            const char *close = memchr(*p, c, (size_t)(end - *p));
            if (close == NULL || memchr(*p, '\n', (size_t)(close - *p)))
                die(2, "shim %s: an unterminated quote", shim);
            for (const char *q = *p; c == '"' && q < close; q++)
                if (*q == '$' || *q == '`' || *q == '\\')
                    die(2, "shim %s: not a line core expose wrote", shim);
            memcpy(o, *p, (size_t)(close - *p));
            o += close - *p;
            *p = close + 1;
        } else if (strchr("$`\\;&|<>()*?[]{}~#!\t\r", c) || c == '\0') {
            die(2, "shim %s: not a line core expose wrote", shim);
        } else {
            *o++ = c;
        }
    }
    *o = '\0';
    return out;
}

static char **shim_argv(int argc, char **argv, int *out_argc) {
    const char *shim = argv[2];
    int fd = open(shim, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0)
        die_errno("cannot read the shim", shim);
    if (!S_ISREG(st.st_mode) || st.st_size > SHIM_MAX)
        die(2, "shim %s: not a regular file of at most %d bytes", shim, SHIM_MAX);
    char *text = malloc((size_t)st.st_size + 1);
    size_t got = 0;
    ssize_t n = 1;
    while (text && got < (size_t)st.st_size &&
           (n = read(fd, text + got, (size_t)st.st_size - got)) > 0)
        got += (size_t)n;
    close(fd);
    if (text == NULL || n < 0)
        die_errno("cannot read the shim", shim);
    text[got] = '\0';
    const char *end = text + got, *line = NULL;
    for (const char *p = text; p < end && line == NULL;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if ((size_t)(end - p) > 5 && !strncmp(p, "exec ", 5))
            line = p + 5;
        p = nl ? nl + 1 : end;
    }
    if (line == NULL)
        die(2, "shim %s: no exec line", shim);
    char **args = calloc(SHIM_WORDS + (size_t)argc, sizeof(char *));
    if (args == NULL)
        die(1, "out of memory");
    int words = 0;
    for (const char *p = line;;) {
        while (p < end && *p == ' ') /* as sh splits: any run of blanks is one break */
            p++;
        if ((size_t)(end - p) >= 5 && !strncmp(p, "\"$@\"", 4) && p[4] == '\n')
            break;
        if (p >= end || *p == '\n' || words >= SHIM_WORDS)
            die(2, "shim %s: its exec line does not end in \"$@\"", shim);
        args[words++] = shim_word(&p, end, shim);
    }
    /* The line names this executor first, as the kernel started it. */
    if (words < 2 || strcmp(args[0], argv[0]) != 0)
        die(2, "shim %s: written for %s, not for %s", shim, words ? args[0] : "nothing", argv[0]);
    for (int k = 3; k < argc; k++)
        args[words++] = argv[k];
    args[words] = NULL;
    *out_argc = words;
    return args;
}

int main(int argc, char **argv) {
    static struct op ops[MAX_OPS];
    static char *env_out[MAX_ENV + 1];
    const char *keep[MAX_KEEP], *keep_prefix[16], *setenv_kv[MAX_KEEP][2];
    const char *deny_env[MAX_DENY], *deny_prefix[MAX_DENY];
    int nops = 0, nkeep = 0, nkeep_prefix = 0, nset = 0, ndeny_env = 0, ndeny_prefix = 0;
    const char *layer_path = NULL, *caller_path = NULL;
    const char *view = NULL, *cwd = NULL, *home = NULL, *bind_cwd = NULL, *argv0 = NULL;
    int pseudo_root = 0, no_net = 0, clearenv_ = 0, refuse_root = 0, job_control = 0;
    unsigned in_uid = getuid(), in_gid = getgid();
    int i = 1;

    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        puts(build_id);
        return fflush(stdout) == 0 ? 0 : 1;
    }
    if (argc >= 3 && strcmp(argv[1], "--shim") == 0)
        argv = shim_argv(argc, argv, &argc);
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        if (nops >= MAX_OPS)
            die(2, "too many mount operations");
        if (!strcmp(a, "--ro-bind") || !strcmp(a, "--bind") || !strcmp(a, "--rbind") ||
            !strcmp(a, "--ro-rbind") || !strcmp(a, "--symlink")) {
            struct op *op = &ops[nops++];
            op->kind = !strcmp(a, "--ro-bind")  ? RO_BIND
                       : !strcmp(a, "--bind")   ? BIND
                       : !strcmp(a, "--rbind")  ? RBIND
                       : !strcmp(a, "--symlink") ? SYMLINK_OP
                                                : RO_RBIND;
            op->src = need(argc, argv, ++i, a);
            op->dst = need(argc, argv, ++i, a);
        } else if (!strcmp(a, "--tmpfs") || !strcmp(a, "--dir")) {
            struct op *op = &ops[nops++];
            op->kind = !strcmp(a, "--tmpfs") ? TMPFS : DIR_OP;
            op->dst = need(argc, argv, ++i, a);
            op->mode = (mode_t)parse_mode(need(argc, argv, ++i, a));
        } else if (!strcmp(a, "--dev")) {
            struct op *op = &ops[nops++];
            op->kind = DEV_OWN;
            op->dst = need(argc, argv, ++i, a);
        } else if (!strcmp(a, "--bind-xdg") || !strcmp(a, "--bind-writable")) {
            struct op *op = &ops[nops++];
            op->kind = !strcmp(a, "--bind-xdg") ? BIND_XDG : BIND_WRITABLE;
            op->src = need(argc, argv, ++i, a);
        } else if (!strcmp(a, "--bind-home")) {
            struct op *op = &ops[nops++];
            op->kind = BIND_HOME;
            op->src = need(argc, argv, ++i, a);
            if (strcmp(op->src, "ro") && strcmp(op->src, "rw"))
                die(2, "--bind-home takes ro or rw");
        } else if (!strcmp(a, "--view")) {
            view = need(argc, argv, ++i, a);
        } else if (!strcmp(a, "--layer")) {
            layer = need(argc, argv, ++i, a);
        } else if (!strcmp(a, "--name")) {
            prog_name = need(argc, argv, ++i, a);
        } else if (!strcmp(a, "--pseudo-root")) {
            pseudo_root = 1;
        } else if (!strcmp(a, "--unshare-net")) {
            no_net = 1;
        } else if (!strcmp(a, "--refuse-root")) {
            refuse_root = 1;
        } else if (!strcmp(a, "--job-control")) {
            job_control = 1;
        } else if (!strcmp(a, "--cwd")) {
            cwd = need(argc, argv, ++i, a);
        } else if (!strcmp(a, "--home")) {
            home = need(argc, argv, ++i, a);
        } else if (!strcmp(a, "--bind-cwd")) {
            bind_cwd = need(argc, argv, ++i, a);
            if (strcmp(bind_cwd, "ro") && strcmp(bind_cwd, "rw"))
                die(2, "--bind-cwd takes ro or rw");
        } else if (!strcmp(a, "--cwd-deny")) {
            if (ndeny < 64)
                cwd_deny[ndeny++] = need(argc, argv, ++i, a);
        } else if (!strcmp(a, "--clearenv")) {
            clearenv_ = 1;
        } else if (!strcmp(a, "--keep-env")) {
            if (nkeep >= MAX_KEEP)
                die(2, "too many --keep-env options (at most %d)", MAX_KEEP);
            keep[nkeep++] = need(argc, argv, ++i, a);
        } else if (!strcmp(a, "--keep-env-prefix")) {
            if (nkeep_prefix >= 16)
                die(2, "too many --keep-env-prefix options (at most 16)");
            keep_prefix[nkeep_prefix++] = need(argc, argv, ++i, a);
        } else if (!strcmp(a, "--setenv")) {
            if (nset >= MAX_KEEP)
                die(2, "too many --setenv options (at most %d)", MAX_KEEP);
            setenv_kv[nset][0] = need(argc, argv, ++i, a);
            setenv_kv[nset++][1] = need(argc, argv, ++i, a);
        } else if (!strcmp(a, "--deny-env") || !strcmp(a, "--deny-env-prefix")) {
            /* Never dropped silently, unlike a keep: a deny that did not count would
             * pass what it was meant to stop. */
            int prefix = !strcmp(a, "--deny-env-prefix");
            if ((prefix ? ndeny_prefix : ndeny_env) >= MAX_DENY)
                die(2, "too many %s options (at most %d)", a, MAX_DENY);
            if (prefix)
                deny_prefix[ndeny_prefix++] = need(argc, argv, ++i, a);
            else
                deny_env[ndeny_env++] = need(argc, argv, ++i, a);
        } else if (!strcmp(a, "--path")) {
            layer_path = need(argc, argv, ++i, a);
        } else if (!strcmp(a, "--argv0")) {
            argv0 = need(argc, argv, ++i, a);
        } else {
            die(2, "unknown option %s", a);
        }
    }
    if (i >= argc)
        die(2, "no program to run (usage: layershell-enter OPTIONS -- PROGRAM [ARGS])");
    if (view == NULL)
        die(2, "--view is required");
    if (refuse_root && getuid() == 0)
        die(1, "refusing to run a layer program as root: it would run as host root "
               "(run it as an ordinary user, or: core shell --layer %s -- PROGRAM)",
            layer);

    /* The environment, computed before anything changes. */
    int nenv = 0;
    extern char **environ;
    for (char **e = environ; *e; e++) {
        size_t eq = strcspn(*e, "=");
        int ok = !clearenv_;
        for (int k = 0; !ok && k < nkeep; k++)
            ok = strlen(keep[k]) == eq && !strncmp(*e, keep[k], eq);
        for (int k = 0; !ok && k < nkeep_prefix; k++)
            ok = !strncmp(*e, keep_prefix[k], strlen(keep_prefix[k]));
        for (int k = 0; ok && k < nset; k++)
            if (strlen(setenv_kv[k][0]) == eq && !strncmp(*e, setenv_kv[k][0], eq))
                ok = 0;
        for (int k = 0; ok && k < ndeny_env; k++)
            if (strlen(deny_env[k]) == eq && !strncmp(*e, deny_env[k], eq))
                ok = 0;
        for (int k = 0; ok && k < ndeny_prefix; k++)
            if (!strncmp(*e, deny_prefix[k], strlen(deny_prefix[k])))
                ok = 0;
        if (layer_path && eq == 4 && (*e)[4] == '=' && !strncmp(*e, "PATH", 4)) {
            caller_path = *e + 5; /* kept after the layer's, where the view has it */
            continue;
        }
        if (ok && !(eq == 3 && !strncmp(*e, "PWD", 3))) {
            if (nenv >= MAX_ENV - nset - 3) /* room for --setenv, PATH and PWD, never cut */
                die(1, "too many environment variables to pass into layer %s", layer);
            env_out[nenv++] = *e;
        }
    }
    for (int k = 0; k < nset && nenv < MAX_ENV - 1; k++) {
        size_t len = strlen(setenv_kv[k][0]) + strlen(setenv_kv[k][1]) + 2;
        char *kv = malloc(len);
        if (!kv)
            die(1, "out of memory");
        snprintf(kv, len, "%s=%s", setenv_kv[k][0], setenv_kv[k][1]);
        env_out[nenv++] = kv;
    }

    char here[PATH_MAX];
    if (cwd == NULL)
        cwd = getcwd(here, sizeof here);
    struct stat cwd_st;
    int have_cwd = cwd && stat(cwd, &cwd_st) == 0;

    uid_t uid = getuid();
    gid_t gid = getgid();
    if (unshare(CLONE_NEWUSER | CLONE_NEWNS | (no_net ? CLONE_NEWNET : 0)) < 0)
        die(1, "cannot create the layer's namespaces: %s (unprivileged user namespaces "
               "must be enabled: sysctl user.max_user_namespaces > 0)",
            strerror(errno));
    map_ids(0, uid, 0, gid);
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        die_errno("cannot make / private", NULL);
    if (mount("tmpfs", view, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") < 0)
        die_errno("cannot mount the view on", view);
    all_ops = ops;
    total_ops = nops;
    for (int k = 0; k < nops; k++)
        run_op(view, &ops[k]);
    all_nops = nops; /* the cwd is bound after everything */

    if (bind_cwd && have_cwd && strcmp(cwd, "/") != 0) {
        /* The directory is pinned by a descriptor, checked through it and bound from
         * it: a path checked, then bound, could be swapped for a link in between by a
         * program of the layer that can write its parent (a cwd below the home). */
        int cfd = open(cwd, O_PATH | O_DIRECTORY | O_CLOEXEC);
        char real_cwd[PATH_MAX], source[64];
        struct stat pinned;
        if (cfd >= 0 && fd_realpath(cfd, real_cwd, sizeof real_cwd) && fstat(cfd, &pinned) == 0 &&
            pinned.st_dev == cwd_st.st_dev && pinned.st_ino == cwd_st.st_ino) {
            char shown[PATH_MAX * 2];
            snprintf(shown, sizeof shown, "%s%s", view, cwd);
            int in_view_already = same_dir(shown, cwd_st.st_dev, cwd_st.st_ino);
            int writable = cwd_writable(real_cwd, bind_cwd);
            /* Not even read-only where the caller's servers keep their sockets: connect()
             * needs no write access to the mount (the session bus, tmux, ssh-agent). */
            if (socket_place(real_cwd))
                in_view_already = 1, writable = 0;
            /* Shown read-only when it may not be written; bound again only to make it
             * writable where the view shows it already. */
            if (!denied_as(cwd, real_cwd, 1) && (!in_view_already || writable)) {
                char target[PATH_MAX];
                in_view(view, cwd, target, sizeof target);
                mkdir_p(target, 0755);
                FIT(source, "/proc/self/fd/%d", cfd);
                bind(source, target, 0, !writable, 1);
                /* A cwd above the home (/home) covered the home's own bind: bind the
                 * home again on top, so a read-only home stays read-only from any cwd. */
                if (home_mode && home_real[0] && under(home_real, real_cwd))
                    bind_home(view, home_mode, home_position);
            }
        }
        if (cfd >= 0)
            close(cfd);
    }

    if (chdir(view) < 0)
        die_errno("cannot enter", view);
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        die_errno("cannot pivot into the layer view", NULL);
    if (umount2(".", MNT_DETACH) < 0)
        die_errno("cannot detach the host root", NULL);

    if (pseudo_root)
        in_uid = in_gid = 0;
    if (unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0)
        die_errno("cannot lock the view", NULL);
    map_ids(in_uid, 0, in_gid, 0);

    if (!(have_cwd && chdir(cwd) == 0 && same_dir(".", cwd_st.st_dev, cwd_st.st_ino)))
        if (!(home && chdir(home) == 0))
            if (chdir("/") < 0)
                die_errno("cannot chdir to", "/");
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        die_errno("cannot set no_new_privs", NULL);
#ifndef LAYERSHELL_BENCH_NO_FILTER /* only bench/bench_layer_shell.py builds without it */
    block_terminal_injection(job_control);
#endif

    /* PATH: the layer's, then the caller's own entries that are directories in the
     * view (absolute ones only: a relative entry would mean the program's cwd). */
    if (layer_path) {
        static char path_kv[MAX_PATH_ENV];
        size_t used = (size_t)snprintf(path_kv, sizeof path_kv, "PATH=%s", layer_path);
        if (used >= sizeof path_kv)
            die(2, "--path is too long");
        const char *p = caller_path ? caller_path : "";
        while (*p) {
            size_t len = strcspn(p, ":");
            char dir[PATH_MAX];
            if (len > 0 && len < sizeof dir && p[0] == '/') {
                memcpy(dir, p, len);
                dir[len] = 0;
                struct stat st;
                if (!path_has(path_kv + 5, dir) && stat(dir, &st) == 0 && S_ISDIR(st.st_mode) &&
                    used + len + 1 < sizeof path_kv) {
                    path_kv[used++] = ':';
                    memcpy(path_kv + used, dir, len + 1);
                    used += len;
                }
            }
            p += len;
            if (*p == ':')
                p++;
        }
        env_out[nenv++] = path_kv;
    }

    /* PWD names where the program really starts. */
    char *pwd = getcwd(here, sizeof here);
    if (pwd && nenv < MAX_ENV) {
        size_t len = strlen(pwd) + 5;
        char *kv = malloc(len);
        if (kv) {
            snprintf(kv, len, "PWD=%s", pwd);
            env_out[nenv++] = kv;
        }
    }
    env_out[nenv] = NULL;

    const char *program = argv[i];
    if (argv0)
        argv[i] = (char *)argv0;
    environ = env_out;
    execvp(program, &argv[i]);
    if (errno == ENOENT)
        die(127, "%s: command not found in layer %s", program, layer);
    die(126, "%s: cannot run in layer %s: %s", program, layer, strerror(errno));
}
