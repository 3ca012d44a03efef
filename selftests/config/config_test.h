/* SPDX-License-Identifier: MIT */
/*
 * Helpers shared by the config selftests: configuration text written to a
 * temporary file under /tmp, and checks that an error message names the
 * right FILE:LINE.
 */
#ifndef _SELFTESTS_CONFIG_TEST_H
#define _SELFTESTS_CONFIG_TEST_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/config.h"

#define TMP_PATH_MAX	64

/*
 * Write @text to a new file under /tmp; its name goes to @path. Return 0,
 * or -errno.
 */
static inline int tmp_write(char path[TMP_PATH_MAX], const char *text)
{
	size_t len = strlen(text), done = 0;
	ssize_t n;
	int fd;

	snprintf(path, TMP_PATH_MAX, "/tmp/kvmem-config-XXXXXX");
	fd = mkstemp(path);
	if (fd < 0)
		return -errno;
	while (done < len) {
		n = write(fd, text + done, len - done);
		if (n <= 0) {
			close(fd);
			unlink(path);
			return -EIO;
		}
		done += (size_t)n;
	}
	close(fd);
	return 0;
}

/*
 * Does @err read "@file:@line: ..." and contain @what? Print both when
 * not, so that a failing test says why.
 */
static inline int err_is(const char *err, const char *file, unsigned int line,
			 const char *what)
{
	char prefix[TMP_PATH_MAX + 32];
	size_t n;

	if (line)
		n = (size_t)snprintf(prefix, sizeof(prefix), "%s:%u: ", file, line);
	else
		n = (size_t)snprintf(prefix, sizeof(prefix), "%s: ", file);
	if (!strncmp(err, prefix, n) && strstr(err + n, what))
		return 1;
	printf("# expected \"%s...%s\"\n#      got \"%s\"\n", prefix, what, err);
	return 0;
}

#endif /* _SELFTESTS_CONFIG_TEST_H */
