// SPDX-License-Identifier: MIT
/*
 * Logging: leveled lines on stderr (journald adds the time when run under
 * systemd), filtered by log.level.
 */
#include <stdio.h>
#include "kvmemd.h"

static const char *const level_names[] = { "error", "warn", "info", "debug" };

/**
 * kvlog() - log one line if @level passes log.level
 * @d:     daemon
 * @level: KVLOG_*
 * @fmt:   printf format, without the newline
 */
void kvlog(struct kvmemd *d, int level, const char *fmt, ...)
{
	va_list ap;

	if (level > (int)d->cfg.log_level)
		return;
	va_start(ap, fmt);
	fprintf(stderr, "kvmemd: %s: ", level_names[level]);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}
