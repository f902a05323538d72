#ifndef SWITCHYARD_CLIBUV_SHIM_H
#define SWITCHYARD_CLIBUV_SHIM_H
// Debian's libuv1-dev (libuv 1.44). libuv is the only networking library Switchyard uses.
#include <uv.h>
#endif
