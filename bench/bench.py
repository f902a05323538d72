#!/usr/bin/env python3
"""Switchyard benchmark harness: Switchyard vs HAProxy vs nginx stream, same backends, loopback.

Runs each workload through every balancer (and directly against the backends, as the ceiling),
interleaved round by round, and reports medians and Switchyard/HAProxy (and /nginx) ratios.
See bench/README.md. Python 3 standard library only.
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULTS_DIR = os.path.join(HERE, "results")

WORKLOADS = ["bulk", "rr", "latency", "connrate", "memory"]
BALANCERS = ["switchyard", "haproxy", "nginx"]
TARGETS = ["direct"] + BALANCERS

# What each workload reports: (key, label, unit, higher_is_better)
METRICS = {
    "bulk": [("gbps", "bulk: iperf3, 1 stream", "Gbit/s", True),
             ("cpu_ms_per_gb", "bulk: balancer CPU per GB relayed", "CPU ms/GB", False)],
    "rr": [("rps", "request/response: redis GET, 50 clients", "requests/s", True),
           ("cpu_us_per_req", "request/response: balancer CPU per request", "CPU µs/request", False)],
    "latency": [("avg_ms", "latency: redis GET, 1 client, mean", "ms", False),
                ("p50_ms", "latency: redis GET, 1 client, p50", "ms", False),
                ("p99_ms", "latency: redis GET, 1 client, p99", "ms", False),
                ("cpu_us_per_req", "latency: balancer CPU per request, 1 client", "CPU µs/request", False)],
    "connrate": [("cps", "connection rate: wrk, Connection: close", "connections/s", True),
                 ("cpu_us_per_conn", "connection rate: balancer CPU per connection", "CPU µs/connection", False)],
    "memory": [("kib_per_conn", "memory per idle connection", "KiB/connection", False)],
}

# Balancer CPU cost: the metric each workload's CPU time is divided into, the result field that
# counts its work, and the scale (CPU seconds per unit of work -> the metric's unit).
CPU_COST = {
    "bulk": ("cpu_ms_per_gb", "bytes", 1e3 * 1e9),
    "rr": ("cpu_us_per_req", "requests", 1e6),
    "latency": ("cpu_us_per_req", "requests", 1e6),
    "connrate": ("cpu_us_per_conn", "requests", 1e6),
}

# command -> Debian package
PACKAGES = {
    "haproxy": "haproxy",
    "nginx": "nginx-light",
    "iperf3": "iperf3",
    "redis-server": "redis-server",
    "redis-benchmark": "redis-tools",
    "redis-cli": "redis-tools",
    "wrk": "wrk",
}

STREAM_MODULE_CANDIDATES = [
    "/usr/lib/nginx/modules/ngx_stream_module.so",
    "/usr/share/nginx/modules/ngx_stream_module.so",
]


class BenchError(Exception):
    pass


def log(msg):
    print(msg, flush=True)


# ---------------------------------------------------------------------------------------------
# Processes: everything long-running is registered here and stopped at exit, Ctrl-C or error.

class Managed:
    def __init__(self, name, argv, logdir, cwd=None, env=None):
        self.name = name
        self.argv = argv
        self.out_path = os.path.join(logdir, name + ".out")
        self.err_path = os.path.join(logdir, name + ".err")
        self.cwd = cwd
        self.env = env
        self.proc = None

    def start(self):
        out = open(self.out_path, "ab")
        err = open(self.err_path, "ab")
        try:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         cwd=self.cwd, env=self.env, start_new_session=True)
        finally:
            out.close()
            err.close()
        REGISTRY.append(self)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stderr_tail(self, lines=15):
        try:
            with open(self.err_path, "rb") as f:
                data = f.read().decode(errors="replace").splitlines()
            return "\n".join(data[-lines:])
        except OSError:
            return ""

    def signal_group(self, sig):
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout=5.0):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.signal_group(signal.SIGCONT)  # it may be paused (see Env.pause_all_but)
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=5)
        else:
            # The leader exited; make sure nothing of its group lingers (nginx workers).
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self in REGISTRY:
            REGISTRY.remove(self)


REGISTRY = []


def stop_all():
    for m in list(reversed(REGISTRY)):
        try:
            m.stop()
        except Exception as e:  # keep stopping the others
            print(f"warning: stopping {m.name}: {e}", file=sys.stderr)


def on_signal(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run(argv, timeout, check=False, **kw):
    """Runs a short command; returns CompletedProcess (text). Raises BenchError on timeout."""
    try:
        cp = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            timeout=timeout, text=True, errors="replace", **kw)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"`{' '.join(argv)}` did not finish within {timeout:.0f}s (hang)") from e
    if check and cp.returncode != 0:
        raise BenchError(f"`{' '.join(argv)}` exited {cp.returncode}: {cp.stderr.strip()[-500:]}")
    return cp


# ---------------------------------------------------------------------------------------------
# Machine helpers

def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else 1 << 20
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_ports(n):
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def listening_ports():
    """Ports in LISTEN state on IPv4 (from /proc/net/tcp; no connection is made, so no backend
    sees a stray connection through a balancer)."""
    ports = set()
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if len(parts) > 3 and parts[3] == "0A":
                        ports.add(int(parts[1].rsplit(":", 1)[1], 16))
        except OSError:
            pass
    return ports


def wait_listening(ports, managed, timeout=20.0, what=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not managed.alive():
            raise BenchError(f"{managed.name} exited with code {managed.proc.returncode} while starting:\n"
                             f"{managed.stderr_tail()}")
        if set(ports) <= listening_ports():
            return
        time.sleep(0.05)
    raise BenchError(f"{what or managed.name} not listening on {sorted(ports)} after {timeout:.0f}s:\n{managed.stderr_tail()}")


def wait_log(managed, pattern, timeout=30.0):
    deadline = time.time() + timeout
    rx = re.compile(pattern)
    while time.time() < deadline:
        if not managed.alive():
            raise BenchError(f"{managed.name} exited with code {managed.proc.returncode} while starting:\n"
                             f"{managed.stderr_tail()}")
        try:
            with open(managed.err_path, "rb") as f:
                if rx.search(f.read().decode(errors="replace")):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise BenchError(f"{managed.name}: no line matching /{pattern}/ after {timeout:.0f}s:\n{managed.stderr_tail()}")


def process_tree(pid):
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


# Balancer CPU time, in nanoseconds. What was checked (Linux 6.18, a Python process with three busy
# threads, one of which exits after 1 s; sampled every 0.8 s):
#   - /proc/PID/schedstat (and the se.sum_exec_runtime of /proc/PID/sched) is the main thread only
#     (2.06 s of 6.14 s at the end), not the thread group;
#   - the sum of /proc/PID/task/*/schedstat is exact while every thread lives, but an exited
#     thread's time leaves the sum (it dropped by the 0.24 s the dead thread had used);
#   - utime + stime of /proc/PID/stat cover the whole group, exited threads included (the kernel
#     scales them to the group's exact sum_exec_runtime), but come in 10 ms clock ticks, each of
#     the two truncated;
#   - the process's CPU-time clock (clock_getcpuclockid(3) + clock_gettime: the kernel's
#     thread_group_sched_runtime) is the same exact count as the schedstat sum, in ns, and keeps
#     exited threads' time (it read 0–2 ticks above /proc/PID/stat).
# So: the process CPU-time clock of every process of the tree (ctypes: the standard library has no
# clock_getcpuclockid). Where that is unavailable (no ctypes, a libc without it), per process the
# larger of the live-thread schedstat sum and the tick count — both are lower bounds of the true
# figure, the first short of exited threads' time, the second of at most two ticks — and the tick
# count alone where schedstat is missing or all zeros (a kernel without CONFIG_SCHED_INFO).
try:
    import ctypes
    import ctypes.util
    _LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    _LIBC.clock_getcpuclockid.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    _LIBC.clock_getcpuclockid.restype = ctypes.c_int
except (ImportError, OSError, AttributeError):
    _LIBC = None


def process_cpuclock_ns(pid):
    """CPU time of a whole process (all its threads, live and exited), in ns; None if its
    CPU-time clock cannot be read (no such process, or no clock_getcpuclockid)."""
    if _LIBC is None:
        return None
    clock = ctypes.c_int()
    if _LIBC.clock_getcpuclockid(pid, ctypes.byref(clock)) != 0:
        return None
    try:
        return time.clock_gettime_ns(clock.value)
    except OSError:
        return None


def proc_cpu_ns(pid):
    """The /proc fallback, in ns (see above): max(sum of the live threads' schedstat, utime + stime
    ticks). None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks_ns = (int(fields[11]) + int(fields[12])) * 1_000_000_000 // os.sysconf("SC_CLK_TCK")  # utime, stime
    sched_ns = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        tids = []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                sched_ns += int(f.read().split()[0])  # time on CPU, ns
        except (OSError, ValueError, IndexError):
            pass  # thread gone, or no schedstat
    return max(ticks_ns, sched_ns)


def cpu_seconds(pids):
    """User + system CPU time of these processes (all their threads), in seconds (ns resolution),
    and where it came from: "cpuclock", or "proc" if the fallback was needed for any of them."""
    total, source = 0, "cpuclock"
    for pid in pids:
        ns = process_cpuclock_ns(pid)
        if ns is None:
            ns = proc_cpu_ns(pid)
            if ns is None:
                continue  # exited
            source = "proc"
        total += ns
    return total / 1e9, source


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def machine_info():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu_model": model, "cores": os.cpu_count(), "kernel": platform.release(),
            "os": platform.platform()}


def first_line(argv):
    try:
        cp = run(argv, timeout=20)
        text = (cp.stdout.strip() or cp.stderr.strip()).splitlines()
        return text[0].strip() if text else "?"
    except (OSError, BenchError):
        return "not available"


# ---------------------------------------------------------------------------------------------
# Installation

def stream_module_path():
    for p in STREAM_MODULE_CANDIDATES:
        if os.path.exists(p):
            return p
    try:
        for name in sorted(os.listdir("/etc/nginx/modules-enabled")):
            with open(os.path.join("/etc/nginx/modules-enabled", name)) as f:
                m = re.search(r"load_module\s+(\S*ngx_stream_module\.so)\s*;", f.read())
                if m:
                    return m.group(1)
    except OSError:
        pass
    return None


def nginx_has_builtin_stream():
    try:
        cp = run(["nginx", "-V"], timeout=10)
        flags = cp.stderr + cp.stdout
        return "--with-stream" in flags and "--with-stream=dynamic" not in flags
    except (OSError, BenchError):
        return False


def ensure_tools(commands, allow_install, nginx_balancer):
    """`nginx_balancer`: nginx runs as a balancer (its stream module is needed), not only as the
    HTTP backend of the connection-rate workload (nginx-light alone does that)."""
    missing_pkgs = []
    for cmd in commands:
        if shutil.which(cmd) is None:
            missing_pkgs.append(PACKAGES[cmd])
    need_stream = nginx_balancer and (shutil.which("nginx") is None or
                                      (stream_module_path() is None and not nginx_has_builtin_stream()))
    if need_stream:
        missing_pkgs.append("libnginx-mod-stream")
    missing_pkgs = sorted(set(missing_pkgs))
    if not missing_pkgs:
        return
    if not allow_install:
        raise BenchError(f"missing packages: {' '.join(missing_pkgs)} (run without --no-install, as root)")
    if os.geteuid() != 0:
        raise BenchError(f"missing packages: {' '.join(missing_pkgs)}; install them as root: "
                         f"apt-get install -y {' '.join(missing_pkgs)}")
    log(f"installing with apt-get: {' '.join(missing_pkgs)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update"], check=True, env=env, stdin=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends"] + missing_pkgs, check=True, env=env,
                   stdin=subprocess.DEVNULL)
    for cmd in commands:
        if shutil.which(cmd) is None:
            raise BenchError(f"{cmd} still missing after installing {' '.join(missing_pkgs)}")


# ---------------------------------------------------------------------------------------------
# Building Switchyard

def swift_build(product, scratch, package_path):
    argv = ["swift", "build", "-c", "release", "--package-path", package_path, "--product", product]
    if scratch:
        argv += ["--scratch-path", scratch]
    log("+ " + " ".join(argv))
    cp = subprocess.run(argv, cwd=package_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                        errors="replace", stdin=subprocess.DEVNULL)
    if cp.returncode != 0:
        raise BenchError(f"swift build --product {product} failed:\n{cp.stdout[-4000:]}")
    cp = subprocess.run(argv + ["--show-bin-path"], cwd=package_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        text=True, stdin=subprocess.DEVNULL)
    path = os.path.join(cp.stdout.strip().splitlines()[-1], product)
    if not os.access(path, os.X_OK):
        raise BenchError(f"built {product} but {path} is not there")
    return path


# ---------------------------------------------------------------------------------------------
# Backends and balancers

class Env:
    """Everything started for one run: backends, balancers, their ports."""

    def __init__(self, args, tmp):
        self.args = args
        self.tmp = tmp
        self.logdir = os.path.join(tmp, "logs")
        os.makedirs(self.logdir, exist_ok=True)
        self.backends = {}
        self.balancers = {}
        # target -> {"iperf": port, "redis": port, "http": port}
        self.ports = {}

    # -- backends ----------------------------------------------------------------------------

    def start_backends(self, need):
        p = {}
        if "bulk" in need:
            (p["iperf"],) = free_ports(1)
            m = Managed("iperf3-server", ["iperf3", "-s", "-B", "127.0.0.1", "-p", str(p["iperf"]),
                                          "--idle-timeout", "60"], self.logdir).start()
            self.backends["iperf"] = m
            wait_listening([p["iperf"]], m)
        if need & {"rr", "latency", "memory"}:
            (p["redis"],) = free_ports(1)
            rdir = os.path.join(self.tmp, "redis")
            os.makedirs(rdir, exist_ok=True)
            m = Managed("redis-server", ["redis-server", "--port", str(p["redis"]), "--bind", "127.0.0.1",
                                         "--save", "", "--appendonly", "no", "--daemonize", "no",
                                         "--protected-mode", "no", "--maxclients", "10000",
                                         "--dir", rdir, "--logfile", ""], self.logdir).start()
            self.backends["redis"] = m
            wait_listening([p["redis"]], m)
        if "connrate" in need:
            p["http1"], p["http2"] = free_ports(2)
            ndir = os.path.join(self.tmp, "nginx-http")
            os.makedirs(os.path.join(ndir, "logs"), exist_ok=True)
            conf = os.path.join(ndir, "nginx.conf")
            with open(conf, "w") as f:
                f.write(f"""# HTTP backends for the connection-rate workload: a tiny static response on two ports.
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid {ndir}/nginx.pid;
error_log {ndir}/error.log warn;
events {{ worker_connections 10000; }}
http {{
    access_log off;
    client_body_temp_path {ndir}/body;
    proxy_temp_path {ndir}/proxy;
    fastcgi_temp_path {ndir}/fastcgi;
    uwsgi_temp_path {ndir}/uwsgi;
    scgi_temp_path {ndir}/scgi;
    server {{
        listen 127.0.0.1:{p['http1']};
        listen 127.0.0.1:{p['http2']};
        location / {{ default_type text/plain; return 200 "ok\\n"; }}
    }}
}}
""")
            m = Managed("nginx-http", ["nginx", "-p", ndir + "/", "-e", os.path.join(ndir, "error.log"), "-c", conf],
                        self.logdir).start()
            self.backends["http"] = m
            wait_listening([p["http1"], p["http2"]], m)
        self.backend_ports = p
        self.ports["direct"] = {"iperf": p.get("iperf"), "redis": p.get("redis"), "http": p.get("http1")}

    def check_backends(self):
        for name, m in self.backends.items():
            if not m.alive():
                raise BenchError(f"backend {m.name} died (exit {m.proc.returncode}):\n{m.stderr_tail()}")

    # -- balancers ---------------------------------------------------------------------------

    def start_balancer(self, name):
        bp = self.backend_ports
        keys = [k for k in ("iperf", "redis", "http") if (k in bp or k + "1" in bp)]
        ports = dict(zip(keys, free_ports(len(keys))))
        d = os.path.join(self.tmp, name)
        os.makedirs(d, exist_ok=True)
        if name == "switchyard":
            m = self._switchyard(d, ports)
        elif name == "haproxy":
            m = self._haproxy(d, ports)
        elif name == "nginx":
            m = self._nginx(d, ports)
        else:
            raise ValueError(name)
        wait_listening(list(ports.values()), m, what=name)
        self.balancers[name] = m
        self.ports[name] = {k: ports.get(k) for k in ("iperf", "redis", "http")}
        return m

    def balancer_cpu(self, name):
        """(pid, CPU seconds used so far by a balancer's process tree, source; see cpu_seconds),
        None for direct. A balancer restarted during a workload (memory) gets no CPU figure: see
        add_cpu_cost."""
        m = self.balancers.get(name)
        if m is None:
            return None
        return (m.pid,) + cpu_seconds(process_tree(m.pid))

    def pause_all_but(self, current):
        """With --busy-poll, only the balancer being measured runs; the others are stopped
        (SIGSTOP), since HAProxy's busy-polling spins a core even when idle and would take it
        from whoever is measured. `current` None (direct) pauses them all."""
        if not self.args.busy_poll:
            return
        for name, m in self.balancers.items():
            m.signal_group(signal.SIGCONT if name == current else signal.SIGSTOP)

    def restart_balancer(self, name):
        old = self.balancers.pop(name, None)
        if old:
            old.stop()
        return self.start_balancer(name)

    def _switchyard(self, d, ports):
        bp = self.backend_ports
        # --splice MODE: the same `splice` value in every service (none: the built-in default).
        splice = f"splice = {self.args.splice}\n" if self.args.splice else ""
        # Like HAProxy and nginx here: the same connection cap as HAProxy's maxconn, a 1 h idle
        # timeout, no active health checks (HAProxy's servers have no `check`; nginx OSS has none).
        # Everything else is Switchyard's default.
        sections = [f"""[global]
admin =
log_level = warning
log_format = text
max_connections = 9000
workers = {self.args.workers}
""" + (f"busy_poll = {self.args.busy_poll}\n" if self.args.busy_poll else "")]
        if "iperf" in ports:
            sections.append(f"""[service iperf]
listen = 127.0.0.1:{ports['iperf']}
balance = least_conn
server = iperf1 127.0.0.1:{bp['iperf']}
connect_timeout = 2s
idle_timeout = 1h
check = none
{splice}""")
        if "redis" in ports:
            sections.append(f"""[service redis]
listen = 127.0.0.1:{ports['redis']}
balance = least_conn
server = redis1 127.0.0.1:{bp['redis']}
connect_timeout = 2s
idle_timeout = 1h
check = none
{splice}""")
        if "http" in ports:
            sections.append(f"""[service http]
listen = 127.0.0.1:{ports['http']}
balance = least_conn
server = web1 127.0.0.1:{bp['http1']}
server = web2 127.0.0.1:{bp['http2']}
connect_timeout = 2s
idle_timeout = 1h
check = none
{splice}""")
        conf = os.path.join(d, "switchyard.ini")
        with open(conf, "w") as f:
            f.write("\n".join(sections))
        # log_level = warning: no `listening`/`started` lines (they are info); readiness is the
        # listening sockets, as for the others.
        return Managed("switchyard", [self.args.switchyard_path, "run", "--config", conf], self.logdir).start()

    def _haproxy(self, d, ports):
        bp = self.backend_ports
        # maxconn: 2 fds per proxied connection; 9000 keeps HAProxy's computed fd need under the
        # 20000 open-files limit of this machine while leaving room for the 4000-connection test.
        # --busy-poll: HAProxy's own busy polling too, for a like-for-like latency comparison.
        busy = "    busy-polling\n" if self.args.busy_poll else ""
        # --haproxy-tuned: the two HAProxy options that match what Switchyard does by default
        # (splice for bulk, the handshake's last ACK riding on the first data), both off by default.
        tuned = "    option splice-auto\n    option tcp-smart-connect\n" if self.args.haproxy_tuned else ""
        # Pipes take descriptors too (HAProxy reserves maxconn/4 of them by default, which with
        # maxconn 9000 passes the 20000 open-files limit): 500 is plenty for a benchmark.
        pipes = "    maxpipes 500\n" if self.args.haproxy_tuned else ""
        text = f"""global
    nbthread 1
    maxconn 9000
    pidfile {d}/haproxy.pid
{busy}{pipes}
defaults
    mode tcp
    maxconn 9000
    timeout connect 2s
    timeout client 1h
    timeout server 1h
    balance leastconn
{tuned}"""
        if "iperf" in ports:
            text += f"""
listen iperf
    bind 127.0.0.1:{ports['iperf']}
    server iperf1 127.0.0.1:{bp['iperf']}
"""
        if "redis" in ports:
            text += f"""
listen redis
    bind 127.0.0.1:{ports['redis']}
    server redis1 127.0.0.1:{bp['redis']}
"""
        if "http" in ports:
            text += f"""
listen http
    bind 127.0.0.1:{ports['http']}
    server web1 127.0.0.1:{bp['http1']}
    server web2 127.0.0.1:{bp['http2']}
"""
        conf = os.path.join(d, "haproxy.cfg")
        with open(conf, "w") as f:
            f.write(text)
        check = run(["haproxy", "-c", "-f", conf], timeout=20)
        if check.returncode != 0:
            raise BenchError(f"haproxy -c rejected {conf}:\n{check.stdout}{check.stderr}")
        return Managed("haproxy", ["haproxy", "-db", "-f", conf], self.logdir).start()

    def _nginx(self, d, ports):
        bp = self.backend_ports
        module = stream_module_path()
        load = f"load_module {module};\n" if module else ""
        if not module and not nginx_has_builtin_stream():
            raise BenchError("nginx has no stream module: apt-get install -y libnginx-mod-stream")
        ups = ""
        if "iperf" in ports:
            ups += f"""    upstream iperf {{ least_conn; server 127.0.0.1:{bp['iperf']}; }}
    server {{ listen 127.0.0.1:{ports['iperf']}; proxy_pass iperf; }}
"""
        if "redis" in ports:
            ups += f"""    upstream redis {{ least_conn; server 127.0.0.1:{bp['redis']}; }}
    server {{ listen 127.0.0.1:{ports['redis']}; proxy_pass redis; }}
"""
        if "http" in ports:
            ups += f"""    upstream http {{ least_conn; server 127.0.0.1:{bp['http1']}; server 127.0.0.1:{bp['http2']}; }}
    server {{ listen 127.0.0.1:{ports['http']}; proxy_pass http; }}
"""
        text = f"""{load}worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 20000; }}
stream {{
    proxy_connect_timeout 2s;
    proxy_timeout 1h;
{ups}}}
"""
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(text)
        return Managed("nginx", ["nginx", "-p", d + "/", "-e", os.path.join(d, "error.log"), "-c", conf],
                       self.logdir).start()


# ---------------------------------------------------------------------------------------------
# Workloads. Each returns a dict of metrics, or raises BenchError with what went wrong.

def w_bulk(env, target, P, rawdir, tag):
    port = env.ports[target]["iperf"]
    argv = ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(P["bulk_seconds"]), "-J",
            "--connect-timeout", "3000"]
    if P["bulk_omit"]:
        argv += ["-O", str(P["bulk_omit"])]
    cp = run(argv, timeout=P["bulk_seconds"] + P["bulk_omit"] + 30)
    save(rawdir, tag + ".json", cp.stdout)
    try:
        data = json.loads(cp.stdout)
    except ValueError:
        raise BenchError(f"iperf3 exited {cp.returncode} without JSON: {cp.stderr.strip()[-300:]}")
    if "error" in data:
        raise BenchError(f"iperf3: {data['error']}")
    if cp.returncode != 0:
        raise BenchError(f"iperf3 exited {cp.returncode}")
    try:
        bps = data["end"]["sum_received"]["bits_per_second"]
    except (KeyError, TypeError):
        raise BenchError("iperf3 JSON has no end.sum_received")
    if not bps > 0:
        raise BenchError("iperf3 measured zero throughput")
    # Everything sent, the omitted warm-up seconds included (the balancer's CPU is counted over
    # the whole run).
    sent = sum(i["sum"]["bytes"] for i in data.get("intervals", []))
    return {"gbps": bps / 1e9, "bytes": sent}


def parse_redis_csv(text):
    rows = [line for line in text.splitlines() if line.startswith('"')]
    if len(rows) < 2:
        return None
    header = [c.strip('"') for c in rows[0].split(",")]
    for row in rows[1:]:
        cells = [c.strip('"') for c in row.split(",")]
        if cells and cells[0].upper().startswith("GET"):
            return dict(zip(header, cells))
    return None


def redis_benchmark(env, target, clients, requests, timeout, rawdir, tag):
    port = env.ports[target]["redis"]
    argv = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", str(clients), "-n", str(requests),
            "-t", "get", "--csv"]
    cp = run(argv, timeout=timeout)
    save(rawdir, tag + ".csv", cp.stdout + ("\n# stderr:\n" + cp.stderr if cp.stderr.strip() else ""))
    row = parse_redis_csv(cp.stdout)
    if cp.returncode != 0 or row is None:
        raise BenchError(f"redis-benchmark exited {cp.returncode}: {(cp.stderr or cp.stdout).strip()[-400:]}")
    # redis-benchmark 7 stops at the first error reply and says so (no -e needed).
    errors = [l for l in (cp.stderr + cp.stdout).splitlines() if "rror" in l]
    if errors:
        raise BenchError(f"redis-benchmark reported errors: {errors[:3]}")
    return row


def w_rr(env, target, P, rawdir, tag):
    row = redis_benchmark(env, target, 50, P["rr_requests"], 180, rawdir, tag)
    try:
        rps = float(row["rps"])
    except (KeyError, ValueError):
        raise BenchError(f"redis-benchmark row unusable: {row}")
    if not rps > 0:
        raise BenchError("redis-benchmark measured zero requests/s")
    return {"rps": rps, "requests": P["rr_requests"]}


def w_latency(env, target, P, rawdir, tag):
    row = redis_benchmark(env, target, 1, P["latency_requests"], 180, rawdir, tag)
    try:
        avg, p50, p99 = float(row["avg_latency_ms"]), float(row["p50_latency_ms"]), float(row["p99_latency_ms"])
        rps = float(row["rps"])
    except (KeyError, ValueError):
        raise BenchError(f"redis-benchmark latency row unusable: {row}")
    if not (avg > 0 and p50 > 0 and p99 > 0 and rps > 0):
        raise BenchError(f"redis-benchmark latency row unusable: {row}")
    return {"avg_ms": avg, "p50_ms": p50, "p99_ms": p99, "rps": rps, "requests": P["latency_requests"]}


def w_connrate(env, target, P, rawdir, tag):
    port = env.ports[target]["http"]
    argv = ["wrk", "-t1", "-c", str(P["connrate_clients"]), "-d", f"{P['connrate_seconds']}s",
            "--timeout", "5s", "-H", "Connection: close", f"http://127.0.0.1:{port}/"]
    cp = run(argv, timeout=P["connrate_seconds"] + 30)
    save(rawdir, tag + ".txt", cp.stdout + cp.stderr)
    m = re.search(r"Requests/sec:\s*([\d.]+)", cp.stdout)
    if cp.returncode != 0 or not m:
        raise BenchError(f"wrk exited {cp.returncode}: {(cp.stderr or cp.stdout).strip()[-400:]}")
    cps = float(m.group(1))
    total = re.search(r"(\d+) requests in", cp.stdout)
    se = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", cp.stdout)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", cp.stdout)
    errors = {}
    if se:
        errors = dict(zip(["connect", "read", "write", "timeout"], map(int, se.groups())))
    if non2xx:
        errors["non2xx"] = int(non2xx.group(1))
    result = {"cps": cps, "requests": int(total.group(1)) if total else None,
              "errors": {k: v for k, v in errors.items() if v}}
    if not cps > 0:
        raise BenchError("wrk measured zero connections/s")
    if result["errors"]:
        err = BenchError(f"wrk socket errors {result['errors']} ({cps:.0f} conn/s, "
                         f"{result['requests']} requests)")
        err.partial = result
        raise err
    return result


def w_memory(env, target, P, rawdir, tag):
    if target == "direct":
        return None  # no balancer process to measure
    # A fresh process each time: freed memory that an earlier round (or workload) left resident
    # would otherwise be reused and hide the per-connection cost. One warm-up connection first, so
    # one-off lazy allocations (buffer pools, upstream structures) are not counted per connection.
    m = env.restart_balancer(target)
    port = env.ports[target]["redis"]
    n = P["memory_conns"]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"PING\r\n")
        if s.recv(64) != b"+PONG\r\n":
            raise BenchError("warm-up PING through the balancer got no +PONG")
    time.sleep(0.5)
    pids = process_tree(m.pid)
    before = rss_kib(pids)
    socks = []
    try:
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            socks.append(s)
            s.sendall(b"PING\r\n")
            buf = b""
            while not buf.endswith(b"\r\n"):
                chunk = s.recv(64)
                if not chunk:
                    raise BenchError(f"connection {i + 1} of {n} closed before its PING reply "
                                     f"(after {len(socks) - 1} held open)")
                buf += chunk
            if buf != b"+PONG\r\n":
                raise BenchError(f"connection {i + 1}: unexpected reply {buf[:80]!r}")
        time.sleep(0.5)
        pids = process_tree(m.pid)
        after = rss_kib(pids)
        # Still all open? (a balancer that dropped idle connections would show here)
        dropped = 0
        for s in socks:
            s.setblocking(False)
            try:
                if s.recv(1) == b"":
                    dropped += 1
            except BlockingIOError:
                pass
            except OSError:
                dropped += 1
        if dropped:
            raise BenchError(f"{dropped} of {n} idle connections were closed by the balancer while held")
    except OSError as e:
        raise BenchError(f"opening connection {len(socks) + 1} of {n}: {e}") from e
    finally:
        for s in socks:
            try:
                s.close()
            except OSError:
                pass
    time.sleep(0.3)
    save(rawdir, tag + ".txt", f"pids {pids}\nrss_before_kib {before}\nrss_after_kib {after}\nconns {n}\n")
    return {"kib_per_conn": (after - before) / n, "rss_before_kib": before, "rss_after_kib": after,
            "processes": len(pids)}


WORKLOAD_FUNCS = {"bulk": w_bulk, "rr": w_rr, "latency": w_latency, "connrate": w_connrate, "memory": w_memory}


def add_cpu_cost(w, r, before, after):
    """Adds the balancer's CPU per unit of work to a workload's result: CPU time its process
    tree used during the run (load generators and backends not counted) / the work done. No
    figure if the balancer was restarted, or the two samples came from different sources."""
    if w not in CPU_COST or before is None or after is None or before[0] != after[0]:
        return
    if before[2:] != after[2:]:
        return
    key, work_field, scale = CPU_COST[w]
    work = r.get(work_field)
    if work:
        r["cpu_s"] = after[1] - before[1]
        r["cpu_source"] = after[2]
        r[key] = r["cpu_s"] * scale / work


def save(rawdir, name, text):
    if rawdir:
        with open(os.path.join(rawdir, name), "w") as f:
            f.write(text)


# ---------------------------------------------------------------------------------------------
# Reporting

def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, unit):
    if v is None:
        return "—"
    if unit == "Gbit/s":
        return f"{v:.2f}"
    if unit == "ms":
        return f"{v:.3f}"
    if unit.startswith("CPU µs"):
        return f"{v:.1f}"
    if unit == "KiB/connection":
        return f"{v:.2f}"
    return f"{v:,.0f}"


def round_value(r, key):
    """One round's figure for `key`, or None when that round failed or lacks it."""
    if not isinstance(r, dict) or "error" in r:
        return None
    return r.get(key)


def summarize(results, workloads, targets):
    """results[workload][target] = list of per-round dicts or {"error": ...}."""
    rows = []
    for w in workloads:
        for key, label, unit, higher in METRICS[w]:
            row = {"workload": w, "metric": key, "label": label, "unit": unit, "higher_is_better": higher,
                   "median": {}, "ok_rounds": {}, "rounds": {}}
            for t in targets:
                per_round = results.get(w, {}).get(t, [])
                vals = [round_value(r, key) for r in per_round]
                row["median"][t] = med(vals)
                row["ok_rounds"][t] = sum(v is not None for v in vals)
                row["rounds"][t] = len(per_round)
            rows.append(row)
    return rows


def spread_table(report):
    targets = report["targets"]
    lines = ["| workload | " + " | ".join(targets) + " |", "|---|" + "---:|" * len(targets)]
    for w in report["workloads"]:
        for key, label, unit, _h in METRICS[w]:
            cells = []
            for t in targets:
                vals = [v for r in report["results"].get(w, {}).get(t, [])
                        if (v := round_value(r, key)) is not None]
                cells.append("—" if not vals else f"{fmt(min(vals), unit)} – {fmt(max(vals), unit)}")
            lines.append(f"| {label} ({unit}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_table(report, other="haproxy"):
    """Switchyard/`other` round by round. The two run back to back in every round, so a change of
    the machine's load between rounds cancels out of each round's ratio; the median of those
    ratios and how many rounds each side won say how settled a median ratio is."""
    res = report["results"]
    lines = ["| workload | median | min – max | Switchyard better in |", "|---|---:|---:|---:|"]
    for w in report["workloads"]:
        for key, label, _unit, higher in METRICS[w]:
            pairs = zip(res.get(w, {}).get("switchyard", []), res.get(w, {}).get(other, []))
            xs = [x for a, b in pairs if (x := ratio(round_value(a, key), round_value(b, key))) is not None]
            if not xs:
                continue
            better = sum((x > 1) if higher else (x < 1) for x in xs)
            tied = sum(x == 1 for x in xs)
            won = f"{better} of {len(xs)} rounds" + (f" ({tied} tied)" if tied else "")
            lines.append(f"| {label} | {statistics.median(xs):.2f} | {min(xs):.2f} – {max(xs):.2f} | {won} |")
    return "\n".join(lines) if len(lines) > 2 else None


def ratio(a, b):
    if a is None or b in (None, 0):
        return None
    return a / b


def markdown_table(rows, targets):
    cols = [t for t in targets]
    ratio_cols = [b for b in ("haproxy", "nginx") if b in targets and "switchyard" in targets]
    head = "| workload | unit | " + " | ".join(cols + [f"switchyard/{b}" for b in ratio_cols]) + " |"
    sep = "|---|---|" + "---:|" * (len(cols) + len(ratio_cols))
    lines = [head, sep]
    for r in rows:
        cells = []
        for t in cols:
            v = r["median"][t]
            cell = fmt(v, r["unit"])
            if t == "direct" and (r["workload"] == "memory" or r["metric"].startswith("cpu_")):
                cell = "n/a"
            elif r["rounds"][t] and r["ok_rounds"][t] < r["rounds"][t]:
                cell += f" ({r['ok_rounds'][t]}/{r['rounds'][t]} ok)"
            cells.append(cell)
        for b in ratio_cols:
            x = ratio(r["median"].get("switchyard"), r["median"].get(b))
            cells.append("—" if x is None else f"{x:.2f}")
        better = "higher is better" if r["higher_is_better"] else "lower is better"
        lines.append(f"| {r['label']} | {r['unit']} ({better}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Main

def parse_args(argv):
    ap = argparse.ArgumentParser(prog="bench/run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true",
                    help="CI check: Switchyard and direct only, tiny workloads; no RESULTS.md; exits non-zero on failure")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5; smoke 1)")
    ap.add_argument("--only", default=None, help=f"comma-separated subset of: {','.join(WORKLOADS)}")
    ap.add_argument("--balancers", default=None,
                    help=f"comma-separated subset of: {','.join(BALANCERS)} (default all; smoke: switchyard)")
    ap.add_argument("--no-direct", action="store_true", help="skip the no-balancer ceiling")
    ap.add_argument("--workers", default="1", help="Switchyard's [global] workers value (N or auto; default 1)")
    ap.add_argument("--seconds", type=float, default=None, help="duration of the iperf3 and wrk runs (default 5)")
    ap.add_argument("--rr-requests", type=int, default=None, help="redis GET requests, 50 clients (default 200000)")
    ap.add_argument("--latency-requests", type=int, default=None, help="redis GET requests, 1 client (default 100000)")
    ap.add_argument("--connrate-clients", type=int, default=50, help="wrk concurrent connections (default 50)")
    ap.add_argument("--memory-conns", type=int, default=None, help="idle connections held (default 4000)")
    ap.add_argument("--busy-poll", default=None, metavar="DURATION",
                    help="Switchyard's [global] busy_poll (e.g. 50us), and HAProxy's busy-polling "
                    "(default: neither; nginx has no such setting)")
    ap.add_argument("--haproxy-tuned", action="store_true",
                    help="HAProxy with `option splice-auto` and `option tcp-smart-connect` (both off by default), "
                    "the counterparts of Switchyard's default splice = auto and delayed handshake ACK")
    ap.add_argument("--splice", choices=["auto", "on", "off"], default=None,
                    help="Switchyard's splice value in every service (default: not set, the built-in default)")
    ap.add_argument("--switchyard", dest="switchyard_path", default=None,
                    help="use this switchyard binary instead of building it")
    ap.add_argument("--scratch-path", default=None, help="SwiftPM --scratch-path for the builds (default .build)")
    ap.add_argument("--package-path", default=REPO, help="the Switchyard package to build (default: this checkout)")
    ap.add_argument("--no-microbench", action="store_true", help="skip the scheduler micro-benchmark")
    ap.add_argument("--no-install", action="store_true", help="never run apt-get; fail if something is missing")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs) for inspection")
    ap.add_argument("--render", metavar="RESULTS_JSON", default=None,
                    help="only re-write RESULTS.md (to --output) from a results.json of an earlier run")
    ap.add_argument("--note", default=None, help="free text added to RESULTS.md (e.g. which commit was measured)")
    ap.add_argument("--output", default=os.path.join(RESULTS_DIR, "RESULTS.md"), help="report path (full mode)")
    args = ap.parse_args(argv)

    smoke = args.smoke
    args.switchyard_given = args.switchyard_path is not None
    args.rounds = args.rounds if args.rounds is not None else (1 if smoke else 5)
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    args.workloads = WORKLOADS if not args.only else [w.strip() for w in args.only.split(",") if w.strip()]
    for w in args.workloads:
        if w not in WORKLOADS:
            ap.error(f"unknown workload {w!r}; choose from {','.join(WORKLOADS)}")
    if args.balancers:
        bals = [b.strip() for b in args.balancers.split(",") if b.strip()]
    else:
        bals = ["switchyard"] if smoke else list(BALANCERS)
    for b in bals:
        if b not in BALANCERS:
            ap.error(f"unknown balancer {b!r}; choose from {','.join(BALANCERS)}")
    args.targets = ([] if args.no_direct else ["direct"]) + [b for b in BALANCERS if b in bals]
    if not args.targets:
        ap.error("nothing to measure")
    if not re.fullmatch(r"\d+|auto", args.workers):
        ap.error("--workers takes a number or auto")
    sec = args.seconds if args.seconds is not None else (1 if smoke else 5)
    args.P = {
        "bulk_seconds": max(1, int(round(sec))),
        "bulk_omit": 0 if smoke else 1,
        "connrate_seconds": max(1, int(round(sec))),
        "connrate_clients": args.connrate_clients,
        "rr_requests": args.rr_requests or (5000 if smoke else 200000),
        "latency_requests": args.latency_requests or (1000 if smoke else 100000),
        "memory_conns": args.memory_conns or (200 if smoke else 4000),
    }
    return args


def tool_commands(workloads, targets):
    need = set()
    if "bulk" in workloads:
        need.add("iperf3")
    if set(workloads) & {"rr", "latency", "memory"}:
        need |= {"redis-server", "redis-benchmark"}
    if "connrate" in workloads:
        need |= {"wrk", "nginx"}
    if "haproxy" in targets:
        need.add("haproxy")
    if "nginx" in targets:
        need.add("nginx")
    return sorted(need)


def source_description(args):
    if args.switchyard_given:
        return f"prebuilt binary {args.switchyard_path}"
    try:
        sha = run(["git", "-C", args.package_path, "rev-parse", "--short", "HEAD"], timeout=10)
        dirty = run(["git", "-C", args.package_path, "status", "--porcelain", "--untracked-files=no"], timeout=20)
        if sha.returncode == 0:
            state = "with uncommitted changes" if dirty.stdout.strip() else "clean"
            return f"built from git {sha.stdout.strip()} ({state})"
    except (OSError, BenchError):
        pass
    return f"built from {args.package_path} (not a git checkout)"


def versions(args):
    v = {}
    if args.switchyard_path:
        v["switchyard source"] = source_description(args)
        v["switchyard"] = first_line([args.switchyard_path, "--version"])
        try:
            with open(args.switchyard_path, "rb") as f:
                v["switchyard binary sha256"] = hashlib.sha256(f.read()).hexdigest()[:16]
        except OSError:
            pass
    v["haproxy"] = first_line(["haproxy", "-v"])
    v["nginx"] = first_line(["nginx", "-v"])
    v["iperf3"] = first_line(["iperf3", "--version"])
    v["redis-server"] = first_line(["redis-server", "--version"])
    v["redis-benchmark"] = first_line(["redis-benchmark", "--version"])
    v["wrk"] = first_line(["wrk", "-v"])
    v["swift"] = first_line(["swift", "--version"])
    return v


def main(argv):
    args = parse_args(argv)
    if args.render:
        with open(args.render) as f:
            report = json.load(f)
        if args.note:
            report["note"] = args.note
        rows = summarize(report["results"], report["workloads"], report["targets"])
        write_results_md(args, report, rows, report.get("microbench"), None)
        return 0
    # Explicit handlers (a shell may start us with SIGINT ignored, e.g. as a background job).
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    nofile = raise_nofile()
    P = args.P
    if "memory" in args.workloads and P["memory_conns"] + 200 > nofile:
        raise BenchError(f"--memory-conns {P['memory_conns']} needs more open files than the limit {nofile}")

    ensure_tools(tool_commands(args.workloads, args.targets), allow_install=not args.no_install,
                 nginx_balancer="nginx" in args.targets)

    scratch = args.scratch_path
    if "switchyard" in args.targets and not args.switchyard_path:
        args.switchyard_path = swift_build("switchyard", scratch, args.package_path)
    micro = None
    if not args.no_microbench and (args.smoke or not args.only):
        micro_bin = swift_build("switchyard-bench", scratch, args.package_path)
    else:
        micro_bin = None

    started = datetime.datetime.now(datetime.timezone.utc)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    # Tool outputs go to raw/ next to the report (bench/results/raw/ by default, not committed).
    rawdir = os.path.join(os.path.dirname(os.path.abspath(args.output)), "raw",
                          ("smoke-" if args.smoke else "") + stamp)
    os.makedirs(rawdir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="switchyard-bench-")
    log(f"temp dir {tmp}; raw output {rawdir}")

    results = {w: {t: [] for t in args.targets} for w in args.workloads}
    failures = []  # (round, workload, target, message)
    warmups = []  # (kind, function, parameters)
    ok = True
    env = Env(args, tmp)
    try:
        env.start_backends(set(args.workloads))
        for b in args.targets:
            if b != "direct":
                env.start_balancer(b)
                log(f"started {b} (pid {env.balancers[b].pid}) on {env.ports[b]}")
        log(f"backends: {env.backend_ports}")

        # Warm-up, so that round 1 does not pay for first-time costs (lazy allocations in the
        # balancer, page cache, the backends' first connections): a short pass of each kind of
        # workload through every target, results discarded (tool outputs kept in raw/ as
        # warmup-*). A failure is only logged; the measured runs report their own.
        if "bulk" in args.workloads:  # 1-second iperf3 run, nothing omitted
            warmups.append(("bulk", w_bulk, dict(P, bulk_seconds=1, bulk_omit=0)))
        if set(args.workloads) & {"rr", "latency", "memory"}:  # 2000 redis GETs from 10 clients
            warmups.append(("redis", lambda e, t, _p, d, tag: redis_benchmark(e, t, 10, 2000, 60, d, tag), P))
        if "connrate" in args.workloads:  # 1-second wrk, Connection: close, 10 connections
            warmups.append(("connrate", w_connrate,
                            dict(P, connrate_seconds=1, connrate_clients=min(10, P["connrate_clients"]))))
        for kind, func, wp in warmups:
            for t in args.targets:
                try:
                    func(env, t, wp, rawdir, f"warmup-{kind}-{t}")
                except BenchError as e:
                    log(f"warm-up ({kind}) through {t} failed: {e}")

        for rnd in range(1, args.rounds + 1):
            log(f"--- round {rnd}/{args.rounds}")
            # The order of the targets turns by one each round (direct, switchyard, haproxy, nginx;
            # then switchyard, haproxy, nginx, direct; …), so no balancer always runs right after
            # the same one (TIME_WAIT sockets left by a connection-rate run, a warm cache).
            shift = (rnd - 1) % len(args.targets)
            order = args.targets[shift:] + args.targets[:shift]
            for w in args.workloads:
                for t in order:
                    if t != "direct" and not env.balancers[t].alive():
                        m = env.balancers[t]
                        msg = f"{t} was not running at the start of this run (exit {m.proc.returncode}); restarted"
                        failures.append((rnd, w, t, (msg + "\n" + m.stderr_tail()).strip()))
                        ok = False
                        log(f"  ! {msg}")
                        env.restart_balancer(t)
                    env.check_backends()
                    env.pause_all_but(t if t != "direct" else None)
                    tag = f"r{rnd}-{w}-{t}"
                    t0 = time.time()
                    cpu_before = env.balancer_cpu(t)
                    try:
                        r = WORKLOAD_FUNCS[w](env, t, P, rawdir, tag)
                    except BenchError as e:
                        r = {"error": str(e)}
                        if getattr(e, "partial", None):
                            r.update(e.partial)
                    except (KeyError, ValueError, TypeError, OSError) as e:
                        r = {"error": f"unexpected {type(e).__name__}: {e}"}
                    if r is not None and "error" not in r:
                        add_cpu_cost(w, r, cpu_before, env.balancer_cpu(t))
                    if t != "direct" and not env.balancers[t].alive():
                        m = env.balancers[t]
                        msg = f"{t} exited (code {m.proc.returncode}) during {w}"
                        tail = m.stderr_tail().strip()
                        if tail:
                            msg += f" (stderr: {tail})"
                        r = {"error": msg + ("; " + r["error"] if r and "error" in r else "")}
                        env.restart_balancer(t)
                    if r is None:
                        continue  # not applicable (memory, direct)
                    results[w][t].append(r)
                    dt = time.time() - t0
                    if "error" in r:
                        ok = False
                        failures.append((rnd, w, t, r["error"]))
                        log(f"  FAIL {w:9s} {t:10s} {r['error']}")
                    else:
                        desc = ", ".join(f"{k}={fmt(r.get(k), u)} {u}" for k, _l, u, _h in METRICS[w]
                                         if k in r)
                        log(f"  ok   {w:9s} {t:10s} {desc}  ({dt:.1f}s)")
        if micro_bin:
            log("--- scheduler micro-benchmark")
            cp = run([micro_bin] + (["--quick"] if args.smoke else []), timeout=600)
            if cp.returncode != 0:
                ok = False
                failures.append((0, "microbench", "switchyard-bench", f"exit {cp.returncode}: {cp.stderr[-500:]}"))
            micro = cp.stdout.strip()
            log(micro)
            save(rawdir, "microbench.txt", micro)
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); stopping everything")
        stop_all()
        if args.keep_tmp:
            log(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        return 130
    except BenchError as e:
        log(f"error: {e}")
        stop_all()
        log(f"logs kept in {tmp}")
        if args.smoke:
            print("0 passed, 1 failed")
        return 1
    finally:
        stop_all()
    finished = datetime.datetime.now(datetime.timezone.utc)

    report = {
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "mode": "smoke" if args.smoke else "full",
        "rounds": args.rounds,
        "workers": args.workers,
        "splice": args.splice,
        "busy_poll": args.busy_poll,
        "haproxy_tuned": args.haproxy_tuned,
        "warmups": [kind for kind, _f, _p in warmups],
        "targets": args.targets,
        "workloads": args.workloads,
        "parameters": P,
        "machine": machine_info(),
        "versions": versions(args),
        "results": results,
        "failures": [{"round": a, "workload": b, "target": c, "message": d} for a, b, c, d in failures],
        "note": args.note,
        "command": "bench/run " + " ".join(argv),
        "microbench": micro,
    }
    with open(os.path.join(rawdir, "results.json"), "w") as f:
        json.dump(report, f, indent=1)

    rows = summarize(results, args.workloads, args.targets)
    log("")
    log(markdown_table(rows, args.targets))

    if args.smoke:
        passed = failed = 0
        for w in args.workloads:
            for t in args.targets:
                runs = results[w][t]
                if w == "memory" and t == "direct":
                    continue
                good = (bool(runs) and all("error" not in r for r in runs)
                        and not any(f[1] == w and f[2] == t for f in failures))
                if good and t != "direct" and w in CPU_COST:
                    # The balancer's CPU cost was measured (>= 0; 0 is possible only with the
                    # clock-tick fallback, see cpu_seconds).
                    good = all(r.get(CPU_COST[w][0], -1) >= 0 for r in runs)
                passed += good
                failed += not good
                log(f"{'PASS' if good else 'FAIL'} {w} via {t}")
        if micro_bin:
            good = micro is not None and "checksum" in micro and not any(f[1] == "microbench" for f in failures)
            passed += good
            failed += not good
            log(f"{'PASS' if good else 'FAIL'} scheduler micro-benchmark")
        for rnd, w, t, msg in failures:
            log(f"failure: {w} via {t}: {msg}")
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"{passed} passed, {failed} failed", flush=True)
        return 0 if failed == 0 else 1

    write_results_md(args, report, rows, micro, rawdir)
    if not args.keep_tmp and ok:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        log(f"logs kept in {tmp}")
    return 0 if ok else 1


def write_results_md(args, report, rows, micro, rawdir):
    out = args.output
    os.makedirs(os.path.dirname(out), exist_ok=True)
    P = report["parameters"]
    mi = report["machine"]
    v = report["versions"]
    lines = [
        "# Switchyard benchmark results",
        "",
        f"Generated by `bench/run` on {report['started'][:10]} ({report['started']} – {report['finished']} UTC).",
        "",
        "## Machine",
        "",
        f"- CPU: {mi['cpu_model']}, {mi['cores']} cores",
        f"- Kernel: {mi['kernel']}",
        f"- Rounds: {report['rounds']} (interleaved: every workload runs through "
        f"{', '.join(report['targets'])} in turn, round after round; the table shows medians over rounds)",
        f"- Switchyard `workers = {report['workers']}`"
        + (f", `splice = {report['splice']}`" if report.get("splice") else "")
        + (f", `busy_poll = {report['busy_poll']}`" if report.get("busy_poll") else "")
        + "; HAProxy `nbthread 1`" + (", `busy-polling`" if report.get("busy_poll") else "")
        + (", `option splice-auto`, `option tcp-smart-connect`" if report.get("haproxy_tuned") else "")
        + "; nginx `worker_processes 1`.",
        "- **The load generators (iperf3, redis-benchmark, wrk, the Python memory client), the backends and "
        f"the balancer all share the machine's {mi['cores']} cores**: the absolute numbers are far below what "
        "these balancers do with the load generated elsewhere; compare the ratios.",
    ]
    if report.get("note"):
        lines += [f"- Note: {report['note']}"]
    lines += [
        "",
        "## Versions",
        "",
    ]
    for k in ("switchyard", "switchyard source", "switchyard binary sha256", "haproxy", "nginx", "iperf3", "redis-server", "redis-benchmark", "wrk", "swift"):
        if k in v:
            lines.append(f"- {k}: `{v[k]}`")
    lines += [
        "",
        "## Results (medians)",
        "",
        markdown_table(rows, report["targets"]),
        "",
        "Ratios are Switchyard's median divided by the other balancer's: above 1 is better for throughput "
        "and rates, below 1 is better for latency, memory and the CPU cost rows. `direct` is the client talking to the backend "
        "with no balancer (the ceiling); memory and CPU have no balancer process there.",
        "",
        "Spread over the rounds (min – max):",
        "",
        spread_table(report),
        "",
    ]
    paired = paired_table(report) if {"switchyard", "haproxy"} <= set(report["targets"]) else None
    if paired:
        lines += [
            "Switchyard/HAProxy round by round (the two ran back to back in each round, so a change of the "
            "machine's load between rounds cancels out of each ratio; a latency tie is the same bucket of "
            "redis-benchmark's histogram):",
            "",
            paired,
            "",
        ]
    lines += [
        "## Workloads",
        "",
        f"- **bulk**: `iperf3 -c … -t {P['bulk_seconds']} -O {P['bulk_omit']}`, one stream, to an iperf3 server "
        "(its control and data connections both go through the balancer to the one backend); received Gbit/s.",
        f"- **request/response**: `redis-benchmark -c 50 -n {P['rr_requests']} -t get` to one redis-server; requests/s.",
        f"- **latency**: `redis-benchmark -c 1 -n {P['latency_requests']} -t get`; p50 and p99 from its `--csv` output.",
        f"- **connection rate**: `wrk -t1 -c {P['connrate_clients']} -d {P['connrate_seconds']}s -H 'Connection: close'` "
        "to two nginx HTTP backends (one nginx instance, `worker_processes 1`, a 3-byte static response on two "
        "ports), balanced least-connections; one TCP connection per request, so requests/s = connections/s. "
        "Any socket error or non-2xx response fails the run.",
        f"- **memory**: {P['memory_conns']} client connections to the redis service, each after one PING/PONG round "
        "trip, held open; (RSS with them open − RSS before) / connections, VmRSS of the balancer's process tree "
        "(HAProxy: its process; nginx: master + worker; Switchyard: its process).",
        "- **balancer CPU** (the cost rows): user + system CPU time of the balancer's process tree during the "
        f"workload ({cpu_method_text(report)}; nginx master + worker), divided by the work done: bytes iperf3 "
        "sent (the omitted first second included), redis-benchmark's requests, wrk's completed connections. "
        "Kernel time spent in the balancer's system calls is included: on loopback that covers the receiving "
        "side's TCP processing of every segment the balancer sends. Load generators and backends are not counted.",
    ] + warmup_text(report) + [
        "",
        "Balancer settings: least-connections everywhere; connect timeout 2 s; idle timeout 1 h (Switchyard "
        "`idle_timeout = 1h`, HAProxy `timeout client/server 1h`, nginx `proxy_timeout 1h`); no active health "
        "checks (Switchyard `check = none`; HAProxy's servers have no `check`, nginx OSS has none); no per-"
        "connection log line (Switchyard `log_level = warning`; HAProxy no `log`; nginx stream no `access_log`); "
        "connection cap 9000 (Switchyard `max_connections`, HAProxy `maxconn`; both fit the 20000 open-files "
        "limit; nginx `worker_connections 20000`). Otherwise each balancer's defaults — which differ: "
        "Switchyard splices bulk connections (`splice = auto`) and lets the handshake's last ACK ride on the "
        "first bytes sent to a server; HAProxy has both (`option splice-auto`, `option tcp-smart-connect`) "
        + ("and they are on in this run (`--haproxy-tuned`)." if report.get("haproxy_tuned") else
           "off by default, and off here (`bench/run --haproxy-tuned` turns them on)."),
    ]
    if report["failures"]:
        lines += ["", "## Failures", ""]
        for f in report["failures"]:
            msg = f["message"].strip().replace("\n", " / ")
            lines.append(f"- round {f['round']}, {f['workload']} via {f['target']}: {msg}")
    if micro:
        lines += ["", "## Scheduler micro-benchmark", "",
                  "`swift run -c release switchyard-bench` (the pure `Balancer`, no I/O):", "", micro]
    json_name = results_json_name(out)
    if os.path.exists(os.path.join(os.path.dirname(out), "PROFILE.md")):
        lines += ["", "Where a connection and a byte go, what was removed and what was tried: "
                  "[PROFILE.md](PROFILE.md)."]
    lines += ["", "## Per-round numbers", "",
              f"Command: `{report.get('command', 'bench/run')}`.", "",
              f"`{json_name}` next to this file (the same run: parameters, versions, every round's numbers and "
              "any errors); tool outputs in `bench/results/raw/` (not committed).", ""]
    with open(out, "w") as f:
        f.write("\n".join(lines))
    with open(os.path.join(os.path.dirname(out), json_name), "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    log(f"wrote {os.path.relpath(out, REPO)} and {json_name}")


def warmup_text(report):
    """The RESULTS.md line on the warm-up pass ([] if there was none)."""
    # A results.json from before the bulk and connrate warm-ups has no "warmups": redis only.
    kinds = report.get("warmups", ["redis"] if {"rr", "latency", "memory"} & set(report["workloads"]) else [])
    texts = [text for kind, text in (
        ("bulk", "a 1-second iperf3 run (bulk)"),
        ("redis", "2000 redis GETs from 10 clients (request/response, latency, memory)"),
        ("connrate", "a 1-second wrk run with 10 connections and `Connection: close` (connection rate)"))
        if kind in kinds]
    if not texts:
        return []
    return ["- **warm-up**: before round 1, a short pass through every target, results discarded: "
            + "; ".join(texts) + "."]


def cpu_method_text(report):
    """How the balancer CPU of this report's results was measured (see cpu_seconds)."""
    sources = {r.get("cpu_source", "ticks") for runs in report["results"].values() for rs in runs.values()
               for r in rs if "cpu_s" in r}
    if sources <= {"cpuclock"}:
        return ("in ns: each process's CPU-time clock, `clock_getcpuclockid` + `clock_gettime`, all its threads, "
                "exited ones included")
    if sources == {"ticks"}:  # a results.json from before the ns accounting (--render)
        return "utime + stime of `/proc/PID/stat`, all threads, in 10 ms clock ticks"
    return ("in ns: each process's CPU-time clock, `clock_getcpuclockid` + `clock_gettime`, all its threads; for "
            "some runs it was unavailable and the larger of the live threads' `/proc/PID/task/*/schedstat` sum "
            "and `/proc/PID/stat`'s utime + stime ticks was used")


def results_json_name(report_path):
    """The JSON written next to a report: RESULTS.md -> results.json, RESULTS-x.md -> results-x.json,
    other.md -> results-other.json, so that a side run never overwrites the main run's numbers."""
    stem = os.path.splitext(os.path.basename(report_path))[0]
    if stem.upper().startswith("RESULTS"):
        suffix = stem[len("RESULTS"):]
    else:
        suffix = "-" + stem
    return "results" + suffix.lower() + ".json"


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as e:
        stop_all()
        print(f"error: {e}", file=sys.stderr)
        if "--smoke" in sys.argv:
            print("0 passed, 1 failed")
        sys.exit(1)
    except KeyboardInterrupt:
        stop_all()
        sys.exit(130)
    finally:
        stop_all()
