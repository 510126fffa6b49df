//! Which IP addresses a request-supplied URL may never reach, and CIDR blocks.
//!
//! The list follows the IANA special-purpose registries (RFC 6890 and successors):
//! anything that is not globally routable unicast is refused, because reaching it
//! from a request means reaching the worker's own machine, its cluster or the cloud
//! metadata service. IPv6 forms that carry an IPv4 address (mapped, compatible,
//! NAT64, 6to4) are judged by that IPv4 address, since the packet ends up there.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is refused, as a short stable category name (logs, metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpCategory {
    /// 127.0.0.0/8, ::1: the worker itself.
    Loopback,
    /// 10/8, 172.16/12, 192.168/16: the private network around the worker.
    Private,
    /// 169.254/16 (cloud metadata lives at 169.254.169.254), fe80::/10.
    LinkLocal,
    /// 0.0.0.0/8, ::: "this host/network", which Linux connects to the local host.
    Unspecified,
    /// 100.64/10 carrier-grade NAT, often the inside of a provider's network.
    SharedAddressSpace,
    /// 192.0.0.0/24 protocol assignments, 240/4 future use, 100::/64 discard.
    Reserved,
    /// 198.18/15, network benchmarking.
    Benchmarking,
    /// 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32.
    Documentation,
    /// 224/4, ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// fec0::/10, deprecated but still routed inside some networks.
    SiteLocal,
    /// fc00::/7, the IPv6 counterpart of private addresses.
    UniqueLocal,
    /// 2001::/32: the IPv4 endpoint is obfuscated, so it cannot be judged.
    Teredo,
}

impl IpCategory {
    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::LinkLocal => "link_local",
            Self::Unspecified => "unspecified",
            Self::SharedAddressSpace => "shared_address_space",
            Self::Reserved => "reserved",
            Self::Benchmarking => "benchmarking",
            Self::Documentation => "documentation",
            Self::Multicast => "multicast",
            Self::Broadcast => "broadcast",
            Self::SiteLocal => "site_local",
            Self::UniqueLocal => "unique_local",
            Self::Teredo => "teredo",
        }
    }

    /// The category in a sentence: "a private address".
    fn phrase(self) -> &'static str {
        match self {
            Self::Loopback => "a loopback address",
            Self::Private => "a private address",
            Self::LinkLocal => "a link-local address (cloud metadata lives there)",
            Self::Unspecified => "an unspecified (\"this host\") address",
            Self::SharedAddressSpace => "a carrier-grade NAT address",
            Self::Reserved => "a reserved address",
            Self::Benchmarking => "a benchmarking address",
            Self::Documentation => "a documentation address",
            Self::Multicast => "a multicast address",
            Self::Broadcast => "the broadcast address",
            Self::SiteLocal => "a site-local address",
            Self::UniqueLocal => "a unique-local (private) address",
            Self::Teredo => "a Teredo tunnel address",
        }
    }
}

/// An address that is not public, with the IPv4 address it was judged by when
/// it is an IPv6 form carrying one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub struct IpRefusal {
    pub category: IpCategory,
    pub embedded: Option<Ipv4Addr>,
}

impl fmt::Display for IpRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.embedded {
            None => f.write_str(self.category.phrase()),
            Some(v4) => write!(f, "an IPv6 form of {v4}, {}", self.category.phrase()),
        }
    }
}

/// Refuses every address that is not public unicast (see the module docs).
/// Pure: it looks at the bits only, never at the network.
pub fn classify_ip(ip: IpAddr) -> Result<(), IpRefusal> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4).map_or(Ok(()), |category| {
            Err(IpRefusal {
                category,
                embedded: None,
            })
        }),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<IpCategory> {
    use IpCategory::*;
    // Broadcast sits inside 240/4, so it is tested first for the clearer name.
    const TABLE: &[(u32, u8, IpCategory)] = &[
        (0xFFFF_FFFF, 32, Broadcast),
        (0x0000_0000, 8, Unspecified),
        (0x0A00_0000, 8, Private),
        (0x6440_0000, 10, SharedAddressSpace),
        (0x7F00_0000, 8, Loopback),
        (0xA9FE_0000, 16, LinkLocal),
        (0xAC10_0000, 12, Private),
        (0xC000_0000, 24, Reserved),
        (0xC000_0200, 24, Documentation),
        (0xC0A8_0000, 16, Private),
        (0xC612_0000, 15, Benchmarking),
        (0xC633_6400, 24, Documentation),
        (0xCB00_7100, 24, Documentation),
        (0xE000_0000, 4, Multicast),
        (0xF000_0000, 4, Reserved),
    ];
    let bits = u32::from(ip);
    TABLE
        .iter()
        .find(|(net, len, _)| prefix_match_u32(bits, *net, *len))
        .map(|(_, _, category)| *category)
}

fn classify_v6(ip: Ipv6Addr) -> Result<(), IpRefusal> {
    use IpCategory::*;
    let bits = u128::from(ip);
    let refuse = |category| {
        Err(IpRefusal {
            category,
            embedded: None,
        })
    };
    if ip.is_unspecified() {
        return refuse(Unspecified);
    }
    if ip.is_loopback() {
        return refuse(Loopback);
    }
    if let Some(v4) = embedded_v4(ip) {
        return match classify_v4(v4) {
            Some(category) => Err(IpRefusal {
                category,
                embedded: Some(v4),
            }),
            None => Ok(()),
        };
    }
    const TABLE: &[(u128, u8, IpCategory)] = &[
        (0x2001_0000 << 96, 32, Teredo),
        (0x2001_0db8 << 96, 32, Documentation),
        (0x0100 << 112, 64, Reserved),
        (0xfe80 << 112, 10, LinkLocal),
        (0xfec0 << 112, 10, SiteLocal),
        (0xfc00 << 112, 7, UniqueLocal),
        (0xff00 << 112, 8, Multicast),
    ];
    match TABLE
        .iter()
        .find(|(net, len, _)| prefix_match_u128(bits, *net, *len))
    {
        Some((_, _, category)) => refuse(*category),
        None => Ok(()),
    }
}

/// The IPv4 address an IPv6 address delivers to, for the forms that embed one.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    let low32 = Ipv4Addr::from(bits as u32);
    // ::ffff:a.b.c.d (mapped), ::ffff:0:a.b.c.d (translated) and ::a.b.c.d
    // (compatible; :: and ::1 are handled before).
    if matches!(bits >> 32, 0 | 0xffff | 0xffff_0000) {
        return Some(low32);
    }
    // 64:ff9b::/96 well-known NAT64 prefix and 64:ff9b:1::/48 local-use NAT64.
    if prefix_match_u128(bits, 0x0064_ff9b << 96, 96)
        || prefix_match_u128(bits, 0x0064_ff9b_0001 << 80, 48)
    {
        return Some(low32);
    }
    // 2002:AABB:CCDD::/48 6to4 carries a.b.c.d in bits 16..48.
    if prefix_match_u128(bits, 0x2002 << 112, 16) {
        return Some(Ipv4Addr::from((bits >> 80) as u32));
    }
    None
}

fn prefix_match_u32(bits: u32, net: u32, len: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    bits & mask == net & mask
}

fn prefix_match_u128(bits: u128, net: u128, len: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    bits & mask == net & mask
}

/// An IP block such as `10.1.0.0/16` or `fd00::/8` (a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `addr[/prefix]`, refusing bits set beyond the prefix (almost always a typo).
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr = addr.trim_start_matches('[').trim_end_matches(']');
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("prefix length {p:?} is not 0 to {max}"))?,
        };
        let cidr = Cidr { network, prefix };
        if cidr.masked() != network {
            return Err(format!(
                "{network} has bits set beyond /{prefix}; did you mean {}/{prefix}",
                cidr.masked()
            ));
        }
        Ok(cidr)
    }

    fn masked(&self) -> IpAddr {
        match self.network {
            IpAddr::V4(v4) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        }
    }

    /// Whether `ip` is inside the block. An IPv4-mapped IPv6 address counts as
    /// its IPv4 address, since that is where it connects.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_match_u32(u32::from(ip), u32::from(net), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_match_u128(u128::from(ip), u128::from(net), self.prefix)
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn category(ip: &str) -> Option<&'static str> {
        classify_ip(ip.parse().unwrap())
            .err()
            .map(|r| r.category.as_str())
    }

    #[test]
    fn every_special_purpose_range_is_refused_with_its_category() {
        let table = [
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("10.0.0.5", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link_local"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("100.64.0.1", "shared_address_space"),
            ("100.127.255.255", "shared_address_space"),
            ("192.0.0.8", "reserved"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.255", "benchmarking"),
            ("192.0.2.1", "documentation"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.255", "broadcast"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fe80::1", "link_local"),
            ("febf::1", "link_local"),
            ("fec0::1", "site_local"),
            ("fc00::1", "unique_local"),
            ("fd00::1", "unique_local"),
            ("ff02::1", "multicast"),
            ("2001::1", "teredo"),
            ("2001:db8::1", "documentation"),
            ("100::1", "reserved"),
            // IPv4 carried in IPv6 is judged by the IPv4 address.
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link_local"),
            ("::10.0.0.1", "private"),
            ("::127.0.0.1", "loopback"),
            ("64:ff9b::a9fe:a9fe", "link_local"),
            ("64:ff9b:1::7f00:1", "loopback"),
            ("2002:7f00:1::", "loopback"),
            ("2002:c0a8:101::1", "private"),
        ];
        for (ip, expected) in table {
            assert_eq!(category(ip), Some(expected), "{ip}");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        for ip in [
            "93.184.215.14",
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "169.253.255.255",
            "198.20.0.1",
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:93.184.215.14",
            "64:ff9b::808:808",
            "2002:5db8:d70e::1",
        ] {
            assert_eq!(category(ip), None, "{ip}");
        }
    }

    #[test]
    fn refusal_names_the_embedded_ipv4_address() {
        let refusal = classify_ip("::ffff:10.0.0.1".parse().unwrap()).unwrap_err();
        assert_eq!(refusal.embedded, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(
            refusal.to_string(),
            "an IPv6 form of 10.0.0.1, a private address"
        );
    }

    #[test]
    fn cidr_blocks_parse_and_match() {
        let block = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(block.contains("10.1.200.3".parse().unwrap()));
        assert!(block.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(!block.contains("10.2.0.1".parse().unwrap()));
        let v6 = Cidr::parse("fd00::/8").unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        let single = Cidr::parse("127.0.0.1").unwrap();
        assert!(single.contains("127.0.0.1".parse().unwrap()));
        assert!(!single.contains("127.0.0.2".parse().unwrap()));
        assert!(
            Cidr::parse("[::1]")
                .unwrap()
                .contains("::1".parse().unwrap())
        );
    }

    #[test]
    fn malformed_cidr_blocks_say_what_is_wrong() {
        assert!(
            Cidr::parse("10.1.2.3/16")
                .unwrap_err()
                .contains("10.1.0.0/16")
        );
        assert!(Cidr::parse("10.0.0.0/33").unwrap_err().contains("0 to 32"));
        assert!(Cidr::parse("10.0.0/8").unwrap_err().contains("not an IP"));
        assert!(Cidr::parse("fd00::/129").is_err());
        assert!(Cidr::parse("10.0.0.0/").is_err());
    }
}
