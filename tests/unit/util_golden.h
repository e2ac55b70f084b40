/* Golden files for unit tests: compare text with tests/unit/golden/NAME, or
 * rewrite the file when HCA_GOLDEN_UPDATE=1 (then review it as a git diff). */
#ifndef HCA_UTIL_GOLDEN_H
#define HCA_UTIL_GOLDEN_H

/* Returns 0 when @text equals the golden file (or it was rewritten), else -1
 * after printing the first differing line. */
int golden_check(const char *name, const char *text);

#endif
