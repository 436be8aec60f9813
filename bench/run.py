#!/usr/bin/env python3
"""bench/run.py [--quick] [--only merge] [--loaded]: the benchmarks of docs/performance.md, in one run.

1. Core throughput (cargo bench --bench core): reader thread + consumer vs a
   plain recv() ceiling, at 64/512/1500 B and on a mix of the shared traces.
2. End to end in Zeek on one >= 1 M packet trace (bench/make-trace.py):
   `zeek -b -i pcapovertcp::...` vs `zeek -b -r trace` vs
   `nc HOST PORT | zeek -b -r -`, packets/s by wall clock and CPU seconds,
   best of 3; then once more with Zeek's default scripts.
3. Instructions per packet of the core (valgrind callgrind).
4. Idle CPU over 10 s and peak RSS against buffer_size.
5. The merge (--only merge runs this section alone and keeps the others'
   figures): a listening `zeek -b` fed by one sender with the whole trace
   vs four senders with a quarter each (time-contiguous quarters, and every
   4th packet to each sender; bench/send_many.rs), packets/s by wall clock from
   the senders' start, best of 5; and instructions per packet of
   bench/consume.rs listening, beside one connect endpoint's.

Writes bench/results/results.json, results.md and throughput.png, and prints
the comparisons as ratios. Needs Zeek (zeek-config on PATH or
/usr/local/zeek/bin), netcat, valgrind and matplotlib (installed with pip if
missing); builds the plugin into build/ (./configure && make) when needed.
"""
import json
import os
import pathlib
import re
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import (CONSUME, RESULTS, ROOT, SERVE, free_port, machine, machine_busy_s, make_trace, proc_cpu_s,
                      reap, wait_listening, zeek, zeek_env)

QUICK = "--quick" in sys.argv
ROUNDS = 1 if QUICK else 5
# Measure at once, without waiting for a quiet machine or measuring again
# (a shared machine that never goes quiet would take hours); the results'
# "other CPU s" column says how loaded it was.
LOADED = "--loaded" in sys.argv
ONLY = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else None
if ONLY not in (None, "merge"):
    sys.exit(f"bench: --only {ONLY}: the sections that run alone: merge")

ZEEK = zeek()
ENV = zeek_env()
SEND_MANY = ROOT / "target" / "release" / "examples" / "send_many"


def start_server(trace):
    port = free_port()
    p = subprocess.Popen([SERVE, "--listen", f"127.0.0.1:{port}", "--clients", "1", str(trace)],
                         stderr=subprocess.DEVNULL)
    wait_listening(port)
    return port, p


def timed(cmd, cwd, stdin=None):
    """Runs cmd; returns (wall seconds, CPU seconds of cmd and its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.monotonic()
    subprocess.run(cmd, cwd=cwd, env=ENV, stdin=stdin, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=True)
    wall = time.monotonic() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def run_mode(mode, trace, bare, workdir):
    args = ["-b"] if bare else []
    common = ["allow_network_time_forward=F"]
    cwd = tempfile.mkdtemp(dir=workdir)
    if mode == "zeek -r":
        return timed([ZEEK, *args, "-r", str(trace), *common], cwd)
    port, server = start_server(trace)
    try:
        if mode == "pcapovertcp":
            return timed([ZEEK, *args, "-i", f"pcapovertcp::127.0.0.1:{port}",
                          "PcapOverTcp::reconnect=F", *common], cwd)
        nc = subprocess.Popen(["nc", "-N", "127.0.0.1", str(port)], stdout=subprocess.PIPE)
        result = timed([ZEEK, *args, "-r", "-", *common], cwd, stdin=nc.stdout)
        nc.wait()
        return result
    finally:
        server.wait(timeout=60)


def end_to_end(trace, packets, workdir):
    """Best of ROUNDS per mode; the modes take turns within each round, so
    that a slow spell of the machine does not land on one of them only."""
    rows = []
    modes = ("zeek -r", "pcapovertcp", "nc | zeek -r -")
    for bare in (True, False):
        rounds = ROUNDS
        runs = {mode: [] for mode in modes}
        for _ in range(rounds):
            for mode in modes:
                runs[mode].append(run_mode(mode, trace, bare, workdir))
        for mode in modes:
            best = min(runs[mode], key=lambda r: r[0])
            rows.append({"scripts": "-b" if bare else "default", "mode": mode, "wall_s": best[0],
                         "cpu_s": best[1], "pps": packets / best[0]})
            print(f"  {'-b' if bare else 'default':8} {mode:16} {best[0]:7.2f} s wall {best[1]:7.2f} s CPU "
                  f"{packets / best[0] / 1e3:8.0f} k packets/s", flush=True)
    return rows


def instructions_per_packet(workdir):
    """Callgrind on a consumer process (the sender is a separate process)."""
    if not shutil.which("valgrind"):
        return None
    trace = pathlib.Path(workdir) / "calls.pcap"
    make_trace(trace, 200000)
    consumer = CONSUME
    port, server = start_server(trace)
    out = pathlib.Path(workdir) / "callgrind.out"
    proc = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                           str(consumer), f"127.0.0.1:{port}"], capture_output=True, text=True)
    server.wait(timeout=120)
    packets = int(re.search(r"packets=(\d+)", proc.stdout).group(1))
    total = int(re.search(r"Collected : (\d+)", proc.stderr).group(1))
    return {"packets": packets, "instructions": total, "per_packet": total / packets}


def idle_and_memory(trace, workdir):
    """CPU of an idle Zeek over 10 s (stream open, no packets), and peak RSS
    reading the trace through a small and a default buffer."""
    result = {}
    port = free_port()
    header = pathlib.Path(workdir) / "header.pcap"
    header.write_bytes(trace.read_bytes()[:24])
    nc = subprocess.Popen(f"(cat {header}; sleep 30) | nc -N -l 127.0.0.1 {port}", shell=True)
    wait_listening(port)
    z = subprocess.Popen([ZEEK, "-b", "-i", f"pcapovertcp::127.0.0.1:{port}"], env=ENV,
                         cwd=tempfile.mkdtemp(dir=workdir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(3)  # start-up done
    def cpu_ticks(pid):
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    t0, c0 = time.monotonic(), cpu_ticks(z.pid)
    time.sleep(10)
    t1, c1 = time.monotonic(), cpu_ticks(z.pid)
    hz = os.sysconf("SC_CLK_TCK")
    result["idle_cpu_percent"] = 100.0 * (c1 - c0) / hz / (t1 - t0)
    z.terminate()
    z.wait()
    nc.kill()
    # Peak RSS of one process: a fresh Python parent per run, so that
    # ru_maxrss (the largest child's) is that run's alone.
    probe = "import resource, subprocess, sys; subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, " \
            "stderr=subprocess.DEVNULL); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    def peak_mib(cmd):
        out = subprocess.check_output([sys.executable, "-c", probe, *map(str, cmd)], env=ENV,
                                      cwd=tempfile.mkdtemp(dir=workdir), text=True)
        return int(out) / 1024
    # Default scripts: Zeek is far slower than the sender, so the buffer fills.
    result["peak_rss_mib_zeek_r"] = peak_mib([ZEEK, "-r", trace])
    for mib in (16, 128):
        port, server = start_server(trace)
        result[f"peak_rss_mib_buffer_{mib}"] = peak_mib(
            [ZEEK, "-i", f"pcapovertcp::127.0.0.1:{port}", "PcapOverTcp::reconnect=F",
             f"PcapOverTcp::buffer_size={mib}*1024*1024"])
        server.wait()
    return result


# ---- 5. The merge -----------------------------------------------------------

SENDERS = 4
SPLITS = {"contiguous": "time-contiguous quarters", "interleaved": "every 4th packet to each sender"}
# The merge's cost in the number of senders: interleaved splits this wide too.
MANY = (16, 64)

# Ends a listening Zeek (which never ends by itself) once it has taken
# Bench::total packets, at the packet that completes them. The check is one
# timer, due at the trace's last timestamp less 1 msec: Zeek's timers run on
# network time, i.e. the packets' timestamps (allow_network_time_forward=F),
# so it costs nothing before the trace's last millisecond. Should packets
# still be missing then (late ones, older than the last), it checks again at
# each turn of Zeek's main loop until they are in (counted in `checks`).
END_SCRIPT = """\
module Bench;

export {
	const total = 0 &redef;
	const last_ts = 0.0 &redef;
}

global checks = 0;

event Bench::check()
	{
	++checks;
	if ( get_net_stats()$pkts_recvd >= total )
		terminate();
	else
		schedule 0 sec { Bench::check() };
	}

event network_time_init()
	{
	# Wall clock at the first packet: bench/run.py tells start-up from the rest.
	print fmt("bench: first=%.6f", time_to_double(current_time()));
	schedule double_to_interval(last_ts - time_to_double(network_time())) - 1 msec { Bench::check() };
	}

event zeek_done()
	{
	print fmt("bench: packets=%d late=%d checks=%d", get_net_stats()$pkts_recvd, PcapOverTcp::stats()$late, checks);
	}
"""


class Pcap:
    """A little-endian microsecond pcap: its bytes, the (start, end) of each
    record, and its last timestamp as seconds."""

    def __init__(self, path):
        self.data = memoryview(path.read_bytes())
        self.records = []
        pos, last = 24, (0, 0)
        while pos + 16 <= len(self.data):
            sec, usec, caplen = struct.unpack_from("<III", self.data, pos)
            self.records.append((pos, pos + 16 + caplen))
            last = max(last, (sec, usec))
            pos += 16 + caplen
        self.last_ts = f"{last[0]}.{last[1]:06d}"

    def split(self, how, stem, senders=SENDERS):
        """`senders` files: consecutive parts, or every `senders`-th record."""
        n, paths = len(self.records), []
        for i in range(senders):
            if how == "contiguous":
                lo, hi = n * i // senders, n * (i + 1) // senders
                chunks = [self.data[self.records[lo][0]:self.records[hi - 1][1]]] if hi > lo else []
            else:
                chunks = [self.data[a:b] for a, b in self.records[i::senders]]
            path = stem.with_name(f"{stem.stem}-{how}{senders}-{i}.pcap")
            with path.open("wb") as f:
                f.write(self.data[:24])
                f.writelines(chunks)
            paths.append(path)
        return paths


def start_senders(port, parts):
    """bench/send_many.rs, one connection per part, connected (header sent)
    and paused; go() sets them all sending. A list of its one process."""
    sender = subprocess.Popen([SEND_MANY, f"127.0.0.1:{port}", *map(str, parts)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    if sender.stdout.readline() != "ready\n":
        sys.exit("bench: the senders could not connect")

    def go():
        sender.stdin.write("go\n")
        sender.stdin.flush()
    return [sender], go


def listening_round(parts, pcap, script, workdir, redefs=()):
    """A listening zeek -b, started and settled; one sender per part,
    connected before any of them sends (bench/send_many.rs), then set going
    together. Wall seconds from that start to Zeek's exit, Zeek's and the
    senders' CPU seconds over the same span, and Zeek's own account of the
    run."""
    procs = []
    try:
        return listening_round_in(parts, pcap, script, workdir, redefs, procs)
    finally:
        for p in procs:  # only after a failure: reaped otherwise
            if p.returncode is None:
                p.kill()


def listening_round_in(parts, pcap, script, workdir, redefs, procs):
    port = free_port()
    cwd = tempfile.mkdtemp(dir=workdir)
    zeek = subprocess.Popen([ZEEK, "-b", "-i", f"pcapovertcp::tcp-listen://127.0.0.1:{port}", script,
                             "allow_network_time_forward=F", f"Bench::total={len(pcap.records)}",
                             f"Bench::last_ts={pcap.last_ts}", *redefs],
                            cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.append(zeek)
    watchdog = threading.Timer(600, zeek.kill)
    watchdog.daemon = True
    watchdog.start()
    # Zeek's stderr, read while it runs: each sender's arrival and departure
    # is one line.
    err, connected = [], threading.Semaphore(0)

    def read_stderr():
        for line in zeek.stderr:
            err.append(line)
            if re.search(r": sender \S+ connected", line):
                connected.release()
            # Beyond 20 lines in 10 s the listener sums the rest up in one
            # line at the end of the 10 s (arrivals are all it says here).
            elif m := re.search(r": (\d+) more lines about senders were left out", line):
                for _ in range(int(m.group(1))):
                    connected.release()
    out = []
    readers = [threading.Thread(target=read_stderr, daemon=True),
               threading.Thread(target=lambda: out.append(zeek.stdout.read()), daemon=True)]
    for r in readers:
        r.start()
    wait_listening(port)
    # Start-up done: Zeek's CPU time stands still (it is idle, listening).
    before, deadline = -1.0, time.monotonic() + 30
    while (now := proc_cpu_s(zeek.pid)) != before and time.monotonic() < deadline:
        before = now
        time.sleep(0.3)
    started, go = start_senders(port, parts)
    procs += started
    # Every sender has its lane in the merge before any packet flows (the
    # lane opens as the connection is reported).
    for _ in parts:
        if not connected.acquire(timeout=30):
            sys.exit("bench: Zeek did not report every sender connected:\n" + "".join(err))
    time.sleep(0.05)
    before, busy = proc_cpu_s(zeek.pid), machine_busy_s()
    senders_before = sum(proc_cpu_s(s.pid) for s in started)
    t0, t0_epoch = time.monotonic(), time.time()
    go()
    zeek_cpu = reap(zeek) - before
    wall = time.monotonic() - t0
    busy = machine_busy_s() - busy
    watchdog.cancel()
    for r in readers:
        r.join()
    senders_cpu = sum(reap(s) for s in started) - senders_before
    said = re.search(r"bench: packets=(\d+) late=(\d+) checks=(\d+)", out[0])
    first = re.search(r"bench: first=([\d.]+)", out[0])
    left = sum(1 for line in err if re.search(r"left after \d+ packets", line))
    if zeek.returncode != 0 or not said or not first or int(said.group(1)) != len(pcap.records):
        sys.exit(f"bench: the listening Zeek did not end as expected (exit {zeek.returncode}):\n"
                 f"{out[0]}{''.join(err)}")
    if any(s.returncode != 0 for s in started):
        sys.exit(f"bench: a sender failed: exit codes {[s.returncode for s in started]}")
    # Other processes' CPU over the span: the machine's busy time less Zeek's
    # and the senders' (about 0 on a machine to ourselves).
    # From the senders' start to Zeek's first packet: with many senders, the
    # merge's first release waits for every connection's first read.
    first_s = max(0.0, float(first.group(1)) - t0_epoch)
    return {"wall_s": wall, "first_s": first_s, "zeek_cpu_s": zeek_cpu, "senders_cpu_s": senders_cpu,
            "other_cpu_s": busy - zeek_cpu - senders_cpu,
            "late": int(said.group(2)), "checks": int(said.group(3)), "left_reported": left}


def end_marker_check(trace, pcap, script, workdir):
    """The end script against a source that ends on its own (one connect
    endpoint, reconnect=F): zeek -b with and without it, timed as in 2.
    (from Zeek's start), best of ROUNDS, taking turns."""
    runs = {"ends on its own": [], "with the end script": []}
    for _ in range(ROUNDS):
        for mode in runs:
            extra = [str(script), f"Bench::total={len(pcap.records)}",
                     f"Bench::last_ts={pcap.last_ts}"] if mode != "ends on its own" else []

            def once():
                port, server = start_server(trace)
                try:
                    busy = machine_busy_s()
                    wall, cpu = timed([ZEEK, "-b", "-i", f"pcapovertcp::127.0.0.1:{port}", "PcapOverTcp::reconnect=F",
                                       "allow_network_time_forward=F", *extra], tempfile.mkdtemp(dir=workdir))
                    server_cpu = reap(server)  # it ends after its one client
                    return {"wall_s": wall, "cpu_s": cpu, "other_cpu_s": machine_busy_s() - busy - cpu - server_cpu}
                finally:
                    if server.returncode is None:
                        server.kill()
                        server.wait()
            runs[mode].append(unloaded(once))
    rows = []
    for mode, results in runs.items():
        best = min(results, key=lambda r: r["wall_s"])
        rows.append(dict(best, mode=mode, pps=len(pcap.records) / best["wall_s"]))
        print(f"  end marker check: {mode:20} {best['wall_s']:7.2f} s wall {best['cpu_s']:7.2f} s CPU "
              f"{len(pcap.records) / best['wall_s'] / 1e3:8.0f} k packets/s", flush=True)
    return rows


def unloaded(measure, attempts=6):
    """measure() on a quiet machine: waits (up to a minute) for other
    processes to use less than a tenth of a core, and measures again while
    they took more than a tenth of a core over its span (this machine may be
    shared, and their load would land on some rounds only). The last
    attempt counts whatever it saw; `retries` says how many were discarded.
    With --loaded: one attempt, at once."""
    if LOADED:
        return dict(measure(), retries=0)
    for attempt in range(attempts):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            busy = machine_busy_s()
            time.sleep(0.5)
            if machine_busy_s() - busy < 0.05:
                break
        r = measure()
        if r["other_cpu_s"] <= 0.1 * r["wall_s"] or attempt == attempts - 1:
            r["retries"] = attempt
            return r


# merge_window for the consumer under callgrind: valgrind runs its threads
# one at a time, some fifty times slower, so the default 100 msec window
# expires where natively it would not (a reader thread waits for its turn)
# and records go out of order (counted as late). A long window keeps the
# merge's releases as they are natively: in timestamp order.
CALLGRIND_WINDOW_MS = 10000


def merge_instructions(workdir):
    """Callgrind on bench/consume.rs: one connect endpoint (no merge), then
    a listening source with one sender (whole trace), with four (each
    split) and with 16 and 64 interleaved, all on the same 200 k packet
    trace; and the merge thread's share (Merge::run, inclusive)."""
    if not shutil.which("valgrind"):
        return None
    trace = pathlib.Path(workdir) / "calls.pcap"
    if not trace.exists():
        make_trace(trace, 200000)
    pcap = Pcap(trace)
    consumer = CONSUME
    cases = [("1 connect endpoint (no merge)", None), ("listening, 1 sender", [trace])]
    cases += [(f"listening, 4 senders, {SPLITS[how]}", pcap.split(how, trace)) for how in SPLITS]
    cases += [(f"listening, {n} senders, every {n}th packet to each", pcap.split("interleaved", trace, n))
              for n in MANY]
    rows = []
    for i, (name, parts) in enumerate(cases):
        out = pathlib.Path(workdir) / f"callgrind-merge-{i}.out"
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", str(consumer)]
        if parts is None:
            port, server = start_server(trace)
            proc = subprocess.run([*cmd, f"127.0.0.1:{port}"], capture_output=True, text=True)
            server.wait(timeout=120)
        else:
            port = free_port()
            consume = subprocess.Popen([*cmd, f"tcp-listen://127.0.0.1:{port}", str(len(pcap.records)),
                                        str(CALLGRIND_WINDOW_MS)],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            wait_listening(port, 120)
            senders, go = start_senders(port, parts)
            time.sleep(2)  # every connection accepted, with its lane, before any packet flows
            go()
            stdout, stderr = consume.communicate(timeout=3600)
            proc = subprocess.CompletedProcess(consume.args, consume.returncode, stdout, stderr)
            for s in senders:
                s.wait(timeout=120)
        said = re.search(r"packets=(\d+) checksum=\d+ connects=(\d+) late=(\d+)", proc.stdout)
        total = re.search(r"Collected : (\d+)", proc.stderr)
        if proc.returncode != 0 or not said or not total or int(said.group(1)) != len(pcap.records):
            sys.exit(f"bench: callgrind on consume ({name}) failed:\n{proc.stdout}{proc.stderr[-3000:]}")
        packets, instructions = int(said.group(1)), int(total.group(1))
        row = {"case": name, "packets": packets, "connects": int(said.group(2)), "late": int(said.group(3)),
               "instructions": instructions, "per_packet": instructions / packets,
               "merge_thread_per_packet": inclusive_per_packet(out, "src/merge/mod.rs", "pcapovertcp::merge::Merge::run",
                                                                packets)}
        rows.append(row)
        print(f"  callgrind: {name:60} {row['per_packet']:6.0f} instructions/packet "
              f"(merge thread {per_packet(row['merge_thread_per_packet'])}, late {row['late']})", flush=True)
    return rows


def per_packet(x):
    """An instruction count per packet as the report shows it."""
    return "n/a" if x is None else f"{x:.0f}"


def inclusive_per_packet(out, source_file, function, packets):
    """A function's inclusive instructions per packet, from callgrind_annotate
    (the line of the function's own source file); None when it is not in the
    profile (renamed, moved or inlined: Merge::run is #[inline(never)] for
    this), rather than a 0 that reads as free."""
    if not shutil.which("callgrind_annotate"):
        return None
    text = subprocess.run(["callgrind_annotate", "--inclusive=yes", str(out)], capture_output=True, text=True).stdout
    pattern = re.compile(r"\s*([\d,]+) \(.*?\)\s+\S*" + re.escape(f"{source_file}:{function}") + r"(\s|$)")
    for line in text.splitlines():
        if m := pattern.match(line):
            return int(m.group(1).replace(",", "")) / packets
    return None


def merge_section(trace, workdir):
    """Zeek packets/s with one sender vs four; the end marker's check; and
    the merge's instructions per packet."""
    workdir = pathlib.Path(workdir)
    pcap = Pcap(trace)
    packets = len(pcap.records)
    script = workdir / "bench-end.zeek"
    script.write_text(END_SCRIPT)
    parts = {how: pcap.split(how, trace) for how in SPLITS}
    # (key, split, files, merge_window): the default window, and for
    # contiguous quarters also a window longer than the run, to show what
    # the window does to senders that are far ahead of Zeek.
    cases = [("whole", "whole trace", [trace], "100 msec")]
    cases += [(how, SPLITS[how], parts[how], "100 msec") for how in SPLITS]
    cases += [("contiguous, 10 sec", SPLITS["contiguous"], parts["contiguous"], "10 sec")]
    cases += [(f"interleaved {n}", f"every {n}th packet to each sender", pcap.split("interleaved", trace, n),
               "100 msec") for n in MANY]
    runs = {key: [] for key, *_ in cases}
    for _ in range(ROUNDS):
        for key, _, files, window in cases:
            redefs = [f"PcapOverTcp::merge_window={window.replace(' ', '')}"] if window != "100 msec" else []
            runs[key].append(unloaded(lambda: listening_round(files, pcap, script, workdir, redefs)))
    rows = []
    for key, split, files, window in cases:
        best = min(runs[key], key=lambda r: r["wall_s"])
        rows.append(dict(best, key=key, senders=len(files), split=split, merge_window=window,
                         pps=packets / best["wall_s"], file_mib=[f.stat().st_size / 2**20 for f in files],
                         rounds=[r["wall_s"] for r in runs[key]]))
    for row in rows:
        row["vs_one_sender"] = row["pps"] / rows[0]["pps"]
        print(f"  {row['senders']} sender(s), {row['split']:32} window {row['merge_window']:8} {row['wall_s']:5.2f} s "
              f"wall, Zeek {row['zeek_cpu_s']:5.2f} s CPU, senders {row['senders_cpu_s']:4.2f} s, other "
              f"{row['other_cpu_s']:4.2f} s, first packet after {1e3 * row['first_s']:3.0f} ms, "
              f"{row['pps'] / 1e3:5.0f} k packets/s = {row['vs_one_sender']:.2f}x "
              f"(late {row['late']}, checks {row['checks']}, retries {row['retries']})", flush=True)
    check = end_marker_check(trace, pcap, script, workdir)
    ipp = merge_instructions(workdir)
    return {"machine": machine(), "packets": packets, "rounds": ROUNDS, "zeek": rows, "end_marker_check": check,
            "instructions": ipp, "buffer_size_mib": 128, "loaded": LOADED}


def plot(core, e2e, path):
    try:
        import matplotlib
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "matplotlib"], check=True)
        import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = [r["stream"] for r in core]
    x = range(len(names))
    bars = a.bar([i - 0.2 for i in x], [r["core_gbps"] for r in core], 0.4, label="core (reader + consumer)")
    a.bar([i + 0.2 for i in x], [r["ceiling_gbps"] for r in core], 0.4, label="loopback recv() ceiling")
    a.bar_label(bars, [f"{r['core_gbps'] / r['ceiling_gbps']:.2f}x" for r in core])
    a.set_xticks(list(x), names)
    a.set_ylabel("Gbit/s")
    a.set_title("Core throughput by packet size (label: core / ceiling)")
    a.legend(loc="lower right")
    bare = [r for r in e2e if r["scripts"] == "-b"]
    bars = b.bar([r["mode"] for r in bare], [r["pps"] / 1e3 for r in bare], color=["grey", "tab:blue", "tab:orange"])
    b.bar_label(bars, [f"{r['pps'] / bare[0]['pps']:.2f}x" for r in bare])
    b.set_ylabel("k packets/s (wall clock)")
    b.set_title("zeek -b, same 1 M packet trace (label: vs zeek -r)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    RESULTS.mkdir(parents=True, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="pcapovertcp-bench-")
    subprocess.run(["cargo", "build", "--release", "--locked", "--examples"], cwd=ROOT, check=True)
    if not (ROOT / "build" / "Makefile").exists():
        # The plugin for the Zeek benchmarked (first zeek-config on PATH).
        subprocess.run(["./configure"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                       env=dict(os.environ, PATH=f"{ZEEK.parent}:{os.environ['PATH']}"))
    subprocess.run(["make", "-C", "build"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    trace = pathlib.Path(workdir) / "mix.pcap"
    packets, _ = make_trace(trace, 200000 if QUICK else 1000000)
    if ONLY == "merge":
        # The other sections' figures stay as the last full run left them.
        previous = RESULTS / "results.json"
        results = json.loads(previous.read_text()) if previous.exists() else {}
        print("== merge", flush=True)
        results["merge"] = merge_section(trace, workdir)
        (RESULTS / "results.json").write_text(json.dumps(results, indent=1))
        report(results)
        shutil.rmtree(workdir, ignore_errors=True)
        return

    print("== core throughput", flush=True)
    core_json = RESULTS / "core.json"
    subprocess.run(["cargo", "bench", "--locked", "--bench", "core", "--", "--json", str(core_json)]
                   + (["--quick"] if QUICK else []), cwd=ROOT, check=True)
    core = json.loads(core_json.read_text())

    print("== end to end in Zeek", flush=True)
    e2e = end_to_end(trace, packets, workdir)

    print("== instructions per packet", flush=True)
    ipp = instructions_per_packet(workdir)
    print(f"  {ipp}")
    print("== idle and memory", flush=True)
    idle = idle_and_memory(trace, workdir)
    print(f"  {idle}")
    print("== merge", flush=True)
    merge = merge_section(trace, workdir)

    results = {"machine": machine(), "core": core, "end_to_end": e2e, "instructions": ipp, "idle_memory": idle,
               "trace_packets": packets, "merge": merge}
    (RESULTS / "results.json").write_text(json.dumps(results, indent=1))
    plot(core, e2e, RESULTS / "throughput.png")
    report(results)
    shutil.rmtree(workdir, ignore_errors=True)


def report(r):
    lines = [f"Machine: {r.get('machine') or machine()}"]
    if "core" in r:
        lines += ["", "| stream | core Mpps | core Gbit/s | ceiling Gbit/s | core / ceiling |", "|---|---|---|---|---|"]
        for c in r["core"]:
            lines.append(f"| {c['stream']} | {c['core_mpps']:.2f} | {c['core_gbps']:.2f} | {c['ceiling_gbps']:.2f} | "
                         f"{c['core_gbps'] / c['ceiling_gbps']:.2f} |")
    if "end_to_end" in r:
        lines += ["", f"End to end, {r['trace_packets']} packets:", "",
                  "| scripts | mode | wall s | CPU s | k packets/s | vs zeek -r |", "|---|---|---|---|---|---|"]
        for e in r["end_to_end"]:
            base = next(x for x in r["end_to_end"] if x["scripts"] == e["scripts"] and x["mode"] == "zeek -r")
            lines.append(f"| {e['scripts']} | {e['mode']} | {e['wall_s']:.2f} | {e['cpu_s']:.2f} | "
                         f"{e['pps'] / 1e3:.0f} | {e['pps'] / base['pps']:.2f} |")
    if r.get("instructions"):
        lines += ["", f"Core instructions per packet (callgrind on bench/consume.rs: reader thread, parser, ring "
                  f"and hand-over, {r['instructions']['packets']} packets of the trace mix): "
                  f"{r['instructions']['per_packet']:.0f}"]
    if "idle_memory" in r:
        i = r["idle_memory"]
        lines += ["", f"Idle CPU over 10 s: {i['idle_cpu_percent']:.2f} %. Peak RSS with default scripts: "
                  f"zeek -r {i['peak_rss_mib_zeek_r']:.0f} MiB; pcapovertcp "
                  + ", ".join(f"{i[f'peak_rss_mib_buffer_{m}']:.0f} MiB with buffer_size={m} MiB "
                              f"(+{i[f'peak_rss_mib_buffer_{m}'] - i['peak_rss_mib_zeek_r']:.0f} MiB)"
                              for m in (16, 128))]
    if "merge" in r:
        lines += merge_report(r["merge"])
    text = "\n".join(lines) + "\n"
    (RESULTS / "results.md").write_text(text)
    print()
    print(text)


def merge_report(m):
    share = m["buffer_size_mib"] / SENDERS
    lines = ["", f"Merge: one listening `zeek -b -i pcapovertcp::tcp-listen://...` fed by bench/send_many.rs (one "
             f"process, a connection and a thread per sender, all connected before any sends, then set going together), {m['packets']} "
             f"packets, buffer_size {m['buffer_size_mib']} MiB. Wall clock from the senders' start to Zeek's exit "
             f"(Zeek started and idle before), best of {m['rounds']}; Zeek's CPU (all its threads) over the same "
             f"span; cores shared by Zeek's threads and the senders. Machine: {m['machine']}.", "",
             "| senders | split | merge_window | file MiB each | wall s | Zeek CPU s | senders CPU s | other CPU s "
             "| first packet ms | k packets/s | vs 1 sender | late |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for z in m["zeek"]:
        lines.append(f"| {z['senders']} | {z['split']} | {z['merge_window']} | {max(z['file_mib']):.0f} | "
                     f"{z['wall_s']:.2f} | {z['zeek_cpu_s']:.2f} | {z['senders_cpu_s']:.2f} | "
                     f"{z['other_cpu_s']:.2f} | {1e3 * z.get('first_s', 0):.0f} | {z['pps'] / 1e3:.0f} | "
                     f"{z['vs_one_sender']:.2f} | {z['late']} |")
    when = ("run with --loaded: each round measured at once, whatever else the machine ran" if m.get("loaded") else
            "a round starts once the machine is idle and is measured again while this exceeds a tenth of its wall "
            "time: the machine may be shared")
    lines += ["", f"Other CPU: the machine's busy time over the span less Zeek's and the senders' ({when}). First "
              "packet: from the senders' start to Zeek's first packet (network_time_init, wall clock). Late: "
              "packets released after a later one (PcapOverTcp::stats()$late), the trace's own out-of-order "
              "ones included (one in each repetition of the shared traces). Zeek ends by bench/run.py's end script "
              "(terminate() at the packet that completes the count, checked from a timer due at the trace's "
              "last timestamp)."]
    default, long = (next((z for z in m["zeek"] if z["key"] == k), None) for k in ("contiguous", "contiguous, 10 sec"))
    if default and long and default["late"] > m["packets"] / 100:
        lines += ["", f"With the default merge_window, {100 * default['late'] / m['packets']:.0f} % of the packets of "
                  f"contiguous quarters were released late (out of timestamp order) and Zeek took "
                  f"{default['zeek_cpu_s'] / long['zeek_cpu_s']:.2f}x the CPU of the 10 sec window's run, which "
                  f"released them in order ({long['late']} late)."]
    lines += ["", f"Each sender may hold an equal share of buffer_size in the merge ({m['buffer_size_mib']} MiB "
              f"alone, {share:.0f} MiB each of four; a read costs its bytes plus 40 B of index a packet): a "
              "larger stream waits on TCP backpressure."]
    c = m["end_marker_check"]
    lines += ["", "End marker check (the end script on a source that ends on its own: one connect endpoint, "
              "reconnect=F, timed from Zeek's start): "
              + "; ".join(f"{x['mode']} {x['pps'] / 1e3:.0f} k packets/s ({x['wall_s']:.2f} s wall, "
                          f"{x['cpu_s']:.2f} s CPU)" for x in c)
              + f"; ratio {c[1]['pps'] / c[0]['pps']:.2f}."]
    if m.get("instructions"):
        ipp = m["instructions"]
        base = ipp[0]["per_packet"]
        lines += ["", f"Instructions per packet with the merge (callgrind on bench/consume.rs, core only, "
                  f"{ipp[0]['packets']} packets; senders are separate processes; merge_window "
                  f"{CALLGRIND_WINDOW_MS / 1000:.0f} s, since under valgrind a 100 msec window expires where it "
                  f"would not natively):", "",
                  "| case | instructions/packet | vs no merge | merge thread (Merge::run incl.) | late |",
                  "|---|---|---|---|---|"]
        for x in ipp:
            lines.append(f"| {x['case']} | {x['per_packet']:.0f} | {x['per_packet'] - base:+.0f} | "
                         f"{per_packet(x['merge_thread_per_packet'])} | {x['late']} |")
    return lines


if __name__ == "__main__":
    main()
