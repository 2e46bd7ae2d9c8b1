//! The server over the in-memory store: the driver works with any `MailStore`, in process.

#![allow(clippy::unwrap_used, missing_docs)]

use pop3_server::{Config, Kind, Server};
use pop3_store::MemoryStore;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

async fn line(r: &mut BufReader<TcpStream>) -> String {
    let mut l = String::new();
    r.read_line(&mut l).await.unwrap();
    l.trim_end().to_owned()
}

#[tokio::test]
async fn session_over_the_memory_store() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users"), "alice:{PLAIN}secret\n").unwrap();
    let mut config = Config {
        data_dir: dir.path().to_owned(),
        ..Config::default()
    };
    config.listen.pop3 = vec!["127.0.0.1:0".parse().unwrap()];
    config.listen.pop3s = vec![];
    config.tls.enabled = false;
    config.auth.failure_delay = std::time::Duration::from_millis(10);
    let store = MemoryStore::new();
    store.deliver("alice", b"Subject: one\n\nfirst\n");
    store.deliver("alice", b"Subject: two\n\nsecond");
    let server = Server::bind(&config, store.clone()).await.unwrap();
    let (kind, addr) = server.local_addrs()[0];
    assert_eq!(kind, Kind::Pop3);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(async {
        let _ = stop_rx.await;
    }));

    let mut c = BufReader::new(TcpStream::connect(addr).await.unwrap());
    assert!(line(&mut c).await.starts_with("+OK"));
    c.get_mut()
        .write_all(b"USER alice\r\nPASS secret\r\nLIST\r\n")
        .await
        .unwrap();
    assert_eq!(line(&mut c).await, "+OK Send your password");
    assert_eq!(
        line(&mut c).await,
        "+OK Logged in, maildrop has 2 messages (47 octets)"
    );
    assert_eq!(line(&mut c).await, "+OK 2 messages (47 octets)");
    assert_eq!(line(&mut c).await, "1 23");
    assert_eq!(line(&mut c).await, "2 24");
    assert_eq!(line(&mut c).await, ".");
    c.get_mut()
        .write_all(b"RETR 2\r\nDELE 1\r\nQUIT\r\n")
        .await
        .unwrap();
    assert_eq!(line(&mut c).await, "+OK 24 octets");
    assert_eq!(line(&mut c).await, "Subject: two");
    assert_eq!(line(&mut c).await, "");
    assert_eq!(line(&mut c).await, "second");
    assert_eq!(line(&mut c).await, ".");
    assert_eq!(line(&mut c).await, "+OK Message 1 deleted");
    assert_eq!(
        line(&mut c).await,
        "+OK Poplar POP3 server signing off (1 message left)"
    );
    assert_eq!(
        store.messages("alice"),
        vec![b"Subject: two\n\nsecond".to_vec()]
    );

    stop_tx.send(()).unwrap();
    serving.await.unwrap();
}
