//! Cluster authentication: every port of a cluster refuses peers that do not hold its key.
//!
//! Every message a server accepts can make it run code (pickles), so a server must know its
//! peer holds the cluster key before it handles anything. The `zeromq` crate has no CURVE, so
//! parl_rs authenticates each connection itself, with HMAC-SHA256 (RustCrypto's `hmac` and
//! `sha2`) over fresh nonces from both sides:
//!
//! ```text
//! peer   -> server   AuthHello     { client nonce }
//! server -> peer     AuthChallenge { server nonce, HMAC(key, "server" | client nonce | server nonce) }
//! peer   -> server   AuthProof     { HMAC(key, "client" | server nonce | client nonce) }
//! ```
//!
//! The peer checks the server's proof before it sends anything else, so it never sends code
//! to, or unpickles results from, a server without the key. The server lets a peer's messages
//! through only after a valid proof ([`Gate`]). The key never crosses the wire; fresh nonces
//! make a recorded exchange useless, and the two labels stop a proof being reflected back.
//! HTTP ports take a bearer token derived from the key ([`ClusterKey::http_token`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::logging::Throttle;
use crate::protocol::{AuthChallenge, AuthHello, Message, Nonce, Proof};
use crate::transport::PeerId;

/// The environment variable that carries a cluster key (to `xparl`, clients, and jobs).
pub const KEY_ENV: &str = "XPARL_CLUSTER_KEY";

const SERVER_LABEL: &[u8] = b"parl_rs auth v1 server";
const CLIENT_LABEL: &[u8] = b"parl_rs auth v1 client";
const HTTP_LABEL: &[u8] = b"parl_rs auth v1 http";

/// A cluster's shared secret. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey(Arc<str>);

impl ClusterKey {
    /// A key from its text form (any non-empty string; `xparl start` makes 64 hex digits).
    pub fn new(secret: &str) -> Option<ClusterKey> {
        let secret = secret.trim();
        (!secret.is_empty()).then(|| ClusterKey(secret.into()))
    }

    /// A new random key, as text: 32 bytes from the thread's CSPRNG, in hex.
    pub fn generate() -> String {
        hex::encode(rand::random::<[u8; 32]>())
    }

    fn mac(&self, label: &[u8], parts: &[&[u8]]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(self.0.as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(label);
        for part in parts {
            mac.update(part);
        }
        mac
    }

    fn proof(&self, label: &[u8], first: &Nonce, second: &Nonce) -> Proof {
        self.mac(label, &[first, second]).finalize().into_bytes().into()
    }

    /// Checks a proof in constant time.
    fn verify(&self, label: &[u8], first: &Nonce, second: &Nonce, proof: &Proof) -> bool {
        self.mac(label, &[first, second]).verify_slice(proof).is_ok()
    }

    /// The key's text, for handing it to a child process (a job) through its environment.
    pub fn text(&self) -> &str {
        &self.0
    }

    /// The token HTTP clients present (`Authorization: Bearer <token>` or `?token=<token>`).
    pub fn http_token(&self) -> String {
        hex::encode(self.mac(HTTP_LABEL, &[]).finalize().into_bytes())
    }

    /// Checks an HTTP token in constant time.
    pub fn verify_http_token(&self, token: &str) -> bool {
        match hex::decode(token.trim()) {
            Ok(bytes) => self.mac(HTTP_LABEL, &[]).verify_slice(&bytes).is_ok(),
            Err(_) => false,
        }
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

/// How a node authenticates: with the cluster key, or not at all (`--insecure`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    Key(ClusterKey),
    Insecure,
}

impl Auth {
    /// `Key` for Some non-empty key text, else `Insecure`.
    pub fn from_key(key: Option<&str>) -> Auth {
        key.and_then(ClusterKey::new).map_or(Auth::Insecure, Auth::Key)
    }

    /// A new random key (an embedded cluster's, which nobody else needs to know).
    pub fn generate() -> Auth {
        Auth::from_key(Some(&ClusterKey::generate()))
    }

    pub fn key(&self) -> Option<&ClusterKey> {
        match self {
            Auth::Key(key) => Some(key),
            Auth::Insecure => None,
        }
    }
}

fn nonce() -> Nonce {
    rand::random()
}

/// The connecting side of one handshake.
pub struct Handshake<'a> {
    auth: &'a Auth,
    nonce: Nonce,
}

impl<'a> Handshake<'a> {
    pub fn new(auth: &'a Auth) -> Handshake<'a> {
        Handshake { auth, nonce: nonce() }
    }

    /// The first message to send.
    pub fn hello(&self) -> Message {
        Message::AuthHello(AuthHello { nonce: self.nonce, keyed: self.auth.key().is_some() })
    }

    /// Checks the server's answer; returns the proof to send back (None for an insecure
    /// cluster), or why this server must not be used.
    pub fn answer(&self, answer: Message) -> Result<Option<Message>, String> {
        let challenge = match answer {
            Message::AuthChallenge(challenge) => challenge,
            Message::AuthRefused { reason } => return Err(reason),
            Message::Error(e) => return Err(e.message),
            other => return Err(format!("answered {} instead of the key handshake", other.kind())),
        };
        match (self.auth, challenge.proof) {
            (Auth::Insecure, _) => Ok(None),
            (Auth::Key(_), None) => {
                Err("it runs without authentication (--insecure), and this side holds a \
                 cluster key: refusing to trust it. Unset the key (XPARL_CLUSTER_KEY, key=, --key) to use \
                 an insecure cluster"
                    .into())
            }
            (Auth::Key(key), Some(proof)) => {
                if !key.verify(SERVER_LABEL, &self.nonce, &challenge.nonce, &proof) {
                    return Err("it does not hold this cluster key (a wrong key, or another cluster on \
                         that port)"
                        .into());
                }
                Ok(Some(Message::AuthProof { proof: key.proof(CLIENT_LABEL, &challenge.nonce, &self.nonce) }))
            }
        }
    }
}

/// What a server does with one message from a peer.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Hand it to the server's owner.
    Pass,
    /// Answer the peer with this message (part of the handshake, or a refusal).
    Answer(Message),
    /// Neither: the handshake step needs no answer.
    Consumed,
    /// The peer passed the handshake (answer it with this message, if any): it is trusted
    /// from now on, and may send large messages (see `FrameSocket::trust`).
    Trusted(Option<Message>),
}

enum PeerState {
    Challenged { theirs: Nonce, ours: Nonce },
    Trusted,
}

/// A server's gatekeeper: tracks each peer's handshake and lets only trusted peers' messages
/// through. Owned by the server's socket task; `forget` a peer when its connection closes.
pub struct Gate {
    auth: Auth,
    socket: String,
    peers: HashMap<PeerId, PeerState>,
    refusals: Throttle,
}

impl Gate {
    pub fn new(auth: Auth, socket: String) -> Gate {
        Gate { auth, socket, peers: HashMap::new(), refusals: Throttle::new(Duration::from_secs(10)) }
    }

    /// Decides what to do with `message` from `peer`.
    pub fn inspect(&mut self, peer: &PeerId, message: &Message) -> Verdict {
        let key = match &self.auth {
            Auth::Insecure => return inspect_insecure(message),
            Auth::Key(key) => key.clone(),
        };
        match message {
            Message::AuthHello(hello) if !hello.keyed => self.refuse(
                peer,
                "this cluster requires its key: pass key= to connect(), --key to xparl, or set \
                 XPARL_CLUSTER_KEY (`xparl start` wrote it to <state dir>/keys/<port>.key on the \
                 master's machine)",
            ),
            Message::AuthHello(hello) => {
                let ours = nonce();
                let proof = key.proof(SERVER_LABEL, &hello.nonce, &ours);
                self.peers.insert(peer.clone(), PeerState::Challenged { theirs: hello.nonce, ours });
                Verdict::Answer(Message::AuthChallenge(AuthChallenge { nonce: ours, proof: Some(proof) }))
            }
            Message::AuthProof { proof } => match self.peers.get(peer) {
                Some(PeerState::Challenged { theirs, ours })
                    if key.verify(CLIENT_LABEL, ours, theirs, proof) =>
                {
                    self.peers.insert(peer.clone(), PeerState::Trusted);
                    Verdict::Trusted(None)
                }
                _ => self.refuse(peer, "wrong cluster key"),
            },
            _ if matches!(self.peers.get(peer), Some(PeerState::Trusted)) => Verdict::Pass,
            other => {
                let why =
                    format!("{} before the key handshake: nothing is accepted without it", other.kind());
                self.refuse(peer, &why)
            }
        }
    }

    fn refuse(&mut self, peer: &PeerId, reason: &str) -> Verdict {
        self.peers.remove(peer);
        if let Some(suppressed) = self.refusals.allow() {
            tracing::warn!(
                socket = %self.socket,
                "refused a peer without the cluster key: {reason} ({suppressed} more refusals not logged)"
            );
        }
        Verdict::Answer(Message::AuthRefused { reason: reason.to_string() })
    }

    /// True if `peer` completed the handshake (or the server is insecure).
    #[cfg(test)]
    fn trusts(&self, peer: &PeerId) -> bool {
        self.auth == Auth::Insecure || matches!(self.peers.get(peer), Some(PeerState::Trusted))
    }

    /// Drops what is known of a peer whose connection closed.
    pub fn forget(&mut self, peer: &PeerId) {
        self.peers.remove(peer);
    }
}

/// Without a key every peer is trusted; a hello still gets its (proof-less) challenge.
fn inspect_insecure(message: &Message) -> Verdict {
    match message {
        // Without a key there is nothing to prove: the hello is the whole handshake.
        Message::AuthHello(_) => {
            Verdict::Trusted(Some(Message::AuthChallenge(AuthChallenge { nonce: nonce(), proof: None })))
        }
        Message::AuthProof { .. } => Verdict::Consumed,
        _ => Verdict::Pass,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn keyed(secret: &str) -> Auth {
        Auth::from_key(Some(secret))
    }

    /// Runs a whole handshake; returns the client's error, or the server's last verdict.
    fn handshake(client: &Auth, gate: &mut Gate, peer: &PeerId) -> Result<Verdict, String> {
        let shake = Handshake::new(client);
        let (answer, trusted) = match gate.inspect(peer, &shake.hello()) {
            Verdict::Answer(answer) => (answer, false),
            Verdict::Trusted(Some(answer)) => (answer, true),
            other => panic!("no challenge: {other:?}"),
        };
        match shake.answer(answer)? {
            Some(proof) => Ok(gate.inspect(peer, &proof)),
            None if trusted => Ok(Verdict::Trusted(None)),
            None => Ok(Verdict::Consumed),
        }
    }

    #[test]
    fn the_right_key_opens_the_gate_and_only_for_that_peer() {
        let mut gate = Gate::new(keyed("k1"), "test".into());
        let (alice, mallory) = (Bytes::from_static(b"a"), Bytes::from_static(b"m"));
        assert_eq!(handshake(&keyed("k1"), &mut gate, &alice), Ok(Verdict::Trusted(None)));
        assert_eq!(gate.inspect(&alice, &Message::StatusRequest), Verdict::Pass);
        assert!(matches!(
            gate.inspect(&mallory, &Message::StatusRequest),
            Verdict::Answer(Message::AuthRefused { .. })
        ));
        gate.forget(&alice);
        assert!(!gate.trusts(&alice));
    }

    #[test]
    fn a_wrong_key_is_caught_by_the_client_and_by_the_server() {
        let mut gate = Gate::new(keyed("right"), "test".into());
        let peer = Bytes::from_static(b"p");
        let err = handshake(&keyed("wrong"), &mut gate, &peer).unwrap_err();
        assert!(err.contains("does not hold this cluster key"), "{err}");
        // A client that skips checking and sends any proof is refused too.
        let Verdict::Answer(_) = gate.inspect(&peer, &Handshake::new(&keyed("wrong")).hello()) else {
            panic!()
        };
        let forged = Message::AuthProof { proof: [7; 32] };
        assert!(matches!(gate.inspect(&peer, &forged), Verdict::Answer(Message::AuthRefused { .. })));
        assert!(matches!(
            gate.inspect(&peer, &Message::StatusRequest),
            Verdict::Answer(Message::AuthRefused { .. })
        ));
        assert!(!gate.trusts(&peer));
    }

    #[test]
    fn a_replayed_proof_is_worthless_on_a_new_challenge() {
        let mut gate = Gate::new(keyed("k"), "test".into());
        let (peer, attacker) = (Bytes::from_static(b"p"), Bytes::from_static(b"x"));
        let auth = keyed("k");
        let shake = Handshake::new(&auth);
        let Verdict::Answer(challenge) = gate.inspect(&peer, &shake.hello()) else { panic!() };
        let proof = shake.answer(challenge).unwrap().unwrap();
        // The attacker replays the hello and the recorded proof on its own connection.
        let Verdict::Answer(_) = gate.inspect(&attacker, &shake.hello()) else { panic!() };
        assert!(matches!(gate.inspect(&attacker, &proof), Verdict::Answer(Message::AuthRefused { .. })));
    }

    #[test]
    fn keyless_peers_and_insecure_servers_get_clear_reasons() {
        let mut gate = Gate::new(keyed("k"), "test".into());
        let peer = Bytes::from_static(b"p");
        let err = handshake(&Auth::Insecure, &mut gate, &peer).unwrap_err();
        assert!(err.contains("requires its key") && err.contains("XPARL_CLUSTER_KEY"), "{err}");
        let mut open = Gate::new(Auth::Insecure, "test".into());
        let err = handshake(&keyed("k"), &mut open, &peer).unwrap_err();
        assert!(err.contains("--insecure"), "{err}");
        assert_eq!(handshake(&Auth::Insecure, &mut open, &peer), Ok(Verdict::Trusted(None)));
        assert_eq!(open.inspect(&peer, &Message::StatusRequest), Verdict::Pass);
    }

    #[test]
    fn http_tokens_come_from_the_key() {
        let key = ClusterKey::new("k").unwrap();
        assert!(key.verify_http_token(&key.http_token()));
        assert!(!key.verify_http_token(&ClusterKey::new("other").unwrap().http_token()));
        assert!(!key.verify_http_token("not hex"));
        assert_eq!(format!("{key:?}"), "ClusterKey(..)");
        assert_eq!(ClusterKey::generate().len(), 64);
        assert_eq!(Auth::from_key(Some("  ")), Auth::Insecure);
    }
}
