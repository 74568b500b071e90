//! The compressed stored form of large configs, built from gzip members cached per piece.
//!
//! Compressing a whole 880 KB config takes about 2 ms, and one edit visible in every namespace
//! changes every namespace's config: recompressing all 50 took 113 ms at the scale benchmark.
//! Yet the configs of different namespaces share most of their services, and an edit changes
//! one. A gzip file may hold several members back to back and decodes to their contents
//! concatenated (RFC 1952 §2.2), so a config is stored as the members of pieces of its JSON:
//! the head (up to and including `"services":[`), chunks of consecutive services (with their
//! separating commas: every chunk but the first starts with one), and the tail. Each member is
//! cached by the content of its piece: identical chunks of different namespaces are compressed
//! once, and an edit recompresses only the chunks it changed.
//!
//! A chunk ends after a service whose host hashes to a boundary (one host in
//! [`RenderSettings::gzip_chunk_services`](super::RenderSettings::gzip_chunk_services) on
//! average), not at fixed positions: a service added or removed changes only the chunk it falls
//! in, and namespaces that see different sets of services still share the chunks where they see
//! the same ones.

use std::{collections::HashMap, sync::Arc};

use mizzen_proxy_config::payload;

use super::{Fragment, Parts};
use crate::hash::Fnv64;

/// The default services per chunk, on average: the trade between the ratio (each member
/// restarts the compressor's dictionary and adds about 20 bytes of framing) and the work of a
/// render (each member costs a fixed setup besides its bytes, and an edit recompresses its chunk
/// once per distinct view of it). Measured in `bench/RESULTS.md`.
pub const CHUNK_SERVICES: usize = 16;

/// The hash that places chunk boundaries: a chunk ends after a service whose `boundary_hash`
/// is a multiple of the chunk size. It depends on the host alone, so the same services fall
/// into the same chunks in every namespace and every render.
pub(super) fn boundary_hash(host: &str) -> u32 {
    // FNV's low bits depend only on the low bits of each byte; its high bits on all of them.
    (Fnv64::of(host.as_bytes()) >> 32) as u32
}

/// One piece compressed: a complete gzip member.
pub(super) type Member = Arc<[u8]>;

/// What a member was compressed from: kept beside it, so that a hash collision between two
/// pieces is told from a hit.
enum Piece {
    Text(String),
    /// Services, with a leading comma unless they open the array.
    Services {
        first: bool,
        fragments: Vec<Arc<Fragment>>,
    },
}

impl Piece {
    /// A hash of the piece's bytes; for services, of their fragments' hashes (each a hash of
    /// the fragment's JSON), which costs nothing to combine.
    fn key(&self) -> u64 {
        let mut h = Fnv64::new();
        match self {
            Self::Text(t) => h.write(t.as_bytes()),
            Self::Services { first, fragments } => {
                h.write(&[u8::from(*first)]);
                for f in fragments {
                    h.write(&f.hash.to_le_bytes());
                }
            }
        }
        h.finish()
    }

    fn same(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Text(a), Self::Text(b)) => a == b,
            (
                Self::Services {
                    first: a,
                    fragments: fa,
                },
                Self::Services {
                    first: b,
                    fragments: fb,
                },
            ) => {
                a == b
                    && fa.len() == fb.len()
                    && fa
                        .iter()
                        .zip(fb)
                        .all(|(x, y)| Arc::ptr_eq(x, y) || x.json == y.json)
            }
            _ => false,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Self::Text(t) => out.extend_from_slice(t.as_bytes()),
            Self::Services { first, fragments } => {
                for (i, f) in fragments.iter().enumerate() {
                    if i > 0 || !first {
                        out.push(b',');
                    }
                    out.extend_from_slice(f.json.as_bytes());
                }
            }
        }
    }
}

struct Cached {
    piece: Piece,
    member: Member,
}

/// The members of the pieces the last render used, by [`Piece::key`]. Bounded: a render keeps
/// only what it used.
#[derive(Default)]
pub(super) struct MemberCache {
    /// Used by the render in progress.
    used: HashMap<u64, Cached>,
    /// Used by the previous render and not (yet) by this one; dropped when it ends.
    unused: HashMap<u64, Cached>,
    /// Members compressed since the cache was made: its misses.
    compressed: u64,
    /// Scratch space for the bytes of the piece being compressed.
    buf: Vec<u8>,
}

impl MemberCache {
    /// Starts a render: what it does not use is dropped by [`MemberCache::end_render`].
    pub(super) fn begin_render(&mut self) {
        let used = std::mem::take(&mut self.used);
        self.unused.extend(used);
    }

    pub(super) fn end_render(&mut self) {
        self.unused = HashMap::new();
    }

    /// The members of a config's pieces, in order: head, chunks of about `chunk_services`
    /// services, tail.
    pub(super) fn members(&mut self, parts: &Parts, chunk_services: usize) -> Vec<Member> {
        let services = &parts.services;
        let per = u32::try_from(chunk_services.max(1)).unwrap_or(u32::MAX);
        // A chunk also ends at four times the average, so that no run of hosts without a
        // boundary makes one chunk hold a large part of a config.
        let max = chunk_services.max(1).saturating_mul(4);
        let mut out = Vec::with_capacity(services.len() / chunk_services.max(1) + 3);
        out.push(self.member(Piece::Text(parts.head.clone())));
        let mut start = 0;
        for (i, f) in services.iter().enumerate() {
            let ends = f.boundary_hash % per == 0 || i + 1 - start == max;
            if ends || i + 1 == services.len() {
                out.push(self.member(Piece::Services {
                    first: start == 0,
                    fragments: services[start..=i].to_vec(),
                }));
                start = i + 1;
            }
        }
        out.push(self.member(Piece::Text(parts.tail.clone())));
        out
    }

    fn member(&mut self, piece: Piece) -> Member {
        let key = piece.key();
        if let Some(c) = self.used.get(&key)
            && c.piece.same(&piece)
        {
            return c.member.clone();
        }
        let member = match self.unused.remove(&key) {
            Some(c) if c.piece.same(&piece) => c.member,
            _ => {
                self.buf.clear();
                piece.write(&mut self.buf);
                self.compressed += 1;
                payload::gzip_member(&self.buf).into()
            }
        };
        self.used.insert(
            key,
            Cached {
                piece,
                member: member.clone(),
            },
        );
        member
    }

    /// How many members were compressed since the cache was made.
    pub(super) fn compressed(&self) -> u64 {
        self.compressed
    }

    /// How many members the cache holds.
    pub(super) fn len(&self) -> usize {
        self.used.len() + self.unused.len()
    }
}

#[cfg(test)]
mod tests {
    use mizzen_crds::resource::ObjectRef;
    use serde_json::{Value, json};

    use crate::{Index, Renderer, render::RenderSettings};

    const CLIENTS: usize = 50;

    fn service(name: &str, timeout: &str) -> [Value; 2] {
        [
            json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": "backend"},
                "spec": {"clusterIP": "10.0.0.1", "ports": [{"name": "http", "port": 80}]}}),
            json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                "metadata": {"name": name, "namespace": "backend"},
                "spec": {"hosts": [format!("{name}.backend.svc.cluster.local")],
                         "http": [{"timeout": timeout,
                                   "route": [{"destination": {"host": format!("{name}.backend.svc.cluster.local")}}]}]}}),
        ]
    }

    /// 50 meshed client namespaces that see the same 40 services of an unmeshed `backend`
    /// namespace: their configs differ only in the head (the namespace's name).
    fn mesh() -> Index {
        let mut index = Index::new("mizzen-system");
        for n in 0..CLIENTS {
            let ns = json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": format!("client-{n:02}"), "uid": format!("uid-{n}"),
                             "labels": {"istio-injection": "enabled"}}});
            index.apply_document(&ns, "default").unwrap();
        }
        for s in 0..40 {
            for doc in service(&format!("svc-{s:02}"), "1s") {
                index.apply_document(&doc, "default").unwrap();
            }
        }
        index
    }

    fn settings() -> RenderSettings {
        RenderSettings {
            gzip_above_bytes: 0,
            gzip_chunk_services: 4,
            ..RenderSettings::default()
        }
    }

    /// Renders incrementally; checks the result against a full render (stored bytes included)
    /// and every payload against the JSON serde writes; returns how many members it compressed.
    fn step(index: &mut Index, renderer: &mut Renderer) -> (u64, usize) {
        let before = renderer.compressed_members();
        let changes = index.take_changes();
        let out = renderer.render(index, &changes);
        let full = crate::render(index, &settings());
        assert_eq!(out, full);
        assert_eq!(out.configs.len(), CLIENTS);
        for (ns, c) in &out.configs {
            let payload = c.payload();
            assert_eq!(payload, full.configs[ns].payload(), "{ns}: deterministic");
            assert_eq!(c.stored_bytes, payload.stored_bytes());
            let json = mizzen_proxy_config::payload::decode(payload.as_bytes()).unwrap();
            assert_eq!(json.as_bytes(), serde_json::to_vec(&c.config()).unwrap());
            assert_eq!(json, c.json());
        }
        let members = out.configs["client-00"].gzip_members();
        assert!(out.configs.values().all(|c| c.gzip_members() == members));
        (renderer.compressed_members() - before, members)
    }

    #[test]
    fn identical_chunks_are_compressed_once_for_all_namespaces() {
        let mut index = mesh();
        let mut renderer = Renderer::new(settings());
        let (compressed, members) = step(&mut index, &mut renderer);
        let chunks = members - 2;
        assert!((3..20).contains(&chunks), "40 services in {chunks} chunks");
        // A head per namespace; the chunks and the tail once for all of them.
        assert_eq!(compressed, (CLIENTS + chunks + 1) as u64);
        assert_eq!(renderer.cached_members(), CLIENTS + chunks + 1);
        // Nothing changed: nothing is compressed again.
        assert_eq!(step(&mut index, &mut renderer), (0, members));
    }

    #[test]
    fn an_edit_or_a_new_service_recompresses_only_its_chunk() {
        let mut index = mesh();
        let mut renderer = Renderer::new(settings());
        let (_, members) = step(&mut index, &mut renderer);
        let cached = renderer.cached_members();

        // One service edited: its chunk, once for all 50 namespaces.
        let [_, vs] = service("svc-17", "9s");
        index.apply_document(&vs, "default").unwrap();
        assert_eq!(step(&mut index, &mut renderer), (1, members));
        assert_eq!(
            renderer.cached_members(),
            cached,
            "the old chunk is dropped"
        );

        // Services added: only the chunk each falls in is compressed anew. svc-17a's host does
        // not end a chunk; svc-25a's does, so its chunk splits in two.
        let host = |name: &str| format!("{name}.backend.svc.cluster.local");
        assert_ne!(super::boundary_hash(&host("svc-17a")) % 4, 0);
        assert_eq!(super::boundary_hash(&host("svc-25a")) % 4, 0);
        for doc in service("svc-17a", "1s") {
            index.apply_document(&doc, "default").unwrap();
        }
        assert_eq!(step(&mut index, &mut renderer), (1, members));
        for doc in service("svc-25a", "1s") {
            index.apply_document(&doc, "default").unwrap();
        }
        assert_eq!(step(&mut index, &mut renderer), (2, members + 1));

        // Removed again: the two chunks as they were, compressed anew (the cache keeps only
        // what the last render used), and the cache back to its size.
        for name in ["svc-17a", "svc-25a"] {
            index.delete_service("backend", name);
            index.delete_resource(&ObjectRef {
                kind: "VirtualService".into(),
                namespace: "backend".into(),
                name: name.into(),
            });
        }
        assert_eq!(step(&mut index, &mut renderer), (2, members));
        assert_eq!(renderer.cached_members(), cached);
    }
}
