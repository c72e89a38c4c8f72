/* layer-shell launcher: exec Python on layershell.layers.main, keeping argv[0].
 *
 * Why a binary: the kernel drops argv[0] when it runs a "#!" script, and argv[0]
 * starting with '-' is how login(1), su - and sshd ask for a login shell. It only execs.
 *
 * It is built with layershell (hatch_build.py), never at `core init`, so the
 * interpreter and the code to run cannot be compiled in: `slot` below starts with
 * SLOT_MAGIC and is otherwise zero, and `core init` writes "PYTHON\0CODE\0" right after
 * the magic in its copy of the bytes (layershell/host/binaries.py, `launcher`). The program
 * reads nothing at run time: the slot is part of its data segment.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

int main(int argc, char **argv) {
    const char *python = layershell_launcher_slot + sizeof SLOT_MAGIC - 1;
    const char *end = layershell_launcher_slot + SLOT_SIZE;
    const char *nul = memchr(python, '\0', (size_t)(end - python));
    const char *code = nul ? nul + 1 : end;
    if (*python == '\0' || code >= end || memchr(code, '\0', (size_t)(end - code)) == NULL ||
        *code == '\0') {
        fputs("layer-shell: this launcher was not set up by core init (run: core init)\n",
              stderr);
        return 127;
    }
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
