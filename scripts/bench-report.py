#!/usr/bin/env python3
"""make bench, last step: `RESULT key value` lines (from scripts/bench.sh's
parts) → medians, a table on stdout and in bench/results.md, and plots
bench/sync-time.png and bench/rss.png.

Keys: iptables.<backend>.<N>.<what>, ipvs.<N>.<what>, plan.<N>.<what>,
upstream.<mode>.<N>.<what> (with BASELINE). Times in seconds, RSS in MiB.
"""
import collections, os, statistics, sys

results = collections.defaultdict(list)
for path in sys.argv[1:-1]:
    for line in open(path):
        parts = line.split()
        if len(parts) == 3 and parts[0] == "RESULT":
            results[parts[1]].append(float(parts[2]))
out_dir = sys.argv[-1]
med = {k: statistics.median(v) for k, v in results.items()}
runs = {k: len(v) for k, v in results.items()}


def get(key):
    return med.get(key)


def fmt(v, unit="s"):
    if v is None:
        return "—"
    return f"{v:.2f} {unit}" if unit == "s" else f"{v:.0f} {unit}"


def ratio(a, b):
    return f"{a / b:.2f}x" if a is not None and b else "—"


def sizes(prefix):
    return sorted({int(k.split(".")[-2]) for k in med if k.startswith(prefix)})


lines = []
machine = os.environ.get("BENCH_MACHINE", "")
lines.append("# kproxy benchmark results\n")
if machine:
    lines.append(machine + "\n")
lines.append("Medians of the runs made in one `make bench`; ratios are taken within that run. "
             "Times in seconds, RSS is kproxy's own peak (VmHWM).\n")

lines.append("## iptables mode (host, fresh network namespace, through the binary)\n")
lines.append("| backend | Services × 10 | `--once` | restore alone (floor) | ratio | one transaction | "
             "one endpoint (daemon) | peak RSS `--once` | peak RSS daemon |")
lines.append("|---|---|---|---|---|---|---|---|---|")
for backend in ("nft", "legacy"):
    for n in sizes(f"iptables.{backend}."):
        k = f"iptables.{backend}.{n}"
        lines.append(f"| {backend} | {n:,} | {fmt(get(k + '.once'))} | {fmt(get(k + '.floor'))} | "
                     f"{ratio(get(k + '.once'), get(k + '.floor'))} | {fmt(get(k + '.one_tx'))} | "
                     f"{fmt(get(k + '.partial'))} | {fmt(get(k + '.once_rss'), 'MiB')} | "
                     f"{fmt(get(k + '.daemon_rss'), 'MiB')} |")
lines.append("")
lines.append("`restore alone` is `iptables-restore --noflush` of kproxy's own input into an empty "
             "namespace; on nf_tables that input is split into transactions "
             "(src/netfilter/staged.rs), `one transaction` is the same rules unsplit. "
             "`one endpoint` is from rewriting the manifest file to the end of the sync that "
             "programs it.\n")

if any(k.startswith("ipvs.") for k in med):
    lines.append("## IPVS mode (in the VM: QEMU, TCG emulation)\n")
    lines.append("| Services × 10 | first `--once` sync | kernel floor | ratio | `--once` wall | "
                 "+1 endpoint sync (ops) | peak RSS |")
    lines.append("|---|---|---|---|---|---|---|")
    for n in sizes("ipvs."):
        k = f"ipvs.{n}"
        ops = get(k + ".one_endpoint_ops")
        lines.append(f"| {n:,} | {fmt(get(k + '.first'))} | {fmt(get(k + '.floor'))} | "
                     f"{ratio(get(k + '.first'), get(k + '.floor'))} | {fmt(get(k + '.first_wall'))} | "
                     f"{fmt(get(k + '.one_endpoint'))} ({'—' if ops is None else int(ops)}) | "
                     f"{fmt(get(k + '.rss'), 'MiB')} |")
    lines.append("")

if any(k.startswith("plan.") for k in med):
    lines.append("## Pure stages on the host (parse, convert, plan + diff on in-memory twins)\n")
    lines.append("| Services × 10 | parse | convert | first sync (twin) | one-endpoint sync (twin) |")
    lines.append("|---|---|---|---|---|")
    for n in sizes("plan."):
        k = f"plan.{n}"
        lines.append(f"| {n:,} | {fmt(get(k + '.parse'))} | {fmt(get(k + '.convert'))} | "
                     f"{fmt(get(k + '.first'))} | {fmt(get(k + '.one_endpoint'))} |")
    lines.append("")

if any(k.startswith("upstream.") for k in med):
    lines.append("## Upstream kube-proxy on the same clusters (BASELINE)\n")
    for k in sorted(k for k in med if k.startswith("upstream.")):
        lines.append(f"- {k}: {med[k]:.2f}")
    lines.append("")

lines.append("![sync time](sync-time.png)\n\n![peak RSS](rss.png)\n")
text = "\n".join(lines)
os.makedirs(out_dir, exist_ok=True)
open(os.path.join(out_dir, "results.md"), "w").write(text)
print(text)

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("(matplotlib missing: no plots)")
    sys.exit(0)


def series(prefix, what):
    xs = [n for n in sizes(prefix) if get(f"{prefix}{n}.{what}") is not None]
    return xs, [get(f"{prefix}{n}.{what}") for n in xs]


for name, title, unit, lines_spec in [
    ("sync-time.png", "Full sync time against cluster size", "seconds", [
        ("iptables.nft.", "once", "kproxy iptables, nf_tables", "-o"),
        ("iptables.nft.", "floor", "floor: iptables-nft-restore alone", ":o"),
        ("iptables.legacy.", "once", "kproxy iptables, legacy", "-s"),
        ("iptables.legacy.", "floor", "floor: iptables-legacy-restore alone", ":s"),
        ("ipvs.", "first", "kproxy IPVS (VM)", "-^"),
        ("ipvs.", "floor", "floor: IPVS netlink alone (VM)", ":^"),
    ]),
    ("rss.png", "Peak RSS against cluster size", "MiB", [
        ("iptables.nft.", "once_rss", "kproxy iptables --once, nf_tables", "-o"),
        ("iptables.nft.", "daemon_rss", "kproxy iptables daemon, nf_tables", "--o"),
        ("iptables.legacy.", "once_rss", "kproxy iptables --once, legacy", "-s"),
        ("ipvs.", "rss", "kproxy IPVS --once (VM)", "-^"),
    ]),
]:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for prefix, what, label, style in lines_spec:
        xs, ys = series(prefix, what)
        if xs:
            ax.plot(xs, ys, style, label=label)
    ax.set_xscale("log"); ax.set_yscale("log")
    ax.set_xlabel("Services (10 endpoints each)"); ax.set_ylabel(unit); ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3); ax.legend(fontsize=8)
    fig.tight_layout(); fig.savefig(os.path.join(out_dir, name), dpi=110); plt.close(fig)
print(f"wrote {out_dir}/results.md, sync-time.png, rss.png")
