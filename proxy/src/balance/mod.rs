//! Choosing an endpoint for a request, per the DestinationRule's `loadBalancer`. Pure: the
//! caller supplies the endpoints' names, weights, active-request counts, which ones are
//! eligible (not ejected) and the random numbers.

pub mod cookie;
pub mod hash;
mod maglev;
mod ring;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};

use http::{HeaderMap, HeaderValue};
use mizzen_proxy_config::{HashAlgorithm, HashKey, LoadBalancer};

pub use maglev::Maglev;
pub use ring::Ring;

/// One balancer per upstream (service, subset, port); built when its endpoints change.
#[derive(Debug)]
pub enum Balancer {
    RoundRobin(AtomicUsize),
    LeastRequest,
    Random,
    Ring(HashKey, Ring),
    Maglev(HashKey, Maglev),
}

impl Balancer {
    pub fn new(lb: Option<&LoadBalancer>, names: &[String], weights: &[u32]) -> Self {
        match lb {
            Some(LoadBalancer::RoundRobin) => Self::RoundRobin(AtomicUsize::new(0)),
            Some(LoadBalancer::Random) => Self::Random,
            Some(LoadBalancer::ConsistentHash(ch)) => match ch.algorithm {
                HashAlgorithm::RingHash { minimum_ring_size } => Self::Ring(
                    ch.key.clone(),
                    Ring::new(names, weights, minimum_ring_size.max(1024)),
                ),
                HashAlgorithm::Maglev { table_size } => Self::Maglev(
                    ch.key.clone(),
                    Maglev::new(
                        names,
                        weights,
                        if table_size == 0 { 65537 } else { table_size },
                    ),
                ),
            },
            // Istio's default; PASSTHROUGH is decided before balancing.
            Some(LoadBalancer::LeastRequest) | Some(LoadBalancer::Passthrough) | None => {
                Self::LeastRequest
            }
        }
    }

    /// The hash key this balancer wants from each request, if any.
    pub fn hash_key(&self) -> Option<&HashKey> {
        match self {
            Self::Ring(k, _) | Self::Maglev(k, _) => Some(k),
            _ => None,
        }
    }

    /// Picks an endpoint index among `n`. `active(i)` is the number of requests in flight to
    /// endpoint `i`; `eligible(i)` is false for ejected endpoints; `hash` is the request's key
    /// hash for consistent hashing (a request without the key is balanced at random).
    pub fn pick(
        &self,
        n: usize,
        hash: Option<u64>,
        mut random: impl FnMut() -> u32,
        active: impl Fn(usize) -> usize,
        eligible: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        if n == 0 {
            return None;
        }
        let candidates: Vec<usize> = (0..n).filter(|i| eligible(*i)).collect();
        if candidates.is_empty() {
            return None;
        }
        let any =
            |random: &mut dyn FnMut() -> u32| candidates[random() as usize % candidates.len()];
        match self {
            Self::RoundRobin(next) => {
                let k = next.fetch_add(1, Ordering::Relaxed);
                Some(candidates[k % candidates.len()])
            }
            Self::Random => Some(any(&mut random)),
            Self::LeastRequest => {
                // Power of two choices: two distinct random candidates, fewer in flight wins.
                if candidates.len() == 1 {
                    return Some(candidates[0]);
                }
                let a = random() as usize % candidates.len();
                let mut b = random() as usize % (candidates.len() - 1);
                if b >= a {
                    b += 1;
                }
                let (a, b) = (candidates[a], candidates[b]);
                Some(if active(b) < active(a) { b } else { a })
            }
            Self::Ring(_, ring) => match hash {
                Some(h) => ring.pick(h, &eligible),
                None => Some(any(&mut random)),
            },
            Self::Maglev(_, table) => match hash {
                Some(h) => table.pick(h, &eligible),
                None => Some(any(&mut random)),
            },
        }
    }
}

/// A request's hash for consistent hashing, with the `Set-Cookie` its response carries when
/// the key is a cookie the policy makes for a request without it ([`cookie`]); `None` when
/// the request lacks the key (it is then balanced at random). `client` is the connection's
/// peer.
pub fn request_hash(
    key: &HashKey,
    headers: &HeaderMap,
    query: Option<&str>,
    client: Option<SocketAddr>,
) -> Option<(u64, Option<HeaderValue>)> {
    if let Some(k) = request_key(key, headers, query, client.map(|c| c.ip())) {
        return Some((hash::hash64(&k), None));
    }
    let HashKey::Cookie {
        name,
        path,
        ttl_ms: Some(ttl_ms),
        attributes,
    } = key
    else {
        return None;
    };
    let made = cookie::generate(name, path.as_deref(), *ttl_ms, attributes, client?)?;
    Some((hash::hash64(made.value.as_bytes()), Some(made.set_cookie)))
}

/// The bytes a request is hashed on, or `None` when it lacks them.
pub fn request_key(
    key: &HashKey,
    headers: &HeaderMap,
    query: Option<&str>,
    source_ip: Option<IpAddr>,
) -> Option<Vec<u8>> {
    match key {
        HashKey::Header(name) => headers.get(name.as_str()).map(|v| v.as_bytes().to_vec()),
        HashKey::Cookie { name, .. } => cookie::value(headers, name).map(|v| v.as_bytes().to_vec()),
        HashKey::SourceIp => source_ip.map(|ip| ip.to_string().into_bytes()),
        HashKey::QueryParameter(name) => query?
            .split('&')
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k == name).then(|| v.as_bytes().to_vec())
            })
            .next(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mizzen_proxy_config::ConsistentHash;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:8080")).collect()
    }

    fn lcg(seed: u64) -> impl FnMut() -> u32 {
        let mut s = seed;
        move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 33) as u32
        }
    }

    #[test]
    fn round_robin_cycles_over_eligible_endpoints() {
        let b = Balancer::new(Some(&LoadBalancer::RoundRobin), &names(3), &[1, 1, 1]);
        let picks: Vec<_> = (0..6)
            .map(|_| b.pick(3, None, || 0, |_| 0, |i| i != 1).unwrap())
            .collect();
        assert_eq!(picks, vec![0, 2, 0, 2, 0, 2]);
    }

    #[test]
    fn random_spreads_evenly() {
        let b = Balancer::new(Some(&LoadBalancer::Random), &names(4), &[1; 4]);
        let mut counts = [0usize; 4];
        let mut rnd = lcg(7);
        for _ in 0..40_000 {
            counts[b.pick(4, None, &mut rnd, |_| 0, |_| true).unwrap()] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn least_request_prefers_the_idle_endpoint() {
        let b = Balancer::new(None, &names(2), &[1, 1]);
        let mut rnd = lcg(3);
        for _ in 0..100 {
            let i = b
                .pick(2, None, &mut rnd, |i| if i == 0 { 10 } else { 0 }, |_| true)
                .unwrap();
            assert_eq!(i, 1);
        }
        // With three endpoints, the busiest one is never chosen when two are idle.
        let mut counts = [0usize; 3];
        for _ in 0..3_000 {
            counts[b
                .pick(3, None, &mut rnd, |i| if i == 2 { 5 } else { 0 }, |_| true)
                .unwrap()] += 1;
        }
        assert_eq!(counts[2], 0, "{counts:?}");
        assert!(counts[0] > 1_000 && counts[1] > 1_000, "{counts:?}");
    }

    fn consistent(algorithm: HashAlgorithm) -> LoadBalancer {
        LoadBalancer::ConsistentHash(ConsistentHash {
            key: HashKey::Header("x-user".into()),
            algorithm,
        })
    }

    fn check_consistent_hash(lb: LoadBalancer) {
        let n = 5;
        let b = Balancer::new(Some(&lb), &names(n), &[1; 5]);
        let mut counts = vec![0usize; n];
        for u in 0..20_000 {
            let h = hash::hash64(format!("user-{u}").as_bytes());
            let first = b.pick(n, Some(h), || 0, |_| 0, |_| true).unwrap();
            // Same key, same endpoint.
            assert_eq!(b.pick(n, Some(h), || 99, |_| 0, |_| true), Some(first));
            counts[first] += 1;
        }
        // Each endpoint gets its share within ±25%.
        for c in &counts {
            assert!((3_000..5_000).contains(c), "{counts:?}");
        }
        // Ejecting one endpoint only moves its own keys.
        let mut moved = 0;
        for u in 0..5_000 {
            let h = hash::hash64(format!("user-{u}").as_bytes());
            let before = b.pick(n, Some(h), || 0, |_| 0, |_| true).unwrap();
            let after = b.pick(n, Some(h), || 0, |_| 0, |i| i != 2).unwrap();
            assert_ne!(after, 2);
            if before != after {
                assert_eq!(before, 2);
                moved += 1;
            }
        }
        assert!(moved > 500, "{moved}");
    }

    #[test]
    fn ring_hash_is_sticky_even_and_stable() {
        check_consistent_hash(consistent(HashAlgorithm::RingHash {
            minimum_ring_size: 1024,
        }));
    }

    #[test]
    fn maglev_is_sticky_even_and_stable() {
        check_consistent_hash(consistent(HashAlgorithm::Maglev { table_size: 65537 }));
    }

    #[test]
    fn weighted_maglev_follows_weights() {
        let m = Maglev::new(&names(2), &[3, 1], 10007);
        let mut counts = [0usize; 2];
        for u in 0..20_000u64 {
            counts[m.pick(hash::mix(u), |_| true).unwrap()] += 1;
        }
        let share = counts[0] as f64 / 20_000.0;
        assert!((0.70..0.80).contains(&share), "{counts:?}");
    }

    #[test]
    fn extracts_hash_keys_from_requests() {
        let mut h = HeaderMap::new();
        h.insert("x-user", "alice".parse().unwrap());
        h.insert("cookie", "a=1; session=abc; z=2".parse().unwrap());
        let ip = Some("10.1.2.3".parse().unwrap());
        assert_eq!(
            request_key(&HashKey::Header("x-user".into()), &h, None, ip),
            Some(b"alice".to_vec())
        );
        let cookie = HashKey::Cookie {
            name: "session".into(),
            path: None,
            ttl_ms: None,
            attributes: vec![],
        };
        assert_eq!(request_key(&cookie, &h, None, ip), Some(b"abc".to_vec()));
        assert_eq!(
            request_key(&HashKey::SourceIp, &h, None, ip),
            Some(b"10.1.2.3".to_vec())
        );
        assert_eq!(
            request_key(
                &HashKey::QueryParameter("u".into()),
                &h,
                Some("a=1&u=bob"),
                ip
            ),
            Some(b"bob".to_vec())
        );
        assert_eq!(
            request_key(&HashKey::Header("nope".into()), &h, None, ip),
            None
        );
    }

    #[test]
    fn a_cookie_with_a_ttl_is_made_for_a_request_without_it_and_then_read() {
        let key = HashKey::Cookie {
            name: "user".into(),
            path: Some("/".into()),
            ttl_ms: Some(60_000),
            attributes: vec![],
        };
        let client = Some("10.1.2.3:40000".parse().unwrap());
        let (hash, set_cookie) = request_hash(&key, &HeaderMap::new(), None, client).unwrap();
        let set_cookie = set_cookie.expect("a cookie to set");
        // The client sends back what it was given: it hashes to the same value, and nothing
        // more is set.
        let sent = set_cookie.to_str().unwrap().split(';').next().unwrap();
        let mut h = HeaderMap::new();
        h.insert("cookie", sent.parse().unwrap());
        assert_eq!(request_hash(&key, &h, None, None), Some((hash, None)));
        // Without a ttl nothing is made: the request is balanced at random.
        let no_ttl = HashKey::Cookie {
            name: "user".into(),
            path: None,
            ttl_ms: None,
            attributes: vec![],
        };
        assert_eq!(request_hash(&no_ttl, &HeaderMap::new(), None, client), None);
    }
}
