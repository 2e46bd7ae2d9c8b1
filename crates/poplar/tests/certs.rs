//! Certificates as administrators make them, served by a real Dovecot, and what `poplar fetch`,
//! `poplar migrate` and `poplar fetch --serverinfo` make of each: OpenSSL 3's `req -x509`
//! (which marks the certificate `CA:TRUE`) with and without a subjectAltName, Debian's Dovecot
//! `mkcert.sh` configuration (common name only), ECDSA, a CA with a leaf, an expired one and one
//! for another name. The certificate file given with `--ca-file` is trusted when it is exactly
//! the server's, names and validity still checked; the wrong ones are refused with a message
//! that says what to do, and `--serverinfo` shows every one with its fingerprint.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::dovecot::Dovecot;
use common::{BIN, ServerBuilder, tool};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// What the client should make of a certificate given as `--ca-file`.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Trusted,
    /// Refused; the message contains this.
    Refused(&'static str),
}

/// A certificate and key for Dovecot, and the file a client is given to trust.
struct Made {
    what: &'static str,
    cert: PathBuf,
    key: PathBuf,
    ca_file: PathBuf,
    expect: Expect,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = tool("openssl")
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes each certificate in its own directory under `root`, readable by Dovecot.
fn certificates(root: &Path) -> Vec<Made> {
    let mut made = Vec::new();
    let mut add = |what, name: &str, expect, steps: &dyn Fn(&Path)| {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        steps(&dir);
        let ca_file = if dir.join("ca.pem").exists() {
            dir.join("ca.pem")
        } else {
            dir.join("cert.pem")
        };
        let status = Command::new("chmod")
            .arg("644")
            .arg(dir.join("key.pem"))
            .status()
            .unwrap();
        assert!(status.success());
        made.push(Made {
            what,
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            ca_file,
            expect,
        });
    };
    let rsa = ["-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem"];
    add(
        "openssl req -x509 with -addext subjectAltName (CA:TRUE)",
        "san",
        Expect::Trusted,
        &|d| {
            let mut args = vec!["req", "-x509", "-days", "2", "-out", "cert.pem"];
            args.extend(rsa);
            args.extend([
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
            ]);
            openssl(d, &args);
        },
    );
    add(
        "openssl req -x509 without -addext (CN only, CA:TRUE)",
        "cn-only",
        Expect::Trusted,
        &|d| {
            let mut args = vec!["req", "-x509", "-days", "2", "-out", "cert.pem"];
            args.extend(rsa);
            args.extend(["-subj", "/CN=localhost"]);
            openssl(d, &args);
        },
    );
    add(
        "Debian's Dovecot mkcert.sh configuration",
        "mkcert",
        Expect::Trusted,
        &|d| {
            // As /usr/share/dovecot/dovecot-openssl.cnf and mkcert.sh make it: a distinguished
            // name from the file, nsCertType server, no subjectAltName.
            std::fs::write(
                d.join("dovecot-openssl.cnf"),
                "[ req ]\ndefault_bits = 2048\nencrypt_key = yes\ndistinguished_name = req_dn\n\
                 x509_extensions = cert_type\nprompt = no\n\n[ req_dn ]\nOU=IMAP server\n\
                 CN=localhost\nemailAddress=postmaster@localhost\n\n[ cert_type ]\n\
                 nsCertType = server\n",
            )
            .unwrap();
            openssl(
                d,
                &[
                    "req",
                    "-new",
                    "-x509",
                    "-nodes",
                    "-config",
                    "dovecot-openssl.cnf",
                    "-out",
                    "cert.pem",
                    "-keyout",
                    "key.pem",
                    "-days",
                    "365",
                ],
            );
        },
    );
    add(
        "an ECDSA P-256 certificate",
        "ecdsa",
        Expect::Trusted,
        &|d| {
            openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-keyout",
                    "key.pem",
                    "-out",
                    "cert.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=localhost",
                    "-addext",
                    "subjectAltName=DNS:localhost",
                ],
            );
        },
    );
    add(
        "a CA and a leaf it signed (--ca-file is the CA)",
        "ca-leaf",
        Expect::Trusted,
        &|d| {
            let mut args = vec!["req", "-x509", "-days", "2", "-out", "ca.pem"];
            args.extend(["-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key"]);
            args.extend(["-subj", "/CN=Poplar Test CA"]);
            openssl(d, &args);
            let mut args = vec!["req", "-new", "-out", "leaf.csr"];
            args.extend(rsa);
            args.extend(["-subj", "/CN=localhost"]);
            openssl(d, &args);
            std::fs::write(
                d.join("leaf.ext"),
                "basicConstraints=critical,CA:FALSE\nsubjectAltName=DNS:localhost\n\
                 extendedKeyUsage=serverAuth\n",
            )
            .unwrap();
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    "leaf.csr",
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-extfile",
                    "leaf.ext",
                    "-out",
                    "cert.pem",
                ],
            );
        },
    );
    add(
        "an expired certificate",
        "expired",
        Expect::Refused("expired on"),
        &|d| {
            let mut args = vec!["req", "-new", "-out", "cert.csr"];
            args.extend(rsa);
            args.extend(["-subj", "/CN=localhost"]);
            openssl(d, &args);
            std::fs::write(d.join("cert.ext"), "subjectAltName=DNS:localhost\n").unwrap();
            openssl(
                d,
                &[
                    "x509", "-req", "-in", "cert.csr", "-signkey", "key.pem", "-days", "-1",
                    "-extfile", "cert.ext", "-out", "cert.pem",
                ],
            );
        },
    );
    add(
        "a certificate for another name",
        "wrong-name",
        Expect::Refused("not for localhost"),
        &|d| {
            let mut args = vec!["req", "-x509", "-days", "2", "-out", "cert.pem"];
            args.extend(rsa);
            args.extend([
                "-subj",
                "/CN=mail.example.net",
                "-addext",
                "subjectAltName=DNS:mail.example.net",
            ]);
            openssl(d, &args);
        },
    );
    made
}

/// `openssl x509 -fingerprint -sha256`'s colon-separated digits.
fn openssl_fingerprint(cert: &Path) -> String {
    let out = tool("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(cert)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.trim().rsplit('=').next().unwrap().to_owned()
}

fn run(cmd: &mut Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin);
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn serverinfo(url: &str, extra: &[&str]) -> Output {
    run(
        Command::new(BIN)
            .args(["fetch", "--serverinfo", url])
            .args(extra),
        b"",
    )
}

fn fetch(url: &str, to: &Path, journal: &Path, extra: &[&str]) -> Output {
    run(
        Command::new(BIN)
            .args(["fetch", url, "--password-stdin", "--keep", "--to"])
            .arg(format!("maildir:{}", to.display()))
            .arg("--journal")
            .arg(journal)
            .args(extra),
        b"pw\n",
    )
}

fn migrate(url: &str, config: &Path, extra: &[&str]) -> Output {
    run(
        Command::new(BIN)
            .args([
                "migrate",
                url,
                "--to",
                "alice",
                "--password-stdin",
                "--config",
            ])
            .arg(config)
            .args(extra),
        b"pw\n",
    )
}

#[test]
fn certificates_made_with_openssl_are_trusted_or_refused_with_advice() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mail = root.join("mail");
    let maildir = mail.join("_default_/alice/Maildir");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    std::fs::write(
        maildir.join("new/1700000000.M1P1.old"),
        "Subject: one\r\n\r\nbody\r\n",
    )
    .unwrap();
    let status = Command::new("chown")
        .args(["-R", "nobody:nogroup"])
        .arg(&mail)
        .status()
        .unwrap();
    assert!(status.success());

    for (i, made) in certificates(&root.join("certs")).into_iter().enumerate() {
        let what = made.what;
        let run_dir = root.join(format!("dovecot{i}"));
        std::fs::create_dir_all(&run_dir).unwrap();
        let dovecot = Dovecot::start_with_tls(&run_dir, &mail, "", Some((&made.cert, &made.key)));
        let pop3s = format!("pop3s://localhost:{}", dovecot.pop3s_port.unwrap());
        let user_url = format!("pop3s://alice@localhost:{}", dovecot.pop3s_port.unwrap());
        let ca = made.ca_file.to_str().unwrap();
        let fingerprint = openssl_fingerprint(&made.cert);

        // --serverinfo: always shows the certificate, with the fingerprint openssl computes,
        // says whether it is trusted, and exits 0; no user needed in the URL.
        let info = serverinfo(&pop3s, &[]);
        let shown = text(&info);
        assert_eq!(info.status.code(), Some(0), "{what}: {shown}");
        assert!(
            shown.contains(&format!("SHA-256 {fingerprint}")),
            "{what}: {shown}"
        );
        assert!(
            shown.contains("Trusted:       NO: "),
            "{what}: not in the system's CAs: {shown}"
        );
        let info = serverinfo(&pop3s, &["--ca-file", ca]);
        let shown = text(&info);
        assert_eq!(info.status.code(), Some(0), "{what}: {shown}");
        match made.expect {
            Expect::Trusted => assert!(shown.contains("Trusted:       yes"), "{what}: {shown}"),
            Expect::Refused(why) => assert!(
                shown.contains("Trusted:       NO: ") && shown.contains(why),
                "{what}: {shown}"
            ),
        }

        // fetch and migrate with --ca-file.
        let out_dir = root.join(format!("out{i}"));
        let fetched = fetch(
            &user_url,
            &out_dir,
            &root.join(format!("j{i}")),
            &["--ca-file", ca],
        );
        let target = ServerBuilder::new();
        std::fs::create_dir_all(target.data_dir()).unwrap();
        std::fs::write(target.data_dir().join("users"), "alice:{PLAIN}pw\n").unwrap();
        let config = target.write_config();
        let migrated = migrate(&user_url, &config, &["--ca-file", ca]);
        match made.expect {
            Expect::Trusted => {
                assert!(
                    fetched.status.success(),
                    "{what}: fetch: {}",
                    text(&fetched)
                );
                assert_eq!(std::fs::read_dir(out_dir.join("new")).unwrap().count(), 1);
                assert!(
                    migrated.status.success(),
                    "{what}: migrate: {}",
                    text(&migrated)
                );
                assert!(
                    text(&migrated).contains("1 imported"),
                    "{what}: {}",
                    text(&migrated)
                );
            }
            Expect::Refused(why) => {
                let said = text(&fetched);
                assert_eq!(fetched.status.code(), Some(78), "{what}: fetch: {said}");
                assert!(
                    said.contains("is not trusted") && said.contains(why),
                    "{what}: {said}"
                );
                let said = text(&migrated);
                assert!(!migrated.status.success(), "{what}: migrate: {said}");
                assert!(
                    said.contains("is not trusted") && said.contains(why),
                    "{what}: {said}"
                );
            }
        }

        // The advice works: pinning the fingerprint --serverinfo showed, and --server-name for
        // a certificate that names the server otherwise.
        if what.starts_with("openssl req -x509 with") {
            let pinned = fetch(
                &user_url,
                &root.join("pinned"),
                &root.join("jp"),
                &["--tls-fingerprint", &fingerprint],
            );
            assert!(pinned.status.success(), "pinned: {}", text(&pinned));
            let stls = fetch(
                &format!("pop3://alice@localhost:{}", dovecot.port),
                &root.join("stls"),
                &root.join("js"),
                &["--ca-file", ca],
            );
            assert!(stls.status.success(), "STLS: {}", text(&stls));
        }
        if what.contains("another name") {
            let named = fetch(
                &user_url,
                &root.join("named"),
                &root.join("jn"),
                &["--ca-file", ca, "--server-name", "mail.example.net"],
            );
            assert!(named.status.success(), "--server-name: {}", text(&named));
            let other = fetch(
                &user_url,
                &root.join("other"),
                &root.join("jo"),
                &["--ca-file", ca, "--server-name", "pop.example.net"],
            );
            assert_eq!(other.status.code(), Some(78), "{}", text(&other));
        }
    }
}
