#!/usr/bin/env python3
"""Interleaved comparison of Switchyard variants (splice modes, or builds) on bench.py's workloads.

bench/run measures one Switchyard configuration per run; on a shared, noisy machine two runs made
minutes apart are hard to compare. This runs several Switchyard instances side by side (plus
HAProxy and the direct ceiling) and interleaves them the same way bench/run interleaves balancers:
every workload through every target in turn, round after round. It reports medians, each
variant's ratio to the first one and to HAProxy.

    python3 bench/splice_compare.py --switchyard .build-splice/release/switchyard \\
        --only bulk,rr,latency --rounds 5 off on auto
    # a variant is MODE or LABEL=MODE or LABEL=MODE@BINARY (a different build)

Writes the table to stdout and, with --json PATH, every round's numbers.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def parse_variant(text, default_binary):
    label, _, rest = text.partition("=") if "=" in text else (text, "", text)
    mode, _, binary = rest.partition("@")
    if mode not in ("auto", "on", "off"):
        raise SystemExit(f"bad variant {text!r}: the mode must be auto, on or off")
    return label, mode, binary or default_binary


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="+", help="MODE, LABEL=MODE or LABEL=MODE@BINARY")
    ap.add_argument("--switchyard", required=True, help="the switchyard binary (for variants without @BINARY)")
    ap.add_argument("--only", default="bulk,rr,latency")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-haproxy", action="store_true")
    ap.add_argument("--json", default=None, help="write every round's numbers here")
    ap.add_argument("--seconds", type=float, default=None)
    opts = ap.parse_args(argv)
    variants = [parse_variant(v, opts.switchyard) for v in opts.variants]

    bargv = ["--only", opts.only, "--rounds", str(opts.rounds), "--switchyard", opts.switchyard,
             "--no-install", "--no-microbench", "--balancers", "switchyard" if opts.no_haproxy else "switchyard,haproxy"]
    if opts.seconds:
        bargv += ["--seconds", str(opts.seconds)]
    args = bench.parse_args(bargv)
    bench.raise_nofile()
    for signum in (bench.signal.SIGINT, bench.signal.SIGTERM):
        bench.signal.signal(signum, bench.on_signal)
    tmp = tempfile.mkdtemp(prefix="switchyard-splice-compare-")
    env = bench.Env(args, tmp)
    targets = ["direct"] + [label for label, _, _ in variants] + ([] if opts.no_haproxy else ["haproxy"])
    results = {w: {t: [] for t in targets} for w in args.workloads}
    try:
        env.start_backends(set(args.workloads))
        for label, mode, binary in variants:
            args.splice, args.switchyard_path = mode, binary
            env.start_balancer("switchyard")
            env.balancers[label] = env.balancers.pop("switchyard")
            env.ports[label] = env.ports.pop("switchyard")
            bench.log(f"started {label} (splice = {mode}, {binary}) on {env.ports[label]}")
        if not opts.no_haproxy:
            env.start_balancer("haproxy")
        if set(args.workloads) & {"rr", "latency"}:
            for t in targets:
                bench.redis_benchmark(env, t, 10, 2000, 60, None, "warmup")
        for rnd in range(1, opts.rounds + 1):
            bench.log(f"--- round {rnd}/{opts.rounds}")
            for w in args.workloads:
                for t in targets:
                    if t != "direct" and not env.balancers[t].alive():
                        raise bench.BenchError(f"{t} exited: {env.balancers[t].stderr_tail()}")
                    cpu0 = env.balancer_cpu(t)
                    try:
                        r = bench.WORKLOAD_FUNCS[w](env, t, args.P, None, f"r{rnd}-{w}-{t}")
                    except bench.BenchError as e:
                        r = {"error": str(e)}
                    if r is None:
                        continue
                    if "error" not in r:
                        bench.add_cpu_cost(w, r, cpu0, env.balancer_cpu(t))
                    results[w][t].append(r)
                    desc = r.get("error") or ", ".join(f"{k}={bench.fmt(r[k], u)}" for k, _l, u, _h in bench.METRICS[w]
                                                       if k in r)
                    bench.log(f"  {w:8s} {t:12s} {desc}")
    finally:
        bench.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)

    base = variants[0][0]
    lines = ["| workload | " + " | ".join(targets) + " | " + " | ".join(
        [f"{l}/{base}" for l, _, _ in variants[1:]] + ([] if opts.no_haproxy else [f"{l}/haproxy" for l, _, _ in variants])) + " |"]
    lines.append("|---|" + "---:|" * (len(lines[0].split("|")) - 3))
    for w in args.workloads:
        for key, label, unit, _higher in bench.METRICS[w]:
            med = {t: bench.med([r.get(key) for r in results[w][t] if "error" not in r]) for t in targets}
            cells = [bench.fmt(med[t], unit) for t in targets]
            ratios = [bench.ratio(med[l], med[base]) for l, _, _ in variants[1:]]
            if not opts.no_haproxy:
                ratios += [bench.ratio(med[l], med["haproxy"]) for l, _, _ in variants]
            cells += ["—" if x is None else f"{x:.2f}" for x in ratios]
            lines.append(f"| {label} ({unit}) | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump({"variants": variants, "rounds": opts.rounds, "results": results,
                       "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, f, indent=1)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except (bench.BenchError, KeyboardInterrupt) as e:
        bench.stop_all()
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
