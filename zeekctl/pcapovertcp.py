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
    "max_senders": "count",
    "allowed_senders": "subnets",
    "header_timeout": "interval",
}

# A count may be written as Zeek arithmetic, as in init.zeek: 64*1024*1024.
COUNT = re.compile(r"^\s*\d+(\s*[*+]\s*\d+)*\s*$")
BOOL = re.compile(r"^\s*[TF]\s*$")
INTERVAL = re.compile(r"^\s*\d+(\.\d+)?\s*(usec|msec|sec|min|hr|day)s?\s*$")

# A set of subnets, as Zeek writes it: {10.0.0.0/8, [2001:db8::]/32}.
SUBNETS = re.compile(r"^\s*\{\s*([0-9.]+/\d+|\[[0-9a-fA-F:.]+\]/\d+)?(\s*,\s*([0-9.]+/\d+|\[[0-9a-fA-F:.]+\]/\d+))*\s*\}\s*$")

VALID = {"count": COUNT, "bool": BOOL, "interval": INTERVAL, "subnets": SUBNETS}


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
        # Only active when some worker reads PCAP-over-IP.
        return any(self._is_ours(nn) for nn in self.nodes())

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
                values.append((key, value))
            script += format_redefs(nn.name, values)
        return script
