#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>

#include "core/util.h"

static cf_log_level g_level = CF_LOG_WARN;

void cf_log_set_level(cf_log_level level)
{
    g_level = level;
}

void cf_log(cf_log_level level, const char *fmt, ...)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    if (level > g_level)
        return;
    char ts[CF_TIME_STR_MAX], line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s %s %s\n", cf_time_format(cf_time_now_us(), ts), names[level], line);
}
