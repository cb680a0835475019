#!/usr/bin/env python3
"""make bench, host part: the iptables mode through the kproxy binary, in
fresh network namespaces, on both iptables backends.

For every size and backend, REPS times each:
  once      `kproxy --once --proxy-mode iptables` on an empty namespace
            (wall time, kproxy's own peak RSS from /proc/PID/status VmHWM)
  floor     iptables-restore alone of the same restore input (the one
            kproxy writes: on nf_tables, split into transactions), into an
            empty namespace
  one_tx    nf_tables only, sizes up to 2,000: the same rules as a single
            transaction (what an unsplit writer would cost)
  partial   the daemon on --manifests: one endpoint added by rewriting one
            file, from the write to the end of the sync that programs it
            (from kproxy's own "sync done" log line)
  daemon_rss  the daemon's peak RSS after its first sync and that change

Prints one `RESULT key value` line per measurement (seconds, MiB) for
scripts/bench-report.py.
"""
import json, os, re, shutil, subprocess, sys, tempfile, threading, time
from datetime import datetime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KPROXY = os.path.join(ROOT, "target/release/kproxy")
REPS = int(os.environ.get("REPS", "3"))
SIZES = [int(s) for s in os.environ.get("BENCH_IPTABLES_SIZES", "1000,10000").split(",")]
ENDPOINTS = int(os.environ.get("BENCH_ENDPOINTS", "10"))
BACKENDS = os.environ.get("BENCH_BACKENDS", "nft,legacy").split(",")
NS = "kproxy-bench"


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True, **kw).stdout


def fresh_ns(backend):
    subprocess.run(f"ip netns del {NS}", shell=True, capture_output=True)
    sh(f"ip netns add {NS}")
    sh(f"ip netns exec {NS} ip link set lo up")
    # kubelet's hint in the backend's mangle table: kproxy (as upstream's
    # iptables-wrapper) then picks that backend.
    sh(f"ip netns exec {NS} iptables-{backend} -t mangle -N KUBE-IPTABLES-HINT")


def peak_rss_mib(pid, stop):
    """Poll VmHWM (the process's own high-water mark) until it exits."""
    best = 0
    while not stop.is_set():
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        best = max(best, int(line.split()[1]))
        except OSError:
            break
        time.sleep(0.02)
    return best / 1024


def run_measured(args, **kw):
    """Run kproxy in the namespace; return (wall seconds, peak RSS MiB, stdout)."""
    t0 = time.monotonic()
    p = subprocess.Popen(["ip", "netns", "exec", NS, KPROXY] + args, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, **kw)
    stop = threading.Event()
    box = {}
    # `ip netns exec` execs kproxy in place: same pid.
    t = threading.Thread(target=lambda: box.setdefault("rss", peak_rss_mib(p.pid, stop)))
    t.start()
    out, err = p.communicate()
    wall = time.monotonic() - t0
    stop.set(); t.join()
    if p.returncode != 0:
        sys.exit(f"kproxy {args}: exit {p.returncode}\n{err[-2000:]}")
    return wall, box.get("rss", 0.0), out


def common(d):
    return ["--proxy-mode", "iptables", "--manifests", d, "--hostname-override", "node-1",
            "--conntrack-max-per-core=0"]


def restore_text(dry):
    """The IPv4 restore input from --dry-run output."""
    v4 = dry.split("# IPv6:")[0]
    return "\n".join(l for l in v4.splitlines() if not l.startswith("#")) + "\n"


def one_transaction(text):
    before, nat = text.split("*nat\n", 1)
    return before + "*nat\n" + nat.replace("COMMIT\n*nat\n", "")


def timed_restore(backend, text):
    with tempfile.NamedTemporaryFile("w", delete=False) as f:
        f.write(text)
    t0 = time.monotonic()
    sh(f"ip netns exec {NS} iptables-{backend}-restore --noflush -w < {f.name}")
    dt = time.monotonic() - t0
    os.unlink(f.name)
    return dt


def partial(backend, base, n):
    """Daemon: first sync, then one endpoint added; seconds from the write
    to the end of the sync that wrote it, and the daemon's peak RSS."""
    work = tempfile.mkdtemp(prefix="kproxy-bench-")
    d = os.path.join(work, "m")
    shutil.copytree(base, d)
    fresh_ns(backend)
    p = subprocess.Popen(["ip", "netns", "exec", NS, KPROXY] + common(d) + ["-v", "2",
                         "--iptables-min-sync-period", "0s"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    lines = []
    done = threading.Event()

    def reader():
        for line in p.stderr:
            lines.append(line)
            if "sync done" in line:
                done.set()
    threading.Thread(target=reader, daemon=True).start()
    deadline = time.time() + 900
    while not done.wait(1):
        if p.poll() is not None or time.time() > deadline:
            sys.exit("daemon: no first sync\n" + "".join(lines[-20:]))
    first_syncs = sum("sync done" in l for l in lines)
    # One more endpoint for the first Service's slice (gen-cluster.py's file 0).
    f = os.path.join(d, "bench-00000.json")
    doc = json.load(open(f))
    slice_ = next(o for o in doc["items"] if o["kind"] == "EndpointSlice")
    slice_["endpoints"].append({"addresses": ["10.255.255.254"], "conditions": {"ready": True},
                                "nodeName": "node-2"})
    time.sleep(1)
    t_write = time.time()
    tmp = f + ".tmp"
    json.dump(doc, open(tmp, "w"))
    os.rename(tmp, os.path.join(d, "bench-00000.json"))
    latency = None
    while time.time() < deadline and latency is None:
        time.sleep(0.05)
        syncs = [l for l in lines if "sync done" in l]
        for l in syncs[first_syncs:]:
            ts = datetime.fromisoformat(l.split()[0].replace("Z", "+00:00")).timestamp()
            if ts >= t_write:
                latency = ts - t_write
                break
    rss = 0
    for line in open(f"/proc/{p.pid}/status"):
        if line.startswith("VmHWM:"):
            rss = int(line.split()[1]) / 1024
    p.terminate(); p.wait()
    shutil.rmtree(work)
    if latency is None:
        sys.exit("daemon: the change was never synced\n" + "".join(lines[-20:]))
    return latency, rss


def main():
    gen = os.path.join(ROOT, "scripts/gen-cluster.py")
    cache = os.path.join(ROOT, "target/bench/clusters")
    for n in SIZES:
        base = os.path.join(cache, f"{n}x{ENDPOINTS}")
        if not os.path.isdir(base):
            sh(f"python3 {gen} --services {n} --endpoints {ENDPOINTS} --out {base}")
        for backend in BACKENDS:
            key = f"iptables.{backend}.{n}"
            fresh_ns(backend)
            _, _, dry = run_measured(common(base) + ["--dry-run"])
            text = restore_text(dry)
            for _ in range(REPS):
                fresh_ns(backend)
                wall, rss, _ = run_measured(common(base) + ["--once"])
                print(f"RESULT {key}.once {wall:.3f}", flush=True)
                print(f"RESULT {key}.once_rss {rss:.1f}", flush=True)
                fresh_ns(backend)
                print(f"RESULT {key}.floor {timed_restore(backend, text):.3f}", flush=True)
                if backend == "nft" and n <= 2000:
                    fresh_ns(backend)
                    dt = timed_restore(backend, one_transaction(text))
                    print(f"RESULT {key}.one_tx {dt:.3f}", flush=True)
                lat, drss = partial(backend, base, n)
                print(f"RESULT {key}.partial {lat:.3f}", flush=True)
                print(f"RESULT {key}.daemon_rss {drss:.1f}", flush=True)
    subprocess.run(f"ip netns del {NS}", shell=True, capture_output=True)


if __name__ == "__main__":
    main()
