#!/usr/bin/env python3
"""bench/scaling.py [--quick]: sharing one stream between workers (issue #10)
and PCAP-over-TLS (issue #11).

1. Sharing, end to end: `zeek` with its default scripts (no -b, as bench/run.py's
   "default" rows), 1 worker reading a pcapovertcp-serve stream whole vs 2
   workers on the same stream with ?share=0/2 and ?share=1/2 (serve
   --clients N --wait-clients N). Aggregate packets/s = packets of the trace
   / wall time from the serve start to the last worker's end; best of 3
   (1 with --quick), the cases taking turns within a round. Each worker's
   split (PcapOverTcp::stats()$records and $other_share, printed at
   zeek_done). On the bench trace (bench/make-trace.py) with share_by
   ADDRESS_PAIR and FIVE_TUPLE, and on the same trace with each repetition's
   IP addresses made distinct (checksums unchanged), where a flow hash can
   balance.
2. Sharing, the filter's cost: callgrind on bench/consume.rs (core only)
   reading the stream whole, with ?share=0/2 and with ?share=1/2; and ns per
   packet of Sharer::share_of in memory (bench/tls_core.rs --share).
3. TLS: `zeek -b` over tls://localhost:PORT vs tcp:// (pcapovertcp-serve
   --tls-cert/--tls-key, certificates from tests/Scripts/make-certs), best of
   3 (1 with --quick); and the core over TLS at 1500 B vs plaintext
   (bench/tls_core.rs: cargo bench --bench tls_core).

run(quick) -> dict is what bench/run.py can call; main() writes
bench/results/scaling.json and scaling.md. Shared helpers: bench/benchlib.py.
"""
import json
import os
import pathlib
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time

from benchlib import (COMMON, CONSUME, RESULTS, ROOT, SCRIPTS, SERVE, free_port, loadavg, machine, machine_busy_s,
                      make_trace, reap, settle, wait_listening, zeek, zeek_env)

ZEEK = zeek()
ENV = zeek_env()


def say(*a):
    print(*a, flush=True)


# ---- traces -----------------------------------------------------------------

def _oc_add(a, b):
    s = a + b
    s = (s & 0xFFFF) + (s >> 16)
    return (s & 0xFFFF) + (s >> 16)


def _shift_addr(data, off, words, k):
    """Adds k to one 16-bit word of an address and subtracts it from the next
    (ones' complement): a distinct address whose contribution to every
    checksum (IPv4 header, TCP/UDP/ICMPv6 pseudo-header) is unchanged."""
    w0, w1 = struct.unpack_from(">HH", data, off + 2 * words)
    struct.pack_into(">HH", data, off + 2 * words, _oc_add(w0, k), _oc_add(w1, 0xFFFF - k))


def vary_addresses(src, dst, per_rep):
    """The trace with the IP addresses of repetition r (r = 0, 1, ...; r = 0
    unchanged) shifted by r: each repetition's flows are other hosts, so the
    trace has (repetitions x) as many address pairs and 5-tuples. Ethernet
    (with VLAN tags) IPv4 and IPv6 only; other packets, and multicast,
    broadcast and unspecified addresses, are left as they are."""
    data = bytearray(pathlib.Path(src).read_bytes())
    pos, i, changed = 24, 0, 0
    while pos + 16 <= len(data):
        caplen = struct.unpack_from("<I", data, pos + 8)[0]
        p, end, k = pos + 16, pos + 16 + caplen, i // per_rep
        pos, i = end, i + 1
        if k == 0 or caplen < 14:
            continue
        off, et = p + 12, struct.unpack_from(">H", data, p + 12)[0]
        while et in (0x8100, 0x88A8, 0x9100) and off + 6 <= end:
            off += 4
            et = struct.unpack_from(">H", data, off)[0]
        off += 2
        if et == 0x0800 and off + 20 <= end and data[off] >> 4 == 4:
            for a in (off + 12, off + 16):
                if data[a] < 224 and data[a] != 0:
                    _shift_addr(data, a, 0, k)
            changed += 1
        elif et == 0x86DD and off + 40 <= end and data[off] >> 4 == 6:
            for a in (off + 8, off + 24):
                if data[a] != 0xFF and any(data[a:a + 16]):
                    _shift_addr(data, a, 6, k)
            changed += 1
    pathlib.Path(dst).write_bytes(data)
    return changed


# ---- 1. sharing, end to end -------------------------------------------------

STATS_SCRIPT = """\
event zeek_done()
	{
	local s = PcapOverTcp::stats();
	print fmt("scaling: pkts=%d records=%d other_share=%d", get_net_stats()$pkts_recvd, s$records, s$other_share);
	}
"""


def share_round(trace, workers, share_by, script, workdir, tls=None):
    """One serve with `workers` clients; the workers with default scripts
    (?share=I/N when workers > 1). Wall time from the serve start to the
    last worker's end."""
    pf = pathlib.Path(tempfile.mkdtemp(dir=workdir)) / "port"
    busy0 = machine_busy_s()
    t0 = time.monotonic()
    serve = subprocess.Popen([SERVE, "--listen", "127.0.0.1:0", "--port-file", pf, "--clients", str(workers),
                              "--wait-clients", str(workers), trace], stderr=subprocess.DEVNULL)
    while not (pf.exists() and pf.read_text().strip()):
        time.sleep(0.005)
    port = int(pf.read_text().split()[0])
    redefs = ["PcapOverTcp::reconnect=F", *COMMON]
    if share_by:
        redefs.append(f"PcapOverTcp::share_by=PcapOverTcp::{share_by}")
    zeeks = []
    for i in range(workers):
        iface = f"pcapovertcp::127.0.0.1:{port}" + (f"?share={i}/{workers}" if workers > 1 else "")
        zeeks.append(subprocess.Popen([ZEEK, "-i", iface, str(script), *redefs], cwd=tempfile.mkdtemp(dir=workdir),
                                      env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
    outs, cpus = [], []
    for z in zeeks:  # stdout is a line or two: read after the end
        cpus.append(reap(z))
        outs.append(z.stdout.read())
        z.stdout.close()
    wall = time.monotonic() - t0
    serve_cpu = reap(serve)
    other = machine_busy_s() - busy0 - sum(cpus) - serve_cpu
    split = []
    for z, out in zip(zeeks, outs):
        m = re.search(r"scaling: pkts=(\d+) records=(\d+) other_share=(\d+)", out)
        if z.returncode != 0 or not m:
            sys.exit(f"scaling: a worker failed (exit {z.returncode}): {out}")
        split.append({"pkts": int(m.group(1)), "records": int(m.group(2)), "other_share": int(m.group(3))})
    return {"wall_s": wall, "worker_cpu_s": cpus, "serve_cpu_s": serve_cpu, "other_cpu_s": other, "split": split}


def sharing(traces, rounds, workdir):
    script = pathlib.Path(workdir) / "scaling-stats.zeek"
    script.write_text(STATS_SCRIPT)
    cases = []
    for tname, (trace, packets) in traces.items():
        cases.append((tname, trace, packets, 1, None))
        cases.append((tname, trace, packets, 2, "ADDRESS_PAIR"))
        cases.append((tname, trace, packets, 2, "FIVE_TUPLE"))
    runs = {i: [] for i in range(len(cases))}
    for r in range(rounds):
        for i, (tname, trace, packets, workers, by) in enumerate(cases):
            load = settle()
            res = share_round(trace, workers, by, script, workdir)
            res["load_before"] = load
            runs[i].append(res)
            say(f"  round {r + 1}: {tname:22} {workers} worker(s) {by or 'whole':13} {res['wall_s']:6.2f} s wall, "
                f"workers CPU {'+'.join(f'{c:.2f}' for c in res['worker_cpu_s'])} s, other {res['other_cpu_s']:.2f} s, "
                f"records {[s['records'] for s in res['split']]} (load {' '.join(load)})")
    rows = []
    for i, (tname, trace, packets, workers, by) in enumerate(cases):
        best = min(runs[i], key=lambda x: x["wall_s"])
        rows.append(dict(best, trace=tname, packets=packets, workers=workers, share_by=by or "-",
                         pps=packets / best["wall_s"], rounds=[x["wall_s"] for x in runs[i]]))
    for row in rows:
        base = next(x for x in rows if x["trace"] == row["trace"] and x["workers"] == 1)
        row["vs_one_worker"] = row["pps"] / base["pps"]
        recs = [s["records"] for s in row["split"]]
        row["largest_share"] = max(recs) / sum(recs)
    return rows


# ---- 2. the share filter's instructions ------------------------------------

def callgrind_share(trace, packets, workdir):
    if not shutil.which("valgrind"):
        return None
    rows = []
    for name, query in (("whole", ""), ("?share=0/2", "?share=0/2"), ("?share=1/2", "?share=1/2")):
        port = free_port()
        serve = subprocess.Popen([SERVE, "--listen", f"127.0.0.1:{port}", "--clients", "1", trace],
                                 stderr=subprocess.DEVNULL)
        wait_listening(port)
        out = pathlib.Path(workdir) / f"callgrind-share-{len(rows)}.out"
        proc = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", str(CONSUME),
                               f"127.0.0.1:{port}{query}"], capture_output=True, text=True)
        serve.wait(timeout=120)
        said = re.search(r"packets=(\d+)", proc.stdout)
        total = re.search(r"Collected : (\d+)", proc.stderr)
        if proc.returncode != 0 or not said or not total:
            sys.exit(f"scaling: callgrind on consume ({name}) failed:\n{proc.stdout}{proc.stderr[-3000:]}")
        kept, instr = int(said.group(1)), int(total.group(1))
        sharer = inclusive(out, "pcapovertcp::share::Sharer::share_of")
        rows.append({"case": name, "stream_packets": packets, "kept": kept, "discarded": packets - kept,
                     "instructions": instr, "per_stream_packet": instr / packets,
                     "share_of_per_stream_packet": None if sharer is None else sharer / packets})
        say(f"  callgrind consume {name:11} kept {kept:7} of {packets}: {instr / packets:6.1f} instructions per "
            f"stream packet" + ("" if sharer is None else f" (Sharer::share_of incl. {sharer / packets:.1f})"))
    # I = I0 + P*h - D*r (h: the share filter per stream packet, r: what a
    # discarded packet saves: ring hand-over and consumer), from the two shares.
    w, a, b = rows
    if b["discarded"] != a["discarded"]:
        r = (a["instructions"] - b["instructions"]) / (b["discarded"] - a["discarded"])
        h = (a["instructions"] - w["instructions"] + a["discarded"] * r) / packets
        derived = {"filter_per_stream_packet": h, "saved_per_discarded_packet": r}
    else:
        derived = None
    return {"rows": rows, "derived": derived}


def inclusive(out, function):
    """A function's inclusive instructions (callgrind_annotate), or None
    when it does not appear (inlined)."""
    if not shutil.which("callgrind_annotate"):
        return None
    text = subprocess.run(["callgrind_annotate", "--inclusive=yes", str(out)], capture_output=True,
                          text=True).stdout
    total = 0
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+) \(.*?\)\s+\S*:" + re.escape(function) + r"(\s|$)", line)
        if m:
            total += int(m.group(1).replace(",", ""))
    return total or None


# ---- 3. TLS -------------------------------------------------------------------

def tls_end_to_end(trace, packets, certs, rounds, workdir):
    runs = {"tcp://": [], "tls://": []}
    for r in range(rounds):
        for mode in runs:
            load = settle()
            res = tls_round_cpu(trace, certs, mode == "tls://", workdir)
            res["load_before"] = load
            runs[mode].append(res)
            say(f"  round {r + 1}: zeek -b {mode:7} {res['wall_s']:6.2f} s wall, Zeek {res['zeek_cpu_s']:.2f} s CPU, "
                f"serve {res['serve_cpu_s']:.2f} s, other {res['other_cpu_s']:.2f} s (load {' '.join(load)})")
    rows = []
    for mode, results in runs.items():
        best = min(results, key=lambda x: x["wall_s"])
        rows.append(dict(best, mode=mode, packets=packets, pps=packets / best["wall_s"],
                         rounds=[x["wall_s"] for x in results]))
    rows[1]["vs_tcp"] = rows[1]["pps"] / rows[0]["pps"]
    rows[0]["vs_tcp"] = 1.0
    return rows


def tls_round_cpu(trace, certs, tls, workdir):
    """tls_round with Zeek's CPU from wait4 (Popen.communicate would reap it
    without its rusage)."""
    port = free_port()
    cmd = [SERVE, "--listen", f"127.0.0.1:{port}", "--clients", "1"]
    if tls:
        cmd += ["--tls-cert", certs / "srv.pem", "--tls-key", certs / "srv.key"]
    serve = subprocess.Popen([*cmd, trace], stderr=subprocess.DEVNULL)
    wait_listening(port)
    iface = f"pcapovertcp::tls://localhost:{port}" if tls else f"pcapovertcp::tcp://127.0.0.1:{port}"
    extra = [f"PcapOverTcp::tls_ca_file={certs / 'ca.pem'}"] if tls else []
    errf = pathlib.Path(tempfile.mkdtemp(dir=workdir)) / "stderr"
    busy0 = machine_busy_s()
    t0 = time.monotonic()
    with errf.open("w") as err:
        z = subprocess.Popen([ZEEK, "-b", "-i", iface, "PcapOverTcp::reconnect=F", *extra, *COMMON],
                             cwd=errf.parent, env=ENV, stdout=subprocess.DEVNULL, stderr=err)
        zeek_cpu = reap(z)
    wall = time.monotonic() - t0
    serve_cpu = reap(serve)
    if z.returncode != 0:
        sys.exit(f"scaling: zeek over {'tls' if tls else 'tcp'} failed: {errf.read_text()}")
    return {"wall_s": wall, "zeek_cpu_s": zeek_cpu, "serve_cpu_s": serve_cpu,
            "other_cpu_s": machine_busy_s() - busy0 - zeek_cpu - serve_cpu}


def tls_core(certs, trace, quick, workdir):
    """bench/tls_core.rs, as cargo bench --bench tls_core."""
    out = pathlib.Path(workdir) / "tls_core.json"
    args = ["--certs", str(certs), "--json", str(out), "--share", str(trace)] + (["--quick"] if quick else [])
    subprocess.run(["cargo", "bench", "--locked", "--bench", "tls_core", "--", *args], cwd=ROOT, check=True)
    return json.loads(out.read_text())


def ktls():
    """Whether the kernel could take over TLS decryption (kTLS)."""
    config = None
    try:
        import gzip
        with gzip.open("/proc/config.gz", "rt") as f:
            config = next((l.strip() for l in f if l.startswith(("CONFIG_TLS=", "# CONFIG_TLS "))), None)
    except OSError:
        pass
    import socket
    l = socket.socket()
    l.bind(("127.0.0.1", 0))
    l.listen()
    c = socket.create_connection(l.getsockname())
    a, _ = l.accept()
    try:
        c.setsockopt(socket.SOL_TCP, 31, b"tls")  # TCP_ULP
        ulp = "ok"
    except OSError as e:
        ulp = str(e)
    finally:
        for s in (a, c, l):
            s.close()
    return {"kernel": os.uname().release, "config_tls": config, "tcp_ulp_tls": ulp,
            "available_ulp": pathlib.Path("/proc/sys/net/ipv4/tcp_available_ulp").read_text().strip()
            if pathlib.Path("/proc/sys/net/ipv4/tcp_available_ulp").exists() else None}


# ---- all --------------------------------------------------------------------

def run(quick: bool) -> dict:
    rounds = 1 if quick else 3
    workdir = tempfile.mkdtemp(prefix="pcapovertcp-scaling-")
    try:
        subprocess.run(["cargo", "build", "--release", "--locked", "--examples"], cwd=ROOT, check=True)
        if not (ROOT / "build" / "Makefile").exists():
            subprocess.run(["./configure"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                           env=dict(os.environ, PATH=f"{ZEEK.parent}:{os.environ['PATH']}"))
        subprocess.run(["make", "-C", "build"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        wd = pathlib.Path(workdir)
        trace = wd / "mix.pcap"
        packets, per_rep = make_trace(trace, 200_000 if quick else 1_000_000)
        varied = wd / "mix-varied.pcap"
        vary_addresses(trace, varied, per_rep)
        certs = wd / "certs"
        subprocess.run([SCRIPTS / "make-certs", certs], check=True)
        result = {"machine": machine(), "quick": quick, "rounds": rounds, "trace_packets": packets,
                  "trace_repetition_packets": per_rep, "uptime_start": loadavg()}

        say("== sharing: zeek (default scripts), 1 worker vs 2 workers ?share=I/2")
        result["sharing"] = sharing({"bench trace": (trace, packets), "addresses per repetition": (varied, packets)},
                                    rounds, wd)
        say("== sharing: callgrind on bench/consume.rs")
        small = wd / "calls.pcap"
        small_packets, _ = make_trace(small, 200_000)
        result["share_instructions"] = callgrind_share(small, small_packets, wd)
        say("== TLS: zeek -b over tls:// vs tcp://")
        result["tls_end_to_end"] = tls_end_to_end(trace, packets, certs, rounds, wd)
        say("== TLS: core at 1500 B (bench/tls_core.rs), and Sharer::share_of ns/packet")
        result["tls_core"] = tls_core(certs, trace, quick, wd)
        result["ktls"] = ktls()
        result["uptime_end"] = loadavg()
        return result
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def report(r):
    mode = "--quick (1 round, 200 k packet trace)" if r["quick"] else f"best of {r['rounds']}"
    L = [f"Machine: {r['machine']}. Load average at the start {' '.join(r['uptime_start'])}, at the end "
         f"{' '.join(r['uptime_end'])} (other sessions may share the machine; each run's own is in scaling.json). "
         f"Runs: {mode}.", ""]
    L += ["## Sharing one stream (issue #10)", "",
          f"`zeek` with its default scripts (no -b), {r['trace_packets']} packets; 1 worker reading the stream "
          f"whole vs 2 workers with `?share=0/2` and `?share=1/2` on one `pcapovertcp-serve --clients N "
          f"--wait-clients N`. Wall time from the serve start to the last worker's end; packets/s = trace "
          f"packets / wall. \"addresses per repetition\": the same trace with each of its "
          f"{r['trace_packets'] // r['trace_repetition_packets']} repetitions' IP addresses made distinct "
          f"(checksums unchanged), since the bench trace repeats {r['trace_repetition_packets']} packets of 18 "
          f"address pairs, one flow being 70 % of them.", "",
          "| trace | workers | share_by | wall s | workers CPU s | serve CPU s | other CPU s | k packets/s | "
          "vs 1 worker | records per worker (other_share) | largest share |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in r["sharing"]:
        split = ", ".join(f"{x['records']} ({x['other_share']})" for x in s["split"])
        L.append(f"| {s['trace']} | {s['workers']} | {s['share_by']} | {s['wall_s']:.2f} | "
                 f"{' + '.join(f'{c:.2f}' for c in s['worker_cpu_s'])} | {s['serve_cpu_s']:.2f} | "
                 f"{s['other_cpu_s']:.2f} | {s['pps'] / 1e3:.0f} | {s['vs_one_worker']:.2f} | {split} | "
                 f"{s['largest_share']:.0%} |")
    si = r.get("share_instructions")
    if si:
        L += ["", f"Share filter, instructions (callgrind on bench/consume.rs, core only: reader thread, parser, "
              f"share filter, ring, hand-over; {si['rows'][0]['stream_packets']} packets of the bench trace; "
              f"share_by ADDRESS_PAIR):", "",
              "| case | kept | discarded | instructions / stream packet | Sharer::share_of incl. / stream packet |",
              "|---|---|---|---|---|"]
        for x in si["rows"]:
            inc = "-" if x["share_of_per_stream_packet"] is None else f"{x['share_of_per_stream_packet']:.1f}"
            L.append(f"| {x['case']} | {x['kept']} | {x['discarded']} | {x['per_stream_packet']:.1f} | {inc} |")
        if si["derived"]:
            d = si["derived"]
            L += ["", f"From I = I_whole + P*h - D*r over the two shares: the filter costs h = "
                  f"{d['filter_per_stream_packet']:.1f} instructions per stream packet, and a discarded packet "
                  f"saves r = {d['saved_per_discarded_packet']:.1f} (its hand-over and consumption)."]
    tc = r["tls_core"]
    for s in tc.get("share", []):
        L.append(f"- Sharer::share_of in memory, 2 shares, {s['share_by']}: {s['ns_per_packet']:.1f} ns/packet "
                 f"over {s['packets']} packets of the bench trace (split {s['share0']} / {s['share1']}).")
    L += ["", "## PCAP over TLS (issue #11)", "",
          f"`zeek -b -i pcapovertcp::tls://localhost:PORT` (PcapOverTcp::tls_ca_file, reconnect=F) vs "
          f"`tcp://127.0.0.1:PORT`, pcapovertcp-serve with/without --tls-cert/--tls-key, "
          f"{r['trace_packets']} packets, timed from Zeek's start:", "",
          "| mode | wall s | Zeek CPU s | serve CPU s | other CPU s | k packets/s | vs tcp:// |",
          "|---|---|---|---|---|---|---|"]
    for x in r["tls_end_to_end"]:
        L.append(f"| {x['mode']} | {x['wall_s']:.2f} | {x['zeek_cpu_s']:.2f} | {x['serve_cpu_s']:.2f} | "
                 f"{x['other_cpu_s']:.2f} | {x['pps'] / 1e3:.0f} | {x['vs_tcp']:.2f} |")
    L += ["", f"Core over TLS, 1500 B packets (bench/tls_core.rs, best of {tc['rounds']}: sender thread writing "
          f"through rustls (TLS 1.3, server's suite as named) -> Source on tls://localhost -> consumer reading "
          f"every byte; ceiling: plain recv() / a rustls client decrypting into a buffer; all threads on the "
          f"same 2 cores):", "",
          "| stream | negotiated suite | core Mpps | core Gbit/s | ceiling Gbit/s | vs plaintext core |",
          "|---|---|---|---|---|---|"]
    for x in tc["tls"]:
        L.append(f"| {x['stream']} | {x['suite'] or '-'} | {x['core_mpps']:.2f} | {x['core_gbps']:.2f} | "
                 f"{x['ceiling_gbps']:.2f} | {x['vs_plaintext']:.2f} |")
    k = r["ktls"]
    L += ["", f"kTLS: kernel {k['kernel']}, {k['config_tls'] or 'CONFIG_TLS unknown'}; setsockopt(TCP_ULP, \"tls\"): "
          f"{k['tcp_ulp_tls']}; tcp_available_ulp: {k['available_ulp']}."]
    L += ["", "Other CPU s: the machine's busy time (/proc/stat) over the span less the processes' own (rusage); on "
          "this VM /proc/stat undercounts busy time, so it comes out negative and shows little."]
    text = "\n".join(L) + "\n"
    (RESULTS / "scaling.md").write_text(text)
    print()
    print(text)


def main():
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = run("--quick" in sys.argv)
    (RESULTS / "scaling.json").write_text(json.dumps(result, indent=1, default=str))
    report(result)


if __name__ == "__main__":
    main()
