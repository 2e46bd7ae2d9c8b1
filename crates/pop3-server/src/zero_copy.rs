//! Sending a stored message without reading it: when the store knows a file to be exactly what
//! RETR sends (see `pop3_store::MessageSource::verbatim_file`) and the connection is a plain TCP
//! socket, sendfile(2) moves the octets from the page cache to the socket inside the kernel,
//! with no copy through this process and no trip through tokio's blocking pool.
//!
//! TLS connections keep the streaming encoder: rustls encrypts in user space. Kernel TLS would
//! let sendfile work there too; [`retr_path`] says what this machine offers, for the log.

use std::any::Any;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::time::Duration;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// The TCP socket under a connection's stream, when the stream is one (a plain POP3
/// connection); TLS streams and in-process pipes have none.
pub(crate) fn socket<IO: 'static>(io: &mut IO) -> Option<&mut TcpStream> {
    (io as &mut dyn Any).downcast_mut::<TcpStream>()
}

/// The most sendfile moves in one call (the kernel's own cap is just under 2 GiB).
const MOST_PER_CALL: usize = 1 << 30;

/// Sends the first `len` octets of `file` to `socket`, giving up when the client has taken
/// nothing for `limit`. A file shorter than `len` is an error: the client was promised `len`.
pub(crate) async fn send_file(
    socket: &TcpStream,
    file: &File,
    len: u64,
    limit: Duration,
) -> io::Result<()> {
    let mut offset: i64 = 0;
    let end = i64::try_from(len).map_err(io::Error::other)?;
    while offset < end {
        let left = usize::try_from(end - offset).unwrap_or(usize::MAX);
        let sent = socket.try_io(Interest::WRITABLE, || {
            nix::sys::sendfile::sendfile(
                socket.as_fd(),
                file.as_fd(),
                Some(&mut offset),
                left.min(MOST_PER_CALL),
            )
            .map_err(io::Error::from)
        });
        match sent {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the message file became shorter while it was being sent",
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                match tokio::time::timeout(limit, socket.writable()).await {
                    Ok(ready) => ready?,
                    Err(_) => {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "client stopped reading",
                        ));
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// How RETR sends messages on a listener of this kind, for the log: by sendfile where the
/// connection is plain TCP, through rustls in user space under TLS, and whether this kernel
/// would offer TLS in the kernel (the `tls` upper-layer protocol).
pub fn retr_path(kind: crate::Kind) -> String {
    let offered = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp")
        .is_ok_and(|ulps| ulps.split_whitespace().any(|u| u == "tls"));
    let tls = if offered {
        "rustls encrypts in user space (this kernel offers kernel TLS, which Poplar does not use yet)"
    } else {
        "rustls encrypts in user space (no kernel TLS here: the tls module is not loaded)"
    };
    match kind {
        crate::Kind::Pop3s => format!("RETR under TLS: {tls}"),
        crate::Kind::Pop3 | crate::Kind::Kpop => {
            format!("RETR sends messages stored as sent by sendfile, unread; after STLS {tls}")
        }
    }
}
