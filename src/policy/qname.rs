//! A query name flattened once into a stack buffer, lowercase and dot-separated, with the
//! offset of every label, so the verdict can probe each suffix without allocating.

/// Lowercase wire-label bytes joined by '.', without the root's trailing dot.
pub struct QName {
    buf: [u8; 255],
    len: u8,
    starts: [u8; 128],
    labels: u8,
}

impl QName {
    /// Builds from labels (most specific first). Returns None for a name over 255 bytes,
    /// which no valid message can carry.
    pub fn from_labels<'a>(labels: impl Iterator<Item = &'a [u8]>) -> Option<Self> {
        let mut q = QName {
            buf: [0; 255],
            len: 0,
            starts: [0; 128],
            labels: 0,
        };
        let mut pos = 0usize;
        for label in labels {
            if q.labels > 0 {
                *q.buf.get_mut(pos)? = b'.';
                pos += 1;
            }
            *q.starts.get_mut(q.labels as usize)? = u8::try_from(pos).ok()?;
            let end = pos.checked_add(label.len())?;
            let dst = q.buf.get_mut(pos..end)?;
            for (d, s) in dst.iter_mut().zip(label) {
                *d = s.to_ascii_lowercase();
            }
            pos = end;
            q.labels += 1;
        }
        q.len = u8::try_from(pos).ok()?;
        Some(q)
    }

    pub fn parse(text: &str) -> Option<Self> {
        let text = text.strip_suffix('.').unwrap_or(text);
        if text.is_empty() {
            return Self::from_labels(std::iter::empty());
        }
        Self::from_labels(text.split('.').map(str::as_bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }

    pub fn is_root(&self) -> bool {
        self.labels == 0
    }

    pub fn label_count(&self) -> usize {
        self.labels as usize
    }

    /// Byte offsets where each suffix starts, from the whole name to the last label.
    pub fn suffix_starts(&self) -> impl Iterator<Item = u8> + '_ {
        self.starts[..self.labels as usize].iter().copied()
    }

    pub fn suffix_at(&self, at: u8) -> &[u8] {
        &self.buf[at as usize..self.len as usize]
    }

    /// True if this name is `zone` or below it.
    pub fn is_within(&self, zone: &str) -> bool {
        let name = self.as_bytes();
        let zone = zone.as_bytes();
        name == zone
            || (name.len() > zone.len()
                && name.ends_with(zone)
                && name[name.len() - zone.len() - 1] == b'.')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattens_and_walks_suffixes() {
        let q = QName::parse("A.Nexus.example.").unwrap();
        assert_eq!(q.as_str(), "a.nexus.example");
        let suffixes: Vec<&[u8]> = q.suffix_starts().map(|at| q.suffix_at(at)).collect();
        assert_eq!(
            suffixes,
            [&b"a.nexus.example"[..], b"nexus.example", b"example"]
        );
        assert!(q.is_within("nexus.example"));
        assert!(!q.is_within("exus.example"));
        assert!(QName::parse(".").unwrap().is_root());
    }
}
