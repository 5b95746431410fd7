//! Cluster authentication: every port of a cluster refuses peers that do not hold its key.
//!
//! Every message a server accepts can make it run code (pickles), so a server must know its
//! peer holds the cluster key before it handles anything. The `zeromq` crate has no CURVE, so
//! parl_rs authenticates each connection itself, with HMAC-SHA256 (RustCrypto's `hmac` and
//! `sha2`) over fresh nonces from both sides:
//!
//! ```text
//! peer   -> server   AuthHello     { client nonce, service wanted, encrypt? }
//! server -> peer     AuthChallenge { server nonce, encrypt?, HMAC(key, "server" | transcript) }
//! peer   -> server   AuthProof     { HMAC(key, "client" | transcript) }
//! ```
//!
//! The transcript (`Transcript`) holds the protocol version, the service, both sides'
//! encryption wishes and both nonces. The peer checks the server's proof before it sends
//! anything else, so it never sends code to, or unpickles results from, a server without the
//! key. The key never crosses the wire; fresh nonces make a recorded exchange useless, and the
//! two labels stop a proof being reflected back.
//!
//! The handshake also yields the keys of an authenticated session ([`crate::session`]): every
//! later message is checked under them, so a relay that forwards the handshake of a key
//! holder still cannot send a message of its own.
//! HTTP ports take a bearer token derived from the key ([`ClusterKey::http_token`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::logging::Throttle;
use crate::protocol::{AuthChallenge, AuthHello, Message, Nonce, Proof, Service, PROTOCOL_VERSION};
use crate::session::{DirectionKey, Protection, Session};
use crate::transport::PeerId;

/// The environment variable that carries a cluster key (to `xparl`, clients, and jobs).
pub const KEY_ENV: &str = "XPARL_CLUSTER_KEY";

const SERVER_LABEL: &[u8] = b"parl_rs auth v2 server";
const CLIENT_LABEL: &[u8] = b"parl_rs auth v2 client";
const HTTP_LABEL: &[u8] = b"parl_rs auth v1 http";
const TRANSCRIPT_LABEL: &[u8] = b"parl_rs session v1";
const TO_SERVER_LABEL: &[u8] = b"parl_rs session v1 peer to server";
const TO_PEER_LABEL: &[u8] = b"parl_rs session v1 server to peer";

/// A cluster's shared secret. Its `Debug` never shows it.
///
/// It also carries whether this process encrypts its sessions: set on a master started with
/// `--encrypt`, and learned by every process whose handshake with such a master asked for it
/// (shared by all clones, so a client's later connections to jobs encrypt too).
#[derive(Clone)]
pub struct ClusterKey {
    secret: Arc<str>,
    encrypt: Arc<AtomicBool>,
}

impl PartialEq for ClusterKey {
    fn eq(&self, other: &ClusterKey) -> bool {
        self.secret == other.secret
    }
}

impl Eq for ClusterKey {}

impl ClusterKey {
    /// A key from its text form (any non-empty string; `xparl start` makes 64 hex digits).
    pub fn new(secret: &str) -> Option<ClusterKey> {
        let secret = secret.trim();
        (!secret.is_empty()).then(|| ClusterKey { secret: secret.into(), encrypt: Default::default() })
    }

    /// A new random key, as text: 32 bytes from the thread's CSPRNG, in hex.
    pub fn generate() -> String {
        hex::encode(rand::random::<[u8; 32]>())
    }

    /// Asks for encryption on every session this process opens or accepts from now on.
    pub fn require_encryption(&self) {
        self.encrypt.store(true, Ordering::Relaxed);
    }

    /// Whether this process asks for encrypted sessions.
    pub fn encrypts(&self) -> bool {
        self.encrypt.load(Ordering::Relaxed)
    }

    fn mac(&self, label: &[u8], parts: &[&[u8]]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(self.secret.as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(label);
        for part in parts {
            mac.update(part);
        }
        mac
    }

    fn proof(&self, label: &[u8], transcript: &Transcript) -> Proof {
        self.mac(label, &[&transcript.0]).finalize().into_bytes().into()
    }

    /// Checks a proof in constant time.
    fn verify(&self, label: &[u8], transcript: &Transcript, proof: &Proof) -> bool {
        self.mac(label, &[&transcript.0]).verify_slice(proof).is_ok()
    }

    /// The two direction keys of the session this transcript opened: (peer to server,
    /// server to peer). HKDF-SHA256, the cluster key as input, the transcript as salt.
    fn session_keys(&self, transcript: &Transcript) -> (DirectionKey, DirectionKey) {
        let hkdf = Hkdf::<Sha256>::new(Some(&transcript.0), self.secret.as_bytes());
        let (mut to_server, mut to_peer) = ([0u8; 32], [0u8; 32]);
        hkdf.expand(TO_SERVER_LABEL, &mut to_server).expect("32 bytes is a valid HKDF length");
        hkdf.expand(TO_PEER_LABEL, &mut to_peer).expect("32 bytes is a valid HKDF length");
        (to_server, to_peer)
    }

    /// The key's text, for handing it to a child process (a job) through its environment.
    pub fn text(&self) -> &str {
        &self.secret
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

/// Everything one handshake agreed on, as the bytes both proofs and the session keys cover.
struct Transcript(Vec<u8>);

impl Transcript {
    fn new(hello: &AuthHello, challenge: &AuthChallenge) -> Transcript {
        let mut bytes = Vec::with_capacity(TRANSCRIPT_LABEL.len() + 2 + 3 + 64);
        bytes.extend_from_slice(TRANSCRIPT_LABEL);
        bytes.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        bytes.push(hello.service as u8);
        bytes.push(u8::from(hello.encrypt));
        bytes.push(u8::from(challenge.encrypt));
        bytes.extend_from_slice(&hello.nonce);
        bytes.extend_from_slice(&challenge.nonce);
        Transcript(bytes)
    }
}

fn protection(hello: &AuthHello, challenge: &AuthChallenge) -> Protection {
    Protection::from_encrypt(hello.encrypt || challenge.encrypt)
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

    fn encrypts(&self) -> bool {
        self.key().is_some_and(ClusterKey::encrypts)
    }
}

fn nonce() -> Nonce {
    rand::random()
}

/// What the connecting side gets from a handshake that passed.
pub struct Agreed {
    /// The proof to send back (None for an insecure cluster).
    pub proof: Option<Message>,
    /// The session's keys (None for an insecure cluster).
    pub session: Option<Session>,
}

/// The connecting side of one handshake.
pub struct Handshake<'a> {
    auth: &'a Auth,
    hello: AuthHello,
}

impl<'a> Handshake<'a> {
    /// A handshake with a server of kind `service`.
    pub fn new(auth: &'a Auth, service: Service) -> Handshake<'a> {
        let hello =
            AuthHello { nonce: nonce(), keyed: auth.key().is_some(), service, encrypt: auth.encrypts() };
        Handshake { auth, hello }
    }

    /// The first message to send.
    pub fn hello(&self) -> Message {
        Message::AuthHello(self.hello.clone())
    }

    /// Checks the server's answer; returns the proof to send back and the session, or why this
    /// server must not be used.
    pub fn answer(&self, answer: Message) -> Result<Agreed, String> {
        let challenge = match answer {
            Message::AuthChallenge(challenge) => challenge,
            Message::AuthRefused { reason } => return Err(reason),
            Message::Error(e) => return Err(e.message),
            other => return Err(format!("answered {} instead of the key handshake", other.kind())),
        };
        let transcript = Transcript::new(&self.hello, &challenge);
        let key = match (self.auth, challenge.proof) {
            (Auth::Insecure, _) => return Ok(Agreed { proof: None, session: None }),
            (Auth::Key(_), None) => {
                return Err("it runs without authentication (--insecure), and this side holds a \
                 cluster key: refusing to trust it. Unset the key (XPARL_CLUSTER_KEY, key=, --key) to use \
                 an insecure cluster"
                    .into())
            }
            (Auth::Key(key), Some(proof)) => {
                if !key.verify(SERVER_LABEL, &transcript, &proof) {
                    return Err("it does not hold this cluster key (a wrong key, or another cluster on \
                         that port)"
                        .into());
                }
                key
            }
        };
        if challenge.encrypt && self.hello.service == Service::Master {
            // The master asks for encryption: so do this process's later connections.
            key.require_encryption();
        }
        let (to_server, to_peer) = key.session_keys(&transcript);
        let protection = protection(&self.hello, &challenge);
        Ok(Agreed {
            proof: Some(Message::AuthProof { proof: key.proof(CLIENT_LABEL, &transcript) }),
            session: Some(Session::new(protection, &to_server, &to_peer)),
        })
    }
}

/// What a server does with one message from a peer that has no session yet.
pub enum Verdict {
    /// Hand it to the server's owner (insecure servers only: keyed ones pass only messages
    /// of a session).
    Pass,
    /// Answer the peer with this message (part of the handshake, or a refusal).
    Answer(Message),
    /// Neither: the handshake step needs no answer.
    Consumed,
    /// The peer passed the handshake: answer it with `answer` (if any); its messages from now
    /// on are checked in `session` (None on an insecure server). It may send large messages
    /// (see `FrameSocket::trust`).
    Trusted { answer: Option<Message>, session: Option<Session> },
}

impl fmt::Debug for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Pass => f.write_str("Pass"),
            Verdict::Answer(message) => write!(f, "Answer({message:?})"),
            Verdict::Consumed => f.write_str("Consumed"),
            Verdict::Trusted { answer, session } => {
                write!(f, "Trusted({answer:?}, session: {})", session.is_some())
            }
        }
    }
}

/// A handshake under way: what the server sent, to check the peer's proof against.
struct Challenged {
    hello: AuthHello,
    challenge: AuthChallenge,
}

/// A server's gatekeeper: runs each peer's handshake. Owned by the server's socket task,
/// which checks the messages of peers that passed in their sessions; `forget` a peer when its
/// connection closes.
pub struct Gate {
    auth: Auth,
    service: Service,
    socket: String,
    peers: HashMap<PeerId, Challenged>,
    refusals: Throttle,
}

impl Gate {
    /// The gate of a server of kind `service`; `socket` names it in logs.
    pub fn new(auth: Auth, service: Service, socket: String) -> Gate {
        Gate {
            auth,
            service,
            socket,
            peers: HashMap::new(),
            refusals: Throttle::new(Duration::from_secs(10)),
        }
    }

    /// Decides what to do with `message` from `peer`, which has no session.
    pub fn inspect(&mut self, peer: &PeerId, message: &Message) -> Verdict {
        let key = match &self.auth {
            Auth::Insecure => return inspect_insecure(message),
            Auth::Key(key) => key.clone(),
        };
        match message {
            Message::AuthHello(hello) if !hello.keyed => self.refuse(
                peer,
                "this cluster requires its key: pass key= to connect(), --key_file to xparl, or set \
                 XPARL_CLUSTER_KEY (`xparl start` wrote it to <state dir>/keys/<port>.key on the \
                 master's machine)",
            ),
            Message::AuthHello(hello) if hello.service != self.service => {
                let why = format!("this port serves {}, not {}", self.service.name(), hello.service.name());
                self.refuse(peer, &why)
            }
            Message::AuthHello(hello) => {
                let mut challenge = AuthChallenge { nonce: nonce(), proof: None, encrypt: key.encrypts() };
                challenge.proof = Some(key.proof(SERVER_LABEL, &Transcript::new(hello, &challenge)));
                self.peers
                    .insert(peer.clone(), Challenged { hello: hello.clone(), challenge: challenge.clone() });
                Verdict::Answer(Message::AuthChallenge(challenge))
            }
            Message::AuthProof { proof } => match self.peers.remove(peer) {
                Some(Challenged { hello, challenge }) => {
                    let transcript = Transcript::new(&hello, &challenge);
                    if !key.verify(CLIENT_LABEL, &transcript, proof) {
                        return self.refuse(peer, "wrong cluster key");
                    }
                    let (to_server, to_peer) = key.session_keys(&transcript);
                    let session = Session::new(protection(&hello, &challenge), &to_peer, &to_server);
                    Verdict::Trusted { answer: None, session: Some(session) }
                }
                None => self.refuse(peer, "a key proof without a hello"),
            },
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

    /// Drops what is known of a peer whose connection closed.
    pub fn forget(&mut self, peer: &PeerId) {
        self.peers.remove(peer);
    }

    /// The kind of server this gate guards.
    pub fn service(&self) -> Service {
        self.service
    }

    /// Whether messages of peers that passed the handshake are checked in a session.
    pub fn keyed(&self) -> bool {
        self.auth.key().is_some()
    }
}

/// Without a key every peer is trusted; a hello still gets its (proof-less) challenge.
fn inspect_insecure(message: &Message) -> Verdict {
    match message {
        // Without a key there is nothing to prove: the hello is the whole handshake.
        Message::AuthHello(_) => Verdict::Trusted {
            answer: Some(Message::AuthChallenge(AuthChallenge {
                nonce: nonce(),
                proof: None,
                encrypt: false,
            })),
            session: None,
        },
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

    /// The two ends of a session that passed a handshake.
    type Ends = (Option<Session>, Option<Session>);

    /// Runs a whole handshake with a master's gate; returns the client's error, or both ends'
    /// sessions (None, None for an insecure one).
    fn handshake(client: &Auth, gate: &mut Gate, peer: &PeerId) -> Result<Ends, String> {
        let shake = Handshake::new(client, Service::Master);
        let (answer, trusted) = match gate.inspect(peer, &shake.hello()) {
            Verdict::Answer(answer) => (answer, false),
            Verdict::Trusted { answer: Some(answer), session: None } => (answer, true),
            other => panic!("no challenge: {other:?}"),
        };
        let agreed = shake.answer(answer)?;
        match agreed.proof {
            Some(proof) => match gate.inspect(peer, &proof) {
                Verdict::Trusted { answer: None, session } => Ok((agreed.session, session)),
                Verdict::Answer(Message::AuthRefused { reason }) => Err(format!("server refused: {reason}")),
                other => panic!("unexpected verdict {other:?}"),
            },
            None if trusted => Ok((None, None)),
            None => panic!("an untrusted peer without a proof"),
        }
    }

    fn refused(verdict: Verdict) -> bool {
        matches!(verdict, Verdict::Answer(Message::AuthRefused { .. }))
    }

    #[test]
    fn the_right_key_opens_a_session_whose_ends_agree() {
        let mut gate = Gate::new(keyed("k1"), Service::Master, "test".into());
        let (alice, mallory) = (Bytes::from_static(b"a"), Bytes::from_static(b"m"));
        let (Some(mut client), Some(mut server)) = handshake(&keyed("k1"), &mut gate, &alice).unwrap() else {
            panic!("a keyed handshake opens a session on both ends")
        };
        let message = vec![Bytes::from_static(b"hello")];
        let sealed = client.sealer.seal(message.clone()).unwrap();
        assert_eq!(server.opener.open(sealed).unwrap(), message);
        let sealed = server.sealer.seal(message.clone()).unwrap();
        assert_eq!(client.opener.open(sealed).unwrap(), message);
        // Another peer without a session gets nothing through.
        assert!(refused(gate.inspect(&mallory, &Message::StatusRequest)));
    }

    #[test]
    fn every_handshake_gives_new_session_keys() {
        let mut gate = Gate::new(keyed("k"), Service::Master, "test".into());
        let peer = Bytes::from_static(b"p");
        let (Some(mut first), _) = handshake(&keyed("k"), &mut gate, &peer).unwrap() else { panic!() };
        let (_, Some(mut second)) = handshake(&keyed("k"), &mut gate, &peer).unwrap() else { panic!() };
        let sealed = first.sealer.seal(vec![Bytes::from_static(b"x")]).unwrap();
        assert!(second.opener.open(sealed).is_err());
    }

    #[test]
    fn a_wrong_key_is_caught_by_the_client_and_by_the_server() {
        let mut gate = Gate::new(keyed("right"), Service::Master, "test".into());
        let peer = Bytes::from_static(b"p");
        let err = handshake(&keyed("wrong"), &mut gate, &peer).unwrap_err();
        assert!(err.contains("does not hold this cluster key"), "{err}");
        // A client that skips checking and sends any proof is refused too.
        let Verdict::Answer(_) =
            gate.inspect(&peer, &Handshake::new(&keyed("wrong"), Service::Master).hello())
        else {
            panic!()
        };
        assert!(refused(gate.inspect(&peer, &Message::AuthProof { proof: [7; 32] })));
        assert!(refused(gate.inspect(&peer, &Message::StatusRequest)));
    }

    #[test]
    fn a_replayed_proof_is_worthless_on_a_new_challenge() {
        let mut gate = Gate::new(keyed("k"), Service::Master, "test".into());
        let (peer, attacker) = (Bytes::from_static(b"p"), Bytes::from_static(b"x"));
        let auth = keyed("k");
        let shake = Handshake::new(&auth, Service::Master);
        let Verdict::Answer(challenge) = gate.inspect(&peer, &shake.hello()) else { panic!() };
        let proof = shake.answer(challenge).unwrap().proof.unwrap();
        // The attacker replays the hello and the recorded proof on its own connection.
        let Verdict::Answer(_) = gate.inspect(&attacker, &shake.hello()) else { panic!() };
        assert!(refused(gate.inspect(&attacker, &proof)));
    }

    #[test]
    fn a_handshake_for_another_service_is_refused_by_name() {
        let mut job = Gate::new(keyed("k"), Service::Job, "job".into());
        let auth = keyed("k");
        let hello = Handshake::new(&auth, Service::Master).hello();
        let Verdict::Answer(Message::AuthRefused { reason }) = job.inspect(&Bytes::from_static(b"p"), &hello)
        else {
            panic!("a job accepted a handshake meant for a master")
        };
        assert!(reason.contains("serves a job, not a master"), "{reason}");
    }

    #[test]
    fn a_changed_service_or_encryption_wish_breaks_the_proofs() {
        // A relay that rewrites the hello (say, to turn off encryption) is caught by the
        // client, whose transcript differs from the server's.
        let mut gate = Gate::new(keyed("k"), Service::Master, "test".into());
        let auth = keyed("k");
        auth.key().unwrap().require_encryption();
        let shake = Handshake::new(&auth, Service::Master);
        let Message::AuthHello(mut hello) = shake.hello() else { panic!() };
        hello.encrypt = false;
        let Verdict::Answer(challenge) = gate.inspect(&Bytes::from_static(b"p"), &Message::AuthHello(hello))
        else {
            panic!()
        };
        let Err(err) = shake.answer(challenge) else { panic!("the downgrade went unnoticed") };
        assert!(err.contains("does not hold this cluster key"), "{err}");
    }

    #[test]
    fn a_master_that_encrypts_makes_its_clients_encrypt() {
        let master = keyed("k");
        master.key().unwrap().require_encryption();
        let mut gate = Gate::new(master, Service::Master, "test".into());
        let client = keyed("k");
        let (Some(mut ours), Some(_)) = handshake(&client, &mut gate, &Bytes::from_static(b"p")).unwrap()
        else {
            panic!()
        };
        assert!(client.key().unwrap().encrypts(), "the client did not learn to encrypt");
        let sealed = ours.sealer.seal(vec![Bytes::from_static(b"secret")]).unwrap();
        assert!(!sealed[0].windows(6).any(|w| w == b"secret"));
    }

    #[test]
    fn keyless_peers_and_insecure_servers_get_clear_reasons() {
        let mut gate = Gate::new(keyed("k"), Service::Master, "test".into());
        let peer = Bytes::from_static(b"p");
        let err = handshake(&Auth::Insecure, &mut gate, &peer).unwrap_err();
        assert!(err.contains("requires its key") && err.contains("XPARL_CLUSTER_KEY"), "{err}");
        let mut open = Gate::new(Auth::Insecure, Service::Master, "test".into());
        let err = handshake(&keyed("k"), &mut open, &peer).unwrap_err();
        assert!(err.contains("--insecure"), "{err}");
        assert!(matches!(handshake(&Auth::Insecure, &mut open, &peer), Ok((None, None))));
        assert!(matches!(open.inspect(&peer, &Message::StatusRequest), Verdict::Pass));
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
