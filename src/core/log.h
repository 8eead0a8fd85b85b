/* log.h - one-line log messages on stderr. The level is set once at start. Never pass a
 * key, token or claim code to these functions. */
#ifndef CF_CORE_LOG_H
#define CF_CORE_LOG_H

typedef enum { CF_LOG_ERROR, CF_LOG_WARN, CF_LOG_INFO, CF_LOG_DEBUG } cf_log_level;

void cf_log_set_level(cf_log_level level);
void cf_log(cf_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
