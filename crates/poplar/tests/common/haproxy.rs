//! A real HAProxy (Debian's package) in TCP mode in front of Poplar nodes, sending the PROXY
//! protocol from [`SOURCE`], the address the nodes list in `listen.proxy_from`.

use super::{eventually, free_port, tool};
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::time::Duration;

/// The address HAProxy connects to the nodes from.
pub const SOURCE: &str = "127.0.0.3";

/// One frontend: its own loopback port, round robin over `nodes`, with `how` on each server
/// line (`send-proxy-v2` or `send-proxy`).
pub struct Frontend<'a> {
    pub nodes: &'a [SocketAddr],
    pub how: &'a str,
}

/// A running HAProxy, stopped when dropped.
pub struct Haproxy {
    child: Child,
    _dir: tempfile::TempDir,
    /// The frontends' addresses, in the order given.
    pub fronts: Vec<SocketAddr>,
}

impl Haproxy {
    pub fn start(frontends: &[Frontend<'_>]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = "global\n    maxconn 500\n\
             defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n"
            .to_owned();
        let mut fronts = Vec::new();
        for (i, f) in frontends.iter().enumerate() {
            let front = SocketAddr::from(([127, 0, 0, 1], free_port()));
            config.push_str(&format!(
                "frontend f{i}\n    bind {front}\n    default_backend b{i}\n\
                 backend b{i}\n    balance roundrobin\n"
            ));
            for (n, node) in f.nodes.iter().enumerate() {
                config.push_str(&format!(
                    "    server node{n} {node} {} source {SOURCE}\n",
                    f.how
                ));
            }
            fronts.push(front);
        }
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let child = tool("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let proxy = Haproxy {
            child,
            _dir: dir,
            fronts,
        };
        eventually(Duration::from_secs(10), "HAProxy listening", || {
            proxy
                .fronts
                .iter()
                .all(|a| std::net::TcpStream::connect(a).is_ok())
                .then_some(())
        });
        proxy
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
