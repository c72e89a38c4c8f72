/* layer-shell launcher: enter a layer without Python when it can, else exec Python on
 * layershell.layers.main, keeping argv[0].
 *
 * Why a binary: the kernel drops argv[0] when it runs a "#!" script, and argv[0]
 * starting with '-' is how login(1), su - and sshd ask for a login shell.
 *
 * The fast path (docs/design.md, "The fast path"): for a shell, `-c CMD [ARG0 ARGS]`,
 * `[--layer NAME] -- PROG ARGS` and a login, it reads the file layershell/layers/fast.py
 * compiled ahead, checks that the file is trusted and still describes this caller and
 * host, and execs the executor with the command line and environment the Python path
 * would have built (launch.py). Anything else, and any doubt, takes the Python path,
 * which decides and reports exactly as before: this file never prints an error of its
 * own about a layer.
 *
 * It is built with layershell (hatch_build.py), never at `core init`, so the interpreter,
 * the code to run and the compiled file's path cannot be compiled in: `slot` below starts
 * with SLOT_MAGIC and is otherwise zero, and `core init` writes "PYTHON\0CODE\0FAST\0"
 * right after the magic in its copy of the bytes (layershell/host/binaries.py, `launcher`).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef MARKER
#define MARKER "# Managed by layershell"
#endif
/* Proves ownership: core init replaces only a file that carries this line. */
__attribute__((used)) static const char marker[] = MARKER ": the layer-shell launcher";

/* Keep in step with SLOT_MAGIC and SLOT_SIZE in layershell/host/binaries.py. Not const and
 * not static, so the compiler cannot assume the zeros are still there at run time. */
#define SLOT_MAGIC "layershell-launcher-slot:"
#define SLOT_SIZE 8192
__attribute__((used)) char layershell_launcher_slot[SLOT_SIZE] = SLOT_MAGIC;

/* Keep in step with layershell/layers/fast.py. */
#define FAST_FORMAT "layershell-fast 1"
#define IF_FILE "\x01if-file"
#define FAST_MAX (1 << 20) /* bytes: far above any stack's file */
#define MAX_ARGS 4096 /* fields of one entry */
#define MAX_ENV 4096

extern char **environ;

/* The compiled file, read whole; fields are NUL-terminated strings in fast.py's order. */
struct fields {
    char *at, *end;
    int bad; /* a field was missing: the file is not what this launcher reads */
};

static const char *field(struct fields *f) {
    char *nul = f->at < f->end ? memchr(f->at, '\0', (size_t)(f->end - f->at)) : NULL;
    if (nul == NULL) {
        f->bad = 1;
        return "";
    }
    const char *s = f->at;
    f->at = nul + 1;
    return s;
}

static long count(struct fields *f, long most) {
    const char *s = field(f);
    char *stop;
    errno = 0;
    long n = strtol(s, &stop, 10);
    if (errno || *s == '\0' || *stop != '\0' || n < 0 || n > most) {
        f->bad = 1;
        return 0;
    }
    return n;
}

/* A directory only root (or `owner`) can change the entries of: owned by one of them and
 * writable by nobody else, or root's and sticky (/tmp: others cannot rename ours). */
static int trusted(const struct stat *st, uid_t owner) {
    if (st->st_uid != 0 && st->st_uid != owner)
        return 0;
    return (st->st_mode & 022) == 0 || (st->st_uid == 0 && (st->st_mode & S_ISVTX));
}

/* Read `path` if every directory on its real path and the file itself are trusted: walked
 * from / with O_NOFOLLOW, so nothing can be swapped between the check and the read. */
static char *read_trusted(const char *path, uid_t owner, size_t *len) {
    char *real = realpath(path, NULL);
    if (real == NULL || real[0] != '/')
        return NULL;
    int dir = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    struct stat st;
    char *part = real + 1, *data = NULL;
    while (dir >= 0) {
        if (fstat(dir, &st) != 0 || !S_ISDIR(st.st_mode) || !trusted(&st, owner))
            break;
        char *slash = strchr(part, '/');
        if (slash == NULL) {
            int fd = openat(dir, part, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
            if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
                (st.st_uid == 0 || st.st_uid == owner) && (st.st_mode & 022) == 0 &&
                st.st_size > 0 && st.st_size <= FAST_MAX &&
                (data = malloc((size_t)st.st_size + 1)) != NULL) {
                size_t got = 0;
                ssize_t n = 1;
                while (got < (size_t)st.st_size && (n = read(fd, data + got, (size_t)st.st_size - got)) > 0)
                    got += (size_t)n;
                if (got != (size_t)st.st_size) {
                    free(data);
                    data = NULL;
                }
                *len = got;
            }
            if (fd >= 0)
                close(fd);
            break;
        }
        *slash = '\0';
        int next = openat(dir, part, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        close(dir);
        dir = next;
        part = slash + 1;
    }
    if (dir >= 0)
        close(dir);
    free(real);
    return data;
}

static const char *env_or(const char *name, const char *otherwise) {
    const char *v = getenv(name);
    return v && *v ? v : otherwise;
}

/* os.path.join(a, b) for a relative b. */
static char *join(const char *a, const char *b) {
    size_t la = strlen(a);
    char *out = malloc(la + strlen(b) + 2);
    if (out)
        sprintf(out, "%s%s%s", a, (la && a[la - 1] == '/') ? "" : "/", b);
    return out;
}

static int same(const char *a, const char *b) { return a && b && strcmp(a, b) == 0; }

/* layers.yaml as stack.load fingerprints it: the file and its mtime and size. */
static int fresh(const char *path, const char *mtime, const char *size) {
    struct stat st;
    char m[32], s[32];
    if (stat(path, &st) != 0)
        return 0;
    snprintf(m, sizeof m, "%lld", (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec);
    snprintf(s, sizeof s, "%lld", (long long)st.st_size);
    return same(m, mtime) && same(s, size);
}

/* What main.parse makes of argv, or 0 for anything it should decide itself. */
struct request {
    const char *layer, *command, *program;
    char **rest; /* the command's ARG0 ARGS, or the program's argv */
    int nrest, login;
};

static int parse(int argc, char **argv, struct request *r) {
    const char *zero = argc > 0 ? argv[0] : "layer-shell";
    const char *base = strrchr(zero, '/');
    memset(r, 0, sizeof *r);
    r->login = (base ? base + 1 : zero)[0] == '-';
    int i = 1;
    while (i < argc) {
        const char *a = argv[i++];
        if (!strcmp(a, "-l") || !strcmp(a, "--login")) {
            r->login = 1;
        } else if (!strcmp(a, "--layer")) {
            if (i >= argc)
                return 0;
            r->layer = argv[i++];
        } else if (!strncmp(a, "--layer=", 8)) {
            r->layer = a + 8;
        } else if (!strcmp(a, "-c") || !strcmp(a, "-lc") || !strcmp(a, "-cl")) {
            r->login |= strcmp(a, "-c") != 0;
            if (i >= argc)
                return 0;
            r->command = argv[i++];
            break;
        } else if (!strcmp(a, "--")) {
            if (i >= argc)
                return 0;
            r->program = argv[i];
            break;
        } else if (a[0] == '-') {
            return 0; /* --help, --version, --writable-only, a usage error */
        } else {
            r->program = a;
            i--;
            break;
        }
    }
    r->rest = argv + i;
    r->nrest = argc - i;
    return 1;
}

/* Which mode paths.detect chooses for this caller: 1 rootless, 0 system. */
static int detect_rootless(uid_t uid) {
    const char *want = getenv("LAYERSHELL_MODE");
    want = want ? want : "";
    if (!strcmp(want, "rootless"))
        return 1;
    struct stat st;
    return !(env_or("LAYERSHELL_ROOT", NULL) || uid == 0 || !strcmp(want, "system") ||
             stat("/etc/layershell/layers.yaml", &st) == 0);
}

/* 1 if the file was compiled for where paths.detect puts this caller. */
static int same_place(struct fields *f, int rootless, const struct passwd *pw) {
    const char *mode = field(f), *root = field(f), *xdg_config = field(f), *xdg_data = field(f);
    const char *config_dir = field(f), *state_dir = field(f);
    if (!rootless)
        return same(mode, "system") && same(root, env_or("LAYERSHELL_ROOT", "/"));
    /* Paths.rootless(HOME or the passwd home) with the XDG directories. */
    const char *home = env_or("HOME", pw->pw_dir);
    if (!same(mode, "rootless") || home[0] != '/' || !same(home, root) ||
        !same(env_or("XDG_CONFIG_HOME", ""), xdg_config) ||
        !same(env_or("XDG_DATA_HOME", ""), xdg_data))
        return 0;
    char *config_home = xdg_config[0] ? strdup(xdg_config) : join(home, ".config");
    char *data_home = xdg_data[0] ? strdup(xdg_data) : join(home, ".local/share");
    char *c = config_home ? join(config_home, "layershell") : NULL;
    char *s = data_home ? join(data_home, "layershell") : NULL;
    int ok = same(c, config_dir) && same(s, state_dir);
    free(config_home), free(data_home), free(c), free(s);
    return ok;
}

static int in_list(const char *name, size_t len, const char **list, long n) {
    for (long k = 0; k < n; k++)
        if (strlen(list[k]) == len && !strncmp(list[k], name, len))
            return 1;
    return 0;
}

/* launch.environment: the caller's (a login: only LOGIN_KEEP and LC_*; else all but
 * DROP), first of each name only (as os.environ reads it), then the layer's identity. */
static int environment(char **out, int most, int login, const char **keep, long nkeep,
                       const char **drop, long ndrop, char *const *set, int nset) {
    int n = 0;
    for (char **e = environ; *e; e++) {
        const char *eq = strchr(*e, '=');
        if (eq == NULL)
            continue;
        size_t len = (size_t)(eq - *e);
        if (len == 0)
            continue;
        int seen = 0;
        for (int k = 0; k < n && !seen; k++)
            seen = !strncmp(out[k], *e, len + 1);
        if (seen)
            continue;
        if (login ? !(in_list(*e, len, keep, nkeep) || !strncmp(*e, "LC_", 3))
                  : in_list(*e, len, drop, ndrop))
            continue;
        if (n >= most - nset - 1)
            return -1;
        out[n++] = *e;
    }
    for (int k = 0; k < nset; k++) {
        size_t len = (size_t)(strchr(set[k], '=') - set[k]);
        int at = 0;
        while (at < n && strncmp(out[at], set[k], len + 1))
            at++;
        out[at] = set[k];
        if (at == n)
            n++;
    }
    out[n] = NULL;
    return n;
}

static char *pair(const char *name, const char *value) {
    char *s = malloc(strlen(name) + strlen(value) + 2);
    if (s)
        sprintf(s, "%s=%s", name, value);
    return s;
}

/* Returns only to take the Python path. */
static void fast_path(const char *file, int argc, char **argv) {
    struct request r;
    if (argc < 1 || !parse(argc, argv, &r) || getenv("_LAYER_SHELL_COMPLETE"))
        return;
    uid_t uid = getuid();
    if (uid == 0)
        return; /* root hands over through PAM: main.py */
    struct passwd *pw = getpwuid(uid);
    if (pw == NULL)
        return;
    /* System mode trusts root alone; rootless mode the caller too, who owns it all. */
    int rootless = detect_rootless(uid);
    size_t len = 0;
    char *data = read_trusted(file, rootless ? uid : 0, &len);
    if (data == NULL)
        return;
    struct fields f = {data, data + len, 0};
    if (!same(field(&f), FAST_FORMAT) || !same_place(&f, rootless, pw) || f.bad)
        return;
    const char *layers_file = field(&f), *source = field(&f), *mtime = field(&f), *size = field(&f);
    struct stat st;
    /* stack.stack_file: the operator's layers.yaml if there is one, else the shipped one */
    int operators = stat(layers_file, &st) == 0;
    if (f.bad || operators != same(layers_file, source) || !fresh(source, mtime, size))
        return;
    /* sandbox.base_mounts: /bin, /lib, ... each a link (to the same place), a directory
     * or nothing, as when the file was compiled */
    long ntop = count(&f, 16);
    for (long k = 0; k < ntop; k++) {
        const char *path = field(&f), *was = field(&f);
        char now[PATH_MAX + 8] = "none";
        if (lstat(path, &st) == 0 && S_ISLNK(st.st_mode)) {
            ssize_t n = readlink(path, now + 5, sizeof now - 6);
            if (n < 0)
                return;
            memcpy(now, "link:", 5);
            now[5 + n] = '\0';
        } else if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
            strcpy(now, "dir");
        }
        if (!same(now, was))
            return;
    }
    const char *executor = field(&f);
    if (f.bad || access(executor, X_OK) != 0)
        return;
    const char *keep[64], *drop[64];
    long nkeep = count(&f, 64);
    for (long k = 0; k < nkeep; k++)
        keep[k] = field(&f);
    long ndrop = count(&f, 64);
    for (long k = 0; k < ndrop; k++)
        drop[k] = field(&f);
    const char *layer_path = field(&f);
    long entries = count(&f, 100000);
    char uid_text[16];
    snprintf(uid_text, sizeof uid_text, "%u", (unsigned)uid);
    if (r.layer && !*r.layer)
        r.layer = NULL; /* main.run: "--layer=" is the default layer */
    for (long e = 0; e < entries && !f.bad; e++) {
        const char *e_uid = field(&f), *account = field(&f), *passwd_home = field(&f);
        const char *name = field(&f), *is_default = field(&f), *home = field(&f);
        const char *shell = field(&f);
        long ndirs = count(&f, MAX_ARGS);
        const char *dirs = f.at;
        for (long k = 0; k < ndirs; k++)
            field(&f);
        long nhead = count(&f, MAX_ARGS);
        const char *head = f.at;
        for (long k = 0; k < nhead; k++)
            field(&f);
        if (f.bad || !same(e_uid, uid_text) ||
            !(r.layer ? same(name, r.layer) : same(is_default, "1")))
            continue;
        if (!same(account, pw->pw_name) || !same(passwd_home, pw->pw_dir))
            return; /* the password database changed since: main.py decides */
        /* launch.ensure_rootless_dirs creates what is missing: main.py does that. */
        const char *d = dirs;
        for (long k = 0; k < ndirs; k++, d += strlen(d) + 1)
            if (stat(d, &st) != 0 || !S_ISDIR(st.st_mode))
                return;
        if (stat(shell, &st) != 0)
            shell = "/bin/sh"; /* launch.shell_for */
        char **args = calloc((size_t)nhead + (size_t)r.nrest + 16, sizeof(char *));
        if (args == NULL)
            return;
        int n = 0;
        const char *h = head;
        for (long k = 0; k < nhead; k++, h += strlen(h) + 1) {
            if (strcmp(h, IF_FILE) != 0) {
                args[n++] = (char *)h;
                continue;
            }
            /* IF_FILE PATH, then the mount's three fields: kept if PATH is a file */
            if (k + 4 >= nhead)
                return;
            h += strlen(h) + 1, k++;
            if (lstat(h, &st) == 0 && S_ISREG(st.st_mode))
                continue;
            for (int skip = 0; skip < 3; skip++)
                h += strlen(h) + 1, k++;
        }
        /* launch.program_argv and spec_for */
        const char *program = r.program ? r.program : shell;
        char *arg0 = (char *)shell;
        if (!r.program && r.login) {
            const char *b = strrchr(shell, '/');
            arg0 = malloc(strlen(shell) + 2);
            if (arg0 == NULL)
                return;
            sprintf(arg0, "-%s", b ? b + 1 : shell);
        }
        char *cwd = r.login ? NULL : getcwd(NULL, 0);
        if (!r.command && !r.program)
            args[n++] = "--job-control";
        const char *at = cwd ? cwd : home;
        if (*at)
            args[n++] = "--cwd", args[n++] = (char *)at;
        if (*home)
            args[n++] = "--home", args[n++] = (char *)home;
        if (!r.program && strcmp(arg0, program))
            args[n++] = "--argv0", args[n++] = arg0;
        args[n++] = "--";
        args[n++] = (char *)program;
        if (r.command)
            args[n++] = "-c", args[n++] = (char *)r.command;
        for (int k = r.program ? 1 : 0; k < r.nrest; k++)
            args[n++] = r.rest[k];
        args[n] = NULL;
        char *set[6] = {pair("HOME", home), pair("USER", pw->pw_name),
                        pair("LOGNAME", pw->pw_name), pair("SHELL", shell),
                        pair("PATH", layer_path), pair("LAYERSHELL_LAYER", name)};
        for (int k = 0; k < 6; k++)
            if (set[k] == NULL)
                return;
        static char *env[MAX_ENV];
        if (environment(env, MAX_ENV, r.login, keep, nkeep, drop, ndrop, set, 6) < 0)
            return;
        /* What main.py leaves behind when it execs: Python ignores these two. */
        signal(SIGPIPE, SIG_DFL);
        signal(SIGXFSZ, SIG_DFL);
        execve(executor, args, env);
        return; /* main.py reports why it cannot run */
    }
}

int main(int argc, char **argv) {
    const char *python = layershell_launcher_slot + sizeof SLOT_MAGIC - 1;
    const char *end = layershell_launcher_slot + SLOT_SIZE;
    const char *nul = memchr(python, '\0', (size_t)(end - python));
    const char *code = nul ? nul + 1 : end;
    const char *code_end = code < end ? memchr(code, '\0', (size_t)(end - code)) : NULL;
    if (*python == '\0' || code_end == NULL || *code == '\0') {
        fputs("layer-shell: this launcher was not set up by core init (run: core init)\n",
              stderr);
        return 127;
    }
    const char *fast = code_end + 1;
    if (fast < end && *fast && memchr(fast, '\0', (size_t)(end - fast)))
        fast_path(fast, argc, argv);
    char **args = calloc((size_t)argc + 6, sizeof(char *));
    if (args == NULL)
        return 127;
    int n = 0;
    args[n++] = (char *)python;
    args[n++] = "-IS";
    args[n++] = "-c";
    args[n++] = (char *)code;
    args[n++] = argc > 0 ? argv[0] : "layer-shell";
    for (int i = 1; i < argc; i++)
        args[n++] = argv[i];
    args[n] = NULL;
    execv(python, args);
    return 127;
}
