//! The pack part of a staged bundle, fed to the indexer through a reader that proves the pack
//! ends exactly at the end of the file.
//!
//! The indexer verifies the trailer it reads but stops there, and it reads ahead through its own
//! buffer, so it cannot tell whether bytes follow. [`PackReader`] hands out at most
//! [`READ_CAP`] bytes a read, so whatever the indexer read ahead is at most that much, and keeps
//! the last `READ_CAP + 20` bytes it handed out. After indexing:
//!
//! * the indexer must have read the whole region (it reads ahead, never less than it used);
//! * no position inside the read-ahead window may end a pack of its own: 20 bytes equal to the
//!   SHA-1 of everything before them. Junk after a valid pack whose last 20 bytes were
//!   recomputed over the whole region passes the next check, but not this one, because the
//!   real pack ends inside the window;
//! * the region's last 20 bytes are the SHA-1 of everything before them.

use std::collections::VecDeque;
use std::io::{BufRead, Read};

use gix::hash::{Hasher, Kind};

const TRAILER: usize = 20;
/// `PACK`, version, object count.
const PACK_HEADER: u64 = 12;
/// Most bytes handed out by one read, which bounds how far the indexer can read ahead.
pub const READ_CAP: usize = 8 << 10;

pub struct PackReader<R> {
    inner: R,
    pos: u64,
    len: u64,
    /// SHA-1 of the region up to the first byte kept in `recent`.
    lagged: Hasher,
    /// The last `READ_CAP + TRAILER` bytes handed out (fewer at the start).
    recent: VecDeque<u8>,
}

impl<R: BufRead> PackReader<R> {
    /// `inner` is positioned at the pack and holds exactly `len` more bytes.
    pub fn new(inner: R, len: u64) -> Self {
        Self {
            inner,
            pos: 0,
            len,
            lagged: gix::hash::hasher(Kind::Sha1),
            recent: VecDeque::with_capacity(READ_CAP + TRAILER + READ_CAP),
        }
    }

    /// Whether the region is long enough to hold a pack at all.
    pub fn plausible(len: u64) -> bool {
        len >= PACK_HEADER + TRAILER as u64
    }

    /// Called once the indexer is done: whether the pack it indexed is exactly the region.
    pub fn ends_at_trailer(mut self) -> std::io::Result<bool> {
        if self.pos < self.len {
            // The indexer finished before the region did: bytes follow its pack.
            return Ok(false);
        }
        // Scan the read-ahead window for an earlier end of a pack.
        let mut hasher = self.lagged.clone();
        let kept: Vec<u8> = self.recent.drain(..).collect();
        let ends = kept.len().saturating_sub(TRAILER);
        for j in 0..=ends {
            let digest = hasher.clone().try_finalize();
            let ends_here = matches!(&digest, Ok(id) if id.as_bytes() == &kept[j..j + TRAILER]);
            if ends_here {
                return Ok(j == ends);
            }
            if j < ends {
                hasher.update(&kept[j..=j]);
            }
        }
        Ok(false)
    }

    fn keep(&mut self, bytes: &[u8]) {
        self.recent.extend(bytes);
        self.pos += bytes.len() as u64;
        let excess = self.recent.len().saturating_sub(READ_CAP + TRAILER);
        if excess > 0 {
            let (front, back) = self.recent.as_slices();
            let from_front = excess.min(front.len());
            self.lagged.update(&front[..from_front]);
            self.lagged.update(&back[..excess - from_front]);
            self.recent.drain(..excess);
        }
    }

    fn left(&self) -> usize {
        usize::try_from(self.len - self.pos)
            .unwrap_or(usize::MAX)
            .min(READ_CAP)
    }
}

impl<R: BufRead> Read for PackReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = buf.len().min(self.left());
        let n = self.inner.read(&mut buf[..want])?;
        self.keep(&buf[..n]);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for PackReader<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        let left = self.left();
        let buf = self.inner.fill_buf()?;
        Ok(&buf[..buf.len().min(left)])
    }

    fn consume(&mut self, amt: usize) {
        // The consumer saw these bytes through `fill_buf`, so they are buffered: no I/O here.
        let seen = match self.inner.fill_buf() {
            Ok(buf) => buf[..amt.min(buf.len())].to_vec(),
            Err(_) => Vec::new(),
        };
        self.keep(&seen);
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

    /// Reads like the indexer: everything through a buffer, in reads of any size.
    fn check(data: &[u8]) -> std::io::Result<bool> {
        let mut r = PackReader::new(data, data.len() as u64);
        std::io::copy(&mut r, &mut std::io::sink())?;
        r.ends_at_trailer()
    }

    /// A pack followed by junk, with the region's last 20 bytes recomputed over all of it.
    fn with_recomputed_trailer(junk: &[u8]) -> Vec<u8> {
        let mut region = pack_with(junk);
        let mut h = gix::hash::hasher(Kind::Sha1);
        h.update(&region);
        region.extend_from_slice(h.try_finalize().expect("not a collision").as_bytes());
        region
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

    #[test]
    fn junk_with_a_recomputed_trailer_fails() -> std::io::Result<()> {
        // Within the read-ahead window the real pack's end is found...
        for junk_len in [0, 1, 19, 20, 21, 4000, READ_CAP - 40] {
            let region = with_recomputed_trailer(&vec![b'j'; junk_len]);
            assert!(!check(&region)?, "{junk_len} bytes of junk passed");
        }
        // ...past it, the indexer stopped reading before the region ended.
        let region = with_recomputed_trailer(&vec![b'j'; 3 * READ_CAP]);
        let mut r = PackReader::new(region.as_slice(), region.len() as u64);
        let mut pack = vec![0u8; 32 + READ_CAP];
        r.read_exact(&mut pack)?;
        assert!(!r.ends_at_trailer()?);
        Ok(())
    }

    #[test]
    fn a_large_exact_pack_passes() -> std::io::Result<()> {
        let mut body = b"PACK\0\0\0\x02\0\0\0\0".to_vec();
        body.extend((0..100_000u32).map(|i| (i % 251) as u8));
        let mut h = gix::hash::hasher(Kind::Sha1);
        h.update(&body);
        body.extend_from_slice(h.try_finalize().expect("not a collision").as_bytes());
        assert!(check(&body)?);
        Ok(())
    }
}
