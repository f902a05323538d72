# Switchyard container image.
#
#   docker build -t switchyard .
#   docker run --rm -p 6432:6432 -p 9000:9000 -e BACKEND_1=10.0.0.5:5432 switchyard
#
# Two stages: build in the official Swift image, run on debian:bookworm-slim. See deploy/README.md.
#
# Build image: swift:6.3-bookworm, the Swift release (6.3.x) and distribution (Debian 12) the project
# is developed and tested with. Package.swift needs tools version 6.0, so any swift:6.x-bookworm
# from 6.0 up also builds it, e.g. `--build-arg SWIFT_IMAGE=swift:6.2-bookworm`. Keep both stages on
# the same Debian release (bookworm): the binary links against that release's glibc, libstdc++
# and libuv, and the runtime stage installs the same versions.
ARG SWIFT_IMAGE=swift:6.3-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------------------------------------
FROM ${SWIFT_IMAGE} AS build

# libuv headers for the CLibUV system library target (found through pkg-config).
RUN export DEBIAN_FRONTEND=noninteractive \
    && apt-get -q update \
    && apt-get -q install -y --no-install-recommends libuv1-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /build

# Dependency resolution in its own layer: it is redone only when Package.swift or Package.resolved
# changes, not on every source edit. Package.resolved is git-ignored, so it may be absent (then the
# newest versions Package.swift allows are taken); when it is present (a build from a working copy)
# its pinned versions are used as they are, and if it no longer matches Package.swift the build
# stops here: run `swift package resolve` locally, or delete it.
COPY Package.* ./
RUN if [ -f Package.resolved ]; then \
        swift package resolve --force-resolved-versions; \
    else \
        swift package resolve; \
    fi

# The sources. Tests/ is needed too: SwiftPM checks that every target declared in Package.swift
# has its directory, even when building one product.
COPY CLibUV ./CLibUV
COPY Sources ./Sources
COPY Tests ./Tests

# --static-swift-stdlib links the Swift runtime and Foundation into the binary, so the runtime
# image needs no Swift toolchain: what is left dynamic is libuv.so.1, libstdc++.so.6,
# libgcc_s.so.1 and glibc (checked with ldd). swift-backtrace-static prints a symbolicated
# backtrace if the process ever crashes (a static binary cannot find it on its own; see the
# SWIFT_BACKTRACE setting below).
RUN swift build -c release --product switchyard --static-swift-stdlib \
    && mkdir -p /staging \
    && cp "$(swift build -c release --show-bin-path)/switchyard" /staging/ \
    && cp /usr/libexec/swift/linux/swift-backtrace-static /staging/

# ---------------------------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE}

# Runtime libraries, per ldd of the static-stdlib binary: libuv1, libstdc++6, libgcc-s1 (glibc is
# in the base image; libstdc++6 and libgcc-s1 are too, listed to make the dependency explicit).
# No ca-certificates: switchyard relays TCP and makes no TLS connections of its own.
RUN export DEBIAN_FRONTEND=noninteractive \
    && apt-get -q update \
    && apt-get -q install -y --no-install-recommends libuv1 libstdc++6 libgcc-s1 \
    && rm -rf /var/lib/apt/lists/*

# An unprivileged user with a NUMERIC uid in USER, so that Kubernetes' runAsNonRoot can verify it
# without a runAsUser. All default ports are above 1024: no capability is needed to bind them.
RUN groupadd --system --gid 10001 switchyard \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin switchyard

COPY --from=build /staging/switchyard /usr/local/bin/switchyard
COPY --from=build /staging/swift-backtrace-static /usr/local/libexec/swift-backtrace-static

# The default configuration: every address, port and token comes from the environment (see the
# file). Replace it with a mount over /etc/switchyard/switchyard.ini (docker run -v, or a
# Kubernetes ConfigMap), or point --config elsewhere. Owned by root, read-only for switchyard.
COPY conf/container.ini /etc/switchyard/switchyard.ini

# On a crash, print a backtrace of every thread to stderr and exit (never wait for a debugger).
ENV SWIFT_BACKTRACE=enable=yes,sanitize=yes,threads=all,images=all,interactive=no,swift-backtrace=/usr/local/libexec/swift-backtrace-static

USER 10001:10001

# 6432: the balanced service (LISTEN_PORT); 9000: admin HTTP - /metrics, /status, /healthz,
# /readyz (ADMIN_PORT). Change these if you change the variables.
EXPOSE 6432 9000

# SIGTERM: close the listeners, let established connections finish for up to drain_timeout
# (30s by default), then exit 0. A second SIGTERM/SIGINT closes everything at once. Give
# `docker stop` enough time: docker run --stop-timeout 45, docker stop -t 45 (its default is 10s).
# switchyard handles SIGTERM/SIGINT/SIGQUIT/SIGHUP itself and reaps orphans as PID 1, so it runs
# fine without an init.
STOPSIGNAL SIGTERM

# No HEALTHCHECK: the image has no curl or wget, and the orchestrator probes better from outside
# (Kubernetes: HTTP GET /healthz and /readyz on the admin port, see deploy/kubernetes/).
# Docker users can probe http://HOST:9000/readyz from the host.

ENTRYPOINT ["switchyard"]
CMD ["run", "--config", "/etc/switchyard/switchyard.ini"]
