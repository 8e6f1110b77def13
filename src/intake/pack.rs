//! The pack part of a staged bundle, fed to the indexer through a reader that proves the pack
//! ends exactly at the end of the file.
//!
//! The indexer verifies the trailer it reads but stops there, and it reads ahead through its own
//! buffer, so it cannot tell whether bytes follow. [`PackReader`] hashes every byte of the pack
//! region but the last 20 as they are read and keeps those 20; after indexing, the rest of the
//! region is drained and the file's last 20 bytes must be the SHA-1 of everything before them.
//! Junk after a valid pack makes that fail unless the junk ends in a SHA-1 over the whole region,
//! which no tool produces by accident.

use std::io::{BufRead, Read};

use gix::hash::{Hasher, Kind};

const TRAILER: u64 = 20;
/// `PACK`, version, object count.
const PACK_HEADER: u64 = 12;

pub struct PackReader<R> {
    inner: R,
    pos: u64,
    len: u64,
    hasher: Option<Hasher>,
    tail: Vec<u8>,
}

impl<R: BufRead> PackReader<R> {
    /// `inner` is positioned at the pack and holds exactly `len` more bytes.
    pub fn new(inner: R, len: u64) -> Self {
        Self {
            inner,
            pos: 0,
            len,
            hasher: Some(gix::hash::hasher(Kind::Sha1)),
            tail: Vec::with_capacity(20),
        }
    }

    /// Whether the region is long enough to hold a pack at all.
    pub fn plausible(len: u64) -> bool {
        len >= PACK_HEADER + TRAILER
    }

    /// Reads what the indexer left and checks that the region ends with its own checksum.
    pub fn ends_at_trailer(mut self) -> std::io::Result<bool> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        let digest = self.hasher.take().map(Hasher::try_finalize);
        Ok(match digest {
            Some(Ok(id)) => self.pos == self.len && id.as_bytes() == self.tail.as_slice(),
            _ => false,
        })
    }
}

/// Hashes the part of `bytes` before the trailer and keeps the rest.
fn account(hasher: &mut Option<Hasher>, tail: &mut Vec<u8>, pos: &mut u64, len: u64, bytes: &[u8]) {
    let body_end = len.saturating_sub(TRAILER);
    let in_body = usize::try_from(body_end.saturating_sub(*pos))
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    if let Some(h) = hasher.as_mut() {
        h.update(&bytes[..in_body]);
    }
    tail.extend_from_slice(&bytes[in_body..]);
    *pos += bytes.len() as u64;
}

impl<R: BufRead> Read for PackReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = usize::try_from(self.len - self.pos).unwrap_or(usize::MAX);
        let want = buf.len().min(left);
        let n = self.inner.read(&mut buf[..want])?;
        account(
            &mut self.hasher,
            &mut self.tail,
            &mut self.pos,
            self.len,
            &buf[..n],
        );
        Ok(n)
    }
}

impl<R: BufRead> BufRead for PackReader<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        let left = usize::try_from(self.len - self.pos).unwrap_or(usize::MAX);
        let buf = self.inner.fill_buf()?;
        Ok(&buf[..buf.len().min(left)])
    }

    fn consume(&mut self, amt: usize) {
        // The consumer saw these bytes through `fill_buf`, so they are buffered: no I/O here.
        if let Ok(buf) = self.inner.fill_buf() {
            let seen = &buf[..amt.min(buf.len())];
            account(
                &mut self.hasher,
                &mut self.tail,
                &mut self.pos,
                self.len,
                seen,
            );
        }
        self.inner.consume(amt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack_with(extra: &[u8]) -> Vec<u8> {
        let mut body = b"PACK\0\0\0\x02\0\0\0\0".to_vec();
        let mut h = gix::hash::hasher(Kind::Sha1);
        h.update(&body);
        body.extend_from_slice(h.try_finalize().expect("not a collision").as_bytes());
        body.extend_from_slice(extra);
        body
    }

    fn check(data: &[u8]) -> std::io::Result<bool> {
        let mut r = PackReader::new(data, data.len() as u64);
        let mut first = [0u8; 7];
        r.read_exact(&mut first)?;
        r.ends_at_trailer()
    }

    #[test]
    fn an_exact_pack_passes() -> std::io::Result<()> {
        assert!(check(&pack_with(b""))?);
        Ok(())
    }

    #[test]
    fn junk_after_the_trailer_fails() -> std::io::Result<()> {
        assert!(!check(&pack_with(b"junk"))?);
        assert!(!check(&pack_with(&[0u8; 40]))?);
        Ok(())
    }
}
