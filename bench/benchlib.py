"""Helpers the benchmarks share (bench/run.py, scaling.py, broker.py): where
things are, Zeek, ports, CPU accounting, the machine's description and the
bench trace. Importing it does no work; Zeek is looked up when first asked.
"""
import functools
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SCRIPTS = ROOT / "tests" / "Scripts"
SERVE = ROOT / "build" / "cargo" / "release" / "pcapovertcp-serve"
CONSUME = ROOT / "target" / "release" / "examples" / "consume"
# Live runs are compared with `zeek -r`: network time follows the packets.
COMMON = ["allow_network_time_forward=F"]


@functools.cache
def zeek():
    """The zeek binary of the install zeek-config names (else
    /usr/local/zeek); exits with one line when there is none."""
    cfg = shutil.which("zeek-config") or "/usr/local/zeek/bin/zeek-config"
    if not os.path.exists(cfg):
        sys.exit("bench: no Zeek install found (zeek-config)")
    prefix = subprocess.check_output([cfg, "--prefix"], text=True).strip()
    return pathlib.Path(prefix) / "bin" / "zeek"


def zeek_env():
    """The environment that loads the plugin from build/."""
    return dict(os.environ, ZEEK_PLUGIN_PATH=str(ROOT / "build"), ZEEK_PLUGIN_ACTIVATE="Zeek::PcapOverTcp")


def free_port():
    return int(subprocess.check_output([SCRIPTS / "free-port"], text=True))


def wait_listening(port, limit=10):
    subprocess.run([SCRIPTS / "wait-listen", str(port), str(limit)], check=True)


def proc_cpu_s(pid):
    """CPU seconds of a running process (user + system)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_s():
    """CPU seconds this machine has spent busy (all its processes)."""
    user, nice, system, _idle, _iowait, irq, softirq = map(int, open("/proc/stat").readline().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def reap(proc):
    """Waits for a Popen child; its CPU seconds (it and its waited-for children)."""
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ru.ru_utime + ru.ru_stime


def loadavg():
    return open("/proc/loadavg").read().split()[:3]


def settle(limit=5):
    """Waits (at most `limit` s) for other processes to use under a tenth of
    a core; returns the load average seen then (the machine may be shared)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        busy = machine_busy_s()
        time.sleep(0.5)
        if machine_busy_s() - busy < 0.05:
            break
    return loadavg()


def machine(with_zeek=True):
    """Cores, CPU model, kernel (and Zeek's version): said with every figure."""
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    text = f"{os.cpu_count()} cores, {cpu}; kernel {os.uname().release}"
    if with_zeek:
        text += "; " + subprocess.check_output([zeek(), "--version"], text=True).strip()
    return text


def make_trace(path, packets):
    """bench/make-trace.py: (packets written, packets per repetition)."""
    out = subprocess.run([sys.executable, ROOT / "bench" / "make-trace.py", path, str(packets)], check=True,
                         capture_output=True, text=True).stdout
    m = re.search(r": (\d+) packets \((\d+) repetitions of (\d+)\)", out)
    return int(m.group(1)), int(m.group(3))
