//! The git bundle header (`gitformat-bundle(5)`), parsed by hand: gix reads packs, not bundles.
//!
//! ```text
//! # v3 git bundle
//! @object-format=sha1
//! -<prerequisite oid> <comment>
//! <tip oid> <refname>
//! <blank line>
//! PACK...
//! ```
//!
//! Only called on a staged copy whose signature was verified. The whole header is bounded
//! ([`MAX_HEADER`] bytes, [`MAX_ENTRIES`] entries) rather than each line: git writes a
//! prerequisite's commit subject after its id, folded from the whole first paragraph of the
//! message, so a line may be long. Only `@object-format=sha1` is accepted as a capability, and
//! ref names are validated with gix. Prerequisite comments are skipped, never kept.

use std::io::BufRead;

use gix::ObjectId;
use gix::bstr::{BString, ByteSlice};

/// Most bytes a header may take, all lines together.
pub const MAX_HEADER: u64 = 1 << 20;
/// Most prerequisites plus refs accepted in one header.
pub const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read the bundle header")]
    Read(#[source] std::io::Error),
    #[error(
        "not a git bundle: the first line is {found:?}, expected \"# v2 git bundle\" or \"# v3 git bundle\""
    )]
    Signature { found: String },
    #[error("bundle header ends early at line {line}: the file is truncated")]
    Truncated { line: usize },
    #[error("bundle header is longer than {MAX_HEADER} bytes (at line {line}); bundle fewer refs")]
    TooLong { line: usize },
    #[error("bundle header has more than {MAX_ENTRIES} entries")]
    TooManyEntries,
    #[error("bundle uses object format {format:?}; outpost handles sha1 repositories only")]
    ObjectFormat { format: String },
    #[error(
        "bundle needs capability {capability:?}, which outpost does not support; create it with plain `git bundle create`"
    )]
    Capability { capability: String },
    #[error("bundle header line {line} is malformed: {reason}")]
    Malformed { line: usize, reason: String },
    #[error("bundle ref name {name:?} is invalid")]
    RefName { name: String },
    #[error("bundle lists no refs")]
    NoRefs,
}

/// A parsed bundle header; the reader it came from is left at the first byte of the pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    /// Commits the receiver must already have (incremental bundles).
    pub prerequisites: Vec<ObjectId>,
    /// `(tip, full ref name)` pairs.
    pub refs: Vec<(ObjectId, BString)>,
    /// Bytes the header takes, up to and including the blank line.
    pub len: u64,
}

impl Header {
    /// The tip of `full_name`, if the bundle carries that ref.
    pub fn tip(&self, full_name: &str) -> Option<ObjectId> {
        self.refs
            .iter()
            .find(|(_, name)| name == full_name)
            .map(|(oid, _)| *oid)
    }

    /// The ref names, for messages: the first few, escaped, and how many more.
    pub fn ref_names(&self) -> String {
        const SHOWN: usize = 8;
        let mut names: Vec<String> = self
            .refs
            .iter()
            .take(SHOWN)
            .map(|(_, n)| crate::text::escape(&n.to_str_lossy()).into_owned())
            .collect();
        if self.refs.len() > SHOWN {
            names.push(format!("and {} more", self.refs.len() - SHOWN));
        }
        names.join(", ")
    }
}

/// Reads the header from `reader`, leaving it positioned at the pack.
pub fn parse_header(reader: &mut impl BufRead) -> Result<Header, BundleError> {
    let mut lines = Lines {
        reader,
        line: 0,
        consumed: 0,
        buf: Vec::new(),
    };
    let first = lines.next()?.ok_or(BundleError::Truncated { line: 1 })?;
    let version = match first {
        b"# v2 git bundle" => 2,
        b"# v3 git bundle" => 3,
        other => {
            return Err(BundleError::Signature {
                found: other.to_str_lossy().chars().take(80).collect(),
            });
        }
    };
    let mut header = Header {
        version,
        prerequisites: Vec::new(),
        refs: Vec::new(),
        len: 0,
    };
    loop {
        let line_no = lines.line + 1;
        let line = lines
            .next()?
            .ok_or(BundleError::Truncated { line: line_no })?;
        if line.is_empty() {
            break;
        }
        if header.prerequisites.len() + header.refs.len() >= MAX_ENTRIES {
            return Err(BundleError::TooManyEntries);
        }
        match line.first() {
            Some(b'@')
                if version == 3 && header.prerequisites.is_empty() && header.refs.is_empty() =>
            {
                check_capability(&line[1..])?;
            }
            Some(b'-') => header.prerequisites.push(parse_oid(&line[1..], line_no)?.0),
            _ => {
                let (oid, rest) = parse_oid(line, line_no)?;
                let name = rest
                    .ok_or_else(|| malformed(line_no, "a ref line needs an oid and a ref name"))?;
                if gix::validate::reference::name(name.as_bstr()).is_err() {
                    return Err(BundleError::RefName {
                        name: name.to_str_lossy().into_owned(),
                    });
                }
                header.refs.push((oid, name.into()));
            }
        }
    }
    if header.refs.is_empty() {
        return Err(BundleError::NoRefs);
    }
    header.len = lines.consumed;
    Ok(header)
}

fn check_capability(cap: &[u8]) -> Result<(), BundleError> {
    match cap.split_once_str(b"=") {
        Some((b"object-format", b"sha1")) => Ok(()),
        Some((b"object-format", other)) => Err(BundleError::ObjectFormat {
            format: other.to_str_lossy().into_owned(),
        }),
        _ => Err(BundleError::Capability {
            capability: cap.to_str_lossy().into_owned(),
        }),
    }
}

/// Splits `<40 hex>[ rest]`.
fn parse_oid(line: &[u8], line_no: usize) -> Result<(ObjectId, Option<&[u8]>), BundleError> {
    let (hex, rest) = match line.split_once_str(b" ") {
        Some((hex, rest)) => (hex, Some(rest)),
        None => (line, None),
    };
    let oid = ObjectId::from_hex(hex)
        .map_err(|_| malformed(line_no, "expected a 40-digit sha1 object id"))?;
    Ok((oid, rest))
}

fn malformed(line: usize, reason: &str) -> BundleError {
    BundleError::Malformed {
        line,
        reason: reason.to_owned(),
    }
}

/// Bounded line reader over the header that counts what it consumed.
struct Lines<'a, R> {
    reader: &'a mut R,
    line: usize,
    consumed: u64,
    buf: Vec<u8>,
}

impl<R: BufRead> Lines<'_, R> {
    /// The next line without its `\n`; `None` at end of input.
    fn next(&mut self) -> Result<Option<&[u8]>, BundleError> {
        self.line += 1;
        self.buf.clear();
        // One byte past the budget tells a header that is too long from one that ends there.
        let limit = MAX_HEADER - self.consumed + 1;
        let n = std::io::Read::take(&mut *self.reader, limit)
            .read_until(b'\n', &mut self.buf)
            .map_err(BundleError::Read)?;
        self.consumed += n as u64;
        if self.consumed > MAX_HEADER {
            return Err(BundleError::TooLong { line: self.line });
        }
        match self.buf.last() {
            Some(b'\n') => Ok(Some(&self.buf[..n - 1])),
            _ if n == 0 => Ok(None),
            _ => Err(BundleError::Truncated { line: self.line }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";

    fn parse(text: &str) -> Result<Header, BundleError> {
        parse_header(&mut text.as_bytes())
    }

    #[test]
    fn v2_with_prerequisite_and_ref() -> Result<(), BundleError> {
        let text = format!("# v2 git bundle\n-{A} base commit\n{B} refs/heads/main\n\nPACK");
        let h = parse(&text)?;
        assert_eq!(h.version, 2);
        assert_eq!(
            h.prerequisites,
            vec![ObjectId::from_hex(A.as_bytes()).expect("hex")]
        );
        assert_eq!(
            h.tip("refs/heads/main"),
            Some(ObjectId::from_hex(B.as_bytes()).expect("hex"))
        );
        assert_eq!(h.len, text.len() as u64 - 4);
        Ok(())
    }

    #[test]
    fn v3_sha1_capability_is_accepted() -> Result<(), BundleError> {
        let h = parse(&format!(
            "# v3 git bundle\n@object-format=sha1\n{B} refs/heads/main\n\n"
        ))?;
        assert_eq!(h.version, 3);
        Ok(())
    }

    #[test]
    fn refusals() {
        let cases = [
            (
                "# v4 git bundle\n",
                "not a git bundle: the first line is \"# v4 git bundle\"",
            ),
            (
                "# v3 git bundle\n@object-format=sha256\n",
                "object format \"sha256\"",
            ),
            (
                "# v3 git bundle\n@filter=blob:none\n",
                "capability \"filter=blob:none\"",
            ),
            (
                "# v2 git bundle\n@object-format=sha1\n",
                "line 2 is malformed",
            ),
            ("# v2 git bundle\n", "ends early at line 2"),
            (
                "# v2 git bundle\nxyz refs/heads/main\n\n",
                "line 2 is malformed",
            ),
            ("# v2 git bundle\n\n", "lists no refs"),
        ];
        for (text, expected) in cases {
            let msg = parse(text).map(|_| ()).unwrap_err().to_string();
            assert!(msg.contains(expected), "{text:?}: {msg}");
        }
        let msg = parse(&format!("# v2 git bundle\n{B} refs/heads/../x\n\n"))
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert_eq!(msg, "bundle ref name \"refs/heads/../x\" is invalid");
        let msg = parse(&format!("# v2 git bundle\n{B} {}\n\n", "x".repeat(1 << 20)))
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "bundle header is longer than 1048576 bytes (at line 2); bundle fewer refs"
        );
    }

    #[test]
    fn a_long_prerequisite_subject_is_accepted_and_not_kept() -> Result<(), BundleError> {
        let subject = "word ".repeat(10_000);
        let text = format!("# v2 git bundle\n-{A} {subject}\n{B} refs/heads/main\n\n");
        let h = parse(&text)?;
        assert_eq!(h.prerequisites.len(), 1);
        assert_eq!(h.len, text.len() as u64);
        Ok(())
    }

    #[test]
    fn other_refs_are_listed_beside_the_tracked_one() -> Result<(), BundleError> {
        let text = format!(
            "# v2 git bundle\n{A} HEAD\n{B} refs/heads/main\n{A} refs/tags/v1\n{A} refs/notes/commits\n\n"
        );
        let h = parse(&text)?;
        assert_eq!(h.refs.len(), 4);
        assert_eq!(
            h.tip("refs/heads/main"),
            Some(ObjectId::from_hex(B.as_bytes()).expect("hex"))
        );
        Ok(())
    }
}
