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

#if defined(__linux__)
#include <sys/ioctl.h>
#include <linux/sockios.h>

/// Bytes in a TCP socket's kernel send queue that the peer has not acknowledged yet (`SIOCOUTQ`,
/// sent or not), or -1 with errno set. `ioctl` is variadic, which Swift cannot call.
static inline int switchyard_socket_unacked(int fd) {
    int bytes = 0;
    return ioctl(fd, SIOCOUTQ, &bytes) == 0 ? bytes : -1;
}
#endif

#if defined(__linux__)
#include <sys/epoll.h>

/// Closes a TCP handle as `uv_close` does, without libuv 1.44's `epoll_ctl(EPOLL_CTL_DEL)` in
/// front of the socket's `close(2)` (`uv__platform_invalidate_fd`). That call is redundant for a
/// socket no other process shares: closing its last descriptor takes it out of the epoll set. It
/// also fails with ENOENT when libuv already removed the descriptor lazily (an event for a stopped
/// watcher). HAProxy closes the same way. Per proxied connection that is two system calls less.
/// Not for a socket whose file is open through another descriptor too (a `dup`): epoll keeps a
/// registration until the file's last descriptor closes, so that one needs the `uv_close` path.
///
/// Taken only when reads are stopped and nothing else is watched (`pevents == 0`: no connect,
/// write or shutdown pending), so the watcher is out of the loop's tables; the events of the
/// current `epoll_wait` batch for this descriptor are invalidated exactly as libuv does it, so a
/// descriptor number reused in this loop turn never gets them. Then the socket is closed here and
/// `uv_close` finds `fd == -1` (its documented "already closed" state) and skips both calls.
/// Any other case, and any other libuv version (whose internals were not checked), is a plain
/// `uv_close`.
static inline void switchyard_tcp_close(uv_tcp_t *tcp, uv_close_cb cb) {
#if UV_VERSION_MAJOR == 1 && UV_VERSION_MINOR == 44
    uv__io_t *w = &tcp->io_watcher;
    uv_loop_t *loop = tcp->loop;
    int fd = w->fd;
    uv_read_stop((uv_stream_t *)tcp);
    if (fd > 2 && w->pevents == 0 &&
        ((unsigned)fd >= loop->nwatchers || loop->watchers[fd] != w)) {
        if ((unsigned)fd < loop->nwatchers) {  /* else never watched: no event can be pending */
            struct epoll_event *events = (struct epoll_event *)loop->watchers[loop->nwatchers];
            uintptr_t n = (uintptr_t)loop->watchers[loop->nwatchers + 1];
            if (events != NULL)
                for (uintptr_t i = 0; i < n; i++)
                    if (events[i].data.fd == fd) events[i].data.fd = -1;
        }
        w->fd = -1;
        close(fd);  /* as libuv: no retry on EINTR (Linux has released the descriptor) */
    }
#endif
    uv_close((uv_handle_t *)tcp, cb);
}
#endif

/* Whether orphaned descendants are re-parented to this process (prctl is variadic: not
 * callable from Swift). */
#include <sys/prctl.h>
static inline int switchyard_is_child_subreaper(void) {
    int on = 0;
    if (prctl(PR_GET_CHILD_SUBREAPER, &on) != 0) return 0;
    return on;
}

/* Returns the heap's free pages to the kernel (glibc; not in Swift's Glibc module). */
#include <malloc.h>
static inline int switchyard_malloc_trim(void) {
    return malloc_trim(0);
}

#endif
