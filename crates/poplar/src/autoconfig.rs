//! Client autoconfiguration: the documents mail clients fetch to fill in their account wizard,
//! made from the server's own configuration so they are always right.
//!
//! - Thunderbird's autoconfig (`/mail/config-v1.1.xml?emailaddress=...` and
//!   `/.well-known/autoconfig/mail/config-v1.1.xml`), which Thunderbird, Thunderbird for
//!   Android (K-9), Evolution and KMail read;
//! - Outlook's Autodiscover (POX: `POST /autodiscover/autodiscover.xml`);
//! - an Apple configuration profile (`/apple/mail.mobileconfig?email=...`) for iOS and macOS
//!   Mail.
//!
//! Every document is the same for every address of a domain: whether a user exists is never
//! looked up, so nothing can be learnt about users from it. The local part of the address is
//! the only thing a client sends that a document repeats; it is checked (length, no control
//! characters, one `@`, a domain served here) and XML-escaped. POP3S comes first and STARTTLS
//! second (RFC 8314 prefers implicit TLS); passwords are offered in the clear only over TLS, and
//! challenge-response only where it works for everyone (the same rule as CAPA).

use crate::http::{reply, typed};
use anyhow::Context as _;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use pop3_auth::directory::{SecretKind, normalize_domain};
use pop3_auth::sasl::scram::ScramHash;
use pop3_proto::Expire;
use pop3_server::Config;
use std::fmt::Write as _;
use std::sync::Arc;

/// The longest address accepted (RFC 5321's path limit, less the angle brackets).
const MAX_ADDRESS: usize = 254;
/// The largest Autodiscover request body read.
const MAX_REQUEST_BODY: usize = 16 * 1024;
/// Connections served at once.
const MAX_CONNECTIONS: usize = 64;

/// Where clients connect, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoints {
    /// The host name clients use.
    pub host: String,
    /// POP3 over implicit TLS, if served.
    pub pop3s: Option<u16>,
    /// POP3 with STARTTLS, if served with TLS.
    pub pop3: Option<u16>,
    /// The submission server and port.
    pub submission: (String, u16),
}

impl Endpoints {
    /// From the configuration; `bound` are the POP3 and POP3S listeners' actual addresses
    /// (`poplar serve`), else the configured ones are taken.
    pub(crate) fn of(config: &Config, bound: Option<(Vec<u16>, Vec<u16>)>) -> Self {
        let ac = &config.autoconfig;
        let host = ac.public_host.clone().unwrap_or_else(|| config.hostname());
        let (pop3, pop3s) = bound.unwrap_or_else(|| {
            let ports = |l: &[std::net::SocketAddr]| l.iter().map(|a| a.port()).collect();
            (ports(&config.listen.pop3), ports(&config.listen.pop3s))
        });
        let tls = config.tls.enabled;
        let submission = match ac.submission.as_deref().and_then(|s| s.rsplit_once(':')) {
            Some((h, p)) => (h.to_owned(), p.parse().unwrap_or(587)),
            None => (host.clone(), 587),
        };
        Self {
            pop3s: ac.pop3s_port.or(pop3s.first().copied()).filter(|_| tls),
            pop3: ac.pop3_port.or(pop3.first().copied()).filter(|_| tls),
            submission,
            host,
        }
    }
}

/// What the documents say for one domain.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Domain {
    name: String,
    display_name: String,
    /// Users log in with the whole address (else with the local part).
    whole_address: bool,
    /// Passwords may be sent (over TLS): USER/PASS or PLAIN are allowed for the domain.
    cleartext: bool,
    /// CRAM-MD5 or SCRAM works for every user and is allowed for the domain.
    challenge: bool,
    expire: Expire,
    login_delay: u32,
}

/// The documents' source: the configuration, re-read users for the per-domain facts.
#[derive(Clone)]
pub(crate) struct Autoconfig {
    config: Arc<Config>,
    endpoints: Arc<Endpoints>,
    users: pop3_auth::Users,
    /// Signs Apple profiles, when `profile_cert` and `profile_key` are set.
    signer: Option<Arc<crate::signing::ProfileSigner>>,
}

impl Autoconfig {
    /// Reads the profile signing key if one is configured.
    pub(crate) fn new(
        config: Arc<Config>,
        endpoints: Endpoints,
        users: pop3_auth::Users,
    ) -> anyhow::Result<Self> {
        let ac = &config.autoconfig;
        let signer = match (&ac.profile_cert, &ac.profile_key) {
            (Some(cert), Some(key)) => Some(Arc::new(
                crate::signing::ProfileSigner::load(cert, key).context(
                    "cannot sign Apple profiles (autoconfig.profile_cert and profile_key)",
                )?,
            )),
            _ => None,
        };
        Ok(Self {
            config,
            endpoints: Arc::new(endpoints),
            users,
            signer,
        })
    }

    /// Serves the documents on `[autoconfig] listen`.
    pub(crate) async fn listen(
        &self,
        addr: std::net::SocketAddr,
    ) -> anyhow::Result<std::net::SocketAddr> {
        let this = self.clone();
        let rules = crate::http::Listener {
            what: "autoconfig",
            allow_from: None,
            max_connections: MAX_CONNECTIONS,
        };
        crate::http::listen(addr, rules, move |request| {
            let this = this.clone();
            async move { this.answer(request).await }
        })
        .await
    }

    async fn answer(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = request.uri().path().to_ascii_lowercase();
        let query = request.uri().query().unwrap_or("").to_owned();
        let host = request
            .headers()
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let method = request.method().clone();
        let outcome = match (method, path.as_str()) {
            (
                Method::GET | Method::HEAD,
                "/mail/config-v1.1.xml" | "/.well-known/autoconfig/mail/config-v1.1.xml",
            ) => self.thunderbird(&query, &host),
            (Method::POST, "/autodiscover/autodiscover.xml") => {
                match Limited::new(request.into_body(), MAX_REQUEST_BODY)
                    .collect()
                    .await
                {
                    Ok(body) => self.autodiscover(&body.to_bytes()),
                    Err(_) => Err(Refusal::BadRequest(
                        "the request body is too large or broken",
                    )),
                }
            }
            (Method::GET | Method::HEAD, p)
                if p.starts_with("/apple/") && p.ends_with(".mobileconfig") =>
            {
                self.apple(&query)
            }
            _ => Err(Refusal::NotFound),
        };
        match outcome {
            Ok(response) => response,
            Err(Refusal::NotFound) => reply(StatusCode::NOT_FOUND, "no mail settings here\n"),
            Err(Refusal::BadRequest(why)) => reply(StatusCode::BAD_REQUEST, format!("{why}\n")),
        }
    }

    /// The settings of a domain served here, `None` for any other.
    fn domain(&self, domain: &str) -> Option<Domain> {
        let name = normalize_domain(domain);
        let config = &self.config;
        if !config
            .autoconfig
            .domains
            .iter()
            .any(|d| normalize_domain(d) == name)
        {
            return None;
        }
        let db = self.users.current().ok().map(|(db, _)| db);
        let suffix = format!("@{name}");
        let whole_address = config.auth.default_domain.as_deref().map(normalize_domain)
            == Some(name.clone())
            || config
                .sdps
                .hosts
                .iter()
                .any(|h| normalize_domain(h) == name)
            || db
                .as_ref()
                .is_some_and(|db| db.names().any(|n| n.ends_with(&suffix)));
        let methods = config.domain_mechanisms();
        let allowed = |method: &str| {
            methods
                .get(&name)
                .is_none_or(|list| list.iter().any(|m| m == method))
        };
        let listed = |mechanism: &str| {
            config
                .auth
                .mechanisms
                .as_ref()
                .is_none_or(|l| l.iter().any(|m| m.eq_ignore_ascii_case(mechanism)))
        };
        // As CAPA decides: challenge-response only when every user has a form for it.
        let works = |mechanism: &str, kind: SecretKind| {
            allowed(mechanism)
                && listed(mechanism)
                && db
                    .as_ref()
                    .is_some_and(|db| !db.is_empty() && db.lacking(kind).is_empty())
        };
        let challenge = works("CRAM-MD5", SecretKind::CramMd5)
            || works("SCRAM-SHA-256", SecretKind::Scram(ScramHash::Sha256))
            || works("SCRAM-SHA-1", SecretKind::Scram(ScramHash::Sha1));
        let probe = format!("someone{suffix}");
        Some(Domain {
            display_name: config
                .autoconfig
                .display_name
                .clone()
                .unwrap_or_else(|| name.clone()),
            whole_address,
            cleartext: allowed("USER") || allowed("PLAIN"),
            challenge,
            expire: config.expire_policy().for_user(&probe),
            login_delay: config.login_delay_for(&probe),
            name,
        })
    }

    /// Thunderbird's clientConfig for the address in `emailaddress` (or, without one, for the
    /// domain the request was addressed to: `autoconfig.example.org` or `example.org`).
    fn thunderbird(&self, query: &str, host: &str) -> Result<Response<Full<Bytes>>, Refusal> {
        // The document never repeats the address: Thunderbird fills in its placeholders.
        let domain = match query_value(query, "emailaddress")? {
            Some(value) => address(&value)?.1,
            None => {
                let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
                host.strip_prefix("autoconfig.").unwrap_or(host).to_owned()
            }
        };
        let d = self.domain(&domain).ok_or(Refusal::NotFound)?;
        let e = &self.endpoints;
        let user = if d.whole_address {
            "%EMAILADDRESS%"
        } else {
            "%EMAILLOCALPART%"
        };
        let mut auth = String::new();
        if d.challenge {
            auth.push_str("      <authentication>password-encrypted</authentication>\n");
        }
        if d.cleartext {
            auth.push_str("      <authentication>password-cleartext</authentication>\n");
        }
        let pop3_options = {
            let (leave, days) = match d.expire {
                Expire::Days(0) => (false, None),
                Expire::Days(n) => (true, Some(n)),
                Expire::Never => (true, None),
            };
            let mut o = format!(
                "      <pop3>\n        <leaveMessagesOnServer>{leave}</leaveMessagesOnServer>\n        <downloadOnBiff>true</downloadOnBiff>\n"
            );
            if let Some(days) = days {
                let _ = writeln!(
                    o,
                    "        <daysToLeaveMessagesOnServer>{days}</daysToLeaveMessagesOnServer>"
                );
            }
            if d.login_delay > 0 {
                let minutes = d.login_delay.div_ceil(60);
                let _ = writeln!(o, "        <checkInterval minutes=\"{minutes}\"/>");
            }
            o.push_str("      </pop3>\n");
            o
        };
        let mut servers = String::new();
        for (port, socket) in [(e.pop3s, "SSL"), (e.pop3, "STARTTLS")] {
            let Some(port) = port else { continue };
            let _ = write!(
                servers,
                "    <incomingServer type=\"pop3\">\n      <hostname>{}</hostname>\n      <port>{port}</port>\n      <socketType>{socket}</socketType>\n{auth}      <username>{user}</username>\n{pop3_options}    </incomingServer>\n",
                xml(&e.host)
            );
        }
        let (smtp_host, smtp_port) = &e.submission;
        let smtp_socket = if *smtp_port == 465 { "SSL" } else { "STARTTLS" };
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<clientConfig version=\"1.1\">\n  <emailProvider id=\"{id}\">\n    <domain>{id}</domain>\n    <displayName>{name}</displayName>\n    <displayShortName>{name}</displayShortName>\n{servers}    <outgoingServer type=\"smtp\">\n      <hostname>{smtp}</hostname>\n      <port>{smtp_port}</port>\n      <socketType>{smtp_socket}</socketType>\n      <authentication>password-cleartext</authentication>\n      <username>{user}</username>\n    </outgoingServer>\n  </emailProvider>\n</clientConfig>\n",
            id = xml(&d.name),
            name = xml(&d.display_name),
            smtp = xml(smtp_host),
        );
        Ok(typed(
            StatusCode::OK,
            "application/xml; charset=utf-8",
            body,
        ))
    }

    /// Outlook's Autodiscover (POX, the `outlook/responseschema/2006a` response) for the
    /// request's `EMailAddress`.
    fn autodiscover(&self, body: &[u8]) -> Result<Response<Full<Bytes>>, Refusal> {
        let text = std::str::from_utf8(body)
            .map_err(|_| Refusal::BadRequest("the request is not UTF-8"))?;
        let value = element(text, "EMailAddress")
            .ok_or(Refusal::BadRequest("no EMailAddress in the request"))?;
        let value = unxml(value);
        let (local, domain) = address(&value)?;
        let d = self.domain(&domain).ok_or(Refusal::NotFound)?;
        let e = &self.endpoints;
        let login = if d.whole_address {
            value.clone()
        } else {
            local
        };
        let mut protocols = String::new();
        let pop3 = e
            .pop3s
            .map(|p| (p, "<SSL>on</SSL>\n        <Encryption>SSL</Encryption>"))
            .or(e
                .pop3
                .map(|p| (p, "<SSL>on</SSL>\n        <Encryption>TLS</Encryption>")));
        if let Some((port, tls)) = pop3 {
            let _ = write!(
                protocols,
                "      <Protocol>\n        <Type>POP3</Type>\n        <Server>{}</Server>\n        <Port>{port}</Port>\n        <LoginName>{}</LoginName>\n        <DomainRequired>off</DomainRequired>\n        <SPA>off</SPA>\n        {tls}\n        <AuthRequired>on</AuthRequired>\n      </Protocol>\n",
                xml(&e.host),
                xml(&login)
            );
        }
        let (smtp_host, smtp_port) = &e.submission;
        let smtp_tls = if *smtp_port == 465 {
            "<SSL>on</SSL>\n        <Encryption>SSL</Encryption>"
        } else {
            "<SSL>on</SSL>\n        <Encryption>TLS</Encryption>"
        };
        let _ = write!(
            protocols,
            "      <Protocol>\n        <Type>SMTP</Type>\n        <Server>{}</Server>\n        <Port>{smtp_port}</Port>\n        <LoginName>{}</LoginName>\n        <DomainRequired>off</DomainRequired>\n        <SPA>off</SPA>\n        {smtp_tls}\n        <AuthRequired>on</AuthRequired>\n        <UsePOPAuth>on</UsePOPAuth>\n      </Protocol>\n",
            xml(smtp_host),
            xml(&login)
        );
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006\">\n  <Response xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a\">\n    <User>\n      <DisplayName>{}</DisplayName>\n    </User>\n    <Account>\n      <AccountType>email</AccountType>\n      <Action>settings</Action>\n{protocols}    </Account>\n  </Response>\n</Autodiscover>\n",
            xml(&d.display_name)
        );
        Ok(typed(
            StatusCode::OK,
            "application/xml; charset=utf-8",
            body,
        ))
    }

    /// An Apple configuration profile (signed when a key is configured) with one
    /// `com.apple.mail.managed` POP payload.
    fn apple(&self, query: &str) -> Result<Response<Full<Bytes>>, Refusal> {
        // `email`, as profile links usually have it; `emailaddress` as the other documents.
        let value = match query_value(query, "email")? {
            Some(v) => Some(v),
            None => query_value(query, "emailaddress")?,
        }
        .ok_or(Refusal::BadRequest("give the address as ?email=..."))?;
        let (local, domain) = address(&value)?;
        let d = self.domain(&domain).ok_or(Refusal::NotFound)?;
        let e = &self.endpoints;
        let (port, ssl) = match (e.pop3s, e.pop3) {
            (Some(p), _) => (p, true),
            (None, Some(p)) => (p, true),
            (None, None) => return Err(Refusal::NotFound),
        };
        let login = if d.whole_address {
            value.clone()
        } else {
            local
        };
        let (smtp_host, smtp_port) = &e.submission;
        let id: String = d.name.split('.').rev().collect::<Vec<_>>().join(".");
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n<plist version=\"1.0\">\n<dict>\n  <key>PayloadContent</key>\n  <array>\n    <dict>\n      <key>EmailAccountDescription</key>\n      <string>{name}</string>\n      <key>EmailAccountType</key>\n      <string>EmailTypePOP</string>\n      <key>EmailAddress</key>\n      <string>{address}</string>\n      <key>IncomingMailServerAuthentication</key>\n      <string>EmailAuthPassword</string>\n      <key>IncomingMailServerHostName</key>\n      <string>{host}</string>\n      <key>IncomingMailServerPortNumber</key>\n      <integer>{port}</integer>\n      <key>IncomingMailServerUseSSL</key>\n      <{ssl}/>\n      <key>IncomingMailServerUsername</key>\n      <string>{login}</string>\n      <key>OutgoingMailServerAuthentication</key>\n      <string>EmailAuthPassword</string>\n      <key>OutgoingMailServerHostName</key>\n      <string>{smtp}</string>\n      <key>OutgoingMailServerPortNumber</key>\n      <integer>{smtp_port}</integer>\n      <key>OutgoingMailServerUseSSL</key>\n      <true/>\n      <key>OutgoingMailServerUsername</key>\n      <string>{login}</string>\n      <key>OutgoingPasswordSameAsIncomingPassword</key>\n      <true/>\n      <key>PayloadDescription</key>\n      <string>POP3 mail for {address}</string>\n      <key>PayloadDisplayName</key>\n      <string>{name}</string>\n      <key>PayloadIdentifier</key>\n      <string>{id}.mail.pop3.{account}</string>\n      <key>PayloadType</key>\n      <string>com.apple.mail.managed</string>\n      <key>PayloadUUID</key>\n      <string>{uuid_mail}</string>\n      <key>PayloadVersion</key>\n      <integer>1</integer>\n    </dict>\n  </array>\n  <key>PayloadDescription</key>\n  <string>Mail settings for {address}</string>\n  <key>PayloadDisplayName</key>\n  <string>{name}</string>\n  <key>PayloadIdentifier</key>\n  <string>{id}.mail.{account}</string>\n  <key>PayloadType</key>\n  <string>Configuration</string>\n  <key>PayloadUUID</key>\n  <string>{uuid_profile}</string>\n  <key>PayloadVersion</key>\n  <integer>1</integer>\n</dict>\n</plist>\n",
            name = xml(&d.display_name),
            address = xml(&value),
            host = xml(&e.host),
            ssl = if ssl { "true" } else { "false" },
            login = xml(&login),
            smtp = xml(smtp_host),
            id = xml(&id),
            // Fixed per address, so downloading the profile again replaces it.
            account = &stable_uuid(&value, "account")[..8],
            uuid_mail = stable_uuid(&value, "payload"),
            uuid_profile = stable_uuid(&value, "profile"),
        );
        // Signed when a key is configured; never quietly unsigned instead.
        let body = match &self.signer {
            Some(signer) => match signer.sign(body.as_bytes()) {
                Ok(signed) => Bytes::from(signed),
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "cannot sign an Apple profile");
                    return Ok(reply(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the profile cannot be signed\n",
                    ));
                }
            },
            None => Bytes::from(body),
        };
        let mut response = typed(StatusCode::OK, "application/x-apple-aspen-config", body);
        response.headers_mut().insert(
            hyper::header::CONTENT_DISPOSITION,
            hyper::header::HeaderValue::from_static("attachment; filename=\"mail.mobileconfig\""),
        );
        Ok(response)
    }
}

/// Why a request gets no document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Not a domain (or path) served here.
    NotFound,
    /// A malformed or hostile request.
    BadRequest(&'static str),
}

/// A query parameter, percent-decoded (a `+` stays a `+`: addresses have them, and clients
/// encode a space as `%20`).
fn query_value(query: &str, key: &str) -> Result<Option<String>, Refusal> {
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k.eq_ignore_ascii_case(key) {
            let value = percent_encoding::percent_decode_str(v)
                .decode_utf8()
                .map_err(|_| Refusal::BadRequest("the address is not UTF-8"))?;
            return Ok(Some(value.into_owned()));
        }
    }
    Ok(None)
}

/// Checks an address a client sent: `(local part, domain)`.
fn address(value: &str) -> Result<(String, String), Refusal> {
    if value.len() > MAX_ADDRESS {
        return Err(Refusal::BadRequest("the address is longer than 254 octets"));
    }
    if value.chars().any(char::is_control) {
        return Err(Refusal::BadRequest(
            "the address contains control characters",
        ));
    }
    match value.rsplit_once('@') {
        Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !local.contains('@') =>
        {
            Ok((local.to_owned(), domain.to_owned()))
        }
        _ => Err(Refusal::BadRequest("not an address (local@domain)")),
    }
}

/// The text of the first `<name>` element (case-insensitive, any namespace prefix absent).
fn element<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let lower = text.to_ascii_lowercase();
    let open = format!("<{}>", name.to_ascii_lowercase());
    let start = lower.find(&open)? + open.len();
    let end = start + lower[start..].find("</")?;
    Some(text[start..end].trim())
}

/// Escapes text for an XML element or attribute.
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Undoes the five predefined XML entities (what an Autodiscover request may use).
fn unxml(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// A UUID (RFC 9562 version 8 layout) that depends only on `address` and `what`.
fn stable_uuid(address: &str, what: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!(
        "poplar-profile\0{what}\0{}",
        address.to_lowercase()
    ));
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode_upper(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_is_escaped_and_hostile_addresses_refused() {
        assert_eq!(xml("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&apos;");
        assert_eq!(unxml("a&lt;b&amp;lt;"), "a<b&lt;");
        assert!(address("a\r\nb@example.org").is_err());
        assert!(address(&format!("{}@example.org", "a".repeat(10_000))).is_err());
        assert!(address("@example.org").is_err() && address("a@").is_err());
        assert_eq!(
            address("<x>@example.org"),
            Ok(("<x>".into(), "example.org".into()))
        );
        assert_eq!(
            query_value("x=1&emailaddress=john%2Btag%40example.org", "emailaddress"),
            Ok(Some("john+tag@example.org".into()))
        );
        assert_eq!(
            element(
                "<Request><EMailAddress> a@b </EMailAddress></Request>",
                "emailaddress"
            ),
            Some("a@b")
        );
    }

    #[test]
    fn profile_uuids_are_stable_and_well_formed() {
        let u = stable_uuid("A@example.org", "payload");
        assert_eq!(u, stable_uuid("a@example.org", "payload"));
        assert_ne!(u, stable_uuid("a@example.org", "profile"));
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "8");
    }
}
