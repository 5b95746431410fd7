//! Handing the cluster key to a child process (a worker's jobs; `xparl`'s nodes do the same in
//! Python) through an inherited pipe, never through its environment or command line: a job
//! runs the user's code, and `/proc/<pid>/environ` or `ps` would show the key to it and to
//! anything else that can read them.
//!
//! The parent writes the key into a fresh pipe, closes the writing end, and lets only the
//! child inherit the reading end, whose number it finds in `XPARL_KEY_FD`. The child reads the
//! key once and closes the pipe (see [`key_from_parent`]).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::auth::{ClusterKey, KEY_ENV};
use crate::error::{Error, Result};

/// The environment variable that names the inherited pipe holding the key.
pub const KEY_FD_ENV: &str = "XPARL_KEY_FD";

/// The most a key pipe is read for.
const MAX_KEY_LEN: u64 = 4096;

/// A pipe holding the key for one child process: its reading end, which the child inherits.
pub struct KeyPipe {
    read: OwnedFd,
}

impl KeyPipe {
    /// A pipe with `key` written into it and its writing end closed.
    pub fn new(key: &ClusterKey) -> Result<KeyPipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(Error::io("creating a pipe for the cluster key", std::io::Error::last_os_error()));
        }
        // SAFETY: pipe2 succeeded: both descriptors are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
        // A key is far below the pipe's buffer: the write completes without a reader.
        let mut write = write;
        write
            .write_all(key.text().as_bytes())
            .map_err(|e| Error::io("writing the cluster key to its pipe", e))?;
        Ok(KeyPipe { read })
    }

    /// Makes `command` pass the reading end to its child (and only to it: the descriptor is
    /// close-on-exec everywhere else), named in `XPARL_KEY_FD`. Keep `self` until the child is
    /// spawned; dropping it then closes the parent's copy.
    pub fn pass_to(&self, command: &mut tokio::process::Command) {
        let fd = self.read.as_raw_fd();
        command.env(KEY_FD_ENV, fd.to_string()).env_remove(KEY_ENV);
        // SAFETY: the closure runs in the child between fork and exec and only calls fcntl,
        // which is async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

/// In a child process: the key its parent passed, from the pipe named in `XPARL_KEY_FD` (read
/// and closed here), else from `XPARL_CLUSTER_KEY` (a user's own environment); None if neither.
pub fn key_from_parent() -> Result<Option<String>> {
    match std::env::var(KEY_FD_ENV) {
        Ok(fd) => read_key_pipe(&fd).map(Some),
        Err(_) => Ok(std::env::var(KEY_ENV).ok()),
    }
}

/// Reads the key from the inherited pipe numbered `fd` (text of `XPARL_KEY_FD`) and closes it.
fn read_key_pipe(fd: &str) -> Result<String> {
    let bad = |why: String| Error::Protocol(format!("{KEY_FD_ENV}={fd}: {why}"));
    let fd: RawFd = fd.parse().map_err(|_| bad("not a file descriptor number".into()))?;
    if fd <= 2 {
        return Err(bad("not a pipe's descriptor".into()));
    }
    // Only a pipe is taken over: a wrong number must not close an unrelated descriptor.
    // SAFETY: fstat only reads the descriptor's metadata into `stat`.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut stat) } != 0 || (stat.st_mode & libc::S_IFMT) != libc::S_IFIFO {
        return Err(bad("not an open pipe".into()));
    }
    // SAFETY: the descriptor is an open pipe that the parent passed to this process alone; it is
    // taken over once (the variable is read at start-up) and closed when `pipe` drops.
    let pipe = unsafe { File::from_raw_fd(fd) };
    let mut key = String::new();
    // A key is 64 characters; whatever writes more is not a parl_rs parent.
    pipe.take(MAX_KEY_LEN + 1)
        .read_to_string(&mut key)
        .map_err(|e| bad(format!("cannot read the key: {e}")))?;
    if key.len() > MAX_KEY_LEN as usize {
        return Err(bad(format!("the key is longer than {MAX_KEY_LEN} bytes")));
    }
    Ok(key.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_child_gets_the_key_through_the_pipe_and_not_its_environment() {
        let key = ClusterKey::generate();
        let pipe = KeyPipe::new(&ClusterKey::new(&key).unwrap()).unwrap();
        let fd = pipe.read.as_raw_fd();
        // The child shows what it inherited: the key from the named descriptor, and its
        // environment's key variable (which must be absent).
        // (/dev/fd/N, not `<&N`: dash takes only one-digit descriptors there.)
        let script = format!("cat /dev/fd/{fd}; echo; echo \"env=${{{KEY_ENV}:-none}}\"");
        let mut command = tokio::process::Command::new("sh");
        command.args(["-c", &script]).env(KEY_ENV, "must not reach the child");
        pipe.pass_to(&mut command);
        let output = command.output().await.unwrap();
        drop(pipe);
        let text = String::from_utf8(output.stdout).unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(text, format!("{key}\nenv=none\n"), "{:?}: {stderr}", output.status);
    }

    #[test]
    fn a_descriptor_that_is_not_a_pipe_is_refused() {
        let file = File::open("/dev/null").unwrap();
        let refused = read_key_pipe(&file.as_raw_fd().to_string());
        assert!(refused.unwrap_err().to_string().contains("not an open pipe"));
        drop(file); // still open: it was not taken over
        assert!(read_key_pipe("1").is_err() && read_key_pipe("x").is_err());
    }
}
