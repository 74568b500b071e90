//! How a rendered config is stored in its ConfigMap, and read back from the mounted file.
//!
//! A ConfigMap holds at most 1 MiB. The compact JSON of a namespace that sees a thousand
//! services comes close to that, and JSON of this shape compresses more than tenfold, so a large
//! config is stored gzip-compressed (in `binaryData`) while a small one stays plain text (in
//! `data`), where `kubectl get configmap -o yaml` shows it as it is. Both land in the same
//! file of the mounted volume; [`decode`] tells them apart by the gzip magic bytes, so the
//! proxy reads either without being told which it got.
//!
//! The compressed form may hold several gzip members back to back, which decode to their
//! contents concatenated (RFC 1952 §2.2; `gunzip` reads them the same way). The operator uses
//! that to compress a config in pieces ([`gzip_member`], [`Payload::from_members`]) and keep
//! each piece's member between renders, so an edit recompresses only the pieces it changed.
//!
//! This module is the only place that encodes or decodes the stored form: the operator writes
//! through [`Payload::encode`] or [`Payload::from_members`], the proxy reads through [`decode`].

use std::{borrow::Cow, io::Read};

use flate2::{Compression, read::MultiGzDecoder, write::GzEncoder};

/// Configs whose compact JSON is larger than this are stored gzip-compressed. Below it the
/// JSON is stored as text, so the configs of small and medium meshes stay readable with
/// `kubectl get configmap -o yaml`; above it, readability is worth less than the headroom
/// under the 1 MiB ConfigMap limit (the JSON then compresses to a tenth or less).
pub const GZIP_ABOVE_BYTES: usize = 256 * 1024;

/// The most a stored config may decompress to. A real config is far smaller (a namespace that
/// sees 1,000 services is under 1 MiB of JSON); the cap keeps a corrupt or hostile file from
/// making the proxy allocate without bound (a few KiB of gzip can expand to gigabytes).
pub const MAX_DECODED_BYTES: usize = 16 * 1024 * 1024;

/// The first two bytes of every gzip stream (RFC 1952). JSON text never starts with them.
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The stored form of a config: what goes into the ConfigMap under
/// [`crate::CONFIG_MAP_KEY`], and so into the mounted file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// Compact JSON as is, for the ConfigMap's `data`.
    Text(String),
    /// The JSON gzip-compressed, for the ConfigMap's `binaryData`.
    Gzip(Vec<u8>),
}

/// Why a stored config could not be decoded. Parsing the JSON inside is
/// [`crate::ProxyConfig::from_json`]'s job.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("config is gzip-compressed but does not decompress (truncated or corrupt): {0}")]
    Gzip(#[source] std::io::Error),
    #[error("config decompresses to more than {limit} bytes; refusing it")]
    TooLarge { limit: usize },
    #[error("config is not UTF-8 text (nor gzip): {0}")]
    NotUtf8(#[from] std::str::Utf8Error),
}

impl Payload {
    /// `json` as text when it is at most `gzip_above` bytes long, else gzip-compressed as one
    /// member ([`gzip_member`]).
    pub fn encode(json: String, gzip_above: usize) -> Self {
        if !compresses(json.len(), gzip_above) {
            return Self::Text(json);
        }
        Self::Gzip(gzip_member(json.as_bytes()))
    }

    /// The compressed form made of `members` in order, each a whole gzip member (from
    /// [`gzip_member`]): it decodes to their pieces concatenated.
    pub fn from_members<'a>(members: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut bytes = Vec::new();
        for m in members {
            bytes.extend_from_slice(m);
        }
        Self::Gzip(bytes)
    }

    /// The bytes of the mounted file.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Text(t) => t.as_bytes(),
            Self::Gzip(b) => b,
        }
    }

    pub fn is_gzip(&self) -> bool {
        matches!(self, Self::Gzip(_))
    }

    /// The size counted against the ConfigMap limit. Text counts its bytes. Compressed bytes
    /// count as their base64 encoding (4 characters per 3 bytes), the larger of the two
    /// measures that apply to them: the API server's size check sums the decoded bytes, but
    /// every request and watch event carries `binaryData` as base64 JSON. Counting the larger
    /// one can only refuse early, never let through a ConfigMap the API server refuses.
    pub fn stored_bytes(&self) -> usize {
        match self {
            Self::Text(t) => t.len(),
            Self::Gzip(b) => base64_len(b.len()),
        }
    }
}

/// `piece` compressed as one complete gzip member. Deterministic: the same bytes always give
/// the same member (the header carries no time stamp or file name).
///
/// The fastest level: the operator compresses every changed piece on each render, so time
/// counts more than the last bytes. On the 880 KB config of the scale benchmark as one member
/// it gives 17x in 2.3 ms, against 26x in 13 ms at the default level; in members of 16
/// services, 12x. Any of them is a small fraction of the limit.
pub fn gzip_member(piece: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(
        Vec::with_capacity(piece.len() / 8 + 32),
        Compression::fast(),
    );
    std::io::Write::write_all(&mut gz, piece).expect("writing to a Vec never fails");
    gz.finish().expect("writing to a Vec never fails")
}

/// Whether [`Payload::encode`] compresses JSON of `json_len` bytes: only above `gzip_above`.
/// A writer that caches compressed bytes asks this before building the JSON at all.
pub const fn compresses(json_len: usize, gzip_above: usize) -> bool {
    json_len > gzip_above
}

/// Length of the padded standard base64 encoding of `n` bytes.
pub const fn base64_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

/// The JSON text of a stored config: gzip (recognised by [`GZIP_MAGIC`]) is decompressed, every
/// member in turn, up to [`MAX_DECODED_BYTES`] in all; anything else is taken as text. Borrows when nothing was compressed.
pub fn decode(bytes: &[u8]) -> Result<Cow<'_, str>, PayloadError> {
    decode_capped(bytes, MAX_DECODED_BYTES)
}

fn decode_capped(bytes: &[u8], limit: usize) -> Result<Cow<'_, str>, PayloadError> {
    if !bytes.starts_with(&GZIP_MAGIC) {
        return Ok(Cow::Borrowed(std::str::from_utf8(bytes)?));
    }
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(8).min(limit));
    // Read one byte past the limit: reaching it means the stream is larger than allowed,
    // without ever holding more than `limit + 1` bytes.
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    // Every member must be whole: a truncated or corrupt one, or bytes after the last member
    // that do not start another, fail the read.
    MultiGzDecoder::new(bytes)
        .take(cap)
        .read_to_end(&mut out)
        .map_err(PayloadError::Gzip)?;
    if out.len() > limit {
        return Err(PayloadError::TooLarge { limit });
    }
    let text = String::from_utf8(out).map_err(|e| PayloadError::NotUtf8(e.utf8_error()))?;
    Ok(Cow::Owned(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProxyConfig;

    fn big_json() -> String {
        let mut cfg = ProxyConfig::new("shop");
        for i in 0..400 {
            cfg.services.push(crate::Service {
                host: format!("svc-{i:04}.shop.svc.cluster.local"),
                aliases: vec![format!("svc-{i:04}.shop"), format!("svc-{i:04}.shop.svc")],
                namespace: "shop".into(),
                ..Default::default()
            });
        }
        serde_json::to_string(&cfg).unwrap()
    }

    #[test]
    fn small_configs_stay_text_and_decode_to_themselves() {
        let json = serde_json::to_string(&ProxyConfig::new("shop")).unwrap();
        let p = Payload::encode(json.clone(), GZIP_ABOVE_BYTES);
        assert_eq!(p, Payload::Text(json.clone()));
        assert_eq!(p.stored_bytes(), json.len());
        assert!(matches!(decode(p.as_bytes()).unwrap(), Cow::Borrowed(s) if s == json));
        // At the threshold exactly, still text.
        assert!(!Payload::encode(json.clone(), json.len()).is_gzip());
        assert!(Payload::encode(json.clone(), json.len() - 1).is_gzip());
    }

    #[test]
    fn large_configs_are_gzip_round_trip_and_are_deterministic() {
        let json = big_json();
        let p = Payload::encode(json.clone(), 1024);
        let Payload::Gzip(bytes) = &p else {
            panic!("expected gzip for {} bytes", json.len());
        };
        assert!(bytes.starts_with(&GZIP_MAGIC));
        assert!(
            bytes.len() * 5 < json.len(),
            "{} -> {}",
            json.len(),
            bytes.len()
        );
        assert_eq!(p.stored_bytes(), base64_len(bytes.len()));
        assert_eq!(decode(bytes).unwrap(), json);
        assert_eq!(
            Payload::encode(json.clone(), 1024),
            p,
            "same JSON, same bytes"
        );
        let cfg = ProxyConfig::from_json(decode(bytes).unwrap().as_bytes()).unwrap();
        assert_eq!(cfg.services.len(), 400);
    }

    #[test]
    fn truncated_or_corrupt_gzip_is_refused_by_name() {
        let Payload::Gzip(bytes) = Payload::encode(big_json(), 0) else {
            panic!("expected gzip");
        };
        let truncated = &bytes[..bytes.len() / 2];
        let err = decode(truncated).unwrap_err();
        assert!(matches!(err, PayloadError::Gzip(_)), "{err:?}");
        assert!(err.to_string().contains("does not decompress"), "{err}");
        // A flipped byte in the compressed body fails the stream or its CRC.
        let mut corrupt = bytes.clone();
        let mid = corrupt.len() / 2;
        corrupt[mid] ^= 0xff;
        assert!(matches!(decode(&corrupt), Err(PayloadError::Gzip(_))));
        // The magic alone, then garbage.
        assert!(matches!(
            decode(&[0x1f, 0x8b, 1, 2, 3]),
            Err(PayloadError::Gzip(_))
        ));
        assert!(matches!(
            decode(&[0xff, 0xfe, 0x00]),
            Err(PayloadError::NotUtf8(_))
        ));
    }

    /// The members of `json` cut at `cuts` (byte offsets), and the payload they make.
    fn in_members(json: &str, cuts: &[usize]) -> (Vec<Vec<u8>>, Payload) {
        let mut bounds = vec![0];
        bounds.extend_from_slice(cuts);
        bounds.push(json.len());
        let members: Vec<Vec<u8>> = bounds
            .windows(2)
            .map(|w| gzip_member(&json.as_bytes()[w[0]..w[1]]))
            .collect();
        let payload = Payload::from_members(members.iter().map(Vec::as_slice));
        (members, payload)
    }

    #[test]
    fn members_decode_to_their_pieces_concatenated() {
        let json = big_json();
        let (members, p) = in_members(&json, &[100, 101, json.len() / 2]);
        assert_eq!(members.len(), 4);
        let Payload::Gzip(bytes) = &p else {
            panic!("expected gzip");
        };
        assert_eq!(*bytes, members.concat());
        assert_eq!(p.stored_bytes(), base64_len(members.concat().len()));
        assert_eq!(decode(bytes).unwrap(), json);
        // An empty piece is a valid member too, and one member is what `encode` writes.
        let (_, p) = in_members(&json, &[0]);
        assert_eq!(decode(p.as_bytes()).unwrap(), json);
        let (_, one) = in_members(&json, &[]);
        assert_eq!(one, Payload::encode(json.clone(), 0));
        assert_eq!(gzip_member(b"{}"), gzip_member(b"{}"), "deterministic");
    }

    #[test]
    fn a_truncated_or_foreign_later_member_is_refused() {
        let json = big_json();
        let (members, p) = in_members(&json, &[json.len() / 2]);
        let bytes = p.as_bytes();
        let first = members[0].len();
        // The second member cut short, or cut right after its header.
        for end in [bytes.len() - 1, bytes.len() - 9, first + 12] {
            let err = decode(&bytes[..end]).unwrap_err();
            assert!(matches!(err, PayloadError::Gzip(_)), "{end}: {err:?}");
            assert!(err.to_string().contains("does not decompress"), "{err}");
        }
        // Bytes after the last member that are not another member.
        let mut trailing = bytes.to_vec();
        trailing.extend_from_slice(b"{\"x\":1}");
        assert!(matches!(decode(&trailing), Err(PayloadError::Gzip(_))));
        // The cap counts every member, not each alone.
        assert!(matches!(
            decode_capped(bytes, json.len() - 1),
            Err(PayloadError::TooLarge { .. })
        ));
        assert_eq!(decode_capped(bytes, json.len()).unwrap(), json);
    }

    #[test]
    fn decompression_stops_at_the_cap() {
        // 1 MiB of zeros compresses to about 1 KiB: a small file that expands a thousandfold.
        let zeros = "0".repeat(1024 * 1024);
        let Payload::Gzip(bytes) = Payload::encode(zeros, 0) else {
            panic!("expected gzip");
        };
        assert!(bytes.len() < 8 * 1024);
        let err = decode_capped(&bytes, 64 * 1024).unwrap_err();
        assert!(
            matches!(err, PayloadError::TooLarge { limit } if limit == 64 * 1024),
            "{err:?}"
        );
        assert!(err.to_string().contains("more than 65536 bytes"), "{err}");
        assert_eq!(
            decode_capped(&bytes, 1024 * 1024).unwrap().len(),
            1024 * 1024
        );
    }

    #[test]
    fn base64_lengths() {
        assert_eq!(
            [0, 1, 2, 3, 4, 6, 7].map(base64_len),
            [0, 4, 4, 4, 8, 8, 12]
        );
    }
}
