#!/usr/bin/env python3
"""make-trace.py OUT [MIN_PACKETS]: a pcap of at least MIN_PACKETS (default
1,000,000) packets made by repeating the Ethernet pcaps of ../shared/traces.
The files are laid end to end in time and each repetition is shifted past
the previous one, so Zeek sees one long trace whose clock only moves on."""
import pathlib
import struct
import sys

out = pathlib.Path(sys.argv[1])
want = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
traces = pathlib.Path(__file__).resolve().parent.parent.parent / "shared" / "traces"

laid = []  # (seconds from the start, usec, record bytes after the timestamp)
offset = 0
for path in sorted(traces.rglob("*.pcap")):
    data = path.read_bytes()
    if len(data) < 24 or data[:4] != b"\xd4\xc3\xb2\xa1" or struct.unpack_from("<I", data, 20)[0] != 1:
        continue  # little-endian microsecond Ethernet files only
    pos, first, last = 24, None, 0
    while pos + 16 <= len(data):
        sec, usec, caplen, _ = struct.unpack_from("<IIII", data, pos)
        if pos + 16 + caplen > len(data):
            break
        first = sec if first is None else first
        last = max(last, sec - first)
        laid.append((offset + sec - first, usec, data[pos + 8 : pos + 16 + caplen]))
        pos += 16 + caplen
    offset += last + 1
span = offset + 1

# The loop below repeats the packets until there are enough: with none to
# repeat it would never end.
if not laid:
    if not traces.is_dir():
        why = f"{traces} does not exist"
    else:
        why = f"{traces} holds no little-endian microsecond Ethernet .pcap file with a packet"
    sys.exit(f"make-trace.py: no packets to repeat: {why}")

with out.open("wb") as f:
    f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
    n = rep = 0
    while n < want:
        t0 = 1_700_000_000 + rep * span
        for rel, usec, rest in laid:
            f.write(struct.pack("<II", t0 + rel, usec))
            f.write(rest)
        n += len(laid)
        rep += 1
print(f"{out}: {n} packets ({rep} repetitions of {len(laid)})")
