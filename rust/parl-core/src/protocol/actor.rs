//! Messages between a client and the job that runs one of its actors: the shipped files, and
//! the reply to a request (the request itself is the call envelope, in [`super::call`]).

use serde::{Deserialize, Serialize};

/// A file the client ships to every job's working directory.
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ShippedFile {
    /// Relative path, '/'-separated; never absolute, never with "..". A path ending in '/'
    /// is an (empty) folder.
    pub path: String,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// Everything a client ships to its jobs, sent to each worker once: jobs name it by `hash`,
/// and a job whose worker has not cached it yet asks for it with `NeedFiles`.
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct FileBundle {
    /// Hex SHA-256 over the files' paths and contents.
    pub hash: String,
    pub files: Vec<ShippedFile>,
}

impl FileBundle {
    /// A bundle of `files` with its hash. The same files always give the same hash.
    pub fn new(mut files: Vec<ShippedFile>) -> FileBundle {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let hash = FileBundle::hash_of(&files);
        FileBundle { hash, files }
    }

    /// Whether `hash` really is the hash of the files (a job checks before caching them).
    pub fn is_intact(&self) -> bool {
        FileBundle::hash_of(&self.files) == self.hash
    }

    fn hash_of(files: &[ShippedFile]) -> String {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        for file in files {
            // Lengths first, so that no two different lists hash the same bytes.
            hasher.update((file.path.len() as u64).to_le_bytes());
            hasher.update(file.path.as_bytes());
            hasher.update((file.data.len() as u64).to_le_bytes());
            hasher.update(&file.data);
        }
        hex::encode(hasher.finalize())
    }
}

/// Which stage of a request failed inside the job.
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The user's code raised.
    User,
    /// Reading an attribute raised AttributeError.
    Attribute,
    /// The job could not serialize the result.
    Serialize,
    /// The job could not deserialize the arguments.
    Deserialize,
    /// The value has no portable form (see [`Encoding::Portable`](super::Encoding::Portable)):
    /// the native client asked for something only Python can hold. The actor lives on.
    NotPortable,
}

impl FailureKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            FailureKind::User => "user",
            FailureKind::Attribute => "attribute",
            FailureKind::Serialize => "serialize",
            FailureKind::Deserialize => "deserialize",
            FailureKind::NotPortable => "not_portable",
        }
    }

    pub fn parse(kind: &str) -> Option<FailureKind> {
        Some(match kind {
            "user" => FailureKind::User,
            "attribute" => FailureKind::Attribute,
            "serialize" => FailureKind::Serialize,
            "deserialize" => FailureKind::Deserialize,
            "not_portable" => FailureKind::NotPortable,
            _ => return None,
        })
    }
}

/// A failure inside the job: the remote exception, described for the caller.
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RemoteFailure {
    pub kind: FailureKind,
    /// Qualified name of the exception class, e.g. "builtins.ValueError".
    pub exc_type: String,
    pub message: String,
    pub traceback: String,
}

#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Outcome {
    Ok,
    Failed(RemoteFailure),
    /// The job could not take the request at all (e.g. a call before init).
    Rejected(String),
}

#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ActorReply {
    pub request_id: u64,
    pub outcome: Outcome,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, data: &[u8]) -> ShippedFile {
        ShippedFile { path: path.into(), data: data.to_vec() }
    }

    #[test]
    fn the_hash_depends_on_content_not_order() {
        let a = FileBundle::new(vec![file("a.py", b"1"), file("b/c.txt", b"2")]);
        let b = FileBundle::new(vec![file("b/c.txt", b"2"), file("a.py", b"1")]);
        let c = FileBundle::new(vec![file("a.py", b"1"), file("b/c.txt", b"3")]);
        assert_eq!(a.hash, b.hash);
        assert_ne!(a.hash, c.hash);
        assert!(a.is_intact());
        let mut forged = a.clone();
        forged.files[0].data = b"evil".to_vec();
        assert!(!forged.is_intact());
    }
}
