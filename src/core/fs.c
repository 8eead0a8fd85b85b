#include "core/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

cf_err cf_fs_read_file(const char *path, size_t max, char **out, size_t *len, cf_error *err)
{
    int is_stdin = strcmp(path, "-") == 0;
    int fd = is_stdin ? 0 : open(path, O_RDONLY | O_CLOEXEC);
    char *buf = NULL;
    size_t cap = 0, n = 0;
    cf_err rc = CF_OK;

    if (fd < 0)
        return cf_error_set(err, CF_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        rc = cf_error_set(err, CF_ERR_IO, "%s: is a directory", path);
        goto out;
    }
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (size_t)st.st_size > max) {
        rc = cf_error_set(err, CF_ERR_INVALID, "%s: too large (%lld bytes, limit %zu)", path,
                          (long long)st.st_size, max);
        goto out;
    }
    for (;;) {
        if (n + 1 >= cap) {
            size_t ncap = cap ? cap * 2 : 8192;
            char *nb = realloc(buf, ncap);
            if (!nb) {
                rc = cf_error_set(err, CF_ERR_NOMEM, "%s: out of memory", path);
                goto out;
            }
            buf = nb;
            cap = ncap;
        }
        ssize_t r = read(fd, buf + n, cap - n - 1);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            rc = cf_error_set(err, CF_ERR_IO, "%s: read failed: %s", path, strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > max) {
            rc = cf_error_set(err, CF_ERR_INVALID, "%s: too large (over %zu bytes)", path, max);
            goto out;
        }
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    buf = NULL;
out:
    free(buf);
    if (!is_stdin)
        close(fd);
    return rc;
}

static int write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

cf_err cf_fs_write_file(const char *path, const void *data, size_t len, mode_t mode, int overwrite,
                        cf_error *err)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return cf_error_set(err, CF_ERR_INVALID, "%s: path too long", path);
    if (!overwrite && cf_fs_exists(path))
        return cf_error_set(err, CF_ERR_EXISTS, "%s: already exists", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0)
        return cf_error_set(err, CF_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    if (fchmod(fd, mode) != 0 || write_all(fd, data, len) != 0 || fsync(fd) != 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        return cf_error_set(err, CF_ERR_IO, "%s: write failed: %s", path, strerror(e));
    }
    close(fd);
    int linked = overwrite ? rename(tmp, path) : link(tmp, path);
    int e = errno;
    if (!overwrite)
        unlink(tmp);
    if (linked != 0) {
        if (overwrite)
            unlink(tmp);
        return cf_error_set(err, e == EEXIST ? CF_ERR_EXISTS : CF_ERR_IO, "%s: cannot create: %s",
                            path, strerror(e));
    }
    return CF_OK;
}

cf_err cf_fs_mkdirs(const char *path, mode_t mode, cf_error *err)
{
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf)
        return cf_error_set(err, CF_ERR_INVALID, "directory path is empty or too long");
    memcpy(buf, path, n + 1);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return cf_error_set(err, CF_ERR_IO, "%s: cannot create directory: %s", buf,
                                strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, mode) == 0) {
        if (chmod(buf, mode) != 0)
            return cf_error_set(err, CF_ERR_IO, "%s: chmod: %s", buf, strerror(errno));
        return CF_OK;
    }
    if (errno != EEXIST)
        return cf_error_set(err, CF_ERR_IO, "%s: cannot create directory: %s", buf,
                            strerror(errno));
    struct stat st;
    if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode))
        return cf_error_set(err, CF_ERR_IO, "%s: exists and is not a directory", buf);
    return CF_OK;
}

int cf_fs_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}
