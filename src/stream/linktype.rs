//! LINKTYPE_ values (what pcap and pcapng files carry) to DLT_ values (what
//! Zeek's packet analysis and the BPF compiler expect), as libpcap's
//! `linktype_to_dlt()` maps them when it opens a savefile.
//!
//! Most values are identical. The exceptions are the few DLT_ codes whose
//! numbers differ between operating systems; the file format therefore uses
//! its own numbers for them. Without this mapping a raw-IP stream
//! (LINKTYPE_RAW 101) would reach Zeek as an unknown link type.

/// libpcap's `LT_LINKTYPE()`: the low 26 bits of a pcap header's link-type
/// field; the upper bits carry the FCS length, which Zeek does not use.
pub fn strip_extension_bits(field: u32) -> u32 {
    field & 0x03FF_FFFF
}

#[cfg(target_os = "openbsd")]
const DLT_RAW: i32 = 14;
#[cfg(not(target_os = "openbsd"))]
const DLT_RAW: i32 = 12;

#[cfg(target_os = "openbsd")]
const DLT_PFSYNC: i32 = 18;
#[cfg(target_os = "freebsd")]
const DLT_PFSYNC: i32 = 121;
#[cfg(not(any(target_os = "openbsd", target_os = "freebsd")))]
const DLT_PFSYNC: i32 = 246;

#[cfg(target_vendor = "apple")]
const DLT_PKTAP: i32 = 149;
#[cfg(not(target_vendor = "apple"))]
const DLT_PKTAP: i32 = 258;

/// Maps a LINKTYPE_ value to the DLT_ value of this platform.
pub fn linktype_to_dlt(linktype: u32) -> i32 {
    match linktype {
        100 => 11,         // LINKTYPE_ATM_RFC1483 -> DLT_ATM_RFC1483
        101 => DLT_RAW,    // LINKTYPE_RAW
        102 => 15,         // LINKTYPE_SLIP_BSDOS -> DLT_SLIP_BSDOS
        103 => 16,         // LINKTYPE_PPP_BSDOS -> DLT_PPP_BSDOS
        106 => 19,         // LINKTYPE_ATM_CLIP -> DLT_ATM_CLIP
        246 => DLT_PFSYNC, // LINKTYPE_PFSYNC
        258 => DLT_PKTAP,  // LINKTYPE_PKTAP
        // Everything else (Ethernet 1, PPP 9, FDDI 10, SLL 113, raw IPv4
        // 228, raw IPv6 229, SLL2 276, ...) has the same number in both
        // spaces; an unknown value is passed on unchanged, as libpcap does.
        other => i32::try_from(other).unwrap_or(i32::MAX),
    }
}

/// Maps a DLT_ value of this platform back to the LINKTYPE_ value a pcap
/// or pcapng file carries (libpcap's `dlt_to_linktype()`), for writers.
pub fn dlt_to_linktype(dlt: i32) -> u32 {
    match dlt {
        11 => 100,         // DLT_ATM_RFC1483
        DLT_RAW => 101,    // LINKTYPE_RAW
        15 => 102,         // DLT_SLIP_BSDOS
        16 => 103,         // DLT_PPP_BSDOS
        19 => 106,         // DLT_ATM_CLIP
        DLT_PFSYNC => 246, // LINKTYPE_PFSYNC
        DLT_PKTAP => 258,  // LINKTYPE_PKTAP
        other => u32::try_from(other).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_get_back_the_linktype_that_was_read() {
        for lt in [
            0, 1, 9, 10, 100, 101, 102, 103, 105, 106, 113, 127, 228, 229, 239, 246, 258, 276,
        ] {
            assert_eq!(dlt_to_linktype(linktype_to_dlt(lt)), lt, "LINKTYPE {lt}");
        }
    }

    #[test]
    fn raw_ip_is_mapped_to_the_platform_dlt() {
        assert_eq!(linktype_to_dlt(101), DLT_RAW);
        #[cfg(target_os = "linux")]
        assert_eq!(linktype_to_dlt(101), 12);
    }

    #[test]
    fn matching_values_pass_through() {
        for lt in [0, 1, 9, 10, 105, 113, 127, 228, 229, 239, 276] {
            assert_eq!(linktype_to_dlt(lt), lt as i32, "LINKTYPE {lt}");
        }
    }

    #[test]
    fn remapped_values() {
        assert_eq!(linktype_to_dlt(100), 11);
        assert_eq!(linktype_to_dlt(106), 19);
    }

    #[test]
    fn fcs_bits_are_stripped() {
        // LINKTYPE_ETHERNET with LT_FCS_LENGTH_PRESENT and an FCS of 4 16-bit words.
        assert_eq!(strip_extension_bits(0x4400_0001), 1);
        assert_eq!(strip_extension_bits(101), 101);
    }
}
