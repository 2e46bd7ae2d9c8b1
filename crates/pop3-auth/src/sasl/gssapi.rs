//! SASL GSSAPI (RFC 4752): Kerberos 5 logins, server and client side.
//!
//! The Kerberos exchange itself (AP-REQ, AP-REP) is MIT Kerberos' work through the `libgssapi`
//! binding, built only with the `gssapi` feature. What RFC 4752 adds on top, and what Poplar
//! parses itself, is the security-layer negotiation once the context is established: the
//! server sends a wrapped four-octet offer (a bit mask of layers and the largest buffer it
//! takes), the client answers with a wrapped choice of one layer, its own buffer size and an
//! authorization identity. Poplar offers only "no security layer": POP3 protects the session
//! with TLS, and a Kerberos integrity or privacy layer would have to wrap every line of every
//! response. A client that picks anything else is refused with a reason that says so. The
//! offer and the choice are plain functions ([`layer_offer`], [`parse_layer_choice`]) so the
//! framing is tested and fuzzed without a KDC.
//!
//! The authenticated Kerberos principal names a Poplar user: by an explicit map
//! (`"alice@OTHER.REALM" = "alice"`), else by the Kerberos library's own rule for local names
//! (krb5.conf `auth_to_local`; by default the principal without its realm when the realm is
//! the default realm). Anything else is refused: a principal from a foreign realm never logs
//! in as the local user of the same name by accident.

use std::collections::BTreeMap;

/// The "no security layer" bit of the offer and the choice (RFC 4752 section 3.3).
pub const NO_SECURITY_LAYER: u8 = 1;

/// The largest buffer the server says it takes: with no security layer there are no wrapped
/// messages after the exchange, so nothing (RFC 4752 allows 0 with layer 1).
const MAX_BUFFER: u32 = 0;

/// The unwrapped four-octet offer: only "no security layer", and the buffer size.
pub fn layer_offer() -> [u8; 4] {
    let [_, a, b, c] = MAX_BUFFER.to_be_bytes();
    [NO_SECURITY_LAYER, a, b, c]
}

/// A client's choice, once unwrapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerChoice {
    /// The layer bit the client chose.
    pub layer: u8,
    /// The largest buffer the client takes.
    pub max_buffer: u32,
    /// The identity to act as (empty: the authenticated one).
    pub authzid: String,
}

/// Why a client's choice is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerError {
    /// Fewer than four octets.
    TooShort,
    /// A layer other than "no security layer" (integrity 2, privacy 4), or several.
    UnsupportedLayer(u8),
    /// The authorization identity is not UTF-8.
    AuthzidNotUtf8,
}

impl std::fmt::Display for LayerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooShort => f.write_str("the security layer message is shorter than 4 octets"),
            Self::UnsupportedLayer(l) => write!(
                f,
                "the client chose security layer {l:#04x}; only 0x01 (none, as offered) is supported"
            ),
            Self::AuthzidNotUtf8 => f.write_str("the authorization identity is not UTF-8"),
        }
    }
}

/// Parses the client's unwrapped answer to [`layer_offer`]: one octet of layer, three of
/// buffer size, then the authorization identity.
pub fn parse_layer_choice(message: &[u8]) -> Result<LayerChoice, LayerError> {
    let [layer, a, b, c, authzid @ ..] = message else {
        return Err(LayerError::TooShort);
    };
    if *layer != NO_SECURITY_LAYER {
        return Err(LayerError::UnsupportedLayer(*layer));
    }
    let authzid = std::str::from_utf8(authzid).map_err(|_| LayerError::AuthzidNotUtf8)?;
    Ok(LayerChoice {
        layer: *layer,
        max_buffer: u32::from_be_bytes([0, *a, *b, *c]),
        authzid: authzid.to_owned(),
    })
}

/// The client's answer to an offer: "no security layer" (the offer must include it), no
/// buffer, and `authzid`.
pub fn layer_answer(offer: &[u8], authzid: &str) -> Result<Vec<u8>, String> {
    let Some(&layers) = offer.first().filter(|_| offer.len() == 4) else {
        return Err(format!(
            "the server's security layer offer has {} octets, not 4",
            offer.len()
        ));
    };
    if layers & NO_SECURITY_LAYER == 0 {
        return Err(format!(
            "the server requires a Kerberos security layer ({layers:#04x}); Poplar uses TLS instead"
        ));
    }
    let mut answer = vec![NO_SECURITY_LAYER, 0, 0, 0];
    answer.extend_from_slice(authzid.as_bytes());
    Ok(answer)
}

/// How Kerberos principals become Poplar users.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrincipalMap {
    /// Explicit entries, principal (`name@REALM`) to user; checked first.
    pub explicit: BTreeMap<String, String>,
}

impl PrincipalMap {
    /// The user for `principal`: the explicit entry, else `local` (what the Kerberos library's
    /// `auth_to_local` rules made of it, if anything).
    pub fn user_for(&self, principal: &str, local: Option<&str>) -> Option<String> {
        if let Some(user) = self.explicit.get(principal) {
            return Some(user.clone());
        }
        local.filter(|l| !l.is_empty()).map(str::to_owned)
    }
}

#[cfg(feature = "gssapi")]
pub use krb::{GssapiClient, GssapiServer, GssapiSettings};

#[cfg(feature = "gssapi")]
mod krb {
    use super::{LayerError, PrincipalMap, layer_offer, parse_layer_choice};
    use crate::directory::Directory;
    use crate::sasl::{Failure, FailureKind, ServerMechanism, Step, authorize};
    use libgssapi::context::{ClientCtx, CtxFlags, SecurityContext, ServerCtx};
    use libgssapi::credential::{Cred, CredUsage};
    use libgssapi::name::Name;
    use libgssapi::oid::{GSS_MECH_KRB5, GSS_NT_HOSTBASED_SERVICE, OidSet};
    use std::sync::Arc;

    /// The server's Kerberos identity and the principal map.
    #[derive(Debug, Clone)]
    pub struct GssapiSettings {
        /// `service@host`, e.g. `pop@mail.example.org` (the principal `pop/mail.example.org`).
        pub acceptor: String,
        /// How principals become users.
        pub map: Arc<PrincipalMap>,
    }

    enum State {
        /// Exchanging context tokens.
        Context,
        /// The context is complete and its last token sent; the client's empty response is due.
        AwaitEmpty,
        /// The offer is sent; the client's wrapped choice is due.
        AwaitChoice,
        Done,
    }

    /// The server side: accepts the context with the keytab's key for the acceptor name, then
    /// negotiates "no security layer" and maps the principal.
    pub struct GssapiServer {
        settings: GssapiSettings,
        ctx: Option<ServerCtx>,
        state: State,
        principal: Option<String>,
    }

    impl std::fmt::Debug for GssapiServer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("GssapiServer")
                .field("acceptor", &self.settings.acceptor)
                .field("principal", &self.principal)
                .finish_non_exhaustive()
        }
    }

    fn krb5_mechs() -> Result<OidSet, libgssapi::error::Error> {
        let mut set = OidSet::new();
        set.add(GSS_MECH_KRB5)?;
        Ok(set)
    }

    fn invalid(principal: Option<String>, reason: String) -> Step {
        Step::Failure(Failure::invalid(principal, reason))
    }

    impl GssapiServer {
        /// A new exchange.
        pub fn new(settings: GssapiSettings) -> Self {
            Self {
                settings,
                ctx: None,
                state: State::Context,
                principal: None,
            }
        }

        /// The acceptor credential, from the keytab (`KRB5_KTNAME`, set from
        /// `auth.gssapi.keytab`). Read at each login, so a rotated keytab applies at once.
        fn credential(&self) -> Result<Cred, String> {
            let name = Name::new(
                self.settings.acceptor.as_bytes(),
                Some(GSS_NT_HOSTBASED_SERVICE),
            )
            .map_err(|e| format!("bad service name {}: {e}", self.settings.acceptor))?;
            let mechs = krb5_mechs().map_err(|e| e.to_string())?;
            Cred::acquire(Some(&name), None, CredUsage::Accept, Some(&mechs)).map_err(|e| {
                format!(
                    "no key for {} in the keytab (auth.gssapi.keytab): {e}",
                    self.settings.acceptor
                )
            })
        }

        fn context_step(&mut self, token: &[u8]) -> Step {
            if self.ctx.is_none() {
                match self.credential() {
                    Ok(cred) => self.ctx = Some(ServerCtx::new(Some(cred))),
                    Err(reason) => {
                        return Step::Failure(Failure {
                            kind: FailureKind::Temporary,
                            user: None,
                            reason: reason.into(),
                        });
                    }
                }
            }
            let Some(ctx) = self.ctx.as_mut() else {
                return Step::Failure(Failure::invalid(None, "no context"));
            };
            match ctx.step(token, None) {
                Err(e) => invalid(None, format!("Kerberos refused the client's token: {e}")),
                Ok(out) => {
                    let complete = ctx.is_complete();
                    if complete {
                        match ctx.source_name() {
                            Ok(name) => self.principal = Some(name.to_string()),
                            Err(e) => {
                                return invalid(None, format!("no client principal: {e}"));
                            }
                        }
                    }
                    match (out, complete) {
                        (Some(out), false) => Step::Challenge(out.to_vec()),
                        (Some(out), true) => {
                            self.state = State::AwaitEmpty;
                            Step::Challenge(out.to_vec())
                        }
                        (None, true) => self.offer(),
                        (None, false) => invalid(None, "Kerberos produced no token".into()),
                    }
                }
            }
        }

        /// Sends the wrapped security-layer offer.
        fn offer(&mut self) -> Step {
            let Some(ctx) = self.ctx.as_mut() else {
                return Step::Failure(Failure::invalid(None, "no context"));
            };
            match ctx.wrap(false, &layer_offer()) {
                Ok(wrapped) => {
                    self.state = State::AwaitChoice;
                    Step::Challenge(wrapped.to_vec())
                }
                Err(e) => invalid(
                    self.principal.clone(),
                    format!("cannot wrap the offer: {e}"),
                ),
            }
        }

        fn choice(&mut self, dir: &dyn Directory, message: &[u8]) -> Step {
            self.state = State::Done;
            let principal = self.principal.clone().unwrap_or_default();
            let Some(ctx) = self.ctx.as_mut() else {
                return Step::Failure(Failure::invalid(None, "no context"));
            };
            let unwrapped = match ctx.unwrap(message) {
                Ok(u) => u,
                Err(e) => {
                    return invalid(
                        Some(principal),
                        format!("the security layer answer does not unwrap: {e}"),
                    );
                }
            };
            let choice = match parse_layer_choice(&unwrapped) {
                Ok(c) => c,
                Err(e @ LayerError::UnsupportedLayer(_)) => {
                    return Step::Failure(Failure {
                        kind: FailureKind::Malformed,
                        user: Some(principal),
                        reason: e.to_string().into(),
                    });
                }
                Err(e) => return invalid(Some(principal), e.to_string()),
            };
            let local = ctx
                .source_name()
                .ok()
                .and_then(|n| n.local_name(Some(GSS_MECH_KRB5)).ok())
                .and_then(|b| String::from_utf8(b.to_vec()).ok());
            let Some(user) = self.settings.map.user_for(&principal, local.as_deref()) else {
                return invalid(
                    Some(principal.clone()),
                    format!(
                        "the Kerberos principal {principal} maps to no user (not of the default realm, and not in auth.gssapi.map)"
                    ),
                );
            };
            if !dir.exists(&user) {
                return invalid(
                    Some(user.clone()),
                    format!(
                        "the Kerberos principal {principal} is user {user}, who does not exist here"
                    ),
                );
            }
            // Clients such as curl name the principal itself as the identity to act as: that
            // is no request to be someone else.
            let authzid = Some(choice.authzid.as_str())
                .filter(|a| !a.is_empty() && *a != principal && !a.eq_ignore_ascii_case(&user));
            authorize(dir, user, authzid)
        }
    }

    impl ServerMechanism for GssapiServer {
        fn step(&mut self, dir: &dyn Directory, response: Option<&[u8]>) -> Step {
            match self.state {
                // AUTH GSSAPI without an initial response: an empty challenge asks for the
                // first token.
                State::Context => match response {
                    None => Step::Challenge(Vec::new()),
                    Some(token) => self.context_step(token),
                },
                State::AwaitEmpty => match response {
                    Some([]) | None => self.offer(),
                    Some(_) => invalid(
                        self.principal.clone(),
                        "expected an empty response after the last context token".into(),
                    ),
                },
                State::AwaitChoice => self.choice(dir, response.unwrap_or_default()),
                State::Done => invalid(self.principal.clone(), "the exchange is over".into()),
            }
        }

        fn claimed_user(&self) -> Option<&str> {
            self.principal.as_deref()
        }
    }

    /// The client side, with the user's ticket cache (`KRB5CCNAME`), for `service@host`.
    pub struct GssapiClient {
        ctx: ClientCtx,
        authzid: String,
        established: bool,
        done: bool,
    }

    impl std::fmt::Debug for GssapiClient {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("GssapiClient")
                .field("established", &self.established)
                .finish_non_exhaustive()
        }
    }

    impl GssapiClient {
        /// Starts a context for `service@host` (e.g. `pop@mail.example.org`), acting as
        /// `authzid` (empty: as the principal itself).
        pub fn new(target: &str, authzid: &str) -> Result<Self, String> {
            let name = Name::new(target.as_bytes(), Some(GSS_NT_HOSTBASED_SERVICE))
                .map_err(|e| format!("bad service name {target}: {e}"))?;
            let mechs = krb5_mechs().map_err(|e| e.to_string())?;
            let cred = Cred::acquire(None, None, CredUsage::Initiate, Some(&mechs))
                .map_err(|e| format!("no Kerberos ticket (run kinit, or check KRB5CCNAME): {e}"))?;
            Ok(Self {
                ctx: ClientCtx::new(
                    Some(cred),
                    name,
                    CtxFlags::GSS_C_MUTUAL_FLAG | CtxFlags::GSS_C_SEQUENCE_FLAG,
                    Some(GSS_MECH_KRB5),
                ),
                authzid: authzid.to_owned(),
                established: false,
                done: false,
            })
        }

        /// The first token (the initial response of AUTH GSSAPI).
        pub fn initial(&mut self) -> Result<Vec<u8>, String> {
            match self.ctx.step(None, None) {
                Ok(Some(token)) => Ok(token.to_vec()),
                Ok(None) => Err("Kerberos produced no initial token".into()),
                Err(e) => Err(format!(
                    "cannot get a ticket for the server's service (is its principal in the KDC?): {e}"
                )),
            }
        }

        /// The response to a server challenge.
        pub fn respond(&mut self, challenge: &[u8]) -> Result<Vec<u8>, String> {
            if self.done {
                return Err("the server sent a challenge after the exchange ended".into());
            }
            if !self.established {
                return match self.ctx.step(Some(challenge), None) {
                    Ok(token) => {
                        self.established = self.ctx.is_complete();
                        Ok(token.map(|t| t.to_vec()).unwrap_or_default())
                    }
                    Err(e) => Err(format!("the server's Kerberos token was refused: {e}")),
                };
            }
            let offer = self
                .ctx
                .unwrap(challenge)
                .map_err(|e| format!("the security layer offer does not unwrap: {e}"))?;
            let answer = super::layer_answer(&offer, &self.authzid)?;
            self.done = true;
            self.ctx
                .wrap(false, &answer)
                .map(|w| w.to_vec())
                .map_err(|e| format!("cannot wrap the security layer answer: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offer_is_no_layer_and_no_buffer() {
        assert_eq!(layer_offer(), [1, 0, 0, 0]);
    }

    #[test]
    fn choices_are_parsed_and_layers_other_than_none_refused() {
        assert_eq!(
            parse_layer_choice(b"\x01\x00\x10\x00alice"),
            Ok(LayerChoice {
                layer: 1,
                max_buffer: 4096,
                authzid: "alice".into()
            })
        );
        assert_eq!(
            parse_layer_choice(b"\x01\xff\xff\xff").map(|c| c.max_buffer),
            Ok(0x00ff_ffff)
        );
        assert_eq!(
            parse_layer_choice(b"\x01\x00\x00"),
            Err(LayerError::TooShort)
        );
        assert_eq!(
            parse_layer_choice(b"\x04\x00\x10\x00"),
            Err(LayerError::UnsupportedLayer(4))
        );
        assert_eq!(
            parse_layer_choice(b"\x03\x00\x10\x00"),
            Err(LayerError::UnsupportedLayer(3))
        );
        assert_eq!(
            parse_layer_choice(b"\x01\x00\x00\x00\xff"),
            Err(LayerError::AuthzidNotUtf8)
        );
        assert!(
            LayerError::UnsupportedLayer(4)
                .to_string()
                .contains("only 0x01 (none, as offered)")
        );
    }

    #[test]
    fn the_client_answers_with_no_layer_or_explains() {
        assert_eq!(layer_answer(&[7, 0, 16, 0], "").unwrap(), vec![1, 0, 0, 0]);
        assert_eq!(
            layer_answer(&[1, 0, 0, 0], "bob").unwrap(),
            b"\x01\x00\x00\x00bob".to_vec()
        );
        assert!(
            layer_answer(&[4, 0, 16, 0], "")
                .unwrap_err()
                .contains("requires")
        );
        assert!(layer_answer(&[1, 0, 0], "").is_err());
        // What the server offers, its client accepts.
        let answer = layer_answer(&layer_offer(), "x").unwrap();
        assert_eq!(parse_layer_choice(&answer).unwrap().authzid, "x");
    }

    #[test]
    fn principals_map_explicitly_or_by_the_local_name_rule() {
        let mut map = PrincipalMap::default();
        map.explicit
            .insert("carol@OTHER.TEST".into(), "carol@example.org".into());
        assert_eq!(
            map.user_for("carol@OTHER.TEST", None).as_deref(),
            Some("carol@example.org")
        );
        assert_eq!(
            map.user_for("alice@POP3.TEST", Some("alice")).as_deref(),
            Some("alice")
        );
        assert_eq!(map.user_for("mallory@EVIL.TEST", None), None);
        assert_eq!(map.user_for("x@Y", Some("")), None);
    }
}
