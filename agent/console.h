/* console: attach the terminal to a VM's serial console (see console.c). */
#ifndef HCA_CONSOLE_H
#define HCA_CONSOLE_H

#include <stddef.h>

/*
 * Shuttle bytes between stdin/stdout and the console socket at @path until
 * the user detaches (Ctrl-] on a tty), the console closes, or input ended
 * and output went quiet. Returns 0, or -errno with @err set.
 */
int console_attach(const char *name, const char *path, char *err, size_t errlen);

#endif
