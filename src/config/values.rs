//! Value syntaxes of kube-proxy's command line and config file, as Go and
//! pflag read them: durations (`time.ParseDuration`, printed as
//! `Duration.String` prints them), booleans (`strconv.ParseBool`), integers
//! (`strconv.ParseInt` with base 0), "sloppy" IP addresses and CIDRs
//! (leading zeros allowed), `IP` or `IP:port` bind addresses, quantities,
//! vmodule lists and feature-gate maps.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;

/// Parse a Go duration: `30s`, `1m30s`, `1.5h`, `500ms`, `10us`, `0`.
/// A number needs a unit unless it is `0`; negative values are refused
/// (no duration kube-proxy reads may be negative).
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let orig = s;
    let bad = || format!("invalid duration {orig:?}");
    let mut rest = s;
    let mut negative = false;
    if let Some(r) = rest.strip_prefix('-') {
        negative = true;
        rest = r;
    } else if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (int_part, after) = rest.split_at(int_end);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(a) => {
                let end = a.find(|c: char| !c.is_ascii_digit()).unwrap_or(a.len());
                a.split_at(end)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(bad());
        }
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let nanos_per: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(format!("missing unit in duration {orig:?}")),
            u => return Err(format!("unknown unit {u:?} in duration {orig:?}")),
        };
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| bad())?
        };
        let mut value = int.checked_mul(nanos_per).ok_or_else(bad)?;
        let mut scale = 1u128;
        let mut frac = 0u128;
        for d in frac_part.bytes().take(18) {
            frac = frac * 10 + u128::from(d - b'0');
            scale *= 10;
        }
        value += frac * nanos_per / scale;
        total = total.checked_add(value).ok_or_else(bad)?;
        rest = after;
    }
    if total > i64::MAX as u128 {
        return Err(bad());
    }
    if negative && total > 0 {
        return Err(format!("duration {orig:?} is negative"));
    }
    Ok(Duration::from_nanos(total as u64))
}

/// Format as Go's `time.Duration.String` does: `0s`, `1.5s`, `500ms`,
/// `15m0s`, `24h0m0s`.
pub fn format_go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", decimal(ns, 3));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", decimal(ns, 6));
    }
    let secs = decimal(ns % 60_000_000_000, 9);
    let minutes = ns / 60_000_000_000;
    match (minutes / 60, minutes % 60) {
        (0, 0) => format!("{secs}s"),
        (0, m) => format!("{m}m{secs}s"),
        (h, m) => format!("{h}h{m}m{secs}s"),
    }
}

/// `value / 10^digits` with the fraction's trailing zeros dropped.
fn decimal(value: u128, digits: u32) -> String {
    let scale = 10u128.pow(digits);
    let (int, frac) = (value / scale, value % scale);
    if frac == 0 {
        return int.to_string();
    }
    let frac = format!("{frac:0width$}", width = digits as usize);
    format!("{int}.{}", frac.trim_end_matches('0'))
}

/// `strconv.ParseBool`: 1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False.
pub fn parse_go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("{s:?} is not a boolean (true or false)")),
    }
}

/// `strconv.ParseInt(s, 0, 32)`: decimal, or `0x`/`0o`/`0b`/leading-`0`
/// prefixed, with `_` between digits allowed.
pub fn parse_go_i32(s: &str) -> Result<i32, String> {
    let bad = || format!("{s:?} is not an integer");
    let (negative, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = body.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d.to_string())
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d.to_string())
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d.to_string())
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, lower[1..].to_string())
    } else {
        (10, lower.clone())
    };
    if radix == 10 && digits.starts_with('_') {
        return Err(bad());
    }
    let digits = digits.trim_start_matches('_');
    if digits.is_empty() || digits.ends_with('_') || digits.contains("__") {
        return Err(bad());
    }
    let digits: String = digits.chars().filter(|c| *c != '_').collect();
    let magnitude = i64::from_str_radix(&digits, radix).map_err(|_| bad())?;
    let value = if negative { -magnitude } else { magnitude };
    i32::try_from(value).map_err(|_| format!("{s:?} is out of range for a 32-bit integer"))
}

/// An IP address as Go's `ParseIPSloppy` reads it: IPv4 parts may carry
/// leading zeros (read as decimal).
pub fn parse_ip_sloppy(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() != 4 {
        return None;
    }
    let mut octets = [0u8; 4];
    for (o, p) in octets.iter_mut().zip(&parts) {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let v: u32 = p.trim_start_matches('0').parse().unwrap_or(0);
        *o = u8::try_from(v).ok()?;
    }
    Some(IpAddr::V4(Ipv4Addr::from(octets)))
}

/// A CIDR as Go's `ParseCIDRSloppy` reads it: `address/prefix`, host bits
/// allowed (kept as written).
pub fn parse_cidr_sloppy(s: &str) -> Result<IpNet, String> {
    let bad = || format!("{s:?} is not a valid CIDR (like 10.0.0.0/8 or fd00::/64)");
    let (ip, prefix) = s.split_once('/').ok_or_else(bad)?;
    let ip = parse_ip_sloppy(ip).ok_or_else(bad)?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    IpNet::new(ip, prefix).map_err(|_| bad())
}

/// A bind address as pflag's `ipport` type accepts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindValue {
    /// The empty string.
    Empty,
    /// A bare IP: the port comes from the default (or `--healthz-port`).
    Ip(IpAddr),
    /// `IP:port` or `[IPv6]:port` (port 0..65535; validation wants 1..).
    Addr(SocketAddr),
}

impl BindValue {
    /// The address, a bare IP taking `port` (kube-proxy's AppendPortIfNeeded).
    pub fn with_default_port(self, port: u16) -> Option<SocketAddr> {
        match self {
            BindValue::Empty => None,
            BindValue::Ip(ip) => Some(SocketAddr::new(ip, port)),
            BindValue::Addr(a) => Some(a),
        }
    }
}

/// `IP` or `IP:port` (`[::]:10256`); `:10256` and host names are refused,
/// as kube-proxy refuses them.
pub fn parse_bind(s: &str) -> Result<BindValue, String> {
    if s.is_empty() {
        return Ok(BindValue::Empty);
    }
    if let Some(ip) = parse_ip_sloppy(s) {
        return Ok(BindValue::Ip(ip));
    }
    let (host, port) = split_host_port(s)
        .ok_or_else(|| format!("{s:?} is not in a valid format (ip or ip:port)"))?;
    let ip = parse_ip_sloppy(host).ok_or_else(|| format!("{host:?} is not a valid IP address"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{port:?} is not a valid port number"))?;
    Ok(BindValue::Addr(SocketAddr::new(ip, port)))
}

/// Go's `net.SplitHostPort` for the shapes a bind address can take.
fn split_host_port(s: &str) -> Option<(&str, &str)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, port) = rest.split_once("]:")?;
        return Some((host, port));
    }
    let (host, port) = s.rsplit_once(':')?;
    if host.contains(':') {
        return None;
    }
    Some((host, port))
}

/// A resource quantity (`0`, `512`, `1K`, `2Ki`, `5Mi`, `1e3`), kept as
/// written. Returns whether it is zero.
pub fn parse_quantity(s: &str) -> Result<bool, String> {
    let bad = || format!("{s:?} is not a quantity (like 512, 1K, 2Ki or 5Mi)");
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let num_end = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (num, suffix) = body.split_at(num_end);
    if num.is_empty() || num == "." || num.matches('.').count() > 1 {
        return Err(bad());
    }
    let suffix_ok = matches!(
        suffix,
        "" | "Ki"
            | "Mi"
            | "Gi"
            | "Ti"
            | "Pi"
            | "Ei"
            | "n"
            | "u"
            | "m"
            | "k"
            | "M"
            | "G"
            | "T"
            | "P"
            | "E"
    ) || suffix
        .strip_prefix(['e', 'E'])
        .and_then(|e| e.strip_prefix(['+', '-']).or(Some(e)))
        .is_some_and(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()));
    if !suffix_ok {
        return Err(bad());
    }
    Ok(num.bytes().all(|b| b == b'0' || b == b'.'))
}

/// One `pattern=N` entry of `--vmodule` / `logging.vmodule`.
pub type VModule = Vec<(String, u32)>;

/// `pattern=N,pattern=N` (empty entries skipped, as klog does).
pub fn parse_vmodule(s: &str) -> Result<VModule, String> {
    let mut out = Vec::new();
    for pat in s.split(',').filter(|p| !p.is_empty()) {
        let parts: Vec<&str> = pat.split('=').collect();
        match parts.as_slice() {
            [p, n] if !p.is_empty() && !n.is_empty() => {
                let v: u32 = n
                    .parse()
                    .ok()
                    .filter(|v| *v <= i32::MAX as u32)
                    .ok_or_else(|| format!("parsing verbosity in {pat:?}: invalid number"))?;
                out.push((p.to_string(), v));
            }
            _ => return Err(format!("{pat:?} does not have the pattern=N format")),
        }
    }
    Ok(out)
}

/// `--feature-gates A=true,B=false`.
pub fn parse_feature_gates(s: &str) -> Result<BTreeMap<String, bool>, String> {
    let mut out = BTreeMap::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("missing bool value for {pair}"))?;
        let v = parse_go_bool(v.trim()).map_err(|_| format!("invalid value of {k}: {v}"))?;
        out.insert(k.trim().to_string(), v);
    }
    Ok(out)
}

/// Whether a feature gate is on, given the explicit settings and its
/// default (`AllAlpha` / `AllBeta` switch the unset alpha / beta gates).
pub fn gate_enabled(
    gates: &BTreeMap<String, bool>,
    name: &str,
    default: bool,
    alpha: bool,
) -> bool {
    if let Some(v) = gates.get(name) {
        return *v;
    }
    let all = if alpha { "AllAlpha" } else { "AllBeta" };
    gates.get(all).copied().unwrap_or(default)
}

/// A comma-separated flag value as a list (`""` is the empty list).
pub fn split_list(s: &str) -> Vec<&str> {
    if s.is_empty() {
        Vec::new()
    } else {
        s.split(',').map(str::trim).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        let ok = |s: &str, ns: u64| {
            assert_eq!(parse_go_duration(s), Ok(Duration::from_nanos(ns)), "{s}")
        };
        ok("0", 0);
        ok("0s", 0);
        ok("-0s", 0);
        ok("30s", 30_000_000_000);
        ok("1m30s", 90_000_000_000);
        ok("1.5h", 5_400_000_000_000);
        ok("2h22m", 8_520_000_000_000);
        ok("500ms", 500_000_000);
        ok(".5s", 500_000_000);
        ok("1.s", 1_000_000_000);
        ok("10us", 10_000);
        ok("10µs", 10_000);
        ok("10μs", 10_000);
        ok("7ns", 7);
        ok("+1s", 1_000_000_000);
        for bad in [
            "",
            "7",
            "5 parsecs",
            "s",
            "1x",
            ".s",
            "-1s",
            "1s ",
            "99999999999h",
        ] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?}");
        }
        assert!(parse_go_duration("7").unwrap_err().contains("missing unit"));
    }

    #[test]
    fn go_durations_format() {
        let f = |ns: u64| format_go_duration(Duration::from_nanos(ns));
        assert_eq!(f(0), "0s");
        assert_eq!(f(7), "7ns");
        assert_eq!(f(1_500), "1.5µs");
        assert_eq!(f(500_000_000), "500ms");
        assert_eq!(f(1_500_000_000), "1.5s");
        assert_eq!(f(30_000_000_000), "30s");
        assert_eq!(f(90_500_000_000), "1m30.5s");
        assert_eq!(f(900_000_000_000), "15m0s");
        assert_eq!(f(3_600_000_000_000), "1h0m0s");
        assert_eq!(f(86_400_000_000_000), "24h0m0s");
        assert_eq!(f(8_520_000_000_000), "2h22m0s");
        for ns in [
            1,
            999,
            1_001,
            123_456_789,
            61_000_000_001,
            86_400_000_000_000,
        ] {
            assert_eq!(parse_go_duration(&f(ns)), Ok(Duration::from_nanos(ns)));
        }
    }

    #[test]
    fn go_bools_and_ints() {
        for t in ["1", "t", "T", "true", "TRUE", "True"] {
            assert_eq!(parse_go_bool(t), Ok(true));
        }
        for f in ["0", "f", "F", "false", "FALSE", "False"] {
            assert_eq!(parse_go_bool(f), Ok(false));
        }
        assert!(parse_go_bool("yes").is_err());
        assert!(parse_go_bool("").is_err());
        assert_eq!(parse_go_i32("-999"), Ok(-999));
        assert_eq!(parse_go_i32("+5"), Ok(5));
        assert_eq!(parse_go_i32("0x10"), Ok(16));
        assert_eq!(parse_go_i32("010"), Ok(8));
        assert_eq!(parse_go_i32("0o10"), Ok(8));
        assert_eq!(parse_go_i32("0b101"), Ok(5));
        assert_eq!(parse_go_i32("32_768"), Ok(32768));
        assert_eq!(parse_go_i32("0"), Ok(0));
        for bad in ["", "1.5", "abc", "1__0", "2147483648", "_1", "0x"] {
            assert!(parse_go_i32(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sloppy_addresses() {
        assert_eq!(
            parse_ip_sloppy("010.001.0.1"),
            Some("10.1.0.1".parse().unwrap())
        );
        assert_eq!(parse_ip_sloppy("::1"), Some("::1".parse().unwrap()));
        assert_eq!(parse_ip_sloppy("256.0.0.1"), None);
        assert_eq!(parse_ip_sloppy("localhost"), None);
        assert_eq!(
            parse_cidr_sloppy("10.0.0.1/8").unwrap().to_string(),
            "10.0.0.1/8"
        );
        assert_eq!(
            parse_cidr_sloppy("010.0.0.0/08").unwrap().to_string(),
            "10.0.0.0/8"
        );
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "10.0.0.0/",
            "banana/8",
            "",
            "fd00::/129",
        ] {
            assert!(parse_cidr_sloppy(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bind_addresses_as_pflag_ipport() {
        let addr = |s: &str| BindValue::Addr(s.parse().unwrap());
        assert_eq!(parse_bind(""), Ok(BindValue::Empty));
        assert_eq!(parse_bind("0.0.0.0:10256"), Ok(addr("0.0.0.0:10256")));
        assert_eq!(parse_bind("[::]:10256"), Ok(addr("[::]:10256")));
        assert_eq!(parse_bind("127.0.0.1:0"), Ok(addr("127.0.0.1:0")));
        assert_eq!(
            parse_bind("10.1.2.3"),
            Ok(BindValue::Ip("10.1.2.3".parse().unwrap()))
        );
        assert_eq!(parse_bind("::"), Ok(BindValue::Ip("::".parse().unwrap())));
        for bad in [
            ":10256",
            "localhost:10256",
            "[::]",
            "1.2.3.4:99999",
            "1.2.3.4:x",
            "1.2.3.4:",
        ] {
            assert!(parse_bind(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_bind("::").unwrap().with_default_port(10256),
            Some("[::]:10256".parse().unwrap())
        );
    }

    #[test]
    fn quantities_vmodule_and_gates() {
        assert_eq!(parse_quantity("0"), Ok(true));
        assert_eq!(parse_quantity("0Ki"), Ok(true));
        assert_eq!(parse_quantity("512"), Ok(false));
        assert_eq!(parse_quantity("2Ki"), Ok(false));
        assert_eq!(parse_quantity("1e3"), Ok(false));
        assert_eq!(parse_quantity("1.5M"), Ok(false));
        for bad in ["", "K", "1KB", "1.2.3", "x"] {
            assert!(parse_quantity(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_vmodule("proxier*=4,,sync=2"),
            Ok(vec![("proxier*".into(), 4), ("sync".into(), 2)])
        );
        assert_eq!(
            parse_vmodule("a=1,b=2"),
            Ok(vec![("a".into(), 1), ("b".into(), 2)])
        );
        assert!(parse_vmodule("a").is_err());
        assert!(parse_vmodule("a=b").is_err());
        assert!(parse_vmodule("=1").is_err());
        let g = parse_feature_gates("A=true, B=false").unwrap();
        assert_eq!(g.get("A"), Some(&true));
        assert_eq!(g.get("B"), Some(&false));
        assert!(parse_feature_gates("A").is_err());
        assert!(parse_feature_gates("A=maybe").is_err());
        assert!(gate_enabled(
            &parse_feature_gates("AllAlpha=true").unwrap(),
            "X",
            false,
            true
        ));
        assert!(!gate_enabled(
            &parse_feature_gates("AllAlpha=true,X=false").unwrap(),
            "X",
            false,
            true
        ));
        assert!(gate_enabled(&BTreeMap::new(), "Y", true, false));
        assert_eq!(split_list(""), Vec::<&str>::new());
        assert_eq!(split_list("a, b"), vec!["a", "b"]);
    }
}
