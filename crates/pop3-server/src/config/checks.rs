//! Checks of a configuration that parsing cannot make: settings that contradict each other or
//! leave something open, and, for `poplar check-config` and the start of `poplar serve`, the
//! system around it (files, certificate, accounts, sockets). Nothing here changes anything on
//! disk: a check that created the data directory would hide the mistake it should report.

use super::{Config, LmtpAddr, MECHANISMS, Problem, Severity, StoreBackend};
use std::path::Path;
use std::time::Duration;

impl Config {
    /// Checks the settings for mistakes that parsing cannot catch. `check_files` also looks at
    /// the files the configuration names.
    pub fn problems(&self, check_files: bool) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut error = |m: String| {
            out.push(Problem {
                severity: Severity::Error,
                message: m,
            })
        };
        if self.listen.pop3.is_empty() && self.listen.pop3s.is_empty() {
            error("[listen] has no addresses: set listen.pop3 and/or listen.pop3s.".into());
        }
        if self.group.is_some() && self.user.is_none() {
            error(
                "group is set but user is not: set user too (group alone switches nothing).".into(),
            );
        }
        let mut seen = std::collections::HashSet::new();
        for addr in self.listen.pop3.iter().chain(&self.listen.pop3s) {
            if addr.port() != 0 && !seen.insert(addr) {
                error(format!(
                    "listen address {addr} appears twice; each address can serve one listener."
                ));
            }
        }
        if let Some(addr) = self.metrics.listen
            && !addr.ip().is_loopback()
            && self
                .metrics
                .allow_from
                .iter()
                .all(|n| n.addr().is_loopback())
        {
            error(format!(
                "metrics.listen {addr} is not a loopback address but metrics.allow_from admits \
                 only loopback: list the networks of your Prometheus servers in \
                 metrics.allow_from (metrics tell who is busy and when), or listen on 127.0.0.1."
            ));
        }
        for addr in &self.listen.lmtp {
            if let LmtpAddr::Tcp(a) = addr
                && !a.ip().is_loopback()
            {
                error(format!(
                    "listen.lmtp {a} is not a loopback address: LMTP has no authentication, so \
                     anyone reaching it could deliver mail. Use unix:/path or 127.0.0.1."
                ));
            }
        }
        if !self.tls.enabled && !self.listen.pop3s.is_empty() {
            error(
                "listen.pop3s is set but tls.enabled = false: implicit-TLS listeners need TLS. \
                 Remove listen.pop3s or enable TLS."
                    .into(),
            );
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            error("tls.cert and tls.key must be set together (or both left out for a generated self-signed certificate).".into());
        }
        if self.timeouts.idle_after_login < Duration::from_secs(600) {
            error(format!(
                "timeouts.idle_after_login is {:?}; RFC 1939 requires at least 10 minutes (\"10m\").",
                self.timeouts.idle_after_login
            ));
        }
        for (name, d) in [
            ("timeouts.tls_handshake", self.timeouts.tls_handshake),
            (
                "timeouts.idle_before_login",
                self.timeouts.idle_before_login,
            ),
            ("timeouts.login", self.timeouts.login),
            ("timeouts.write", self.timeouts.write),
        ] {
            if d.is_zero() {
                error(format!(
                    "{name} is 0; a connection would be closed at once. Use e.g. \"30s\"."
                ));
            }
        }
        if self.limits.max_connections == 0
            || self.limits.max_connections_per_ip == 0
            || self.limits.max_connections_per_user == 0
        {
            error(
                "limits.max_connections, max_connections_per_ip and max_connections_per_user must be at least 1."
                    .into(),
            );
        }
        if self.limits.max_message_size == 0 || self.limits.max_snapshot_messages == 0 {
            error("limits.max_message_size and max_snapshot_messages must be at least 1.".into());
        }
        if self.limits.max_bad_commands == 0 {
            error("limits.max_bad_commands must be at least 1.".into());
        }
        if self.limits.max_sasl_line < 255 {
            error("limits.max_sasl_line must be at least 255 octets (the RFC 2449 command line length).".into());
        }
        for m in self.auth.mechanisms.iter().flatten() {
            if !MECHANISMS.contains(&m.to_ascii_uppercase().as_str()) {
                error(format!(
                    "auth.mechanisms lists {m:?}, which Poplar does not implement; choose from {}.",
                    MECHANISMS.join(", ")
                ));
            }
        }
        if self.auth.gssapi.is_some() && !cfg!(feature = "gssapi") {
            error(
                "[auth.gssapi] is set, but this poplar was built without Kerberos: install the \
                 Debian package (built with it), or build with `cargo build --release --features \
                 gssapi` (needs libkrb5-dev and libclang-dev)."
                    .into(),
            );
        }
        if !self.listen.kpop.is_empty() && self.auth.gssapi.is_none() {
            error(
                "listen.kpop is set but [auth.gssapi] is not: KPOP's only login is Kerberos. Add \
                 [auth.gssapi] with the keytab of pop/HOST (see docs/kerberos.md)."
                    .into(),
            );
        }
        if let Some(keytab) = self.auth.gssapi.as_ref().and_then(|g| g.keytab.as_ref())
            && check_files
            && let Err(e) = std::fs::File::open(keytab)
        {
            error(format!(
                "auth.gssapi.keytab {}: {e}. Export the service key with `kadmin -q \"ktadd -k {} \
                 pop/HOST\"` and make it readable by the service user only.",
                keytab.display(),
                keytab.display()
            ));
        }
        if self.store.backend == StoreBackend::Postgres
            && self.store.url.as_ref().is_none_or(|u| u.list().is_empty())
        {
            error(
                "store.backend = \"postgres\" needs store.url, e.g. \"postgres://poplar@db.example.org/poplar\"."
                    .into(),
            );
        }
        if self.auth.penalty_cap < self.auth.failure_delay {
            error("auth.penalty_cap must be at least auth.failure_delay.".into());
        }
        for addr in &self.tls.client_ca_listeners {
            if !self.listen.pop3.contains(addr) && !self.listen.pop3s.contains(addr) {
                error(format!(
                    "tls.client_ca_listeners names {addr}, which is not in listen.pop3 or listen.pop3s."
                ));
            }
        }
        if self.tls.client_ca.is_some() && !self.tls.enabled {
            error("tls.client_ca is set but TLS is disabled: client certificates need TLS.".into());
        }
        let mut domains = std::collections::BTreeMap::new();
        for (domain, settings) in &self.domains {
            let key = super::override_key(domain);
            if let Some(other) = domains.insert(key.clone(), domain) {
                error(format!(
                    "[domains.\"{other}\"] and [domains.\"{domain}\"] are the same domain ({key}): merge them."
                ));
            }
            let clashes = [
                (
                    "quota.overrides",
                    settings.quota.is_some()
                        && self
                            .quota
                            .overrides
                            .keys()
                            .any(|k| super::override_key(k) == key),
                ),
                (
                    "pop3.expire_overrides",
                    settings.expire.is_some()
                        && self
                            .pop3
                            .expire_overrides
                            .keys()
                            .any(|k| super::override_key(k) == key),
                ),
                (
                    "pop3.login_delay_overrides",
                    settings.login_delay.is_some()
                        && self
                            .pop3
                            .login_delay_overrides
                            .keys()
                            .any(|k| super::override_key(k) == key),
                ),
            ];
            for (table, clash) in clashes {
                if clash {
                    error(format!(
                        "{domain} is set both in [domains.\"{domain}\"] and in {table}: keep one."
                    ));
                }
            }
            for m in settings.mechanisms.iter().flatten() {
                let m = m.to_ascii_uppercase();
                if !MECHANISMS.contains(&m.as_str()) && m != "USER" && m != "APOP" {
                    error(format!(
                        "[domains.\"{domain}\"] mechanisms: {m} is not a login method (SASL mechanisms Poplar implements, USER or APOP)."
                    ));
                }
            }
        }
        if let Some(domain) = &self.auth.default_domain
            && (domain.contains('@') || !pop3_auth::directory::valid_domain(domain))
        {
            error(format!(
                "auth.default_domain = {domain:?} is not a domain name (give it as example.org)."
            ));
        }
        let ac = &self.autoconfig;
        if ac.listen.is_some() && ac.domains.is_empty() {
            error("autoconfig.listen is set but autoconfig.domains is empty: every client would get 404. List the mail domains.".into());
        }
        for domain in &ac.domains {
            if domain.contains('@') || !pop3_auth::directory::valid_domain(domain) {
                error(format!(
                    "autoconfig.domains: {domain:?} is not a domain name."
                ));
            }
        }
        if let Some(submission) = &ac.submission
            && !submission
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0))
        {
            error(format!(
                "autoconfig.submission = {submission:?}: give host:port, e.g. \"mail.example.org:587\"."
            ));
        }
        if ac.profile_cert.is_some() != ac.profile_key.is_some() {
            error("autoconfig.profile_cert and autoconfig.profile_key go together: set both to sign Apple profiles, or neither.".into());
        }
        for host in &self.sdps.hosts {
            if pop3_store::MailboxPath::parse(host).is_err() || host.contains(['+', ' ']) {
                error(format!(
                    "sdps.hosts: {host:?} is not a host name (give it as example.net)."
                ));
            }
        }
        if !self.sdps.hosts.is_empty() && self.store.backend == StoreBackend::Postgres {
            error(
                "sdps.hosts is set but store.backend = \"postgres\": SDPS host maildrops are \
                 kept in the Maildir store only. Serve those hosts from a Maildir node or remove \
                 sdps.hosts."
                    .into(),
            );
        }
        let mut warn = |m: String| {
            out.push(Problem {
                severity: Severity::Warning,
                message: m,
            })
        };
        if self
            .auth
            .plaintext_networks
            .iter()
            .any(|n| n.prefix_len() == 0)
        {
            warn(
                "auth.plaintext_networks contains a /0 network: passwords may be sent unencrypted \
                 from anywhere. List only networks you control."
                    .into(),
            );
        }
        if self.listen.proxy_from.iter().any(|n| n.prefix_len() == 0) {
            warn(
                "listen.proxy_from contains a /0 network: anyone who can connect may claim any \
                 client address in a PROXY header, and so escape penalties and per-address limits. \
                 List only your load balancers."
                    .into(),
            );
        }
        if !self.tls.enabled {
            warn(
                "TLS is disabled: clients outside auth.plaintext_networks cannot log in at all."
                    .into(),
            );
        }
        if self.auth.apop {
            warn("APOP is enabled: it only works for users stored with {PLAIN} passwords.".into());
        }
        if self
            .auth
            .trusted_networks
            .iter()
            .any(|n| n.prefix_len() == 0)
        {
            warn("auth.trusted_networks contains a /0 network: nobody gets failure delays, so password guessing is not slowed.".into());
        }
        if let Some(oauth) = &self.auth.oauth
            && oauth.user_claim == "email"
        {
            warn("auth.oauth.user_claim = \"email\": safe only if the identity provider verifies every address and users cannot choose or change theirs; otherwise whoever registers alice@example.org there reads alice's mail here. Prefer \"sub\" and users named after it.".into());
        }
        if check_files {
            out.extend(self.file_problems());
        }
        out
    }

    fn file_problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let err = |m: String| Problem {
            severity: Severity::Error,
            message: m,
        };
        let warn = |m: String| Problem {
            severity: Severity::Warning,
            message: m,
        };
        if self.tls.enabled {
            let (cert, key, generated) = self.tls_files();
            if !generated {
                for (what, path) in [("certificate", &cert), ("private key", &key)] {
                    if let Err(e) = std::fs::File::open(path) {
                        out.push(err(format!(
                            "cannot read the TLS {what} {}: {e}",
                            path.display()
                        )));
                    }
                }
                if out.is_empty() {
                    match crate::tls::server_config(&cert, &key, self.tls.min_version, None) {
                        Err(e) => out.push(err(e.to_string())),
                        Ok(_) => out.extend(self.certificate_problems(&cert)),
                    }
                }
            }
        }
        if let Some(oauth) = &self.auth.oauth {
            match std::fs::read_to_string(&oauth.jwks_file) {
                Ok(text) => {
                    if let Err(e) = pop3_auth::jwt::JwtVerifier::from_jwks(
                        &text,
                        &oauth.issuer,
                        &oauth.audience,
                        &oauth.user_claim,
                    ) {
                        out.push(err(format!(
                            "auth.oauth.jwks_file {}: {e}",
                            oauth.jwks_file.display()
                        )));
                    }
                }
                Err(e) => out.push(err(format!(
                    "cannot read auth.oauth.jwks_file {}: {e}",
                    oauth.jwks_file.display()
                ))),
            }
        }
        if let Some(ca) = &self.tls.client_ca
            && let Err(e) = crate::tls::client_roots(ca)
        {
            out.push(err(e.to_string()));
        }
        // A PostgreSQL store's users are in its database: `poplar check-config` reads them.
        let users = self.users_file();
        if self.store.backend == super::StoreBackend::Maildir {
            match pop3_auth::UserDb::load(&users) {
                Ok((db, warnings)) => {
                    if db.is_empty() && !self.demo_user {
                        out.push(warn(format!(
                            "no users in {}: nobody can log in. Add one with `poplar user add NAME`.",
                            users.display()
                        )));
                    }
                    for w in warnings {
                        out.push(warn(format!(
                            "{} line {}: {}",
                            users.display(),
                            w.line,
                            w.reason
                        )));
                    }
                }
                Err(e) => out.push(err(e.to_string())),
            }
            if let Ok((db, _)) = pop3_auth::UserDb::load(&users) {
                out.extend(self.mechanism_problems(&db));
                out.extend(self.sdps_problems(&db));
                out.extend(self.default_domain_problems(&db));
            }
        }
        if let Some(p) = data_dir_problem(&self.data_dir) {
            out.push(err(p));
        }
        out.extend(self.account_problems());
        out.extend(self.lmtp_problems());
        out
    }

    /// The configured certificate's validity and names.
    fn certificate_problems(&self, cert: &Path) -> Vec<Problem> {
        use rustls_pki_types::pem::PemObject as _;
        let mut out = Vec::new();
        let Some(leaf) = rustls_pki_types::CertificateDer::pem_file_iter(cert)
            .ok()
            .and_then(|mut certs| certs.next())
            .and_then(Result::ok)
        else {
            return out;
        };
        let Some(s) = pop3_auth::cert::summary(&leaf) else {
            return out;
        };
        let now = i64::try_from(poplar_util::clock::unix_now()).unwrap_or(i64::MAX);
        let when = poplar_util::clock::utc;
        if now > s.not_after {
            out.push(Problem {
                severity: Severity::Error,
                message: format!(
                    "the certificate {} expired on {}: clients refuse it. Renew it, then send SIGHUP.",
                    cert.display(),
                    when(s.not_after)
                ),
            });
        } else if s.not_after - now < 30 * 86_400 {
            out.push(Problem {
                severity: Severity::Warning,
                message: format!(
                    "the certificate {} expires on {}: renew it (then send SIGHUP).",
                    cert.display(),
                    when(s.not_after)
                ),
            });
        }
        if now < s.not_before {
            out.push(Problem {
                severity: Severity::Error,
                message: format!(
                    "the certificate {} is not valid before {}: check the clock.",
                    cert.display(),
                    when(s.not_before)
                ),
            });
        }
        let host = self.hostname();
        let names: Vec<&str> = if s.names.is_empty() {
            s.subject.iter().map(String::as_str).collect()
        } else {
            s.names.iter().map(String::as_str).collect()
        };
        let covers = |name: &str| match name.strip_prefix("*.") {
            Some(parent) => host
                .split_once('.')
                .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(parent)),
            None => name.eq_ignore_ascii_case(&host),
        };
        if !names.iter().any(|n| covers(n)) {
            out.push(Problem {
                severity: Severity::Warning,
                message: format!(
                    "the certificate {} is for {} but this server calls itself {host} \
                     (hostname): clients connecting by that name will refuse it.",
                    cert.display(),
                    if names.is_empty() {
                        "no name".to_owned()
                    } else {
                        names.join(", ")
                    }
                ),
            });
        }
        out
    }

    /// Users the default domain hides: with `auth.default_domain` set, a bare login name becomes
    /// `name@domain`, so entries without a domain can no longer log in.
    pub fn default_domain_problems(&self, db: &pop3_auth::UserDb) -> Vec<Problem> {
        let Some(domain) = &self.auth.default_domain else {
            return Vec::new();
        };
        let rules = self.login_rules();
        let bare: Vec<&str> = db
            .names()
            .filter(|n| !n.contains('@') && !rules.sdps_hosts.iter().any(|h| h == n))
            .take(10)
            .collect();
        if bare.is_empty() {
            return Vec::new();
        }
        vec![Problem {
            severity: Severity::Warning,
            message: format!(
                "auth.default_domain = {domain:?} makes the login `alice` mean alice@{domain}, \
                 so these entries without a domain cannot log in: {}. Rename them to \
                 name@{domain} in the users file (their maildrops move with them: \
                 _default_/name to {domain}/name).",
                bare.join(", ")
            ),
        }]
    }

    /// SDPS hosts nobody can log in to: the host's own entry holds the password its people
    /// use when they have none of their own.
    pub fn sdps_problems(&self, db: &pop3_auth::UserDb) -> Vec<Problem> {
        self.login_rules()
            .sdps_hosts
            .into_iter()
            .filter(|host| db.get(host).is_none())
            .map(|host| Problem {
                severity: Severity::Warning,
                message: format!(
                    "sdps.hosts lists {host} but the users file has no entry {host}: mail for \
                     *@{host} is kept, yet only people with an entry of their own (name@{host}) \
                     can log in. Set the host password with `poplar user add {host} \
                     --password-stdin`."
                ),
            })
            .collect()
    }

    /// Challenge-response mechanisms listed in `auth.mechanisms` that some users cannot use.
    pub fn mechanism_problems(&self, db: &pop3_auth::UserDb) -> Vec<Problem> {
        use pop3_auth::directory::SecretKind;
        use pop3_auth::sasl::scram::ScramHash;
        let Some(listed) = &self.auth.mechanisms else {
            return Vec::new();
        };
        let mut kinds: Vec<(String, SecretKind)> = Vec::new();
        for m in listed {
            let kind = match m.to_ascii_uppercase().trim_end_matches("-PLUS") {
                "CRAM-MD5" => SecretKind::CramMd5,
                "SCRAM-SHA-1" => SecretKind::Scram(ScramHash::Sha1),
                "SCRAM-SHA-256" => SecretKind::Scram(ScramHash::Sha256),
                _ => continue,
            };
            kinds.push((m.to_ascii_uppercase(), kind));
        }
        if self.auth.apop {
            kinds.push(("APOP".into(), SecretKind::Apop));
        }
        let mut out = Vec::new();
        for (name, kind) in kinds {
            let lacking = db.lacking(kind);
            if lacking.is_empty() {
                continue;
            }
            let shown: Vec<&str> = lacking.iter().take(10).copied().collect();
            let more = lacking.len().saturating_sub(shown.len());
            out.push(Problem {
                severity: Severity::Warning,
                message: format!(
                    "{name} is offered (listed in auth.mechanisms{}) but {} user(s) have no stored form it can use: {}{}. \
                     Clients that choose the strongest mechanism offered will fail for them: \
                     store the form (`poplar user passwd NAME --schemes ARGON2ID,{}`) or leave \
                     auth.mechanisms unset, which offers it only when every user can use it.",
                    if name == "APOP" { " or auth.apop" } else { "" },
                    lacking.len(),
                    shown.join(", "),
                    if more > 0 { format!(" and {more} more") } else { String::new() },
                    match kind {
                        SecretKind::Apop => "PLAIN",
                        _ => name.trim_end_matches("-PLUS"),
                    }
                ),
            });
        }
        out
    }

    /// The account the server switches to, and the group it runs in.
    fn account_problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        if let Some(user) = &self.user
            && !matches!(nix::unistd::User::from_name(user), Ok(Some(_)))
        {
            out.push(Problem {
                severity: Severity::Error,
                message: format!(
                    "user = {user:?}: no such user. Create it (useradd --system --home-dir \
                     /nonexistent --shell /usr/sbin/nologin {user}) or fix the setting."
                ),
            });
        }
        for (key, group) in [
            ("group", &self.group),
            ("listen.lmtp_socket_group", &self.listen.lmtp_socket_group),
        ] {
            if let Some(group) = group
                && !matches!(nix::unistd::Group::from_name(group), Ok(Some(_)))
            {
                out.push(Problem {
                    severity: Severity::Error,
                    message: format!("{key} = {group:?}: no such group."),
                });
            }
        }
        out
    }

    /// Unix LMTP sockets need an existing directory to live in.
    fn lmtp_problems(&self) -> Vec<Problem> {
        self.listen
            .lmtp
            .iter()
            .filter_map(|addr| match addr {
                LmtpAddr::Unix(path) => {
                    let dir = path.parent().filter(|d| !d.as_os_str().is_empty())?;
                    (!dir.is_dir()).then(|| Problem {
                        severity: Severity::Error,
                        message: format!(
                            "listen.lmtp {}: the directory {} does not exist. Create it, owned \
                             by the service user (with systemd: RuntimeDirectory=poplar).",
                            path.display(),
                            dir.display()
                        ),
                    })
                }
                LmtpAddr::Tcp(_) => None,
            })
            .collect()
    }
}

/// Whether the data directory can be used (or created), found without writing anything.
fn data_dir_problem(dir: &Path) -> Option<String> {
    use nix::unistd::{AccessFlags, access};
    let usable = |d: &Path| access(d, AccessFlags::W_OK | AccessFlags::X_OK).is_ok();
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Some(format!("data_dir {} is not a directory", dir.display())),
        Ok(_) if usable(dir) => None,
        Ok(_) => Some(format!(
            "data_dir {} is not writable by this user",
            dir.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Created on first start: the nearest existing ancestor must allow it.
            let parent = dir
                .ancestors()
                .skip(1)
                .find(|a| a.as_os_str().is_empty() || a.exists())?;
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            (!usable(parent)).then(|| {
                format!(
                    "data_dir {} does not exist and cannot be created: {} is not writable by this user",
                    dir.display(),
                    parent.display()
                )
            })
        }
        Err(e) => Some(format!("data_dir {}: {e}", dir.display())),
    }
}
