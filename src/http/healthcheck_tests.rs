//! The health-check servers over real HTTP on loopback, against the
//! expectations of upstream's pkg/proxy/healthcheck/healthcheck_test.go
//! (TestServer and its tHandler checks) and service_health.go.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::*;

/// A port nothing listens on right now (the kernel's pick, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn loopback() -> ListenAddresses {
    Arc::new(|f: IpFamily, _: &[IpAddr]| match f {
        IpFamily::V4 => vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        IpFamily::V6 => vec![IpAddr::V6(Ipv6Addr::LOCALHOST)],
    })
}

fn servers(families: Vec<IpFamily>, healthy: &Arc<AtomicBool>) -> Servers {
    let h = Arc::clone(healthy);
    Servers::new(
        families,
        loopback(),
        Arc::new(move || h.load(Ordering::Relaxed)),
    )
}

fn nsn(ns: &str, name: &str) -> ServiceName {
    ServiceName::new(ns, name)
}

fn want(checks: &[(&ServiceName, u16, usize)]) -> Wanted {
    Wanted {
        checks: checks
            .iter()
            .map(|(s, port, n)| HealthCheck {
                service: (*s).clone(),
                family: IpFamily::V4,
                port: *port,
                local_endpoints: *n,
            })
            .collect(),
        node_addresses: vec![],
    }
}

struct Answer {
    status: u16,
    headers: BTreeMap<String, Vec<String>>,
    body: String,
}

/// One request on an open connection (HTTP/1.1, kept alive).
async fn request(conn: &mut BufReader<TcpStream>, method: &str, path: &str) -> Answer {
    conn.get_mut()
        .write_all(format!("{method} {path} HTTP/1.1\r\nHost: lb\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut line = String::new();
    conn.read_line(&mut line).await.unwrap();
    let status = line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    loop {
        line.clear();
        conn.read_line(&mut line).await.unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap();
        headers
            .entry(k.to_lowercase())
            .or_default()
            .push(v.trim().to_string());
    }
    let len: usize = match (method, headers.get("content-length")) {
        ("HEAD", _) | (_, None) => 0,
        (_, Some(v)) => v[0].parse().unwrap(),
    };
    let mut body = vec![0; len];
    conn.read_exact(&mut body).await.unwrap();
    Answer {
        status,
        headers,
        body: String::from_utf8(body).unwrap(),
    }
}

async fn get(port: u16) -> Answer {
    let s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    request(&mut BufReader::new(s), "GET", "/healthz").await
}

/// Upstream's tHandler: the status, the payload's service, count and
/// health, and the three headers, each exactly once.
async fn check(port: u16, svc: &ServiceName, status: u16, endpoints: usize, healthy: bool) {
    let a = get(port).await;
    assert_eq!(a.status, status, "{svc} on {port}: {}", a.body);
    let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(v["service"]["namespace"], svc.namespace.as_str());
    assert_eq!(v["service"]["name"], svc.name.as_str());
    assert_eq!(v["localEndpoints"], endpoints);
    assert_eq!(v["serviceProxyHealthy"], healthy);
    assert_eq!(a.headers["content-type"], vec!["application/json"]);
    assert_eq!(a.headers["x-content-type-options"], vec!["nosniff"]);
    assert_eq!(
        a.headers["x-load-balancing-endpoint-weight"],
        vec![endpoints.to_string()]
    );
}

async fn refused(port: u16) -> bool {
    matches!(
        TcpStream::connect(("127.0.0.1", port)).await,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

#[test]
fn the_body_is_upstreams_template_byte_for_byte() {
    // service_health.go: the %q/%d/%v template, dedented, newlines trimmed.
    assert_eq!(
        body(&nsn("a", "b"), 18, true),
        "{\n\t\"service\": {\n\t\t\"namespace\": \"a\",\n\t\t\"name\": \"b\"\n\t},\n\t\"localEndpoints\": 18,\n\t\"serviceProxyHealthy\": true\n}"
    );
    assert!(body(&nsn("a", "b"), 0, false).ends_with("\"serviceProxyHealthy\": false\n}"));
}

#[tokio::test]
async fn upstreams_server_sequence() {
    // TestServer's steps, with SyncServices and SyncEndpoints folded into
    // one wanted set per step, as a sync leaves them.
    let healthy = Arc::new(AtomicBool::new(true));
    let mut s = servers(vec![IpFamily::V4], &healthy);
    assert!(s.reconcile(&want(&[])).await.is_empty());
    assert!(s.running().is_empty());

    let (p1, p2, p3, p3b, p4) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let ab = nsn("a", "b");
    s.reconcile(&want(&[(&ab, p1, 0)])).await;
    assert_eq!(
        s.bound(IpFamily::V4, &ab),
        vec![SocketAddr::from(([127, 0, 0, 1], p1))]
    );
    check(p1, &ab, 503, 0, true).await;
    s.reconcile(&want(&[(&ab, p1, 18)])).await;
    check(p1, &ab, 200, 18, true).await;
    s.reconcile(&want(&[(&ab, p1, 0)])).await;
    check(p1, &ab, 503, 0, true).await;
    // Deleting the Service closes its port.
    s.reconcile(&want(&[])).await;
    assert!(s.running().is_empty());
    assert!(refused(p1).await);

    let (n1, n2, n3, n4) = (nsn("a", "b"), nsn("c", "d"), nsn("e", "f"), nsn("g", "h"));
    s.reconcile(&want(&[(&n1, p1, 9), (&n2, p2, 3), (&n3, p3, 7)]))
        .await;
    check(p1, &n1, 200, 9, true).await;
    check(p2, &n2, 200, 3, true).await;
    check(p3, &n3, 200, 7, true).await;
    // Remove n1, leave n2, move n3 to another port, add n4.
    let failed = s
        .reconcile(&want(&[(&n2, p2, 3), (&n3, p3b, 7), (&n4, p4, 6)]))
        .await;
    assert!(failed.is_empty(), "{failed:?}");
    assert!(refused(p1).await && refused(p3).await);
    check(p2, &n2, 200, 3, true).await;
    check(p3b, &n3, 200, 7, true).await;
    check(p4, &n4, 200, 6, true).await;
    // n2's endpoints are all gone from this node.
    s.reconcile(&want(&[(&n2, p2, 0), (&n3, p3b, 7), (&n4, p4, 6)]))
        .await;
    check(p2, &n2, 503, 0, true).await;

    // A temporarily unhealthy proxy fails every Service, endpoints or not.
    healthy.store(false, Ordering::Relaxed);
    check(p2, &n2, 503, 0, false).await;
    check(p3b, &n3, 503, 7, false).await;
    check(p4, &n4, 503, 6, false).await;
    healthy.store(true, Ordering::Relaxed);
    check(p2, &n2, 503, 0, true).await;
    check(p3b, &n3, 200, 7, true).await;
    s.reconcile(&want(&[])).await;
    assert!(refused(p2).await && refused(p3b).await && refused(p4).await);
}

#[tokio::test]
async fn a_count_changes_without_restarting_the_server() {
    let healthy = Arc::new(AtomicBool::new(true));
    let mut s = servers(vec![IpFamily::V4], &healthy);
    let (svc, port) = (nsn("default", "web"), free_port());
    s.reconcile(&want(&[(&svc, port, 2)])).await;
    let mut conn = BufReader::new(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    assert_eq!(request(&mut conn, "GET", "/").await.status, 200);
    s.reconcile(&want(&[(&svc, port, 0)])).await;
    // The same connection, still open: the server did not go away.
    let a = request(&mut conn, "GET", "/anything").await;
    assert_eq!(
        (
            a.status,
            a.headers["x-load-balancing-endpoint-weight"][0].as_str()
        ),
        (503, "0")
    );
}

#[tokio::test]
async fn every_path_and_method_gets_the_answer() {
    let healthy = Arc::new(AtomicBool::new(true));
    let mut s = servers(vec![IpFamily::V4], &healthy);
    let (svc, port) = (nsn("default", "web"), free_port());
    s.reconcile(&want(&[(&svc, port, 1)])).await;
    let mut conn = BufReader::new(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    for (method, path) in [("GET", "/"), ("POST", "/x/y"), ("HEAD", "/healthz")] {
        let a = request(&mut conn, method, path).await;
        assert_eq!(a.status, 200, "{method} {path}");
        assert_eq!(a.headers["x-load-balancing-endpoint-weight"], vec!["1"]);
    }
}

#[tokio::test]
async fn a_port_taken_by_another_program_fails_alone_and_is_retried() {
    let healthy = Arc::new(AtomicBool::new(true));
    let mut s = servers(vec![IpFamily::V4], &healthy);
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = holder.local_addr().unwrap().port();
    let (a, b, pb) = (nsn("default", "a"), nsn("default", "b"), free_port());
    let wanted = want(&[(&a, taken, 1), (&b, pb, 2)]);
    let failed = s.reconcile(&wanted).await;
    assert_eq!(
        failed,
        vec![BindFailure {
            service: a.clone(),
            family: IpFamily::V4,
            port: taken,
            error: format!("listen tcp4 127.0.0.1:{taken}: bind: address already in use"),
        }]
    );
    assert_eq!(
        failed[0].message("node-1"),
        format!(
            "node node-1 failed to start healthcheck \"default/a\" on port {taken}: listen tcp4 127.0.0.1:{taken}: bind: address already in use"
        )
    );
    check(pb, &b, 200, 2, true).await;
    // Still taken at the next sync: reported again, b untouched.
    assert_eq!(s.reconcile(&wanted).await.len(), 1);
    drop(holder);
    assert!(s.reconcile(&wanted).await.is_empty());
    check(taken, &a, 200, 1, true).await;
    check(pb, &b, 200, 2, true).await;
}

#[tokio::test]
async fn a_port_handed_from_one_service_to_another_in_one_sync_is_free() {
    let healthy = Arc::new(AtomicBool::new(true));
    let mut s = servers(vec![IpFamily::V4], &healthy);
    let (old, new, port) = (nsn("default", "old"), nsn("default", "new"), free_port());
    s.reconcile(&want(&[(&old, port, 1)])).await;
    assert!(s.reconcile(&want(&[(&new, port, 3)])).await.is_empty());
    check(port, &new, 200, 3, true).await;
}

#[tokio::test]
async fn both_families_share_a_port_and_other_families_are_ignored() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    }
    let healthy = Arc::new(AtomicBool::new(true));
    let svc = nsn("default", "web");
    let port = free_port();
    let check_of = |family, n| HealthCheck {
        service: svc.clone(),
        family,
        port,
        local_endpoints: n,
    };
    let wanted = Wanted {
        checks: vec![check_of(IpFamily::V4, 1), check_of(IpFamily::V6, 2)],
        node_addresses: vec![],
    };
    let mut v4_only = servers(vec![IpFamily::V4], &healthy);
    v4_only.reconcile(&wanted).await;
    assert_eq!(v4_only.running().len(), 1);
    v4_only.reconcile(&Wanted::default()).await;

    let mut dual = servers(vec![IpFamily::V4, IpFamily::V6], &healthy);
    assert!(dual.reconcile(&wanted).await.is_empty());
    check(port, &svc, 200, 1, true).await;
    let s = TcpStream::connect(("::1", port)).await.unwrap();
    let a = request(&mut BufReader::new(s), "GET", "/").await;
    assert_eq!(a.headers["x-load-balancing-endpoint-weight"], vec!["2"]);
}

#[test]
fn listen_addresses_follow_upstreams_node_port_addresses() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let local = || {
        Ok(vec![
            ip("127.0.0.1"),
            ip("10.0.0.5"),
            ip("192.168.1.2"),
            ip("fd00::5"),
        ])
    };
    let cidrs =
        |v: &[&str]| NodePortAddresses::Cidrs(v.iter().map(|c| c.parse().unwrap()).collect());
    let all = NodePortAddresses::All;
    assert_eq!(
        listen_addresses(IpFamily::V4, &all, local),
        vec![ip("0.0.0.0")]
    );
    assert_eq!(listen_addresses(IpFamily::V6, &all, local), vec![ip("::")]);
    let some = cidrs(&["10.0.0.0/8", "127.0.0.0/8"]);
    assert_eq!(
        listen_addresses(IpFamily::V4, &some, local),
        vec![ip("10.0.0.5"), ip("127.0.0.1")],
        "matching addresses, loopback too when a CIDR holds it"
    );
    assert_eq!(
        listen_addresses(IpFamily::V6, &some, local),
        vec![ip("::")],
        "no CIDR of the family: everything"
    );
    assert_eq!(
        listen_addresses(IpFamily::V4, &cidrs(&["0.0.0.0/0"]), local),
        vec![ip("0.0.0.0")]
    );
    assert_eq!(
        listen_addresses(IpFamily::V4, &some, || Err("no netlink".into())),
        vec![ip("0.0.0.0")],
        "addresses unknown: all of them, as upstream"
    );
    assert!(listen_addresses(IpFamily::V4, &cidrs(&["172.16.0.0/12"]), local).is_empty());
}

#[test]
fn go_wording_of_os_errors() {
    let e = std::io::Error::from_raw_os_error(libc::EACCES);
    assert_eq!(errno_text(&e), "permission denied");
}

#[tokio::test]
async fn the_observer_follows_each_sync_report() {
    let healthy = Arc::new(AtomicBool::new(true));
    let (tx, mut failures) = tokio::sync::mpsc::unbounded_channel();
    let hc = HealthCheckServers::spawn(servers(vec![IpFamily::V4], &healthy), move |f| {
        let _ = tx.send(f.clone());
    });
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = holder.local_addr().unwrap().port();
    let (svc, port) = (nsn("default", "web"), free_port());
    let mut report = crate::sync::SyncReport {
        started: std::time::SystemTime::now(),
        duration: std::time::Duration::ZERO,
        full: true,
        outcome: Default::default(),
        service_changes: 0,
        endpoint_changes: 0,
        trigger_times: vec![],
        rejected_objects: 0,
        health_checks: want(&[(&svc, port, 2), (&nsn("default", "blocked"), taken, 1)]).checks,
    };
    hc.synced(&report);
    let f = failures.recv().await.unwrap();
    assert_eq!((f.service.name.as_str(), f.port), ("blocked", taken));
    check(port, &svc, 200, 2, true).await;
    report.health_checks.clear();
    hc.synced(&report);
    // Bounded wait for the task to close the server (convergence, not timing).
    for _ in 0..200 {
        if refused(port).await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the server on {port} still answers after its Service went");
}
