//! The PROXY protocol (HAProxy's specification, versions 1 and 2): behind a load balancer every
//! connection comes from the balancer, and the client's own address arrives in a header the
//! balancer sends first. That address is what penalties, per-address limits,
//! `plaintext_networks` and the logs must use, or one guesser would penalise everyone behind
//! the balancer.
//!
//! A header is believed only from `listen.proxy_from`; from there it is required (a
//! connection without one is closed: a proxy configured to send it always does), and from
//! anywhere else a connection that starts with one is closed (`PROXY ...` would otherwise be
//! an unknown command, and version 2's signature even contains `QUIT`). Headers are parsed by
//! the `ppp` crate; this module reads exactly the header's octets off the stream, so whatever
//! follows (a TLS ClientHello) stays for the session.

use std::io;
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The start of a version 1 header.
const V1_PREFIX: &[u8] = b"PROXY ";
/// A version 2 header's 12-octet signature.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest version 1 header, CRLF included (the specification's limit).
const V1_MAX: usize = 107;
/// The largest version 2 header accepted: the fixed 16 octets and the longest address block
/// (UNIX sockets, 216 octets) with room for the TLVs HAProxy sends (SSL, unique ID, ALPN).
const V2_MAX: usize = 16 + 1024;
/// How long a proxy may take to send its header: it sends it with the connection.
pub(crate) const HEADER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether the first octets a client sent are (the start of) a PROXY header.
pub(crate) fn looks_like_header(first: &[u8]) -> bool {
    let n = first.len().min(V2_SIGNATURE.len());
    n >= 5
        && (V1_PREFIX.starts_with(&first[..n.min(V1_PREFIX.len())])
            || V2_SIGNATURE.starts_with(&first[..n]))
}

/// Reads a PROXY header off `stream`: the client's address, or `None` when the header says
/// the connection is the proxy's own (v1 `UNKNOWN`, v2 `LOCAL`, or a family other than IP,
/// e.g. a health check), in which case the connection's own peer address stands.
pub(crate) async fn read_header<R: AsyncRead + Unpin>(
    stream: &mut R,
) -> io::Result<Option<SocketAddr>> {
    let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    let mut header = vec![0u8; V1_PREFIX.len()];
    stream.read_exact(&mut header).await?;
    if header == V1_PREFIX {
        // Up to the line's end, an octet at a time so nothing after it is consumed.
        while !header.ends_with(b"\r\n") {
            if header.len() == V1_MAX {
                return Err(bad(format!("PROXY v1 header longer than {V1_MAX} octets")));
            }
            header.push(stream.read_u8().await?);
        }
    } else if V2_SIGNATURE.starts_with(&header) {
        header.resize(16, 0);
        stream.read_exact(&mut header[V1_PREFIX.len()..]).await?;
        let rest = usize::from(u16::from_be_bytes([header[14], header[15]]));
        if 16 + rest > V2_MAX {
            return Err(bad(format!(
                "PROXY v2 header of {} octets (at most {V2_MAX})",
                16 + rest
            )));
        }
        header.resize(16 + rest, 0);
        stream.read_exact(&mut header[16..]).await?;
    } else {
        return Err(bad(
            "no PROXY header from an address in listen.proxy_from".to_owned()
        ));
    }
    parse(&header).map_err(bad)
}

/// The client address a complete header carries (see [`read_header`]).
fn parse(header: &[u8]) -> Result<Option<SocketAddr>, String> {
    use ppp::{HeaderResult, v1, v2};
    let ip4 = |a: v1::IPv4| SocketAddr::from((a.source_address, a.source_port));
    let ip6 = |a: v1::IPv6| SocketAddr::from((a.source_address, a.source_port));
    match HeaderResult::parse(header) {
        HeaderResult::V1(Ok(h)) => Ok(match h.addresses {
            v1::Addresses::Tcp4(a) => Some(ip4(a)),
            v1::Addresses::Tcp6(a) => Some(ip6(a)),
            v1::Addresses::Unknown => None,
        }),
        HeaderResult::V2(Ok(h)) => Ok(match (h.command, h.addresses) {
            (v2::Command::Local, _) => None,
            (v2::Command::Proxy, v2::Addresses::IPv4(a)) => Some(ip4(a)),
            (v2::Command::Proxy, v2::Addresses::IPv6(a)) => Some(ip6(a)),
            (v2::Command::Proxy, _) => None,
        }),
        HeaderResult::V1(Err(e)) => Err(format!("malformed PROXY v1 header: {e}")),
        HeaderResult::V2(Err(e)) => Err(format!("malformed PROXY v2 header: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(input: &[u8]) -> (io::Result<Option<SocketAddr>>, Vec<u8>) {
        let mut stream = input;
        let result = read_header(&mut stream).await;
        (result, stream.to_vec())
    }

    fn v2(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        let len = u16::try_from(addresses.len() + tlvs.len()).unwrap();
        h.extend_from_slice(&len.to_be_bytes());
        h.extend_from_slice(addresses);
        h.extend_from_slice(tlvs);
        h
    }

    #[tokio::test]
    async fn version_1_and_2_give_the_client_and_leave_what_follows() {
        let (got, rest) = read(b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 110\r\nCAPA\r\n").await;
        assert_eq!(got.unwrap(), Some("192.0.2.7:51234".parse().unwrap()));
        assert_eq!(rest, b"CAPA\r\n");
        let (got, _) = read(b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 995\r\n").await;
        assert_eq!(got.unwrap(), Some("[2001:db8::7]:40000".parse().unwrap()));
        let (got, rest) = read(b"PROXY UNKNOWN\r\n").await;
        assert_eq!((got.unwrap(), rest), (None, vec![]));

        let mut addrs = vec![192, 0, 2, 9, 10, 0, 0, 1];
        addrs.extend_from_slice(&4321u16.to_be_bytes());
        addrs.extend_from_slice(&995u16.to_be_bytes());
        // With a TLV (PP2_TYPE_UNIQUE_ID) and a TLS ClientHello's first octets after it.
        let mut input = v2(1, 0x11, &addrs, &[0x05, 0x00, 0x02, 0xab, 0xcd]);
        input.extend_from_slice(b"\x16\x03\x01");
        let (got, rest) = read(&input).await;
        assert_eq!(got.unwrap(), Some("192.0.2.9:4321".parse().unwrap()));
        assert_eq!(rest, b"\x16\x03\x01");
        let mut addrs6 = vec![0x20, 0x01, 0x0d, 0xb8];
        addrs6.resize(16, 0);
        addrs6[15] = 7;
        addrs6.extend_from_slice(&[0; 16]);
        addrs6.extend_from_slice(&[0, 80, 0, 110]);
        let (got, _) = read(&v2(1, 0x21, &addrs6, &[])).await;
        assert_eq!(got.unwrap(), Some("[2001:db8::7]:80".parse().unwrap()));
        // LOCAL: the proxy's own connection (a health check).
        let (got, _) = read(&v2(0, 0x00, &[], &[])).await;
        assert_eq!(got.unwrap(), None);
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        for input in [
            &b"CAPA\r\n"[..],
            b"USER alice\r\n",
            b"PROXY TCP4 not-an-address 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 51234\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 99999 110\r\n",
            b"\r\n\r\n\0\r\nQUIT\n\x31\x11\x00\x0c",
        ] {
            let (got, _) = read(input).await;
            assert!(got.is_err(), "{input:?}");
        }
        // Endless v1 line: stopped at the limit, not read to the end.
        let mut endless = b"PROXY TCP4 ".to_vec();
        endless.resize(10_000, b'1');
        let (got, rest) = read(&endless).await;
        assert!(got.unwrap_err().to_string().contains("107"));
        assert_eq!(rest.len(), 10_000 - V1_MAX);
        // A v2 length beyond what any proxy sends.
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        let (got, _) = read(&huge).await;
        assert!(got.unwrap_err().to_string().contains("at most"));
        // Wrong version nibble.
        let mut v3 = v2(1, 0x11, &[0; 12], &[]);
        v3[12] = 0x31;
        assert!(read(&v3).await.0.is_err());
        // A header cut short is an error (the connection ended), never a hang.
        let (got, _) = read(b"PROXY TCP4 192.0.2.7").await;
        assert!(got.is_err());
    }

    #[test]
    fn headers_are_recognised_from_their_first_octets() {
        assert!(looks_like_header(b"PROXY TCP4 1.2.3.4"));
        assert!(looks_like_header(b"PROXY"));
        assert!(looks_like_header(V2_SIGNATURE));
        assert!(looks_like_header(b"\r\n\r\n\0\r"));
        assert!(!looks_like_header(b"CAPA\r\n"));
        assert!(!looks_like_header(b"PRO"));
        assert!(!looks_like_header(b"\r\n"));
        assert!(!looks_like_header(b"QUIT\r\n"));
    }
}
