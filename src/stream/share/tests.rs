use super::*;

/// So many shares that two packets agreeing by chance is unlikely: tests that
/// compare shares use it.
const MANY: u32 = 1 << 20;

const MODES: [ShareBy; 2] = [ShareBy::AddressPair, ShareBy::FiveTuple];

const A4: [u8; 4] = [192, 0, 2, 1];
const B4: [u8; 4] = [198, 51, 100, 2];

fn a6() -> [u8; 16] {
    v6(0x2001_0db8_0000_0000_0000_0000_0000_0001)
}

fn b6() -> [u8; 16] {
    v6(0x2001_0db8_00ff_0000_0000_0000_0000_0002)
}

fn v6(a: u128) -> [u8; 16] {
    a.to_be_bytes()
}

// ---------------------------------------------------------------------------
// Packets

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// An IPv4 packet with a correct length and checksum; `frag` is the flags and
/// offset field (offset in 8-byte units, 0x2000 for MF).
fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, id: u16, frag: u16, payload: &[u8]) -> Vec<u8> {
    ipv4_opts(src, dst, proto, id, frag, &[], payload)
}

fn ipv4_opts(
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    id: u16,
    frag: u16,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let hlen = 20 + options.len();
    let total = (hlen + payload.len()) as u16;
    let mut h = cat(&[
        &[0x40 | (hlen / 4) as u8, 0],
        &total.to_be_bytes(),
        &id.to_be_bytes(),
        &frag.to_be_bytes(),
        &[64, proto, 0, 0],
        &src,
        &dst,
        options,
    ]);
    let sum = !ones_complement(&h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    assert!(checksum_ok(&h));
    cat(&[&h, payload])
}

fn ones_complement(h: &[u8]) -> u16 {
    let mut s: u32 = h
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while s > 0xFFFF {
        s = (s & 0xFFFF) + (s >> 16);
    }
    s as u16
}

fn ipv6(src: [u8; 16], dst: [u8; 16], nh: u8, payload: &[u8]) -> Vec<u8> {
    cat(&[
        &[0x60, 0, 0, 0],
        &(payload.len() as u16).to_be_bytes(),
        &[nh, 64],
        &src,
        &dst,
        payload,
    ])
}

fn udp(sport: u16, dport: u16, body: &[u8]) -> Vec<u8> {
    cat(&[
        &sport.to_be_bytes(),
        &dport.to_be_bytes(),
        &(8 + body.len() as u16).to_be_bytes(),
        &[0, 0],
        body,
    ])
}

fn tcp(sport: u16, dport: u16) -> Vec<u8> {
    let mut t = cat(&[&sport.to_be_bytes(), &dport.to_be_bytes(), &[0; 16]]);
    t[12] = 0x50;
    t
}

fn icmp_echo() -> Vec<u8> {
    vec![8, 0, 0, 0, 0, 1, 0, 1]
}

/// IPv6 hop-by-hop options (8 bytes, PadN) followed by `next`.
fn hop_by_hop(next: u8) -> Vec<u8> {
    vec![next, 0, 1, 4, 0, 0, 0, 0]
}

/// IPv6 destination options (8 bytes, PadN) followed by `next`.
fn dest_opts(next: u8) -> Vec<u8> {
    hop_by_hop(next)
}

fn frag6_header(next: u8, offset: u16, more: bool, id: u32) -> Vec<u8> {
    cat(&[
        &[next, 0],
        &(offset | u16::from(more)).to_be_bytes(),
        &id.to_be_bytes(),
    ])
}

/// A 3000-byte UDP datagram.
fn big_udp(sport: u16, dport: u16) -> Vec<u8> {
    let body: Vec<u8> = (0..2992u32).map(|i| i as u8).collect();
    udp(sport, dport, &body)
}

/// `datagram` (the IP payload) cut into IPv4 fragments of `size` data bytes,
/// first to last.
fn frags4(src: [u8; 4], dst: [u8; 4], proto: u8, id: u16, datagram: &[u8]) -> Vec<Vec<u8>> {
    let size = 1480;
    datagram
        .chunks(size)
        .enumerate()
        .map(|(i, chunk)| {
            let off = (i * size) as u16;
            let more = off as usize + chunk.len() < datagram.len();
            let field = (off / 8) | if more { 0x2000 } else { 0 };
            ipv4(src, dst, proto, id, field, chunk)
        })
        .collect()
}

/// IPv6 fragments of `datagram` (the fragmentable part, starting with a
/// header of type `nh`), each with `before` (unfragmentable extension
/// headers, whose first type is `first`) ahead of the fragment header.
fn frags6(
    src: [u8; 16],
    dst: [u8; 16],
    nh: u8,
    id: u32,
    datagram: &[u8],
    unfrag: Option<(u8, Vec<u8>)>,
) -> Vec<Vec<u8>> {
    let size = 1448;
    datagram
        .chunks(size)
        .enumerate()
        .map(|(i, chunk)| {
            let off = (i * size) as u16;
            let more = off as usize + chunk.len() < datagram.len();
            let fh = frag6_header(nh, off, more, id);
            match &unfrag {
                Some((first, before)) => ipv6(src, dst, *first, &cat(&[before, &fh, chunk])),
                None => ipv6(src, dst, 44, &cat(&[&fh, chunk])),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Link layers

fn ethertype_of(ip: &[u8]) -> u16 {
    if ip[0] >> 4 == 4 {
        0x0800
    } else {
        0x86DD
    }
}

fn ppp_of(ip: &[u8]) -> [u8; 2] {
    if ip[0] >> 4 == 4 {
        [0x00, 0x21]
    } else {
        [0x00, 0x57]
    }
}

fn eth(ty: u16, payload: &[u8]) -> Vec<u8> {
    cat(&[
        &[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2],
        &ty.to_be_bytes(),
        payload,
    ])
}

fn mpls_label(label: u32, bottom: bool) -> [u8; 4] {
    ((label << 12) | (u32::from(bottom) << 8) | 64).to_be_bytes()
}

fn pppoe_session(ip: &[u8]) -> Vec<u8> {
    cat(&[
        &[0x11, 0x00, 0x12, 0x34],
        &(ip.len() as u16 + 2).to_be_bytes(),
        &ppp_of(ip),
        ip,
    ])
}

fn nflog(ip: &[u8], little: bool) -> Vec<u8> {
    let family = if ip[0] >> 4 == 4 { 2 } else { 10 };
    let tlv = |ty: u16, value: &[u8]| {
        let len = 4 + value.len() as u16;
        let (l, t) = if little {
            (len.to_le_bytes(), ty.to_le_bytes())
        } else {
            (len.to_be_bytes(), ty.to_be_bytes())
        };
        let mut v = cat(&[&l, &t, value]);
        while !v.len().is_multiple_of(4) {
            v.push(0);
        }
        v
    };
    cat(&[
        &[family, 0, 0, 0],
        &tlv(1, &[0x08, 0x00, 3, 0]),
        &tlv(10, b"prefix\0"),
        &tlv(9, ip),
    ])
}

/// The IP packet `ip` in every supported link layer: (name, DLT, frame).
fn wraps(ip: &[u8]) -> Vec<(&'static str, i32, Vec<u8>)> {
    let et = ethertype_of(ip).to_be_bytes();
    let v4 = ip[0] >> 4 == 4;
    let af: &[u32] = if v4 { &[2] } else { &[10, 24, 28, 30] };
    let mut w = vec![
        ("ethernet", DLT_EN10MB, eth(ethertype_of(ip), ip)),
        (
            "vlan",
            DLT_EN10MB,
            eth(0x8100, &cat(&[&[0x00, 0x0A], &et, ip])),
        ),
        (
            "qinq",
            DLT_EN10MB,
            eth(
                0x88A8,
                &cat(&[&[0x00, 0x64], &[0x81, 0x00, 0x00, 0x0A], &et, ip]),
            ),
        ),
        (
            "vlan 0x9100",
            DLT_EN10MB,
            eth(0x9100, &cat(&[&[0x00, 0x64], &et, ip])),
        ),
        (
            "mpls, one label",
            DLT_EN10MB,
            eth(0x8847, &cat(&[&mpls_label(16, true), ip])),
        ),
        (
            "mpls, two labels",
            DLT_EN10MB,
            eth(
                0x8847,
                &cat(&[&mpls_label(16, false), &mpls_label(17, true), ip]),
            ),
        ),
        (
            "mpls multicast in a vlan",
            DLT_EN10MB,
            eth(
                0x8100,
                &cat(&[&[0x00, 0x0A, 0x88, 0x48], &mpls_label(20, true), ip]),
            ),
        ),
        ("pppoe", DLT_EN10MB, eth(0x8864, &pppoe_session(ip))),
        (
            "pppoe in a vlan",
            DLT_EN10MB,
            eth(
                0x8100,
                &cat(&[&[0x00, 0x0A, 0x88, 0x64], &pppoe_session(ip)]),
            ),
        ),
        (
            "linux sll",
            DLT_LINUX_SLL,
            cat(&[&[0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0], &et, ip]),
        ),
        (
            "linux sll2",
            DLT_LINUX_SLL2,
            cat(&[
                &et,
                &[0, 0, 0, 0, 0, 3, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0],
                ip,
            ]),
        ),
        ("raw (DLT_RAW)", DLT_RAW, ip.to_vec()),
        ("raw (LINKTYPE_RAW)", LINKTYPE_RAW, ip.to_vec()),
        (
            "raw ip version",
            if v4 { DLT_IPV4 } else { DLT_IPV6 },
            ip.to_vec(),
        ),
        (
            "ppp in hdlc framing",
            DLT_PPP,
            cat(&[&[0xFF, 0x03], &ppp_of(ip), ip]),
        ),
        ("ppp", DLT_PPP, cat(&[&ppp_of(ip), ip])),
        (
            "ppp, compressed protocol",
            DLT_PPP,
            cat(&[&ppp_of(ip)[1..], ip]),
        ),
        (
            "ppp serial",
            DLT_PPP_SERIAL,
            cat(&[&[0xFF, 0x03], &ppp_of(ip), ip]),
        ),
        ("cisco hdlc", DLT_C_HDLC, cat(&[&[0x0F, 0x00], &et, ip])),
        ("ppp over ethernet", DLT_PPP_ETHER, pppoe_session(ip)),
        ("nflog", DLT_NFLOG, nflog(ip, true)),
        ("nflog, big endian", DLT_NFLOG, nflog(ip, false)),
    ];
    for &f in af {
        w.push((
            "null, little endian",
            DLT_NULL,
            cat(&[&f.to_le_bytes(), ip]),
        ));
        w.push(("null, big endian", DLT_NULL, cat(&[&f.to_be_bytes(), ip])));
        w.push(("loop", DLT_LOOP, cat(&[&f.to_be_bytes(), ip])));
    }
    w
}

fn share(by: ShareBy, n: u32, ip: &[u8]) -> Verdict {
    Sharer::new(by, n).share_of(ip, DLT_RAW, 0)
}

/// Sample IP packets of several kinds.
fn samples() -> Vec<Vec<u8>> {
    vec![
        ipv4(A4, B4, 6, 1, 0, &tcp(40000, 443)),
        ipv4(B4, A4, 17, 2, 0x4000, &udp(53, 5353, b"answer")),
        ipv4(A4, B4, 1, 3, 0, &icmp_echo()),
        ipv4_opts(A4, B4, 6, 4, 0, &[1, 1, 1, 0], &tcp(1, 2)),
        ipv6(a6(), b6(), 6, &tcp(40000, 443)),
        ipv6(b6(), a6(), 17, &udp(53, 5353, b"answer")),
        ipv6(a6(), b6(), 58, &icmp_echo()),
        ipv6(
            a6(),
            b6(),
            0,
            &cat(&[&hop_by_hop(60), &dest_opts(6), &tcp(7, 8)]),
        ),
    ]
}

// ---------------------------------------------------------------------------
// Tests

#[test]
fn both_directions_share_a_share() {
    for by in MODES {
        for n in [2, 3, 5, 16, MANY] {
            for i in 0..200u32 {
                let (sp, dp) = (1024 + i as u16, 80 + (i % 7) as u16);
                let a = [10, 0, (i >> 8) as u8, i as u8];
                let b = [172, 16, 0, (i % 5) as u8];
                let fwd = ipv4(a, b, 6, 0, 0, &tcp(sp, dp));
                let rev = ipv4(b, a, 6, 0, 0, &tcp(dp, sp));
                assert_eq!(share(by, n, &fwd), share(by, n, &rev), "{by:?} {n} v4 {i}");
                let a = v6(0x2001_0db8 << 96 | u128::from(i));
                let b = v6(0xfe80 << 112 | u128::from(i % 3));
                let fwd = ipv6(a, b, 17, &udp(sp, dp, b"x"));
                let rev = ipv6(b, a, 17, &udp(dp, sp, b"y"));
                assert_eq!(share(by, n, &fwd), share(by, n, &rev), "{by:?} {n} v6 {i}");
                let fwd = ipv4(a4(i), a4(i + 1), 1, 0, 0, &icmp_echo());
                let rev = ipv4(a4(i + 1), a4(i), 1, 0, 0, &icmp_echo());
                assert_eq!(
                    share(by, n, &fwd),
                    share(by, n, &rev),
                    "{by:?} {n} icmp {i}"
                );
            }
            // Both endpoints on one host.
            let fwd = ipv4(A4, A4, 6, 0, 0, &tcp(1000, 2000));
            let rev = ipv4(A4, A4, 6, 0, 0, &tcp(2000, 1000));
            assert_eq!(share(by, n, &fwd), share(by, n, &rev));
        }
    }
}

fn a4(i: u32) -> [u8; 4] {
    (0x0A00_0000 | i).to_be_bytes()
}

#[test]
fn every_link_type_gives_the_share_of_its_ip_packet() {
    for ip in samples() {
        for by in MODES {
            let raw = share(by, MANY, &ip);
            assert!(matches!(raw, Verdict::Share(_)));
            for (name, dlt, frame) in wraps(&ip) {
                let got = Sharer::new(by, MANY).share_of(&frame, dlt, 0);
                assert_eq!(got, raw, "{name} (DLT {dlt}), {by:?}");
            }
        }
    }
}

#[test]
fn address_pair_keeps_fragments_with_their_flow() {
    let flow = share(
        ShareBy::AddressPair,
        MANY,
        &ipv4(A4, B4, 17, 9, 0, &udp(5000, 53, b"q")),
    );
    let frags = frags4(A4, B4, 17, 77, &big_udp(5000, 53));
    assert_eq!(frags.len(), 3);
    let flow6 = share(
        ShareBy::AddressPair,
        MANY,
        &ipv6(a6(), b6(), 17, &udp(5000, 53, b"q")),
    );
    let frags6 = frags6(a6(), b6(), 17, 0x1234_5678, &big_udp(5000, 53), None);
    assert_eq!(frags6.len(), 3);
    for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
        let mut s = Sharer::new(ShareBy::AddressPair, MANY);
        for i in order {
            assert_eq!(s.share_of(&frags[i], DLT_RAW, 0), flow, "v4 {order:?}");
            assert_eq!(s.share_of(&frags6[i], DLT_RAW, 0), flow6, "v6 {order:?}");
        }
    }
}

/// The share of each fragment, fed in `order`, through one sharer.
fn feed(s: &mut Sharer, frags: &[Vec<u8>], order: &[usize], ts: i64) -> Vec<Verdict> {
    order
        .iter()
        .map(|&i| s.share_of(&frags[i], DLT_RAW, ts))
        .collect()
}

#[test]
fn five_tuple_keeps_ipv4_fragments_together() {
    let by = ShareBy::FiveTuple;
    let flow = share(by, MANY, &ipv4(A4, B4, 17, 9, 0, &udp(5000, 53, b"q")));
    let other = share(by, MANY, &ipv4(A4, B4, 17, 9, 0, &udp(5001, 53, b"q")));
    assert_ne!(flow, other);
    let frags = frags4(A4, B4, 17, 77, &big_udp(5000, 53));
    let mut s = Sharer::new(by, MANY);
    // In order: with the flow's unfragmented packets.
    assert_eq!(feed(&mut s, &frags, &[0, 1, 2], 0), vec![flow; 3]);
    assert!(
        s.groups.map.is_empty(),
        "a complete datagram leaves no state"
    );
    // Last first, or a middle one first: together, by the address pair and
    // protocol.
    let fallback = Verdict::Share(scale(
        flow_hash(false, (0xC000_0201, 0), (0xC633_6402, 0), 17),
        MANY,
    ));
    assert_ne!(fallback, flow);
    for order in [[2, 1, 0], [1, 0, 2], [2, 0, 1]] {
        let mut s = Sharer::new(by, MANY);
        assert_eq!(
            feed(&mut s, &frags, &order, 0),
            vec![fallback; 3],
            "{order:?}"
        );
        assert!(s.groups.map.is_empty());
    }
}

#[test]
fn five_tuple_keeps_ipv6_fragments_together() {
    let by = ShareBy::FiveTuple;
    let flow = share(by, MANY, &ipv6(a6(), b6(), 17, &udp(5000, 53, b"q")));
    for unfrag in [None, Some((0, hop_by_hop(44)))] {
        let frags = frags6(
            a6(),
            b6(),
            17,
            0xDEAD_BEEF,
            &big_udp(5000, 53),
            unfrag.clone(),
        );
        let mut s = Sharer::new(by, MANY);
        assert_eq!(
            feed(&mut s, &frags, &[0, 1, 2], 0),
            vec![flow; 3],
            "{unfrag:?}"
        );
        assert!(s.groups.map.is_empty());
        let mut s = Sharer::new(by, MANY);
        let got = feed(&mut s, &frags, &[2, 1, 0], 0);
        assert!(got.iter().all(|&v| v == got[0]), "{got:?}");
        assert_ne!(got[0], flow);
        assert!(s.groups.map.is_empty());
    }
    // Destination options between the fragment header and UDP: the ports
    // are still found in the first fragment.
    let datagram = cat(&[&dest_opts(17), &big_udp(5000, 53)]);
    let frags = frags6(a6(), b6(), 60, 5, &datagram, None);
    let mut s = Sharer::new(by, MANY);
    assert_eq!(feed(&mut s, &frags, &[0, 1, 2], 0), vec![flow; 3]);
}

#[test]
fn an_id_reused_after_a_complete_datagram_starts_a_new_group() {
    let by = ShareBy::FiveTuple;
    let flow_a = share(by, MANY, &ipv4(A4, B4, 17, 0, 0, &udp(1000, 53, b"")));
    let flow_b = share(by, MANY, &ipv4(A4, B4, 17, 0, 0, &udp(2000, 53, b"")));
    assert_ne!(flow_a, flow_b);
    let d1 = frags4(A4, B4, 17, 7, &big_udp(1000, 53));
    let d2 = frags4(A4, B4, 17, 7, &big_udp(2000, 53));
    let mut s = Sharer::new(by, MANY);
    assert_eq!(feed(&mut s, &d1, &[0, 1, 2], 0), vec![flow_a; 3]);
    assert_eq!(feed(&mut s, &d2, &[0, 1, 2], 1), vec![flow_b; 3]);
    // Another protocol with the same ID is Zeek's same group, too.
    let t = frags4(A4, B4, 6, 8, &cat(&[&tcp(1, 2), &[0; 2980]]));
    let u = frags4(A4, B4, 17, 8, &big_udp(2000, 53));
    let mut s = Sharer::new(by, MANY);
    let first = s.share_of(&t[0], DLT_RAW, 0);
    assert_eq!(s.share_of(&u[1], DLT_RAW, 0), first);
}

#[test]
fn a_group_ends_where_zeeks_reassembly_ends() {
    // Datagram 1 loses its middle fragment: its group stays open, and the
    // next datagram with the ID joins it until the data is contiguous (as it
    // joins Zeek's reassembler); the fragment after that starts anew.
    let by = ShareBy::FiveTuple;
    let d1 = frags4(A4, B4, 17, 7, &big_udp(1000, 53));
    let d2 = frags4(A4, B4, 17, 7, &big_udp(2000, 53));
    let flow_a = share(by, MANY, &ipv4(A4, B4, 17, 0, 0, &udp(1000, 53, b"")));
    let mut s = Sharer::new(by, MANY);
    assert_eq!(feed(&mut s, &d1, &[0, 2], 0), vec![flow_a; 2]);
    assert_eq!(s.groups.map.len(), 1);
    assert_eq!(feed(&mut s, &d2, &[0, 1], 0), vec![flow_a; 2]);
    assert!(s.groups.map.is_empty());
    s.share_of(&d2[2], DLT_RAW, 0);
    assert_eq!(s.groups.map.len(), 1);
}

#[test]
fn idle_groups_are_forgotten_and_the_table_is_bounded() {
    let by = ShareBy::FiveTuple;
    let frags = frags4(A4, B4, 17, 77, &big_udp(5000, 53));
    let flow = share(by, MANY, &ipv4(A4, B4, 17, 9, 0, &udp(5000, 53, b"q")));
    let mut s = Sharer::new(by, MANY);
    assert_eq!(feed(&mut s, &frags, &[0], 1000), vec![flow]);
    assert_eq!(
        feed(&mut s, &frags, &[1], 1000 + GROUP_IDLE_SECS),
        vec![flow]
    );
    let late = feed(&mut s, &frags, &[2], 1000 + 2 * GROUP_IDLE_SECS + 1);
    assert_ne!(late, vec![flow], "an idle group is forgotten");

    let mut s = Sharer::new(by, 4);
    for i in 0..3 * GROUPS_MAX as u32 {
        let first = &frags4(a4(i), B4, 17, i as u16, &big_udp(5000, 53))[0];
        s.share_of(first, DLT_RAW, 0);
        assert!(s.groups.map.len() <= GROUPS_MAX);
        assert!(s.groups.order.len() <= 2 * GROUPS_MAX);
    }
    assert_eq!(s.groups.map.len(), GROUPS_MAX);
    // The newest are kept.
    let last = 3 * GROUPS_MAX as u32 - 1;
    assert!(s.groups.map.contains_key(&Key {
        v6: false,
        src: u128::from(u32::from_be_bytes(a4(last))),
        dst: u128::from(u32::from_be_bytes(B4)),
        id: last & 0xFFFF,
    }));
}

#[test]
fn fragments_zeek_would_not_reassemble_leave_the_table_alone() {
    let by = ShareBy::FiveTuple;
    let frags = frags4(A4, B4, 17, 77, &big_udp(5000, 53));
    let flow = share(by, MANY, &ipv4(A4, B4, 17, 9, 0, &udp(5000, 53, b"q")));
    let mut s = Sharer::new(by, MANY);
    // Cut by the snap length: goes by its own ports, not remembered.
    assert_eq!(
        s.share_of(&frags[0][..96], DLT_RAW, 0),
        Verdict::Share(flow.share())
    );
    assert!(s.groups.map.is_empty());
    // A bad header checksum: Zeek drops it.
    let mut bad = frags[0].clone();
    bad[10] ^= 0xFF;
    assert_eq!(s.share_of(&bad, DLT_RAW, 0), flow);
    assert!(s.groups.map.is_empty());
    // The datagram itself is still placed whole.
    assert_eq!(feed(&mut s, &frags, &[0, 1, 2], 0), vec![flow; 3]);
}

#[test]
fn an_ipv6_atomic_fragment_goes_with_its_flow() {
    let by = ShareBy::FiveTuple;
    let flow = share(by, MANY, &ipv6(a6(), b6(), 6, &tcp(1, 2)));
    let atomic = ipv6(
        a6(),
        b6(),
        44,
        &cat(&[&frag6_header(6, 0, false, 9), &tcp(1, 2)]),
    );
    let mut s = Sharer::new(by, MANY);
    assert_eq!(s.share_of(&atomic, DLT_RAW, 0), flow);
    assert!(s.groups.map.is_empty());
}

#[test]
fn five_tuple_reads_ports_behind_options_and_extension_headers() {
    let by = ShareBy::FiveTuple;
    let plain = share(by, MANY, &ipv4(A4, B4, 6, 1, 0, &tcp(3000, 22)));
    let opts = ipv4_opts(
        A4,
        B4,
        6,
        1,
        0,
        &[0x94, 4, 0, 0, 1, 0, 0, 0],
        &tcp(3000, 22),
    );
    assert_eq!(share(by, MANY, &opts), plain);
    let plain = share(by, MANY, &ipv6(a6(), b6(), 6, &tcp(3000, 22)));
    let ext = ipv6(
        a6(),
        b6(),
        0,
        &cat(&[&hop_by_hop(60), &dest_opts(6), &tcp(3000, 22)]),
    );
    assert_eq!(share(by, MANY, &ext), plain);
    // A routing header without segments left changes nothing either.
    let rh = cat(&[&[6, 2, 0, 0, 0, 0, 0, 0], &[0; 16]]);
    assert_eq!(
        share(
            by,
            MANY,
            &ipv6(a6(), b6(), 43, &cat(&[&rh, &tcp(3000, 22)]))
        ),
        plain
    );
}

#[test]
fn five_tuple_spreads_the_flows_of_one_host_pair() {
    let mut seen = [0; 4];
    for p in 0..1000 {
        let ip = ipv4(A4, B4, 6, 0, 0, &tcp(10_000 + p, 443));
        seen[share(ShareBy::FiveTuple, 4, &ip).share() as usize] += 1;
        assert_eq!(
            share(ShareBy::AddressPair, 4, &ip),
            share(
                ShareBy::AddressPair,
                4,
                &ipv4(A4, B4, 1, 0, 0, &icmp_echo())
            )
        );
    }
    assert!(seen.iter().all(|&c| c > 150), "{seen:?}");
}

#[test]
fn a_type_0_routing_header_counts_its_final_destination() {
    let r = v6(0x2001_0db8_0000_0000_0000_0000_0000_0099);
    for by in MODES {
        for rh_left in [1, 0] {
            let rh = cat(&[&[6, 2, 0, rh_left, 0, 0, 0, 0], &b6()]);
            let routed = ipv6(a6(), r, 43, &cat(&[&rh, &tcp(1, 2)]));
            let direct = ipv6(a6(), if rh_left > 0 { b6() } else { r }, 6, &tcp(1, 2));
            let reply = ipv6(if rh_left > 0 { b6() } else { r }, a6(), 6, &tcp(2, 1));
            assert_eq!(
                share(by, MANY, &routed),
                share(by, MANY, &direct),
                "{by:?} {rh_left}"
            );
            assert_eq!(
                share(by, MANY, &routed),
                share(by, MANY, &reply),
                "{by:?} {rh_left}"
            );
        }
    }
}

#[test]
fn what_is_not_ip_goes_to_share_0() {
    let arp = eth(
        0x0806,
        &[0, 1, 8, 0, 6, 4, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    );
    let ip = ipv4(A4, B4, 6, 0, 0, &tcp(1, 2));
    let not_ip = Verdict::NotIp {
        unhashable_link_type: None,
    };
    for by in MODES {
        let mut s = Sharer::new(by, 3);
        assert_eq!(s.share_of(&arp, DLT_EN10MB, 0), not_ip);
        assert_eq!(
            s.share_of(&ip, 105, 0),
            Verdict::NotIp {
                unhashable_link_type: Some(105)
            }
        );
        assert_eq!(
            s.share_of(&ip, 147, 0),
            Verdict::NotIp {
                unhashable_link_type: Some(147)
            }
        );
        // 802.3 with a length, not an ethertype.
        assert_eq!(s.share_of(&eth(0x0040, &ip), DLT_EN10MB, 0), not_ip);
        // Ethernet over MPLS (a control word, nibble 0).
        let pw = eth(0x8847, &cat(&[&mpls_label(5, true), &[0; 4], &ip]));
        assert_eq!(s.share_of(&pw, DLT_EN10MB, 0), not_ip);
        // IP version 5, and an address family that is not IP.
        let mut v5 = ip.clone();
        v5[0] = 0x55;
        assert_eq!(s.share_of(&v5, DLT_RAW, 0), not_ip);
        assert_eq!(s.share_of(&cat(&[&[7, 0, 0, 0], &ip]), DLT_NULL, 0), not_ip);
        assert_eq!(s.share_of(&[], DLT_RAW, 0), not_ip);
        assert!(s.keeps(0, &arp, DLT_EN10MB, 0));
        assert!(!s.keeps(1, &arp, DLT_EN10MB, 0));
        // One share: no parsing at all.
        let mut one = Sharer::new(by, 1);
        assert_eq!(one.share_of(&ip, 105, 0), Verdict::Share(0));
        assert_eq!(one.share_of(&arp, DLT_EN10MB, 0), Verdict::Share(0));
        assert_eq!(
            Sharer::new(by, 0).share_of(&ip, DLT_RAW, 0),
            Verdict::Share(0)
        );
    }
}

#[test]
fn exactly_one_share_keeps_each_packet() {
    for by in MODES {
        for ip in samples() {
            for (name, dlt, frame) in wraps(&ip) {
                let keepers = (0..5)
                    .filter(|&i| Sharer::new(by, 5).keeps(i, &frame, dlt, 0))
                    .count();
                assert_eq!(keepers, 1, "{name} {by:?}");
            }
        }
    }
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
fn truncated_and_garbled_packets_never_panic() {
    let mut packets = samples();
    packets.extend(frags4(A4, B4, 17, 1, &big_udp(1, 2)));
    packets.extend(frags6(
        a6(),
        b6(),
        17,
        1,
        &big_udp(1, 2),
        Some((0, hop_by_hop(44))),
    ));
    let rh = cat(&[&[6, 2, 0, 1, 0, 0, 0, 0], &b6()]);
    packets.push(ipv6(a6(), b6(), 43, &cat(&[&rh, &tcp(1, 2)])));
    let mut frames: Vec<(i32, Vec<u8>)> = Vec::new();
    for ip in &packets {
        frames.extend(wraps(ip).into_iter().map(|(_, dlt, f)| (dlt, f)));
    }
    for by in MODES {
        let mut s = Sharer::new(by, 3);
        for (dlt, frame) in &frames {
            for len in 0..=frame.len() {
                let v = s.share_of(&frame[..len], *dlt, 0);
                assert!(v.share() < 3);
            }
        }
    }
    // A prefix that stops before the addresses are complete is not IP.
    let ip = ipv4(A4, B4, 6, 0, 0, &tcp(1, 2));
    for len in 0..20 {
        assert_eq!(share(ShareBy::AddressPair, 3, &ip[..len]).share(), 0);
    }
    // Random bytes, every link type, odd lengths fields and all.
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for by in MODES {
        let mut s = Sharer::new(by, 7);
        for i in 0..20_000 {
            let len = (rng.next() % 200) as usize;
            let mut d: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let dlt = [0, 1, 9, 12, 50, 51, 101, 104, 108, 113, 228, 229, 239, 276][i % 14];
            // Steer some of them past the link layer.
            if i % 3 == 0 && !d.is_empty() {
                d[0] = if i % 2 == 0 { 0x45 } else { 0x60 };
            }
            assert!(s.share_of(&d, dlt, i as i64).share() < 7);
        }
    }
}

#[test]
fn shares_are_balanced() {
    for by in MODES {
        for n in [3u32, 4, 7] {
            let mut counts = vec![0u32; n as usize];
            let mut rng = Rng(12345);
            let flows = 10_000;
            for i in 0..flows {
                let r = rng.next();
                let ip = if i % 4 == 0 {
                    let a = v6(0x2001_0db8 << 96 | u128::from(r >> 16));
                    let b = v6(0x2600 << 112 | u128::from(rng.next() >> 40));
                    ipv6(a, b, 6, &tcp(r as u16, 443))
                } else {
                    let a = [10, (r >> 8) as u8, (r >> 16) as u8, (r >> 24) as u8];
                    let b = [93, 184, (r >> 32) as u8, (r >> 40) as u8];
                    ipv4(a, b, 17, 0, 0, &udp(r as u16 | 1024, 53, b""))
                };
                counts[share(by, n, &ip).share() as usize] += 1;
            }
            let low = flows as f64 / f64::from(n) * 0.85;
            let high = flows as f64 / f64::from(n) * 1.15;
            for &c in &counts {
                assert!(
                    (low..=high).contains(&f64::from(c)),
                    "{by:?} {n}: {counts:?}"
                );
            }
            if n == 3 {
                for &c in &counts {
                    assert!((2800..=3900).contains(&c), "{by:?}: {counts:?}");
                }
            }
        }
    }
}

#[test]
fn shares_are_the_same_in_every_process() {
    // Pinned: workers on other hosts, builds and runs must agree, so the
    // hash must never change by accident.
    let v4 = ipv4(A4, B4, 6, 0, 0, &tcp(40000, 443));
    let v6 = ipv6(a6(), b6(), 17, &udp(5353, 53, b""));
    let h = |ip: &[u8], by| {
        let p = if ip[0] >> 4 == 4 {
            parse_v4(ip)
        } else {
            parse_v6(ip)
        }
        .unwrap();
        match by {
            ShareBy::AddressPair => pair_hash(ip).unwrap(),
            ShareBy::FiveTuple => p.hash(p.ports),
        }
    };
    let got: Vec<(u64, Vec<u32>)> = [
        (&v4, ShareBy::AddressPair),
        (&v4, ShareBy::FiveTuple),
        (&v6, ShareBy::AddressPair),
        (&v6, ShareBy::FiveTuple),
    ]
    .into_iter()
    .map(|(ip, by)| {
        (
            h(ip, by),
            [2, 3, 4].map(|n| share(by, n, ip).share()).to_vec(),
        )
    })
    .collect();
    let want: Vec<(u64, Vec<u32>)> = vec![
        (0x15c3_d9dd_e1f9_5ac1, vec![0, 0, 0]),
        (0x51da_22d5_34f4_d9b4, vec![0, 0, 1]),
        (0xe83a_3239_be18_6225, vec![1, 2, 3]),
        (0x6ca4_c058_94fe_b5c5, vec![0, 1, 1]),
    ];
    assert_eq!(got, want);
}

#[test]
fn ethernet_padding_is_not_read_as_ports() {
    // A TCP header cut to 2 bytes by the IP length, then padding.
    let mut ip = ipv4(A4, B4, 6, 0, 0, &[0x12, 0x34]);
    let pair_and_protocol = Verdict::Share(scale(
        flow_hash(false, (0xC000_0201, 0), (0xC633_6402, 0), 6),
        MANY,
    ));
    for pad in [[0u8; 24], [0xAB; 24]] {
        ip.truncate(22);
        ip.extend_from_slice(&pad);
        let frame = eth(0x0800, &ip);
        let got = Sharer::new(ShareBy::FiveTuple, MANY).share_of(&frame, DLT_EN10MB, 0);
        assert_eq!(got, pair_and_protocol);
    }
}

/// A group fed `pieces` (offset, len, more) completes exactly when Zeek's
/// reassembler would: never before every byte up to the end was seen, and
/// (with at most `RUNS` holes at a time) as soon as it was.
#[test]
fn a_group_completes_exactly_when_its_data_is_contiguous() {
    let mut rng = Rng(7);
    for round in 0..2000 {
        let count = 2 + (rng.next() % 14) as usize;
        let size = 8 * (1 + rng.next() % 4) as u32;
        let mut pieces: Vec<(u32, u32, bool)> = (0..count)
            .map(|i| (i as u32 * size, size, i + 1 < count))
            .collect();
        // Some duplicates, and an overlapping piece.
        for _ in 0..rng.next() % 3 {
            let i = (rng.next() % count as u64) as usize;
            pieces.push(pieces[i]);
        }
        if round % 5 == 0 {
            pieces.push((size / 2, size, true));
        }
        for i in (1..pieces.len()).rev() {
            pieces.swap(i, (rng.next() % (i as u64 + 1)) as usize);
        }
        let mut g = Group {
            share: 0,
            seq: 0,
            last_ts: 0,
            size: 0,
            runs: [(0, 0); RUNS],
            n_runs: 0,
        };
        let mut seen = vec![false; count];
        let mut max_runs = 0;
        for (k, &(offset, len, more)) in pieces.iter().enumerate() {
            let done = g.add(&Frag {
                id: 0,
                offset,
                len,
                more,
                counts: true,
            });
            if offset % size == 0 {
                seen[(offset / size) as usize] = true;
            }
            max_runs = max_runs.max(g.n_runs);
            let all = seen.iter().all(|&s| s);
            assert!(
                !done || all,
                "round {round}: complete before all of {pieces:?}"
            );
            if all && usize::from(max_runs) < RUNS {
                assert!(
                    done,
                    "round {round}: not complete after {:?}",
                    &pieces[..=k]
                );
            }
            if done {
                break;
            }
        }
    }
}

#[test]
fn runs_overflow_by_dropping_the_highest() {
    let mut g = Group {
        share: 0,
        seq: 0,
        last_ts: 0,
        size: 0,
        runs: [(0, 0); RUNS],
        n_runs: 0,
    };
    for i in (0..RUNS as u32 + 2).rev() {
        g.insert(i * 16, i * 16 + 8);
    }
    let want: Vec<(u32, u32)> = (0..RUNS as u32).map(|i| (i * 16, i * 16 + 8)).collect();
    assert_eq!(g.runs[..usize::from(g.n_runs)], want[..]);
    g.insert(8, 16 * 3);
    assert_eq!(g.runs[..3], [(0, 16 * 3 + 8), (64, 72), (80, 88)]);
}

#[test]
fn inconsistent_and_empty_fragments_complete_as_in_zeek() {
    let run = |pieces: &[(u32, u32, bool)]| -> Vec<bool> {
        let mut g = Group {
            share: 0,
            seq: 0,
            last_ts: 0,
            size: 0,
            runs: [(0, 0); RUNS],
            n_runs: 0,
        };
        pieces
            .iter()
            .map(|&(offset, len, more)| {
                g.add(&Frag {
                    id: 0,
                    offset,
                    len,
                    more,
                    counts: true,
                })
            })
            .collect()
    };
    // A fragment beyond the last one's end extends the size (Zeek's
    // "fragment_size_inconsistency"), so the hole before it must be filled.
    assert_eq!(
        run(&[(16, 8, false), (32, 8, true), (0, 16, true), (24, 8, true)]),
        [false, false, false, true]
    );
    // An empty last fragment sets the size but inserts no data, so Zeek
    // checks for completion only at the next fragment with data.
    assert_eq!(
        run(&[(0, 16, true), (16, 0, false), (0, 8, true)]),
        [false, false, true]
    );
}
