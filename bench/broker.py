#!/usr/bin/env python3
"""bench/broker.py [--quick] [--packets N] [--clients 1,4,16]: pcapovertcp-serve
as a broker, fanning one live stream out on loopback.

A generated pcap of 1500-byte Ethernet/IPv4/UDP frames (200,000 packets,
~303 MB; 50,000 with --quick) is piped (`cat TRACE |`) into
`pcapovertcp-serve --listen 127.0.0.1:0 --wait-clients N -` and read by N
clients (N = 1, 4, 16), each a Python process reading its socket into a
1 MiB buffer and counting bytes. --wait-clients N: the stream starts once all
N are connected, so each can get all of it. Per client: Gbit/s = its bytes
after its first read past the 24-byte pcap header / (its last read - that
read) (pcap-broker sends the header on accept, long before the records); the table gives their mean and minimum,
the ratio of the mean to the 1-client figure, the aggregate (all bytes / from
the first client's first byte to the last client's last byte) and the
tool's CPU seconds (pcapovertcp-serve: user + system from wait4() when it
exits at the end of its input; pcap-broker, which does not end: utime +
stime from /proc/PID/stat when every client is done) per delivered gigabit. The tool's counters at exit give the
packets it dropped for clients that fell --client-buffer (default 64 MiB)
behind (--slow-client drop).

The same fan-out with fox-it/pcap-broker when a binary is given
(--pcap-broker PATH, or the env PCAP_BROKER; default /tmp/pcap-broker/pcap-broker
if it exists; it is never built from here). pcap-broker runs a capture
command and serves whoever is connected when a packet is read, so its
command writes the pcap header, waits until the N clients are connected (its
log lines), then writes the records (`tail -c +25 TRACE`) and sleeps; the
clients stop at the trace's size (pcap-broker writes the same header size
and record sizes) or after 10 s without data.

The load average (1 min) is noted before each run; above 1.5 the run waits
up to 2 minutes for it to drop, then runs anyway (noted). One run per case.
main() writes bench/results/broker.json and broker.md.
"""
import argparse
import json
import os
import pathlib
import struct
import subprocess
import sys
import tempfile
import time

from benchlib import RESULTS, SERVE, free_port, proc_cpu_s

FRAME = 1500

READER = r"""
import json, socket, sys, time
port, expect = int(sys.argv[1]), int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.settimeout(10)
print("connected", flush=True)
buf = bytearray(1 << 20)
got, first, last, at_first = 0, None, None, 0
try:
    while expect <= 0 or got < expect:
        n = s.recv_into(buf)
        if not n:
            break
        last = time.monotonic()
        got += n
        if first is None and got > 24:
            first, at_first = last, got  # the first records (pcap-broker sends the header on accept)
except socket.timeout:
    pass
print(json.dumps({"bytes": got, "first": first, "last": last, "at_first": at_first}), flush=True)
"""


def make_trace(path, packets):
    """A little-endian microsecond Ethernet pcap of `packets` frames of FRAME
    bytes (IPv4/UDP, 64 source ports), 10 us apart."""
    payload = bytes(i & 0xFF for i in range(FRAME - 42))
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        chunk = []
        for i in range(packets):
            t = 1_700_000_000_000_000 + i * 10
            sport = 10000 + (i % 64)
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, FRAME - 14, i & 0xFFFF, 0, 64, 17, 0,
                             bytes([10, 0, 0, 1]), bytes([10, 0, 1, 1 + i % 64]))
            udp = struct.pack("!HHHH", sport, 5000, FRAME - 34, 0)
            eth = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00"
            chunk.append(struct.pack("<IIII", t // 1_000_000, t % 1_000_000, FRAME, FRAME) + eth + ip + udp + payload)
            if len(chunk) == 4096:
                f.write(b"".join(chunk))
                chunk = []
        f.write(b"".join(chunk))


def load1():
    return float(open("/proc/loadavg").read().split()[0])


def wait_for_load():
    """The 1-minute load before a run; waits up to 2 min while above 1.5."""
    before = load1()
    t0 = time.monotonic()
    while load1() > 1.5 and time.monotonic() - t0 < 120:
        time.sleep(5)
    return {"load_before": before, "load_at_start": load1(), "waited_s": round(time.monotonic() - t0, 1)}


def start_readers(n, port, expect):
    return [subprocess.Popen([sys.executable, "-c", READER, str(port), str(expect)],
                             stdout=subprocess.PIPE, text=True) for _ in range(n)]


def finish_readers(readers, timeout):
    out = []
    for r in readers:
        try:
            text, _ = r.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            r.kill()
            text, _ = r.communicate()
        lines = text.strip().splitlines()
        out.append(json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {"bytes": 0, "first": None, "last": None})
    return out


def summarize(tool, n, size, clients, cpu, extra):
    rates = [(c["bytes"] - c["at_first"]) * 8 / (c["last"] - c["first"]) / 1e9 for c in clients
             if c["first"] is not None and c["last"] > c["first"]]
    delivered = sum(c["bytes"] for c in clients)
    firsts = [c["first"] for c in clients if c["first"] is not None]
    lasts = [c["last"] for c in clients if c["last"] is not None]
    span = max(lasts) - min(firsts) if firsts else 0
    return dict(tool=tool, clients=n, trace_bytes=size,
                per_client_gbps=[round(r, 3) for r in rates],
                mean_gbps=round(sum(rates) / len(rates), 3) if rates else 0,
                min_gbps=round(min(rates), 3) if rates else 0,
                aggregate_gbps=round(delivered * 8 / span / 1e9, 3) if span else 0,
                delivered_bytes=delivered,
                complete_clients=sum(c["bytes"] >= size for c in clients),
                cpu_s=round(cpu, 3),
                cpu_s_per_gbit=round(cpu / (delivered * 8 / 1e9), 4) if delivered else None,
                **extra)


def run_serve(trace, n, work):
    size = trace.stat().st_size
    pf, log = work / f"port-{n}", work / f"serve-{n}.log"
    for p in (pf,):
        p.unlink(missing_ok=True)
    load = wait_for_load()
    cat = subprocess.Popen(["cat", str(trace)], stdout=subprocess.PIPE)
    serve = subprocess.Popen([str(SERVE), "--listen", "127.0.0.1:0", "--port-file", str(pf),
                              "--wait-clients", str(n), "-"],
                             stdin=cat.stdout, stderr=open(log, "w"))
    cat.stdout.close()
    t0 = time.monotonic()
    while not (pf.exists() and pf.read_text().strip()) and time.monotonic() - t0 < 10:
        time.sleep(0.02)
    port = int(pf.read_text().split()[0])
    readers = start_readers(n, port, 0)
    clients = finish_readers(readers, 600)
    # The tool's own CPU time (its input, cat, is not its child).
    t0, ru = time.monotonic(), None
    while ru is None and time.monotonic() - t0 < 60:
        pid, status, usage = os.wait4(serve.pid, os.WNOHANG)
        if pid:
            ru, serve.returncode = usage, os.waitstatus_to_exitcode(status)
        else:
            time.sleep(0.05)
    if ru is None:
        cpu = proc_cpu_s(serve.pid)
        serve.kill()
        serve.wait()
    else:
        cpu = ru.ru_utime + ru.ru_stime
    cat.wait()
    total = [l for l in log.read_text().splitlines() if " counters: total " in l]
    fields = dict(kv.split("=", 1) for kv in total[-1].split(" counters: total ")[1].split()) if total else {}
    extra = dict(load, exit_status=serve.returncode,
                 dropped_packets=int(fields.get("dropped", -1)),
                 input_packets=int(fields.get("input_packets", -1)))
    return summarize("pcapovertcp-serve", n, size, clients, cpu, extra)


def run_pcap_broker(binary, trace, n, work):
    size = trace.stat().st_size
    go, log = work / f"go-{n}", work / f"pcap-broker-{n}.log"
    go.unlink(missing_ok=True)
    load = wait_for_load()
    port = free_port()
    cmd = (f"sh -c 'head -c 24 {trace}; while [ ! -e {go} ]; do sleep 0.01; done; "
           f"tail -c +25 {trace}; exec sleep 600'")
    broker = subprocess.Popen([binary, "-n", "-listen", f"127.0.0.1:{port}", "-cmd", cmd],
                              stderr=open(log, "w"), start_new_session=True)
    t0 = time.monotonic()
    while "listening on" not in log.read_text() and time.monotonic() - t0 < 10:
        time.sleep(0.02)
    readers = start_readers(n, port, size)
    t0 = time.monotonic()
    while log.read_text().count("PCAP-over-IP connection from") < n and time.monotonic() - t0 < 10:
        time.sleep(0.02)
    time.sleep(0.3)  # logged just before the client joins the map
    go.touch()
    clients = finish_readers(readers, 600)
    cpu = proc_cpu_s(broker.pid)
    os.killpg(broker.pid, 15)
    try:
        broker.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(broker.pid, 9)
        broker.wait()
    return summarize("pcap-broker", n, size, clients, cpu, dict(load))


def markdown(res):
    lines = [
        "# Broker fan-out on loopback, 1500-byte packets",
        "",
        f"Trace: {res['packets']} packets of {FRAME} B ({res['trace_bytes'] / 1e6:.0f} MB), piped into the tool; "
        f"N Python socket readers. {res['cpus']} CPUs. Generated by bench/broker.py"
        f"{' --quick' if res['quick'] else ''} on {res['date']}.",
        "",
        "| tool | clients | mean Gbit/s per client | min | vs 1 client | aggregate Gbit/s | "
        "complete clients | dropped pkts | CPU s | CPU s per delivered Gbit | load before/at start |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["runs"]:
        base = next(x for x in res["runs"] if x["tool"] == r["tool"] and x["clients"] == 1)
        ratio = r["mean_gbps"] / base["mean_gbps"] if base["mean_gbps"] else 0
        lines.append(
            f"| {r['tool']} | {r['clients']} | {r['mean_gbps']:.2f} | {r['min_gbps']:.2f} | {ratio:.2f} | "
            f"{r['aggregate_gbps']:.2f} | {r['complete_clients']}/{r['clients']} | {r.get('dropped_packets', '-')} | "
            f"{r['cpu_s']:.2f} | {r['cpu_s_per_gbit']:.4f} | {r['load_before']:.2f}/{r['load_at_start']:.2f} |")
    if res.get("pcap_broker_note"):
        lines += ["", "pcap-broker: " + res["pcap_broker_note"]]
    return "\n".join(lines) + "\n"


def run(quick=False, packets=None, counts=(1, 4, 16), pcap_broker=None):
    packets = packets or (50_000 if quick else 200_000)
    if pcap_broker is None:
        pcap_broker = os.environ.get("PCAP_BROKER") or "/tmp/pcap-broker/pcap-broker"
    have_pb = os.access(pcap_broker, os.X_OK)
    with tempfile.TemporaryDirectory(prefix="broker-bench-") as tmp:
        work = pathlib.Path(tmp)
        trace = work / "frames.pcap"
        make_trace(trace, packets)
        runs = []
        for n in counts:
            runs.append(run_serve(trace, n, work))
            print(json.dumps(runs[-1]), file=sys.stderr)
            if have_pb:
                runs.append(run_pcap_broker(pcap_broker, trace, n, work))
                print(json.dumps(runs[-1]), file=sys.stderr)
        size = trace.stat().st_size
    runs.sort(key=lambda r: (r["tool"] != "pcapovertcp-serve", r["clients"]))
    return dict(quick=quick, packets=packets, frame_bytes=FRAME, trace_bytes=size, cpus=os.cpu_count(),
                date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), runs=runs,
                pcap_broker=pcap_broker if have_pb else None,
                pcap_broker_note=None if have_pb else f"no executable at {pcap_broker}; not measured")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--packets", type=int)
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--pcap-broker")
    ap.add_argument("--note", help="a line for broker.md about how pcap-broker was built")
    a = ap.parse_args()
    res = run(a.quick, a.packets, tuple(int(x) for x in a.clients.split(",")), a.pcap_broker)
    if a.note:
        res["pcap_broker_note"] = a.note
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "broker.json").write_text(json.dumps(res, indent=1) + "\n")
    (RESULTS / "broker.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
