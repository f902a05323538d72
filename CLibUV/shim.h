#ifndef SWITCHYARD_CLIBUV_SHIM_H
#define SWITCHYARD_CLIBUV_SHIM_H
// Debian's libuv1-dev (libuv 1.44). libuv is the only networking library Switchyard uses.
#include <uv.h>

#if defined(__linux__)
// splice(2), pipe2(2) and the pipe-size fcntl commands are GNU extensions, which Swift's Glibc
// module does not export (it is built without _GNU_SOURCE). SpliceRelay uses these thin wrappers
// over the raw system calls instead (same semantics: -1 and errno on failure).
#include <stddef.h>
#include <sys/syscall.h>
#include <unistd.h>

#define SWITCHYARD_SPLICE_F_MOVE 1u
#define SWITCHYARD_SPLICE_F_NONBLOCK 2u
#define SWITCHYARD_SPLICE_F_MORE 4u
#define SWITCHYARD_F_SETPIPE_SZ 1031
#define SWITCHYARD_F_GETPIPE_SZ 1032

/// splice(fd_in, NULL, fd_out, NULL, len, flags)
static inline long switchyard_splice(int fd_in, int fd_out, size_t len, unsigned int flags) {
    return syscall(SYS_splice, fd_in, (void *)0, fd_out, (void *)0, len, flags);
}

/// pipe2(fds, flags)
static inline int switchyard_pipe2(int fds[2], int flags) {
    return (int)syscall(SYS_pipe2, fds, flags);
}
#endif

#endif
