/* util_golden: see util_golden.h. Files are found under $HCA_TOP (default "."). */
#include "tests/unit/util_golden.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void golden_path(const char *name, char *buf, size_t len)
{
	const char *top = getenv("HCA_TOP");

	snprintf(buf, len, "%s/tests/unit/golden/%s", top && *top ? top : ".", name);
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "re");
	char *buf = NULL;
	size_t cap = 0;

	if (!f)
		return NULL;
	if (getdelim(&buf, &cap, '\0', f) < 0) {
		free(buf);
		buf = strdup("");
	}
	fclose(f);
	return buf;
}

static void report_diff(const char *name, const char *want, const char *got)
{
	int line = 1;

	while (*want && *want == *got) {
		line += *want == '\n';
		want++;
		got++;
	}
	fprintf(stderr, "golden %s differs at line %d:\n  want: %.*s\n  got:  %.*s\n"
		"(HCA_GOLDEN_UPDATE=1 rewrites it; review the diff)\n", name, line,
		(int)strcspn(want, "\n"), want, (int)strcspn(got, "\n"), got);
}

int golden_check(const char *name, const char *text)
{
	char path[512];
	const char *upd = getenv("HCA_GOLDEN_UPDATE");
	char *want;
	int rc;

	golden_path(name, path, sizeof(path));
	if (upd && !strcmp(upd, "1")) {
		FILE *f = fopen(path, "we");
		if (!f || fputs(text, f) < 0) {
			perror(path);
			if (f)
				fclose(f);
			return -1;
		}
		return fclose(f) == 0 ? 0 : -1;
	}
	want = slurp(path);
	if (!want) {
		fprintf(stderr, "golden %s missing (run with HCA_GOLDEN_UPDATE=1)\n", path);
		return -1;
	}
	rc = strcmp(want, text) ? -1 : 0;
	if (rc)
		report_diff(name, want, text);
	free(want);
	return rc;
}
