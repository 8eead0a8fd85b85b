/* fs.h - reading outside files with a size cap and writing files atomically. */
#ifndef CF_CORE_FS_H
#define CF_CORE_FS_H

#include <stddef.h>
#include <sys/types.h>

#include "core/err.h"

/* Reads the whole of path ("-" is stdin) into a new NUL-terminated buffer (*out, freed
 * with free(); *len excludes the NUL). Refuses files larger than max bytes without reading
 * them whole. Errors name the path: CF_ERR_IO when it cannot be read, CF_ERR_INVALID when
 * it is too large. */
cf_err cf_fs_read_file(const char *path, size_t max, char **out, size_t *len, cf_error *err);

/* Writes data to path atomically (temporary file in the same directory, fsync, rename) with
 * the given mode; refuses to replace an existing file unless overwrite. */
cf_err cf_fs_write_file(const char *path, const void *data, size_t len, mode_t mode, int overwrite,
                        cf_error *err);

/* Creates directory path (and missing parents) with mode; an existing directory is fine but
 * gets mode applied when it was just created only. Errors name the path. */
cf_err cf_fs_mkdirs(const char *path, mode_t mode, cf_error *err);

/* 1 if path exists. */
int cf_fs_exists(const char *path);

#endif
