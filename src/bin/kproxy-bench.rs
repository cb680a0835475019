//! Benchmark helpers (used by scripts/bench*.sh; not installed on nodes).
//!
//!   kproxy-bench floor N M          apply N services × M real servers with the
//!                                   netlink client alone: the kernel floor
//!   kproxy-bench ipvsadm-rules N M  the same objects as `ipvsadm -R` input
//!   kproxy-bench plan N M           convert + plan + diff on in-memory twins
//!
//! Addresses follow scripts/gen-cluster.py, so all three describe exactly
//! what `kproxy --once` programs for that generator's output.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use kproxy::cluster::Protocol;
use kproxy::kernel::ipvs::netlink::IpvsNetlink;
use kproxy::kernel::ipvs::{
    DestKey, ForwardMethod, Ipvs, IpvsOp, RealServer, ServiceKey, VirtualServer,
};

fn cluster_ip(i: usize) -> IpAddr {
    let n = i + 1;
    IpAddr::V4(Ipv4Addr::new(
        10,
        (96 + n / 65536) as u8,
        ((n / 256) % 256) as u8,
        (n % 256) as u8,
    ))
}

fn pod_ip(i: usize, j: usize, m: usize) -> IpAddr {
    let n = i * m + j + 1;
    IpAddr::V4(Ipv4Addr::new(
        10,
        (128 + n / 65536) as u8,
        ((n / 256) % 256) as u8,
        (n % 256) as u8,
    ))
}

fn ops(n: usize, m: usize) -> Vec<IpvsOp> {
    let mut v = Vec::with_capacity(n * (m + 1));
    for i in 0..n {
        let key = ServiceKey {
            addr: cluster_ip(i),
            protocol: Protocol::Tcp,
            port: 80,
        };
        v.push(IpvsOp::AddService(VirtualServer {
            key,
            scheduler: "rr".into(),
            persistence: None,
            sched_flags: 0,
        }));
        for j in 0..m {
            let dk = DestKey {
                addr: pod_ip(i, j, m),
                port: 8080,
            };
            v.push(IpvsOp::AddDest(
                key,
                RealServer {
                    key: dk,
                    weight: 1,
                    forward: ForwardMethod::Masq,
                },
            ));
        }
    }
    v
}

fn usage() -> ! {
    eprintln!("usage: kproxy-bench floor|ipvsadm-rules|plan SERVICES ENDPOINTS");
    std::process::exit(2)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        usage();
    }
    let n: usize = args[2].parse()?;
    let m: usize = args[3].parse()?;
    match args[1].as_str() {
        "floor" => {
            let all = ops(n, m);
            let t0 = Instant::now();
            let mut c = IpvsNetlink::connect()?;
            let results = c.apply(&all);
            let secs = t0.elapsed().as_secs_f64();
            let failed = results.iter().filter(|r| r.is_err()).count();
            if failed > 0 {
                anyhow::bail!("{failed} of {} operations failed", all.len());
            }
            println!("floor {} messages {:.3}s", all.len(), secs);
        }
        "ipvsadm-rules" => {
            use std::io::Write;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for op in ops(n, m) {
                match op {
                    IpvsOp::AddService(vs) => {
                        writeln!(out, "-A -t {}:{} -s rr", vs.key.addr, vs.key.port)?
                    }
                    IpvsOp::AddDest(k, rs) => writeln!(
                        out,
                        "-a -t {}:{} -r {}:{} -m -w 1",
                        k.addr, k.port, rs.key.addr, rs.key.port
                    )?,
                    _ => unreachable!(),
                }
            }
        }
        "plan" => plan_bench(n, m)?,
        _ => usage(),
    }
    Ok(())
}

/// CPU cost of the pure stages for a synthetic cluster, on twins: the
/// first sync (everything new), then a resync with one endpoint added.
fn plan_bench(n: usize, m: usize) -> anyhow::Result<()> {
    use kproxy::cluster::{ClusterState, Kind, Object, SourceEvent};
    use kproxy::config::Config;
    use kproxy::ipvs::IpvsProxier;
    use kproxy::kernel::ipvs::twin::IpvsTwin;
    use kproxy::kernel::link::twin::LinksTwin;
    use kproxy::sync::Proxier;

    let dir = std::env::temp_dir().join(format!("kproxy-plan-bench-{}", std::process::id()));
    let gen_cluster = |extra: &[&str]| -> anyhow::Result<()> {
        let st = std::process::Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/scripts/gen-cluster.py"
            ))
            .args([
                "--services",
                &n.to_string(),
                "--endpoints",
                &m.to_string(),
                "--out",
            ])
            .arg(&dir)
            .args(extra)
            .status()?;
        anyhow::ensure!(st.success(), "gen-cluster.py failed");
        Ok(())
    };
    let load = || -> anyhow::Result<Vec<(Kind, Vec<Object>)>> {
        let mut by_kind: std::collections::BTreeMap<Kind, Vec<Object>> = Default::default();
        for e in std::fs::read_dir(&dir)? {
            let path = e?.path();
            let text = std::fs::read_to_string(&path)?;
            for o in kproxy::source::manifests::parse_text(&path, &text)
                .map_err(|e| anyhow::anyhow!("{e}"))?
            {
                by_kind.entry(o.kind()).or_default().push(o);
            }
        }
        Ok(by_kind.into_iter().collect())
    };
    gen_cluster(&[])?;
    let t0 = Instant::now();
    let objs = load()?;
    let t_parse = t0.elapsed();
    let config = Config {
        hostname: "node-1".into(),
        ..Config::default()
    };
    let mut state = ClusterState::default();
    let t0 = Instant::now();
    for (k, o) in objs {
        state.apply(SourceEvent::Replace(k, o));
    }
    let t_convert = t0.elapsed();
    let ipvs = std::sync::Arc::new(std::sync::Mutex::new(IpvsTwin::new()));
    let links = LinksTwin::node(&["192.168.58.2".parse()?]);
    let mut p = IpvsProxier::new(Box::new(ipvs.clone()), Box::new(links), &config);
    let t0 = Instant::now();
    let first = p.sync(&state, None);
    let t_first = t0.elapsed();
    gen_cluster(&["--change-one"])?;
    for (k, o) in load()? {
        state.apply(SourceEvent::Replace(k, o));
    }
    let t0 = Instant::now();
    let second = p.sync(&state, None);
    let t_second = t0.elapsed();
    std::fs::remove_dir_all(&dir).ok();
    println!(
        "plan {n}x{m}: parse {:.3}s convert {:.3}s first-sync {:.3}s ({} ops) one-endpoint-sync {:.3}s ({} ops)",
        t_parse.as_secs_f64(),
        t_convert.as_secs_f64(),
        t_first.as_secs_f64(),
        first.total_ops(),
        t_second.as_secs_f64(),
        second.total_ops()
    );
    Ok(())
}
