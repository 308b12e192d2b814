//! Which memcached server holds a key: a ketama consistent-hash ring.
//!
//! This replaces the `memcache` crate's routing, which hashes keys with std's `DefaultHasher`.
//! That hasher's output is not promised to stay the same across Rust releases, so two builds of
//! an application in a rolling deploy could disagree on which server holds a version counter:
//! one would bump a counter that the other never reads. The ring here depends on nothing but
//! MD5 and arithmetic fixed below, so every build, on every platform, routes every key the same
//! way.
//!
//! # The hash
//!
//! The scheme is libmemcached's weighted ketama (`MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED`, which also
//! selects MD5 for keys and for the ring), followed exactly as in libmemcached 1.0's
//! `update_continuum` and `ketama_server_hash` (`libmemcached/hosts.cc`) and its key hash
//! `hashkit_md5` (`libhashkit/md5.cc`):
//!
//! - **Points.** Server `s` of `n`, with weight `w` out of a total `W`, gets
//!   `4 × floor(w / W × 160 / 4 × n)` points, computed in single-precision floats as libmemcached
//!   does (160 is `MEMCACHED_POINTS_PER_SERVER_KETAMA`): 160 points at equal weights, and twice
//!   as many for a server of twice the weight. For `i` in `0 .. points / 4`, the MD5 digest of
//!   `"{host}:{port}-{i}"` gives four points, its four 4-byte words read little-endian. When the
//!   port is memcached's default, 11211, libmemcached leaves it out of that string
//!   (`"{host}-{i}"`), and so does this ring.
//! - **Keys.** A key's point is the first 4 bytes of the MD5 digest of the whole key,
//!   little-endian. Its server is the one owning the first ring point at or after it, wrapping
//!   to the first point past the top of the ring.
//!
//! MD5 is fully specified and the float arithmetic is IEEE-754 single precision, which Rust
//! computes exactly on every tier-1 target, so the mapping is stable across builds, Rust releases
//! and platforms. The golden tests below pin it against libmemcached's own published ketama test
//! vector and the Couchbase SDKs' one (SDK RFC 26), and against a few of this library's keys.
//!
//! Mixed clients agree when they name the servers the same way: a libmemcached-based client in
//! weighted ketama mode (PHP's `memcached` extension with `OPT_LIBKETAMA_COMPATIBLE`, pylibmc
//! with the `ketama_weighted` behavior), given the same `host:port` list with the same weights,
//! sends a given string to the same server as this ring. (The memcached backend hashes the
//! record part of its keys, `keys::routing_part`, so that a record's counter and fragments
//! share a server; another client looking a cachesweeper key up by its whole text would hash
//! more of it.) The host is hashed as written, not resolved, so `cache1:11211` and
//! `10.0.0.1:11211` are different servers to the ring.
//!
//! Dalli (Ruby) is *not* compatible: its ring hashes `host:port:index` with SHA-1, one point per
//! digest, and keys with CRC-32, and picks the point at or before a key (`lib/dalli/ring.rb`),
//! so it places keys differently whatever the server list.
//!
//! # No failover
//!
//! [`Ring::server_for`] always answers with the key's own server, dead or alive. libmemcached's
//! auto-eject sends a dead server's keys to the next server clockwise instead, which breaks the
//! guarantee that a version counter never goes back to an older value:
//!
//! 1. While server A is down, the counters that live on A are read and raised on the next
//!    server, B, and invalidations during the outage raise them there and report success.
//! 2. When A comes back with its memory intact (it was unreachable, not restarted), the keys
//!    route to A again and find A's counters as they were before the outage: older versions,
//!    which never saw the raises made on B. Fragments rendered at those versions before the
//!    outage may still be stored, and they are served as current although their records changed
//!    during the outage.
//!
//! So a dead server's keys fail: their fragments are rendered (the cache fails open), and an
//! invalidation whose counter lives there returns an error to its caller (and is retried)
//! instead of succeeding on a counter that will be forgotten. (The backend had this failover as
//! an option, off by default; it was removed for this reason.)

use md5::{Digest, Md5};

/// Points per server at equal weights: libmemcached's `MEMCACHED_POINTS_PER_SERVER_KETAMA`.
/// (Dalli and libketama use 160 as well.)
const POINTS_PER_SERVER: f32 = 160.0;

/// Points taken from each MD5 digest: its four little-endian 32-bit words.
const POINTS_PER_HASH: u32 = 4;

/// The suffix that libmemcached leaves out of a server's point strings: memcached's default port.
const DEFAULT_PORT_SUFFIX: &str = ":11211";

/// A ketama ring over a fixed list of servers.
///
/// Built once per server list; lookups are a binary search over the sorted points and do not
/// allocate.
#[derive(Debug, Clone)]
pub(crate) struct Ring {
    /// `(point, server index)`, sorted by point and then by server index. Ties (two servers
    /// hashing to the same 32-bit point) are vanishingly rare; libmemcached leaves their order to
    /// `qsort`, and ordering them by index keeps this ring deterministic.
    points: Vec<(u32, u16)>,
}

impl Ring {
    /// Builds the ring of `servers`, each an identity `"host:port"` (or `"host"` for port 11211)
    /// and a weight. Indices into `servers` are what [`server_for`](Self::server_for) returns.
    ///
    /// The identity is hashed as written, so it must be spelled the same in every client that
    /// shares the servers. A weight of 0 counts as 1 (as in libmemcached before 1.0). A server
    /// whose share rounds down to no points at all (a weight below a fortieth of the average)
    /// never receives a key, as in libmemcached.
    ///
    /// # Panics
    ///
    /// If `servers` is empty or has more than 65 536 entries; the memcached backend checks both
    /// before building a ring.
    pub(crate) fn new(servers: &[(String, u32)]) -> Ring {
        assert!(
            !servers.is_empty(),
            "a ketama ring needs at least one server"
        );
        assert!(
            servers.len() <= usize::from(u16::MAX) + 1,
            "a ketama ring holds at most 65536 servers"
        );
        let total_weight: u64 = servers.iter().map(|(_, w)| u64::from((*w).max(1))).sum();
        let mut points = Vec::with_capacity(servers.len() * 160);
        for (index, (identity, weight)) in servers.iter().enumerate() {
            let index = u16::try_from(index).expect("checked above: at most 65536 servers");
            let count = point_count((*weight).max(1), total_weight, servers.len());
            let host = identity
                .strip_suffix(DEFAULT_PORT_SUFFIX)
                .unwrap_or(identity);
            for i in 0..count / POINTS_PER_HASH {
                let digest = Md5::digest(format!("{host}-{i}").as_bytes());
                for word in digest.chunks_exact(4) {
                    points.push((
                        u32::from_le_bytes([word[0], word[1], word[2], word[3]]),
                        index,
                    ));
                }
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    /// The index of the server that holds `key` (the full key as sent to memcached).
    pub(crate) fn server_for(&self, key: &[u8]) -> usize {
        usize::from(self.points[self.position(key_hash(key))].1)
    }

    /// The position of the first point at or after `hash`, wrapping past the top of the ring:
    /// libmemcached's `dispatch_host` for `MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA`.
    fn position(&self, hash: u32) -> usize {
        let position = self.points.partition_point(|&(point, _)| point < hash);
        if position == self.points.len() {
            0
        } else {
            position
        }
    }
}

/// How many points a server of `weight` gets, out of `total_weight` over `servers` servers:
/// libmemcached's `floor(pct * 160 / 4 * live_servers + 0.0000000001) * 4`, in the same float
/// types so that it rounds the same way. The `1e-10` is added in double precision and cast back
/// to single precision, as there; it only matters for a share that is not already a whole
/// number of digests.
fn point_count(weight: u32, total_weight: u64, servers: usize) -> u32 {
    // `as` on purpose: these are libmemcached's own (float) conversions, which round.
    let share = weight as f32 / total_weight as f32;
    let digests = share * POINTS_PER_SERVER / POINTS_PER_HASH as f32 * servers as f32;
    let digests = (f64::from(digests) + 0.000_000_000_1) as f32;
    digests.floor() as u32 * POINTS_PER_HASH
}

/// A key's point on the ring: the first 4 bytes of its MD5 digest, little-endian (libhashkit's
/// `hashkit_md5`).
fn key_hash(key: &[u8]) -> u32 {
    let digest = Md5::digest(key);
    u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ring of equal-weight servers from their identities.
    fn ring(identities: &[&str]) -> Ring {
        let servers: Vec<(String, u32)> = identities.iter().map(|s| ((*s).to_owned(), 1)).collect();
        Ring::new(&servers)
    }

    /// `count` keys shaped like the library's (see `keys.rs`): version counters and fragments of
    /// comments, alternately.
    fn keys(count: usize) -> Vec<String> {
        (0..count)
            .flat_map(|i| {
                [
                    format!("cs|v|blog::Comment|{i}"),
                    format!("cs|f|blog::Comment|{i}|c17|7f3a9c|Qm9keS1wYXJ0cw"),
                ]
            })
            .take(count)
            .collect()
    }

    /// How many servers own points on the ring.
    fn servers(ring: &Ring) -> usize {
        ring.points
            .iter()
            .map(|&(_, s)| usize::from(s) + 1)
            .max()
            .unwrap_or(0)
    }

    /// How many of `keys` land on each of the ring's servers.
    fn spread(ring: &Ring, keys: &[String]) -> Vec<usize> {
        let mut counts = vec![0; servers(ring)];
        for key in keys {
            counts[ring.server_for(key.as_bytes())] += 1;
        }
        counts
    }

    /// How many points each server owns.
    fn points_per_server(ring: &Ring) -> Vec<usize> {
        let mut counts = vec![0; servers(ring)];
        for &(_, server) in &ring.points {
            counts[usize::from(server)] += 1;
        }
        counts
    }

    const THREE: [&str; 3] = ["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"];

    /// 10 000 keys over 3 equal servers: each gets its third within 15%.
    #[test]
    fn keys_spread_evenly() {
        let ring = ring(&THREE);
        assert_eq!(points_per_server(&ring), [160, 160, 160]);
        let counts = spread(&ring, &keys(10_000));
        eprintln!("spread over 3 servers: {counts:?}");
        for count in counts {
            assert!(
                (2834..=3833).contains(&count),
                "{count} keys is not 3333 ± 15%"
            );
        }
    }

    /// A 4th server takes at most 30% of the keys (a quarter, ideally), all from the other three:
    /// no key moves between old servers.
    #[test]
    fn adding_a_server_moves_keys_only_to_it() {
        let before = ring(&THREE);
        let after = ring(&[THREE[0], THREE[1], THREE[2], "10.0.0.4:11211"]);
        assert_eq!(points_per_server(&after), [160, 160, 160, 160]);
        let keys = keys(10_000);
        let mut moved = 0;
        for key in &keys {
            let (old, new) = (
                before.server_for(key.as_bytes()),
                after.server_for(key.as_bytes()),
            );
            if old != new {
                assert_eq!(new, 3, "{key} moved from server {old} to old server {new}");
                moved += 1;
            }
        }
        eprintln!("adding a 4th server moved {moved} of {} keys", keys.len());
        assert!(moved * 100 <= keys.len() * 30, "{moved} keys moved");
    }

    /// Removing a server moves its keys and nothing else.
    #[test]
    fn removing_a_server_moves_only_its_keys() {
        let before = ring(&THREE);
        let after = ring(&[THREE[0], THREE[2]]);
        // The survivors' points do not change: 160 each at any number of equal servers.
        assert_eq!(points_per_server(&after), [160, 160]);
        let keys = keys(10_000);
        let mut moved = 0;
        for key in &keys {
            let old = before.server_for(key.as_bytes());
            let new = [0, 2][after.server_for(key.as_bytes())];
            if old == 1 {
                moved += 1;
            } else {
                assert_eq!(old, new, "{key} moved off a surviving server");
            }
        }
        eprintln!("removing a server moved {moved} of {} keys", keys.len());
    }

    /// A weight-2 server gets twice the points and about twice the keys of a weight-1 server.
    #[test]
    fn weights_scale_the_share() {
        let servers = [
            (THREE[0].to_owned(), 1),
            (THREE[1].to_owned(), 2),
            (THREE[2].to_owned(), 1),
        ];
        let ring = Ring::new(&servers);
        assert_eq!(points_per_server(&ring), [120, 240, 120]);
        let counts = spread(&ring, &keys(10_000));
        let ratio = counts[1] as f64 / ((counts[0] + counts[2]) as f64 / 2.0);
        eprintln!("weights 1, 2, 1: {counts:?}, ratio {ratio:.3}");
        assert!(
            (1.7..=2.3).contains(&ratio),
            "weight 2 got {ratio:.3}x the keys of weight 1"
        );
    }

    /// One server takes every key, wherever its point falls.
    #[test]
    fn single_server() {
        let ring = ring(&["cache:11311"]);
        assert_eq!(ring.points.len(), 160);
        for key in keys(100) {
            assert_eq!(ring.server_for(key.as_bytes()), 0);
        }
    }

    /// libmemcached's own ketama test vector (`ketama_test_cases` in libmemcached-awesome's
    /// `test/fixtures/ketama.hpp`, asserted by its `memcached_ketama_compat` test with
    /// `MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED`): 8 servers on the default port with unequal weights,
    /// so it pins the weight formula and the default-port rule. Each case is a key, its hash, the
    /// ring point it lands on, and the server; here are 24 of the 99. (An older copy of the file,
    /// `tests/ketama_test_cases.h`, has a different server column, equal to today's
    /// `ketama_test_cases_spy`, the spymemcached variant; the hashes and points are the same in
    /// all three tables.)
    #[test]
    fn golden_libmemcached_ketama_vector() {
        let servers: Vec<(String, u32)> = [600, 300, 200, 350, 1000, 800, 950, 100]
            .iter()
            .enumerate()
            .map(|(i, &weight)| (format!("10.0.1.{}:11211", i + 1), weight))
            .collect();
        let ring = Ring::new(&servers);
        // 4 × floor(w / 4300 × 40 × 8) each.
        assert_eq!(
            points_per_server(&ring),
            [176, 88, 56, 104, 296, 236, 280, 28]
        );
        let cases: [(&str, u32, u32, &str); 24] = [
            ("SVa_]_V41)", 443691461, 445379617, "10.0.1.7"),
            ("*/Z;?V(.\\8", 1422915503, 1428303028, "10.0.1.1"),
            ("30C1*Z*S/_", 1473165754, 1480075959, "10.0.1.2"),
            ("ERR:EC58G>", 2148406511, 2168579133, "10.0.1.7"),
            ("1I=cTMNTKF", 2882686667, 2885206587, "10.0.1.5"),
            ("]VG<`I*Z8)", 1103544263, 1104827657, "10.0.1.5"),
            ("UUTC`-V159", 3716288206, 3727224240, "10.0.1.5"),
            ("@7RU6C6T+Z", 3862737685, 3871917949, "10.0.1.5"),
            ("/XLN0@+36;", 1623269830, 1627683651, "10.0.1.1"),
            ("4(`X;\\V.^c", 373546328, 383925769, "10.0.1.1"),
            ("726bW=9*a4", 4213440020, 4213950705, "10.0.1.7"),
            ("\\`)<B)UE,c", 951096736, 955226069, "10.0.1.1"),
            ("P1[Ma3=K1/", 1989324036, 1994028240, "10.0.1.8"),
            ("C89I.-V?cT", 1604239957, 1606398093, "10.0.1.8"),
            ("cDT0)Z5P6,", 176485284, 178675413, "10.0.1.5"),
            ("@JW`+[WAO8", 2720940826, 2743975456, "10.0.1.5"),
            ("M/HV^_HZ4O", 3623390946, 3624445007, "10.0.1.7"),
            ("Nb-X^]M)I:", 330865696, 331009896, "10.0.1.6"),
            ("[>RZHG97Q9", 71954686, 72034069, "10.0.1.6"),
            ("N-)88>[O`,", 50404102, 51792557, "10.0.1.5"),
            ("M(@X^b[L:K", 3019630308, 3022260113, "10.0.1.1"),
            ("431cBF8,YO", 1679726993, 1685224295, "10.0.1.7"),
            ("WS/3H*)7F;", 419488232, 422140585, "10.0.1.5"),
            ("VD6D0]ba_\\", 3842502950, 3842588691, "10.0.1.1"),
        ];
        for (key, hash, point, server) in cases {
            assert_eq!(key_hash(key.as_bytes()), hash, "hash of {key}");
            let position = ring.position(hash);
            assert_eq!(ring.points[position].0, point, "point of {key}");
            let index = ring.server_for(key.as_bytes());
            assert_eq!(
                servers[index].0,
                format!("{server}:11211"),
                "server of {key}"
            );
        }
        // "VDEAAAAA hashes to fffcd1b5, after the last continuum point", so it wraps to the
        // first point's server.
        assert_eq!(key_hash(b"VDEAAAAA"), 0xfffc_d1b5);
        assert!(ring.points.last().unwrap().0 < 0xfffc_d1b5);
        assert_eq!(ring.server_for(b"VDEAAAAA"), usize::from(ring.points[0].1));
    }

    /// The Couchbase SDKs' ketama vector (SDK RFC 26, `ketama-hashes.json`, as checked by
    /// couchbase-jvm-clients' `KetamaRingTest`): 4 equal servers off the default port, whose 640
    /// points are published in order. Here are the first 12 and the last 8, and the wrap-around
    /// case from the same test.
    #[test]
    fn golden_couchbase_rfc26_vector() {
        let hosts = [
            "192.168.1.101:11210",
            "192.168.1.102:11210",
            "192.168.1.103:11210",
            "192.168.1.104:11210",
        ];
        let ring = ring(&hosts);
        assert_eq!(ring.points.len(), 640);
        let first: [(u32, &str); 12] = [
            (19069626, "192.168.1.104:11210"),
            (28439255, "192.168.1.101:11210"),
            (36078660, "192.168.1.104:11210"),
            (46162273, "192.168.1.104:11210"),
            (54096687, "192.168.1.104:11210"),
            (73548791, "192.168.1.102:11210"),
            (78634244, "192.168.1.102:11210"),
            (80168850, "192.168.1.104:11210"),
            (89070946, "192.168.1.101:11210"),
            (106146674, "192.168.1.101:11210"),
            (107634595, "192.168.1.103:11210"),
            (109207346, "192.168.1.104:11210"),
        ];
        let last: [(u32, &str); 8] = [
            (4248973251, "192.168.1.104:11210"),
            (4261792465, "192.168.1.101:11210"),
            (4264824551, "192.168.1.101:11210"),
            (4275762582, "192.168.1.101:11210"),
            (4280142414, "192.168.1.101:11210"),
            (4280309254, "192.168.1.102:11210"),
            (4281097143, "192.168.1.102:11210"),
            (4294628205, "192.168.1.102:11210"),
        ];
        let named = |&(point, server): &(u32, u16)| (point, hosts[usize::from(server)]);
        let ours: Vec<(u32, &str)> = ring.points.iter().map(named).collect();
        assert_eq!(ours[..12], first);
        assert_eq!(ours[640 - 8..], last);
        // `wrapsAround`: the top of the ring belongs to the first point's server.
        assert_eq!(
            hosts[usize::from(ring.points[ring.position(u32::MAX)].1)],
            hosts[3]
        );
    }

    /// This library's own keys on a fixed list: pinned so that the routing can never change
    /// silently (a change would send every deployed counter to a different server).
    #[test]
    fn golden_library_keys() {
        let ring = ring(&THREE);
        let pinned: [(&str, usize); 8] = [
            ("cs|v|blog::Comment|1", 1),
            ("cs|v|blog::Comment|2", 1),
            ("cs|v|blog::Comment|3", 1),
            ("cs|v|blog::Comment|4", 2),
            ("cs|v|blog::Article|1", 1),
            ("cs|v|blog::Article|2", 2),
            ("cs|f|blog::Comment|17|c17|7f3a9c|Qm9keS1wYXJ0cw", 0),
            ("cs|h|3q2-7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", 1),
        ];
        let ours: Vec<(&str, usize)> = pinned
            .iter()
            .map(|&(key, _)| (key, ring.server_for(key.as_bytes())))
            .collect();
        assert_eq!(ours, pinned);
    }
}
