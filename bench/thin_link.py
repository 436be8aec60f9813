#!/usr/bin/env python3
"""bench/thin_link.py [--repeat N] [TRACE ...]: compression for thin links
(tcp+zstd://) measured where it matters, through a shaped link.

Needs root and `ip netns`. Makes two network namespaces of its own joined by
a veth pair (10.77.0.1 sender, 10.77.0.2 receiver) and shapes the sender's
side with `tc qdisc add dev X root tbf rate 10mbit burst 32kbit latency
400ms`. Per trace (real ones from ../shared/traces; default: the five
largest of different kinds) and per mode (plain tcp://, compressed
tcp+zstd://), N runs (default 3; the median is reported):

- the receiver, in its namespace: bench/consume.rs (the core's reader, as
  the Zeek shim reads) listening with tcp-listen:// or tcp+zstd-listen://,
  ending once it has taken every packet of the trace;
- the sender, in the other: `pcapovertcp-serve --connect [tcp+zstd://]
  10.77.0.2:PORT TRACE`, at full speed (no --rate), ending once the
  receiver has all of it.

Reported: packets per second delivered (the trace's packets / from the
sender's start to the receiver's last packet), the bytes the sender's veth
sent (every header included) and their ratio to the trace's size, and the
CPU seconds (user + system, from wait4) of the sender and the receiver.
Writes bench/results/thin_link.md (and .json). Builds nothing: run
`cargo build --release --bin pcapovertcp-serve --example consume` first.
"""
import argparse
import json
import os
import pathlib
import statistics
import struct
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TRACES = ROOT.parent / "shared" / "traces"
SERVE = ROOT / "target" / "release" / "pcapovertcp-serve"
CONSUME = ROOT / "target" / "release" / "examples" / "consume"
DEFAULT_TRACES = [
    "http/206_example_b.pcap",
    "smb/smb2.pcap",
    "irc-dcc-send.pcapng",
    "ftp/cwd-navigation.pcap",
    "http/bro.org.pcap",
]
TX, RX = f"ptl-tx-{os.getpid()}", f"ptl-rx-{os.getpid()}"
TX_IF, RX_IF = "ptl-tx0", "ptl-rx0"
TX_IP, RX_IP = "10.77.0.1", "10.77.0.2"
SHAPE = ["rate", "10mbit", "burst", "32kbit", "latency", "400ms"]
PORT = 57012


def sh(*args, **kw):
    return subprocess.run(list(args), check=True, **kw)


def netns_up():
    sh("ip", "netns", "add", TX)
    sh("ip", "netns", "add", RX)
    sh("ip", "link", "add", TX_IF, "netns", TX, "type", "veth", "peer", "name", RX_IF, "netns", RX)
    for ns, dev, ip in [(TX, TX_IF, TX_IP), (RX, RX_IF, RX_IP)]:
        sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
        sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "netns", "exec", TX, "tc", "qdisc", "add", "dev", TX_IF, "root", "tbf", *SHAPE)


def netns_down():
    for ns in (TX, RX):
        subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)


def tx_bytes():
    out = subprocess.check_output(["ip", "-n", TX, "-s", "-j", "link", "show", TX_IF], text=True)
    return json.loads(out)[0]["stats64"]["tx"]["bytes"]


def packets_in(path):
    """How many packets a pcap or pcapng file holds (its records; EPBs,
    SPBs and obsolete packet blocks)."""
    data = path.read_bytes()
    if data[:4] == b"\x0a\x0d\x0d\x0a":
        n, at, endian = 0, 0, "<"
        while at + 12 <= len(data):
            btype = struct.unpack_from(endian + "I", data, at)[0]
            if btype == 0x0A0D0D0A:
                endian = "<" if data[at + 8:at + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            length = struct.unpack_from(endian + "I", data, at + 4)[0]
            n += btype in (2, 3, 6)
            at += max(length, 12)
        return n
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    n, at = 0, 24
    while at + 16 <= len(data):
        caplen = struct.unpack_from(endian + "I", data, at + 8)[0]
        at += 16 + caplen
        n += 1
    return n


def listening(port, limit=10):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        out = subprocess.run(["ip", "netns", "exec", RX, "ss", "-Hltn", f"sport = :{port}"],
                             capture_output=True, text=True).stdout
        if out.strip():
            return
        time.sleep(0.02)
    sys.exit(f"thin_link: the receiver is not listening on {port}")


def reap(proc, limit, kill=False):
    """Waits (at most `limit` s) for a child; (its CPU seconds, when it
    ended). Past `limit`: killed with `kill`, else the run fails."""
    deadline = time.monotonic() + limit
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return ru.ru_utime + ru.ru_stime, time.monotonic()
        if time.monotonic() > deadline:
            proc.kill()
            if not kill:
                sys.exit(f"thin_link: {proc.args} did not end within {limit} s")
            kill, deadline = False, time.monotonic() + 5
        time.sleep(0.005)


def one_run(trace, packets, zstd, port):
    listen = ("tcp+zstd-listen" if zstd else "tcp-listen") + f"://{RX_IP}:{port}"
    target = ("tcp+zstd://" if zstd else "") + f"{RX_IP}:{port}"
    consume = subprocess.Popen(["ip", "netns", "exec", RX, str(CONSUME), listen, str(packets)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    listening(port)
    before = tx_bytes()
    started = time.monotonic()
    serve = subprocess.Popen(["ip", "netns", "exec", TX, str(SERVE), "-q", "--connect", target, str(trace)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rx_cpu, done = reap(consume, 300)
    # The receiver closes once it has every packet; the sender, waiting for
    # that close (or told of a reset by it), ends within a few seconds, and
    # is stopped if not: its work was done.
    tx_cpu, _ = reap(serve, 5, kill=True)
    out, err = consume.stdout.read(), consume.stderr.read()
    if consume.returncode != 0 or f"packets={packets} " not in out:
        sys.exit(f"thin_link: consume failed for {trace}: {out}{err}")
    wire = tx_bytes() - before
    elapsed = done - started
    return {"seconds": elapsed, "pps": packets / elapsed, "wire_bytes": wire,
            "tx_cpu_s": tx_cpu, "rx_cpu_s": rx_cpu}


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    return f"{os.cpu_count()} cores, {cpu}; kernel {os.uname().release}"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("traces", nargs="*", default=DEFAULT_TRACES)
    a = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("thin_link: needs root (network namespaces, tc)")
    for binary in (SERVE, CONSUME):
        if not binary.exists():
            sys.exit(f"thin_link: {binary} is missing; run `cargo build --release --bin "
                     "pcapovertcp-serve --example consume` first")
    rows = []
    netns_up()
    try:
        port = PORT
        for name in a.traces:
            trace = TRACES / name
            packets = packets_in(trace)
            row = {"trace": name, "bytes": trace.stat().st_size, "packets": packets}
            for mode, zstd in (("plain", False), ("zstd", True)):
                runs = []
                for _ in range(a.repeat):
                    port += 1
                    runs.append(one_run(trace, packets, zstd, port))
                row[mode] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                row[mode]["runs"] = runs
            rows.append(row)
            z, pl = row["zstd"], row["plain"]
            print(f"{name}: plain {pl['pps']:.0f} pkt/s, zstd {z['pps']:.0f} pkt/s "
                  f"(x{z['pps'] / pl['pps']:.2f}); wire {z['wire_bytes'] / pl['wire_bytes']:.3f} of plain",
                  flush=True)
    finally:
        netns_down()
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "thin_link.json").write_text(json.dumps(
        {"machine": machine(), "date": when, "shape": " ".join(SHAPE), "repeat": a.repeat, "rows": rows},
        indent=1) + "\n")
    lines = [
        "# Compression for thin links (bench/thin_link.py)",
        "",
        f"{machine()}; {when}. A veth pair between two network namespaces, the sender's side shaped "
        f"with `tc qdisc add dev X root tbf {' '.join(SHAPE)}`; `pcapovertcp-serve --connect "
        "[tcp+zstd://]10.77.0.2:PORT TRACE` (full speed, no --rate) into bench/consume.rs "
        "listening (`tcp-listen://` or `tcp+zstd-listen://`), until it has every packet. "
        f"Median of {a.repeat} runs. Wire = bytes the sender's veth sent (every header included); "
        "ratio = wire / the trace's size. CPU = user + system seconds of each process.",
        "",
        "| trace | packets | MB | plain pkt/s | zstd pkt/s | speed-up | plain wire/pcap | zstd wire/pcap "
        "| sender CPU s plain / zstd | receiver CPU s plain / zstd |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        pl, z = r["plain"], r["zstd"]
        lines.append(
            f"| {r['trace']} | {r['packets']} | {r['bytes'] / 1e6:.2f} | {pl['pps']:.0f} | {z['pps']:.0f} "
            f"| x{z['pps'] / pl['pps']:.2f} | {pl['wire_bytes'] / r['bytes']:.3f} | {z['wire_bytes'] / r['bytes']:.3f} "
            f"| {pl['tx_cpu_s']:.3f} / {z['tx_cpu_s']:.3f} | {pl['rx_cpu_s']:.3f} / {z['rx_cpu_s']:.3f} |")
    tot = {m: sum(r[m]["wire_bytes"] for r in rows) for m in ("plain", "zstd")}
    size = sum(r["bytes"] for r in rows)
    lines += ["", f"All traces together: {size / 1e6:.2f} MB of pcap; on the wire {tot['plain'] / 1e6:.2f} MB "
              f"plain, {tot['zstd'] / 1e6:.2f} MB compressed ({tot['zstd'] / tot['plain']:.3f} of plain)."]
    (RESULTS / "thin_link.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
