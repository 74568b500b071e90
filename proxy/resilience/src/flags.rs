//! Envoy's response flags: short codes that say why a response looks the way it does.
//!
//! Layers that answer on their own (or change the outcome of a request) add their flag to the
//! response's [`http::Extensions`]; telemetry reads the union for the `response_flags` label and
//! the access log.

use std::fmt;

/// A set of Envoy response flags. `Display` prints them as Envoy does: comma-joined in Envoy's
/// order (`DI,FI`), or `-` when there is none.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ResponseFlags(u32);

macro_rules! flags {
    ($($(#[$doc:meta])* $name:ident = $bit:expr, $code:literal;)*) => {
        impl ResponseFlags {
            $($(#[$doc])* pub const $name: ResponseFlags = ResponseFlags(1 << $bit);)*
            /// Every flag with its code, in the order Envoy prints them.
            const ALL: &'static [(ResponseFlags, &'static str)] = &[$((ResponseFlags::$name, $code)),*];
        }
    };
}

flags! {
    /// LH: the local endpoint failed its health check.
    LH = 0, "LH";
    /// UH: no healthy upstream endpoint.
    UH = 1, "UH";
    /// UT: upstream request timeout (whole request or per try).
    UT = 2, "UT";
    /// LR: the connection was reset locally.
    LR = 3, "LR";
    /// UR: the upstream reset the stream or connection.
    UR = 4, "UR";
    /// UF: upstream connection failure.
    UF = 5, "UF";
    /// UC: upstream connection termination.
    UC = 6, "UC";
    /// UO: upstream overflow (circuit breaking).
    UO = 7, "UO";
    /// NR: no route for the request.
    NR = 8, "NR";
    /// DI: the request was delayed by fault injection.
    DI = 9, "DI";
    /// FI: the request was aborted by fault injection.
    FI = 10, "FI";
    /// RL: rate limited locally.
    RL = 11, "RL";
    /// UAEX: denied by the external authorization service.
    UAEX = 12, "UAEX";
    /// RLSE: the rate limit service failed.
    RLSE = 13, "RLSE";
    /// DC: the downstream connection was terminated.
    DC = 14, "DC";
    /// URX: the retry limit was reached on a retriable response.
    URX = 15, "URX";
    /// SI: stream idle timeout.
    SI = 16, "SI";
    /// IH: a strictly checked request header was invalid.
    IH = 17, "IH";
    /// DPE: the downstream request broke the HTTP protocol.
    DPE = 18, "DPE";
    /// UMSDR: the upstream stream ran past its maximum duration.
    UMSDR = 19, "UMSDR";
    /// RFCF: the response came from a cache filter.
    RFCF = 20, "RFCF";
    /// NFCF: no filter config was found.
    NFCF = 21, "NFCF";
    /// DT: the request or connection ran past its maximum duration.
    DT = 22, "DT";
    /// UPE: the upstream response broke the HTTP protocol.
    UPE = 23, "UPE";
    /// NC: no cluster (upstream service) for the route.
    NC = 24, "NC";
    /// OM: shed by the overload manager.
    OM = 25, "OM";
    /// DF: DNS resolution failed.
    DF = 26, "DF";
    /// DO: dropped by drop-overload.
    DO = 27, "DO";
    /// DR: the downstream reset the stream.
    DR = 28, "DR";
}

impl ResponseFlags {
    pub const EMPTY: ResponseFlags = ResponseFlags(0);

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn contains(self, other: ResponseFlags) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn insert(&mut self, other: ResponseFlags) {
        self.0 |= other.0;
    }

    /// The flags stored in `ext`, empty when there are none.
    pub fn from_extensions(ext: &http::Extensions) -> ResponseFlags {
        ext.get::<ResponseFlags>().copied().unwrap_or_default()
    }

    /// Adds these flags to those already stored in `ext`.
    pub fn insert_into_extensions(self, ext: &mut http::Extensions) {
        if self.is_empty() {
            // Nothing to add; inserting would allocate the extension map for nothing.
            return;
        }
        let mut all = ResponseFlags::from_extensions(ext);
        all.insert(self);
        ext.insert(all);
    }

    /// Adds these flags to those already on `response` (flags accumulate, never replace).
    pub fn insert_into<B>(self, response: &mut http::Response<B>) {
        self.insert_into_extensions(response.extensions_mut());
    }
}

impl std::ops::BitOr for ResponseFlags {
    type Output = ResponseFlags;
    fn bitor(self, rhs: ResponseFlags) -> ResponseFlags {
        ResponseFlags(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for ResponseFlags {
    fn bitor_assign(&mut self, rhs: ResponseFlags) {
        self.0 |= rhs.0;
    }
}

impl<B> From<&http::Response<B>> for ResponseFlags {
    fn from(response: &http::Response<B>) -> ResponseFlags {
        ResponseFlags::from_extensions(response.extensions())
    }
}

impl fmt::Display for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        let mut first = true;
        for (flag, code) in ResponseFlags::ALL {
            if self.contains(*flag) {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(code)?;
                first = false;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResponseFlags({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_prints_dash() {
        assert_eq!(ResponseFlags::EMPTY.to_string(), "-");
        assert_eq!(ResponseFlags::default().to_string(), "-");
    }

    #[test]
    fn single_and_joined_in_envoy_order() {
        assert_eq!(ResponseFlags::UO.to_string(), "UO");
        assert_eq!((ResponseFlags::FI | ResponseFlags::DI).to_string(), "DI,FI");
        assert_eq!(
            (ResponseFlags::URX | ResponseFlags::UT | ResponseFlags::UAEX).to_string(),
            "UT,UAEX,URX"
        );
    }

    #[test]
    fn every_code_is_distinct() {
        let mut seen = std::collections::HashSet::new();
        let mut union = ResponseFlags::EMPTY;
        for (flag, code) in ResponseFlags::ALL {
            assert!(seen.insert(*code), "duplicate code {code}");
            assert!(!union.contains(*flag), "duplicate bit for {code}");
            union |= *flag;
        }
    }

    #[test]
    fn stored_in_response_extensions_and_accumulated() {
        let mut resp = http::Response::new(());
        assert_eq!(ResponseFlags::from(&resp), ResponseFlags::EMPTY);
        ResponseFlags::DI.insert_into(&mut resp);
        ResponseFlags::FI.insert_into(&mut resp);
        let flags = ResponseFlags::from(&resp);
        assert!(flags.contains(ResponseFlags::DI) && flags.contains(ResponseFlags::FI));
        assert_eq!(flags.to_string(), "DI,FI");
    }
}
