//! The hand-over channel between an old daemon and its successor: a
//! `SOCK_SEQPACKET` socket pair, so that every message keeps its bounds,
//! carrying JSON messages and, for the state, large byte blobs and any
//! number of descriptors (SCM_RIGHTS, in batches the kernel accepts).

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Duration;

use anyhow::{bail, Context};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::net::{
    recvmsg, sendmsg, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Bytes per message of a blob: well under the socket's send buffer.
const CHUNK: usize = 64 * 1024;

/// Descriptors per message: the kernel takes at most 253 (SCM_MAX_FD).
const FDS_PER_MESSAGE: usize = 250;

/// One end of the channel.
pub struct Channel {
    sock: OwnedFd,
    /// How long a receive waits for the other side before giving up.
    timeout: Duration,
}

/// A connected pair: one end stays, the other goes to the successor.
pub fn pair(timeout: Duration) -> anyhow::Result<(Channel, OwnedFd)> {
    let (ours, theirs) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .context("creating the hand-over socket pair")?;
    Ok((Channel::new(ours, timeout), theirs))
}

impl Channel {
    /// The channel over `sock`, a connected SOCK_SEQPACKET socket.
    pub fn new(sock: OwnedFd, timeout: Duration) -> Channel {
        Channel { sock, timeout }
    }

    /// Sends one JSON message.
    pub fn send<T: Serialize>(&self, msg: &T) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec(msg).context("encoding a hand-over message")?;
        self.send_bytes(&bytes, &[])
    }

    /// Receives one JSON message.
    pub fn recv<T: DeserializeOwned>(&self) -> anyhow::Result<T> {
        let mut buf = vec![0u8; CHUNK];
        let (n, fds) = self.recv_bytes(&mut buf)?;
        if !fds.is_empty() {
            bail!("the other side sent descriptors with a message");
        }
        serde_json::from_slice(&buf[..n]).context("decoding a hand-over message")
    }

    /// Sends `bytes` and `fds`: their sizes, then the bytes in chunks,
    /// then the descriptors in batches.
    pub fn send_blob(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> anyhow::Result<()> {
        let head = (bytes.len() as u64, fds.len() as u64);
        self.send(&head)?;
        for chunk in bytes.chunks(CHUNK) {
            self.send_bytes(chunk, &[])?;
        }
        for batch in fds.chunks(FDS_PER_MESSAGE) {
            self.send_bytes(b"f", batch)?;
        }
        Ok(())
    }

    /// Receives what [`send_blob`](Channel::send_blob) sent.
    pub fn recv_blob(&self) -> anyhow::Result<(Vec<u8>, Vec<OwnedFd>)> {
        let (len, count): (u64, u64) = self.recv()?;
        let (len, count) = (len as usize, count as usize);
        let mut bytes = vec![0u8; len];
        let mut at = 0;
        while at < len {
            let end = (at + CHUNK).min(len);
            let (n, fds) = self.recv_bytes(&mut bytes[at..end])?;
            if n == 0 || !fds.is_empty() {
                bail!("the state arrived cut short");
            }
            at += n;
        }
        let mut fds = Vec::with_capacity(count);
        while fds.len() < count {
            let mut one = [0u8; 1];
            let (n, batch) = self.recv_bytes(&mut one)?;
            if n != 1 || batch.is_empty() {
                bail!("descriptors of the state went missing");
            }
            fds.extend(batch);
        }
        if fds.len() != count {
            bail!("{} descriptors came where {count} were sent", fds.len());
        }
        Ok((bytes, fds))
    }

    fn send_bytes(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> anyhow::Result<()> {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_MESSAGE))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
            bail!("too many descriptors for one message");
        }
        let sent = sendmsg(
            &self.sock,
            &[IoSlice::new(bytes)],
            &mut control,
            SendFlags::NOSIGNAL,
        )
        .context("sending to the other daemon")?;
        if sent != bytes.len() {
            bail!("a hand-over message went out cut short");
        }
        Ok(())
    }

    fn recv_bytes(&self, buf: &mut [u8]) -> anyhow::Result<(usize, Vec<OwnedFd>)> {
        self.wait_readable()?;
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_MESSAGE))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let msg = recvmsg(
            &self.sock,
            &mut [IoSliceMut::new(buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )
        .context("receiving from the other daemon")?;
        let mut fds = Vec::new();
        for m in control.drain() {
            if let RecvAncillaryMessage::ScmRights(got) = m {
                fds.extend(got);
            }
        }
        if msg.flags.contains(rustix::net::ReturnFlags::CTRUNC) {
            bail!("descriptors were dropped in transit (out of descriptors?)");
        }
        if msg.bytes == 0 && !buf.is_empty() {
            bail!("the other daemon went away");
        }
        if msg.flags.contains(rustix::net::ReturnFlags::TRUNC) {
            bail!("a hand-over message did not fit");
        }
        Ok((msg.bytes, fds))
    }

    fn wait_readable(&self) -> anyhow::Result<()> {
        let timeout = Timespec::try_from(self.timeout).context("a hand-over timeout")?;
        loop {
            let mut fds = [PollFd::new(&self.sock, PollFlags::IN)];
            match poll(&mut fds, Some(&timeout)) {
                Ok(0) => bail!(
                    "the other daemon said nothing for {:.1} s",
                    self.timeout.as_secs_f64()
                ),
                Ok(_) => return Ok(()),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e).context("waiting for the other daemon"),
            }
        }
    }
}
