//! `poplar autoconfig dns --domain D [--check]`: the DNS records that lead mail clients to this
//! server, from the same configuration the autoconfiguration documents come from. RFC 6186 SRV
//! records for POP3S and POP3 (implicit TLS ranked first, RFC 8314 section 5.1; a service not
//! offered is published with the target "." as RFC 6186 section 4 says), submission, and the
//! `autoconfig`, `autodiscover` names (and Outlook's `_autodiscover._tcp` SRV) for the web
//! server that fronts `[autoconfig] listen`. With `--check`, each is asked of a resolver and
//! compared: what is missing or different is said, and the exit status is 1.

use crate::autoconfig::Endpoints;
use anyhow::{Context, Result, bail};
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::Duration;

/// The time-to-live printed with each record.
const TTL: u32 = 3600;

/// One record to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Wanted {
    Srv {
        name: String,
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
    },
    Cname {
        name: String,
        target: String,
    },
}

impl Wanted {
    fn name(&self) -> &str {
        match self {
            Wanted::Srv { name, .. } | Wanted::Cname { name, .. } => name,
        }
    }

    fn zone_line(&self) -> String {
        match self {
            Wanted::Srv {
                name,
                priority,
                weight,
                port,
                target,
            } => format!("{name} {TTL} IN SRV {priority} {weight} {port} {target}"),
            Wanted::Cname { name, target } => format!("{name} {TTL} IN CNAME {target}"),
        }
    }
}

fn fqdn(name: &str) -> String {
    let name = pop3_auth::directory::normalize_domain(name.trim_end_matches('.'));
    if name.is_empty() {
        ".".into()
    } else {
        format!("{name}.")
    }
}

/// The records for `domain`.
fn wanted(domain: &str, e: &Endpoints) -> Vec<Wanted> {
    let d = fqdn(domain);
    let host = fqdn(&e.host);
    // A service not offered: "0 0 0 ." (RFC 2782's convention, RFC 6186 section 4).
    let srv = |service: &str, priority, port: Option<u16>, target: &str| Wanted::Srv {
        name: format!("_{service}._tcp.{d}"),
        priority: if port.is_some() { priority } else { 0 },
        weight: u16::from(port.is_some()),
        port: port.unwrap_or(0),
        target: if port.is_some() {
            target.to_owned()
        } else {
            ".".into()
        },
    };
    let (smtp, smtp_port) = &e.submission;
    let submission = if *smtp_port == 465 {
        "submissions"
    } else {
        "submission"
    };
    vec![
        srv("pop3s", 0, e.pop3s, &host),
        srv("pop3", 10, e.pop3, &host),
        srv(submission, 0, Some(*smtp_port), &fqdn(smtp)),
        srv("autodiscover", 0, Some(443), &host),
        Wanted::Cname {
            name: format!("autoconfig.{d}"),
            target: host.clone(),
        },
        Wanted::Cname {
            name: format!("autodiscover.{d}"),
            target: host,
        },
    ]
}

/// Prints the records, and with `resolver` checks them.
pub(crate) fn run(
    config: &pop3_server::Config,
    domain: &str,
    check: Option<SocketAddr>,
) -> Result<ExitCode> {
    let endpoints = Endpoints::of(config, None);
    let records = wanted(domain, &endpoints);
    println!(
        "; Mail clients of {} to POP3 at {} (RFC 6186 SRV; implicit TLS first, RFC 8314)",
        fqdn(domain),
        fqdn(&endpoints.host)
    );
    for r in &records {
        println!("{}", r.zone_line());
    }
    let Some(resolver) = check else {
        return Ok(ExitCode::SUCCESS);
    };
    println!("; checking with the resolver at {resolver}");
    let mut problems = 0;
    for r in &records {
        let verdict = match lookup(resolver, r) {
            Ok(found) if found.contains(r) => "ok".to_owned(),
            Ok(found) if found.is_empty() => {
                problems += 1;
                "MISSING".to_owned()
            }
            Ok(found) => {
                problems += 1;
                let lines: Vec<String> = found.iter().map(Wanted::zone_line).collect();
                format!("DIFFERENT: found {}", lines.join("; "))
            }
            Err(e) => {
                problems += 1;
                format!("NOT CHECKED: {e:#}")
            }
        };
        println!("{}: {verdict}", r.zone_line());
    }
    if problems > 0 {
        println!(
            "; {problems} record(s) to fix: publish the lines above in the zone of {}",
            fqdn(domain)
        );
        return Ok(ExitCode::from(1));
    }
    println!("; all records are published");
    Ok(ExitCode::SUCCESS)
}

/// The resolver in /etc/resolv.conf (its first `nameserver`), port 53.
pub(crate) fn system_resolver() -> Result<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf")
        .context("cannot read /etc/resolv.conf; give --resolver")?;
    for line in text.lines() {
        if let Some(addr) = line.trim().strip_prefix("nameserver") {
            let ip: std::net::IpAddr = addr
                .trim()
                .parse()
                .context("a nameserver in /etc/resolv.conf is not an address")?;
            return Ok(SocketAddr::new(ip, 53));
        }
    }
    bail!("/etc/resolv.conf names no nameserver; give --resolver")
}

/// The records of `wanted`'s name and type the resolver returns.
fn lookup(resolver: SocketAddr, wanted: &Wanted) -> Result<Vec<Wanted>> {
    let kind = match wanted {
        Wanted::Srv { .. } => RecordType::SRV,
        Wanted::Cname { .. } => RecordType::CNAME,
    };
    let name = Name::from_ascii(wanted.name())
        .with_context(|| format!("{} is not a DNS name", wanted.name()))?;
    let mut query = Message::new();
    let id = u16::from_le_bytes(rand_bytes());
    query
        .set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(name, kind));
    let bytes = query.to_vec().context("cannot encode the DNS query")?;
    let bind: SocketAddr = if resolver.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()?;
    let socket = UdpSocket::bind(bind)?;
    socket.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut buf = vec![0u8; 4096];
    let mut answer = None;
    for _ in 0..2 {
        socket.send_to(&bytes, resolver)?;
        match socket.recv_from(&mut buf) {
            Ok((n, from)) if from == resolver => {
                let message =
                    Message::from_vec(&buf[..n]).context("the resolver's answer is not DNS")?;
                if message.id() == id {
                    answer = Some(message);
                    break;
                }
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e).context("cannot reach the resolver"),
        }
    }
    let answer = answer.with_context(|| format!("no answer from {resolver}"))?;
    let found = answer
        .answers()
        .iter()
        .filter_map(|record| {
            let name = fqdn(&record.name().to_ascii());
            match record.data() {
                RData::SRV(srv) => Some(Wanted::Srv {
                    name,
                    priority: srv.priority(),
                    weight: srv.weight(),
                    port: srv.port(),
                    target: fqdn(&srv.target().to_ascii()),
                }),
                RData::CNAME(cname) => Some(Wanted::Cname {
                    name,
                    target: fqdn(&cname.0.to_ascii()),
                }),
                _ => None,
            }
        })
        .filter(|r| r.name() == wanted.name())
        .collect();
    Ok(found)
}

/// Two random bytes for a query ID (RFC 5452: unpredictable IDs); the clock's if the system
/// has no randomness to give.
fn rand_bytes() -> [u8; 2] {
    let mut b = [0u8; 2];
    if getrandom::fill(&mut b).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let [_, _, high, low] = nanos.to_be_bytes();
        b = [high, low];
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn implicit_tls_ranks_first_and_missing_services_point_nowhere() {
        let e = Endpoints {
            host: "Mail.Example.ORG".into(),
            pop3s: Some(995),
            pop3: None,
            submission: ("smtp.example.org".into(), 465),
        };
        let lines: Vec<String> = wanted("example.org", &e)
            .iter()
            .map(Wanted::zone_line)
            .collect();
        assert_eq!(
            lines,
            [
                "_pop3s._tcp.example.org. 3600 IN SRV 0 1 995 mail.example.org.",
                "_pop3._tcp.example.org. 3600 IN SRV 0 0 0 .",
                "_submissions._tcp.example.org. 3600 IN SRV 0 1 465 smtp.example.org.",
                "_autodiscover._tcp.example.org. 3600 IN SRV 0 1 443 mail.example.org.",
                "autoconfig.example.org. 3600 IN CNAME mail.example.org.",
                "autodiscover.example.org. 3600 IN CNAME mail.example.org.",
            ]
        );
    }
}
