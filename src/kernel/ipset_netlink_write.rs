//! `ipset restore -exist` scripts as nfnetlink ipset requests.
//!
//! Each line becomes one request, except that a run of `add` (or `del`)
//! lines on one set goes out as one request carrying every entry under
//! IPSET_ATTR_ADT, as many as one attribute holds. The kernel applies a
//! batch's entries in order and stops at the first it refuses; a batch is
//! answered before the next is sent, so nothing after a refusal is applied,
//! as with `ipset restore`. To name the refused line, the entries of a
//! refused batch are sent again one by one: under `-exist` the ones already
//! applied are no-ops, and the first refusal is the line.
//!
//! `-exist` is the kernel's default: it is NLM_F_EXCL in a request's
//! netlink flags that asks for creating an existing set, adding a present
//! entry or deleting an absent one to be refused, and these requests never
//! carry it.

use std::net::IpAddr;

use super::*;

pub const IPSET_CMD_CREATE: u8 = 2;
pub const IPSET_CMD_DESTROY: u8 = 3;
pub const IPSET_CMD_FLUSH: u8 = 4;
pub const IPSET_CMD_ADD: u8 = 9;
pub const IPSET_CMD_DEL: u8 = 10;
pub const IPSET_CMD_TYPE: u8 = 13;

pub const IPSET_ATTR_REVISION: u16 = 4;
/// `IPSET_ATTR_LINENO`: the kernel wants one with every IPSET_ATTR_ADT.
pub const IPSET_ATTR_LINENO: u16 = 9;

/// Bytes of entries under one IPSET_ATTR_ADT (its length is a u16).
const ADT_BYTES: usize = 60_000;

/// One line of a restore script, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line<'a> {
    Create {
        name: &'a str,
        set_type: &'a str,
        args: Vec<&'a str>,
    },
    Add(&'a str, &'a str),
    Del(&'a str, &'a str),
    Flush(&'a str),
    Destroy(&'a str),
    Blank,
}

pub fn parse_line(line: &str) -> Result<Line<'_>, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    Ok(match words.as_slice() {
        [] => Line::Blank,
        ["create", name, set_type, args @ ..] => Line::Create {
            name,
            set_type,
            args: args.to_vec(),
        },
        ["add", name, entry] => Line::Add(name, entry),
        ["del", name, entry] => Line::Del(name, entry),
        ["flush", name] => Line::Flush(name),
        ["destroy", name] => Line::Destroy(name),
        _ => return Err(format!("unknown command: {line}")),
    })
}

fn nfproto(ip: &IpAddr) -> u8 {
    if ip.is_ipv4() {
        NFPROTO_IPV4
    } else {
        NFPROTO_IPV6
    }
}

fn put_ip(out: &mut Vec<u8>, kind: u16, ip: &IpAddr) {
    let mut inner = Vec::new();
    match ip {
        IpAddr::V4(a) => put_attr(
            &mut inner,
            IPSET_ATTR_IPADDR_IPV4 | NLA_F_NET_BYTEORDER,
            &a.octets(),
        ),
        IpAddr::V6(a) => put_attr(
            &mut inner,
            IPSET_ATTR_IPADDR_IPV6 | NLA_F_NET_BYTEORDER,
            &a.octets(),
        ),
    }
    put_attr(out, kind | NLA_F_NESTED, &inner);
}

fn ip_prefix(text: &str) -> Result<(IpAddr, Option<u8>), String> {
    let (addr, cidr) = match text.split_once('/') {
        Some((a, c)) => (
            a,
            Some(
                c.parse::<u8>()
                    .map_err(|_| format!("bad prefix in {text}"))?,
            ),
        ),
        None => (text, None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| format!("bad address {addr}"))?;
    Ok((ip, cidr))
}

fn proto_number(name: &str) -> Result<u8, String> {
    Ok(match name {
        "tcp" => 6,
        "udp" => 17,
        "sctp" => 132,
        "udplite" => 136,
        n => n.parse().map_err(|_| format!("unknown protocol {n}"))?,
    })
}

/// One entry in `ipset save`'s text form as the attributes of an
/// IPSET_ATTR_DATA, with the family its addresses are of.
pub fn entry_attrs(entry: &str) -> Result<(u8, Vec<u8>), String> {
    let mut out = Vec::new();
    if let Ok(port) = entry.parse::<u16>() {
        put_attr(
            &mut out,
            IPSET_ATTR_PORT | NLA_F_NET_BYTEORDER,
            &port.to_be_bytes(),
        );
        return Ok((NFPROTO_UNSPEC, out));
    }
    let mut parts = entry.split(',');
    let (ip, cidr) = ip_prefix(parts.next().unwrap_or_default())?;
    put_ip(&mut out, IPSET_ATTR_IP, &ip);
    if let Some(c) = cidr {
        put_attr(&mut out, IPSET_ATTR_CIDR, &[c]);
    }
    if let Some(pp) = parts.next() {
        let (proto, port) = pp.split_once(':').ok_or(format!("bad proto:port {pp}"))?;
        let port: u16 = port.parse().map_err(|_| format!("bad port {port}"))?;
        put_attr(
            &mut out,
            IPSET_ATTR_PORT | NLA_F_NET_BYTEORDER,
            &port.to_be_bytes(),
        );
        put_attr(&mut out, IPSET_ATTR_PROTO, &[proto_number(proto)?]);
    }
    if let Some(second) = parts.next() {
        let (ip2, cidr2) = ip_prefix(second)?;
        put_ip(&mut out, IPSET_ATTR_IP2, &ip2);
        if let Some(c) = cidr2 {
            put_attr(&mut out, IPSET_ATTR_CIDR2, &[c]);
        }
    }
    if parts.next().is_some() {
        return Err(format!("bad entry {entry}"));
    }
    Ok((nfproto(&ip), out))
}

fn head(protocol: u8, name: &str) -> Vec<u8> {
    let mut attrs = Vec::new();
    put_attr(&mut attrs, IPSET_ATTR_PROTOCOL, &[protocol]);
    put_attr(
        &mut attrs,
        IPSET_ATTR_SETNAME,
        format!("{name}\0").as_bytes(),
    );
    attrs
}

/// IPSET_CMD_TYPE: which revisions of `set_type` the kernel has.
pub fn type_request(protocol: u8, set_type: &str, family: u8) -> IpsetRequest {
    let mut attrs = Vec::new();
    put_attr(&mut attrs, IPSET_ATTR_PROTOCOL, &[protocol]);
    put_attr(
        &mut attrs,
        IPSET_ATTR_TYPENAME,
        format!("{set_type}\0").as_bytes(),
    );
    put_attr(&mut attrs, IPSET_ATTR_FAMILY, &[family]);
    IpsetRequest {
        cmd: IPSET_CMD_TYPE,
        family,
        attrs,
    }
}

/// The family a create line asks for.
pub fn create_family(set_type: &str, args: &[&str]) -> u8 {
    if set_type.starts_with("bitmap:port") {
        return NFPROTO_UNSPEC;
    }
    match args
        .iter()
        .position(|a| *a == "family")
        .map(|i| args.get(i + 1))
    {
        Some(Some(&"inet6")) => NFPROTO_IPV6,
        _ => NFPROTO_IPV4,
    }
}

/// IPSET_CMD_CREATE at type `revision`.
pub fn create_request(
    protocol: u8,
    name: &str,
    set_type: &str,
    args: &[&str],
    revision: u8,
) -> Result<IpsetRequest, String> {
    let family = create_family(set_type, args);
    let mut attrs = head(protocol, name);
    put_attr(
        &mut attrs,
        IPSET_ATTR_TYPENAME,
        format!("{set_type}\0").as_bytes(),
    );
    put_attr(&mut attrs, IPSET_ATTR_REVISION, &[revision]);
    put_attr(&mut attrs, IPSET_ATTR_FAMILY, &[family]);
    let mut data = Vec::new();
    let mut words = args.iter();
    while let Some(w) = words.next() {
        let mut value = || words.next().ok_or(format!("{w} without a value"));
        match *w {
            "family" => {
                value()?;
            }
            "hashsize" | "maxelem" => {
                let n: u32 = value()?.parse().map_err(|_| format!("bad {w}"))?;
                let kind = if *w == "hashsize" {
                    IPSET_ATTR_HASHSIZE
                } else {
                    IPSET_ATTR_MAXELEM
                };
                put_attr(&mut data, kind | NLA_F_NET_BYTEORDER, &n.to_be_bytes());
            }
            "bucketsize" => {
                let n: u8 = value()?.parse().map_err(|_| format!("bad {w}"))?;
                put_attr(&mut data, IPSET_ATTR_BUCKETSIZE, &[n]);
            }
            "range" => {
                let r = value()?;
                let (from, to) = r.split_once('-').ok_or(format!("bad range {r}"))?;
                let from: u16 = from.parse().map_err(|_| format!("bad range {r}"))?;
                let to: u16 = to.parse().map_err(|_| format!("bad range {r}"))?;
                put_attr(
                    &mut data,
                    IPSET_ATTR_PORT | NLA_F_NET_BYTEORDER,
                    &from.to_be_bytes(),
                );
                put_attr(
                    &mut data,
                    IPSET_ATTR_PORT_TO | NLA_F_NET_BYTEORDER,
                    &to.to_be_bytes(),
                );
            }
            other => return Err(format!("unsupported create option {other}")),
        }
    }
    put_attr(&mut attrs, IPSET_ATTR_DATA | NLA_F_NESTED, &data);
    Ok(IpsetRequest {
        cmd: IPSET_CMD_CREATE,
        family,
        attrs,
    })
}

/// IPSET_CMD_FLUSH or IPSET_CMD_DESTROY of one set.
pub fn set_request(protocol: u8, cmd: u8, name: &str) -> IpsetRequest {
    IpsetRequest {
        cmd,
        family: NFPROTO_UNSPEC,
        attrs: head(protocol, name),
    }
}

/// IPSET_CMD_ADD or IPSET_CMD_DEL of encoded entries
/// (`entry_attrs`), one under IPSET_ATTR_DATA if there is one, else all
/// under IPSET_ATTR_ADT.
pub fn adt_request(
    protocol: u8,
    cmd: u8,
    name: &str,
    family: u8,
    entries: &[&[u8]],
) -> IpsetRequest {
    let mut attrs = head(protocol, name);
    if let [one] = entries {
        put_attr(&mut attrs, IPSET_ATTR_DATA | NLA_F_NESTED, one);
    } else {
        put_attr(&mut attrs, IPSET_ATTR_LINENO, &0u32.to_ne_bytes());
        let mut adt = Vec::new();
        for e in entries {
            put_attr(&mut adt, IPSET_ATTR_DATA | NLA_F_NESTED, e);
        }
        put_attr(&mut attrs, IPSET_ATTR_ADT | NLA_F_NESTED, &adt);
    }
    IpsetRequest { cmd, family, attrs }
}

/// What the kernel's ipset errno means, as `ipset` says it.
pub fn refusal(errno: i32) -> String {
    let text = match errno {
        libc::ENOENT => "The set with the given name does not exist",
        4097 => "Kernel error received: ipset protocol error",
        4098 => "Kernel error received: set type not supported",
        4099 => "Kernel error received: maximal number of sets reached",
        4100 => "Set cannot be destroyed: it is in use by a kernel component",
        4102 => "The sets cannot be swapped: their type does not match",
        4103 => "Set cannot be created: set with the same name already exists",
        4104 => "The value of the CIDR parameter of the IP address is invalid",
        4106 => "Protocol family not supported by the set type",
        4108 => "Set cannot be destroyed: it is in use by a kernel component",
        4109 => "An IPv4 address is expected, but not received",
        4110 => "An IPv6 address is expected, but not received",
        4352 => "Hash is full, cannot add more elements",
        _ => "",
    };
    if text.is_empty() {
        format!("Kernel error received: errno {errno}")
    } else {
        text.to_string()
    }
}

/// A run of add (or del) lines on one set, not yet sent.
struct Batch {
    cmd: u8,
    name: String,
    family: u8,
    /// (line number, encoded entry)
    entries: Vec<(usize, Vec<u8>)>,
    bytes: usize,
}

fn line_error(n: usize, reason: impl std::fmt::Display) -> KernelError {
    KernelError::new(RESTORE_OP, format!("Error in line {n}: {reason}"))
}

const RESTORE_OP: &str = "ipset restore -exist";

impl IpsetNetlink {
    fn ack(&mut self, request: IpsetRequest) -> Result<Vec<Vec<u8>>, NetlinkError> {
        let mut replies = Vec::new();
        self.socket
            .request(message(request), Exchange::Ack, &mut |m| {
                if let Some(m) = m {
                    replies.push(m.to_vec());
                }
                Ok(())
            })?;
        Ok(replies)
    }

    fn refused(n: usize, e: NetlinkError) -> KernelError {
        match e.errno() {
            Some(errno @ (libc::ENOENT | 4096..)) if matches!(e, NetlinkError::Refused { .. }) => {
                line_error(n, refusal(errno))
            }
            _ => line_error(n, e),
        }
    }

    /// The newest revision of `set_type` the kernel has for `family`.
    fn revision(&mut self, set_type: &str, family: u8) -> Result<u8, NetlinkError> {
        if let Some(r) = self.revisions.get(&(set_type.to_string(), family)) {
            return Ok(*r);
        }
        let replies = self.ack(type_request(self.protocol, set_type, family))?;
        let mut revision = 0;
        for r in &replies {
            for (kind, v) in
                message_attrs(r).map_err(|e| NetlinkError::Undecodable(e.to_string()))?
            {
                if kind == IPSET_ATTR_REVISION {
                    revision = v.first().copied().unwrap_or(0);
                }
            }
        }
        self.revisions
            .insert((set_type.to_string(), family), revision);
        Ok(revision)
    }

    fn send_batch(&mut self, batch: Batch) -> Result<(), KernelError> {
        let entries: Vec<&[u8]> = batch.entries.iter().map(|(_, e)| e.as_slice()).collect();
        let request = adt_request(
            self.protocol,
            batch.cmd,
            &batch.name,
            batch.family,
            &entries,
        );
        let Err(e) = self.ack(request) else {
            return Ok(());
        };
        if batch.entries.len() == 1 {
            return Err(Self::refused(batch.entries[0].0, e));
        }
        // Find the refused line: what was applied before it is a no-op now.
        for (n, entry) in &batch.entries {
            let one = adt_request(
                self.protocol,
                batch.cmd,
                &batch.name,
                batch.family,
                &[entry],
            );
            if let Err(e) = self.ack(one) {
                return Err(Self::refused(*n, e));
            }
        }
        Err(Self::refused(batch.entries[0].0, e))
    }

    /// Run a restore script as `ipset restore -exist` would.
    pub fn restore_script(&mut self, script: &str) -> Result<(), KernelError> {
        let mut batch: Option<Batch> = None;
        for (i, text) in script.lines().enumerate() {
            let n = i + 1;
            let line = parse_line(text).map_err(|e| line_error(n, e));
            let adt = match &line {
                Ok(Line::Add(name, entry)) => Some((IPSET_CMD_ADD, *name, *entry)),
                Ok(Line::Del(name, entry)) => Some((IPSET_CMD_DEL, *name, *entry)),
                _ => None,
            };
            if let Some((cmd, name, entry)) = adt {
                let encoded = entry_attrs(entry).map_err(|e| line_error(n, e));
                if let Ok((family, data)) = encoded {
                    let fits = batch.as_ref().is_some_and(|b| {
                        b.cmd == cmd
                            && b.name == name
                            && b.family == family
                            && b.bytes + data.len() + 4 <= ADT_BYTES
                    });
                    if !fits && let Some(b) = batch.take() {
                        self.send_batch(b)?;
                    }
                    let b = batch.get_or_insert_with(|| Batch {
                        cmd,
                        name: name.to_string(),
                        family,
                        entries: Vec::new(),
                        bytes: 0,
                    });
                    b.bytes += data.len() + 4;
                    b.entries.push((n, data));
                    continue;
                }
                if let Some(b) = batch.take() {
                    self.send_batch(b)?;
                }
                encoded?;
                continue;
            }
            if let Some(b) = batch.take() {
                self.send_batch(b)?;
            }
            let request = match line? {
                Line::Blank | Line::Add(..) | Line::Del(..) => continue,
                Line::Create {
                    name,
                    set_type,
                    args,
                } => {
                    let family = create_family(set_type, &args);
                    let revision = self
                        .revision(set_type, family)
                        .map_err(|e| Self::refused(n, e))?;
                    create_request(self.protocol, name, set_type, &args, revision)
                        .map_err(|e| line_error(n, e))?
                }
                Line::Flush(name) => set_request(self.protocol, IPSET_CMD_FLUSH, name),
                Line::Destroy(name) => set_request(self.protocol, IPSET_CMD_DESTROY, name),
            };
            self.ack(request).map_err(|e| Self::refused(n, e))?;
        }
        if let Some(b) = batch.take() {
            self.send_batch(b)?;
        }
        Ok(())
    }
}
