"""ZeekControl plugin for zeek-pcapovertcp.

Per-worker options in node.cfg become redefs for that worker only:

    [worker-1]
    type=worker
    host=localhost
    interface=pcapovertcp::10.0.0.5:57012
    pcapovertcp_buffer_size=256*1024*1024

Every option of scripts/init.zeek can be set this way, as
``pcapovertcp_<option>``. Installed with the Zeek plugin (in its zeekctl/
folder), where ZeekControl finds it without configuration.
"""

import re

import ZeekControl.plugin

PREFIX = "pcapovertcp"

# The options of scripts/init.zeek and the kind of value each takes.
OPTIONS = {
    "buffer_size": "count",
    "max_caplen": "count",
    "reconnect": "bool",
    "reconnect_min": "interval",
    "reconnect_max": "interval",
    "open_timeout": "interval",
    "drop_when_full": "bool",
    "keepalive_idle": "interval",
    "keepalive_interval": "interval",
    "keepalive_probes": "count",
    "idle_timeout": "interval",
    "merge_window": "interval",
    "merge_max_hold": "interval",
    "merge_max_skew": "interval",
    "max_senders": "count",
    "allowed_senders": "subnets",
    "header_timeout": "interval",
    "share_by": "share_by",
    "tls_ca_file": "string",
    "tls_server_name": "string",
    "tls_cert_file": "string",
    "tls_key_file": "string",
    "tls_require_client_cert": "bool",
    "tls_allowed_names": "strings",
}

# A count may be written as Zeek arithmetic, as in init.zeek: 64*1024*1024.
COUNT = re.compile(r"^\s*\d+(\s*[*+]\s*\d+)*\s*$")
BOOL = re.compile(r"^\s*[TF]\s*$")
INTERVAL = re.compile(r"^\s*\d+(\.\d+)?\s*(usec|msec|sec|min|hr|day)s?\s*$")

# A set of subnets, as Zeek writes it: {10.0.0.0/8, [2001:db8::]/32}.
SUBNETS = re.compile(r"^\s*\{\s*([0-9.]+/\d+|\[[0-9a-fA-F:.]+\]/\d+)?(\s*,\s*([0-9.]+/\d+|\[[0-9a-fA-F:.]+\]/\d+))*\s*\}\s*$")

# A string, quoted as in Zeek or bare (a path): "x" or x; and a set of
# quoted ones: {"a", "b"}.
STRING = re.compile(r'^\s*("[^"\\]*"|[^"\\\s]+)\s*$')
STRINGS = re.compile(r'^\s*\{\s*("[^"\\]*"(\s*,\s*"[^"\\]*")*)?\s*\}\s*$')
SHARE_BY = re.compile(r"^\s*(PcapOverTcp::)?(ADDRESS_PAIR|FIVE_TUPLE)\s*$")

VALID = {
    "count": COUNT,
    "bool": BOOL,
    "interval": INTERVAL,
    "subnets": SUBNETS,
    "share_by": SHARE_BY,
    "string": STRING,
    "strings": STRINGS,
}


def format_redefs(node_name, values):
    """The script text that applies `values` ({option: text}) to one node."""
    lines = [f"  redef PcapOverTcp::{key} = {value.strip()};" for key, value in values]
    if not lines:
        return ""
    body = "\n".join(lines)
    return f'\n@if ( peer_description == "{node_name}" )\n{body}\n@endif\n'


class PcapOverTcp(ZeekControl.plugin.Plugin):
    def __init__(self):
        super().__init__(apiversion=1)

    def name(self):
        return PREFIX

    def prefix(self):
        return PREFIX

    def pluginVersion(self):
        return 1

    def init(self):
        # Only active when some worker reads PCAP-over-IP. ZeekControl runs
        # its own plugins first: with lb_method=af_packet, its af_packet
        # plugin has already made the interface af_packet::pcapovertcp::...,
        # a wrong lb_method that _share() reports all the same.
        for nn in self.nodes():
            if self._is_ours(nn) or (
                nn.type == "worker" and nn.interface.startswith(f"af_packet::{PREFIX}::")
            ):
                self._share(nn)
        return any(self._is_ours(nn) for nn in self.nodes())

    def _share(self, nn):
        """A worker expanded by lb_procs=N (ZeekControl names the processes
        NAME-1 .. NAME-N) takes share k-1 of N of the stream: each connects
        to it and keeps its own flows. Without this, every process would
        receive the whole stream."""
        procs = str(nn.lb_procs or "").strip()
        if not procs or procs == "1" or nn.lb_method == "interfaces":
            # lb_method=interfaces: each process has its own interface.
            return
        if nn.lb_method != "custom":
            self.error(
                f"{nn.name}: lb_procs={procs} with a {PREFIX} interface needs lb_method=custom; "
                "each process would otherwise receive the whole stream"
            )
            return
        if "?share=" in nn.interface:
            self.error(
                f"{nn.name}: interface {nn.interface} already has a ?share= suffix; "
                f"with lb_procs, ZeekControl adds it for each process"
            )
            return
        base, _, index = nn.name.rpartition("-")
        if not base or not index.isdigit():
            self.error(f"{nn.name}: cannot tell which of the lb_procs={procs} processes this is")
            return
        nn.interface = f"{nn.interface}?share={int(index) - 1}/{procs}"

    def nodeKeys(self):
        return list(OPTIONS)

    @staticmethod
    def _is_ours(node):
        return node.type == "worker" and node.interface.startswith(f"{PREFIX}::")

    def zeekctl_config(self):
        script = ""
        for nn in self.nodes():
            if not self._is_ours(nn):
                continue
            values = []
            for key, kind in OPTIONS.items():
                value = getattr(nn, f"{PREFIX}_{key}", "") or ""
                if not value.strip():
                    continue
                if not VALID[kind].match(value):
                    self.error(
                        f"{nn.name}: {PREFIX}_{key}={value!r} is not a valid {kind}; ignored"
                    )
                    continue
                if kind == "share_by" and "::" not in value:
                    value = f"PcapOverTcp::{value.strip()}"
                if kind == "string" and not value.strip().startswith('"'):
                    value = f'"{value.strip()}"'
                values.append((key, value))
            script += format_redefs(nn.name, values)
        return script
