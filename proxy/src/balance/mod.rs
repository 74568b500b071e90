//! Choosing an endpoint for a request, per the DestinationRule's `loadBalancer`. Pure: the
//! caller supplies the endpoints' names, weights, active-request counts, which ones are
//! eligible (not ejected) and the random numbers.

pub mod cookie;
pub mod hash;
pub mod locality;
mod maglev;
mod ring;
pub mod warmup;
mod weights;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};

use http::{HeaderMap, HeaderValue};
use mizzen_proxy_config::{HashAlgorithm, HashKey, LoadBalancer};

pub use maglev::Maglev;
pub use ring::Ring;
use weights::Weights;

/// One balancer per upstream (service, subset, port); built when its endpoints change.
#[derive(Debug)]
pub struct Balancer {
    kind: Kind,
    /// The endpoints' weights when they differ (ROUND_ROBIN, RANDOM, LEAST_REQUEST; the
    /// consistent hashes weigh their endpoints in their tables).
    weights: Option<Weights>,
}

#[derive(Debug)]
enum Kind {
    RoundRobin(AtomicUsize),
    LeastRequest,
    Random,
    Ring(HashKey, Ring),
    Maglev(HashKey, Maglev),
}

impl Balancer {
    pub fn new(lb: Option<&LoadBalancer>, names: &[String], weights: &[u32]) -> Self {
        let kind = match lb {
            Some(LoadBalancer::RoundRobin) => Kind::RoundRobin(AtomicUsize::new(0)),
            Some(LoadBalancer::Random) => Kind::Random,
            Some(LoadBalancer::ConsistentHash(ch)) => match ch.algorithm {
                HashAlgorithm::RingHash { minimum_ring_size } => Kind::Ring(
                    ch.key.clone(),
                    Ring::new(names, weights, minimum_ring_size.max(1024)),
                ),
                HashAlgorithm::Maglev { table_size } => Kind::Maglev(
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
                Kind::LeastRequest
            }
        };
        let weights = match kind {
            Kind::Ring(..) | Kind::Maglev(..) => None,
            _ => Weights::new(weights),
        };
        Self { kind, weights }
    }

    /// The hash key this balancer wants from each request, if any.
    pub fn hash_key(&self) -> Option<&HashKey> {
        match &self.kind {
            Kind::Ring(k, _) | Kind::Maglev(k, _) => Some(k),
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
        let eligible = |i: usize| i < n && eligible(i);
        if let Some(w) = &self.weights {
            return self.pick_weighted(w, &mut random, active, eligible);
        }
        let count = (0..n).filter(|&i| eligible(i)).count();
        // The `k`th eligible endpoint (no list made: this runs for every request).
        let nth = |k: usize| (0..n).filter(|&i| eligible(i)).nth(k % count);
        if count == 0 {
            return None;
        }
        let mut any = || nth(random() as usize);
        match &self.kind {
            Kind::RoundRobin(next) => nth(next.fetch_add(1, Ordering::Relaxed)),
            Kind::Random => any(),
            Kind::LeastRequest => {
                // Power of two choices: two distinct random candidates, fewer in flight wins.
                if count == 1 {
                    return nth(0);
                }
                let a = random() as usize % count;
                let mut b = random() as usize % (count - 1);
                if b >= a {
                    b += 1;
                }
                let (a, b) = (nth(a)?, nth(b)?);
                Some(if active(b) < active(a) { b } else { a })
            }
            Kind::Ring(_, ring) => match hash {
                Some(h) => ring.pick(h, eligible),
                None => any(),
            },
            Kind::Maglev(_, table) => match hash {
                Some(h) => table.pick(h, eligible),
                None => any(),
            },
        }
    }

    /// [`Self::pick`] while endpoints warm up ([`warmup`]): each endpoint's weight (1 when
    /// they all weigh the same) times `scale(i)`. Round robin and random draw by the scaled
    /// weights; least request draws its two candidates so and keeps the one with fewer
    /// requests in flight per unit of scaled weight. Consistent hashes are not scaled: Envoy's
    /// slow start applies to round robin and least request only.
    pub fn pick_scaled(
        &self,
        n: usize,
        hash: Option<u64>,
        mut random: impl FnMut() -> u32,
        active: impl Fn(usize) -> usize,
        eligible: impl Fn(usize) -> bool,
        scale: impl Fn(usize) -> f64,
    ) -> Option<usize> {
        if matches!(self.kind, Kind::Ring(..) | Kind::Maglev(..)) {
            return self.pick(n, hash, random, active, eligible);
        }
        let eligible = |i: usize| i < n && eligible(i);
        let weight = |i: usize| f64::from(self.weights.as_ref().map_or(1, |w| w.of(i))) * scale(i);
        // An eligible endpoint other than `except`, drawn by scaled weight.
        let draw = |random: u32, except: Option<usize>| {
            let candidates = || (0..n).filter(move |&i| eligible(i) && Some(i) != except);
            let total: f64 = candidates().map(weight).sum();
            if total.is_nan() || total <= 0.0 {
                return None;
            }
            // The low 24 bits as a fraction: any source of uniform bits will do.
            let unit = f64::from(random & 0x00ff_ffff) / f64::from(0x0100_0000);
            let mut r = unit * total;
            // The last candidate takes what rounding leaves over.
            candidates()
                .find(|&i| {
                    let w = weight(i);
                    r -= w;
                    r < 0.0
                })
                .or_else(|| candidates().last())
        };
        match &self.kind {
            Kind::LeastRequest => {
                let a = draw(random(), None)?;
                let Some(b) = draw(random(), Some(a)) else {
                    return Some(a);
                };
                // active(b) / w(b) < active(a) / w(a), without division.
                let fewer = (active(b) as f64) * weight(a) < (active(a) as f64) * weight(b);
                Some(if fewer { b } else { a })
            }
            _ => draw(random(), None),
        }
    }

    /// [`Self::pick`] when the endpoints' weights differ: round robin by the weighted
    /// schedule; random draws by weight; least request's two candidates drawn by weight, and
    /// the one with fewer requests in flight per unit of weight wins (Envoy weighs active
    /// requests against weights too).
    fn pick_weighted(
        &self,
        w: &Weights,
        random: &mut impl FnMut() -> u32,
        active: impl Fn(usize) -> usize,
        eligible: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        match &self.kind {
            Kind::RoundRobin(next) => w.round_robin(next.fetch_add(1, Ordering::Relaxed), eligible),
            Kind::LeastRequest => {
                let a = w.random(random(), &eligible, None)?;
                let Some(b) = w.random(random(), &eligible, Some(a)) else {
                    return Some(a);
                };
                // active(b) / w(b) < active(a) / w(a), without division.
                let load = |x: usize, y: usize| active(x) as u64 * u64::from(w.of(y));
                Some(if load(b, a) < load(a, b) { b } else { a })
            }
            _ => w.random(random(), eligible, None),
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
    fn warming_endpoints_get_their_scaled_share_and_ejected_ones_none() {
        // Endpoint 2 weighs 2 (a ServiceEntry weight) and is at a quarter of its ramp; 3 is
        // ejected: shares 1 : 1 : 0.5 of 2.5.
        let weights = [1, 1, 2, 1];
        let scale = |i: usize| if i == 2 { 0.25 } else { 1.0 };
        for lb in [LoadBalancer::RoundRobin, LoadBalancer::Random] {
            let b = Balancer::new(Some(&lb), &names(4), &weights);
            let mut counts = [0usize; 4];
            let mut rnd = lcg(11);
            for _ in 0..50_000 {
                let i = b
                    .pick_scaled(4, None, &mut rnd, |_| 0, |i| i != 3, scale)
                    .unwrap();
                counts[i] += 1;
            }
            assert_eq!(counts[3], 0);
            for (i, want) in [(0, 20_000), (1, 20_000), (2, 10_000)] {
                assert!(counts[i].abs_diff(want) < 1_000, "{lb:?} {counts:?}");
            }
        }
        // Least request: two endpoints equally busy, one at 10% of its ramp. Per unit of
        // weight it carries ten times the load, so it always loses.
        let b = Balancer::new(None, &names(2), &[1, 1]);
        let mut rnd = lcg(5);
        let warm = (0..1_000)
            .filter(|_| {
                let scale = |i: usize| if i == 1 { 0.1 } else { 1.0 };
                b.pick_scaled(2, None, &mut rnd, |_| 1, |_| true, scale) == Some(1)
            })
            .count();
        assert_eq!(warm, 0);
        // Nothing eligible: no pick.
        assert_eq!(
            b.pick_scaled(2, None, lcg(1), |_| 0, |_| false, |_| 1.0),
            None
        );
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

    #[test]
    fn endpoint_weights_shape_round_robin_random_and_least_request() {
        let weights = [3, 1];
        // Round robin: three of every four.
        let rr = Balancer::new(Some(&LoadBalancer::RoundRobin), &names(2), &weights);
        let picks: Vec<_> = (0..8)
            .map(|_| rr.pick(2, None, || 0, |_| 0, |_| true).unwrap())
            .collect();
        assert_eq!(picks, [0, 0, 1, 0, 0, 0, 1, 0]);
        // Random, and least request with nothing in flight: 75 % within 2 points.
        for lb in [Some(LoadBalancer::Random), None] {
            let b = Balancer::new(lb.as_ref(), &names(2), &weights);
            let mut rnd = lcg(11);
            let first = (0..20_000)
                .filter(|_| b.pick(2, None, &mut rnd, |_| 0, |_| true) == Some(0))
                .count();
            assert!((14_600..15_400).contains(&first), "{lb:?}: {first}");
        }
        // Least request weighs what is in flight: 6 on the endpoint of weight 3 is 2 per unit,
        // 3 on the other is 3 per unit.
        let b = Balancer::new(None, &names(2), &weights);
        let mut rnd = lcg(5);
        assert!((0..100).all(|_| b.pick(2, None, &mut rnd, |i| [6, 3][i], |_| true) == Some(0)));
        // Ejected endpoints are skipped whatever their weight.
        assert!((0..20).all(|_| rr.pick(2, None, || 0, |_| 0, |i| i == 1) == Some(1)));
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
