/* layer-shell launcher: exec Python on layershell.shell_main, keeping argv[0].
 *
 * Why a binary: the kernel drops argv[0] when it runs a "#!" script, and argv[0]
 * starting with '-' is how login(1), su - and sshd ask for a login shell. `core init`
 * compiles this file when a C compiler is present (else it writes a #! script and
 * login mode needs -l); the paths are baked in with -D. It only execs.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef PYTHON
#error "build with -DPYTHON=... -DCODE=... -DMARKER=..."
#endif

/* Proves ownership: core init replaces only a file that carries this line. */
__attribute__((used)) static const char marker[] = MARKER ": the layer-shell launcher";

int main(int argc, char **argv) {
    char **args = calloc((size_t)argc + 6, sizeof(char *));
    if (args == NULL)
        return 127;
    int n = 0;
    args[n++] = PYTHON;
    args[n++] = "-IS";
    args[n++] = "-c";
    args[n++] = CODE;
    args[n++] = argc > 0 ? argv[0] : "layer-shell";
    for (int i = 1; i < argc; i++)
        args[n++] = argv[i];
    args[n] = NULL;
    execv(PYTHON, args);
    return 127;
}
