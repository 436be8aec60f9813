// SPDX-License-Identifier: BSD-3-Clause

#include "Plugin.h"

#include "zeek/iosource/Component.h"

#include "PcapOverTcpSource.h"

namespace zeek::plugin::Zeek_PcapOverTcp {

Plugin plugin;

zeek::plugin::Configuration Plugin::Configure() {
    AddComponent(new zeek::iosource::PktSrcComponent("PcapOverTcpReader", "pcapovertcp",
                                                     zeek::iosource::PktSrcComponent::LIVE,
                                                     zeek::iosource::pcapovertcp::PcapOverTcpSource::Instantiate));

    zeek::plugin::Configuration config;
    config.name = "Zeek::PcapOverTcp";
    config.description = "Packet acquisition from PCAP-over-IP streams (pcap or pcapng over TCP)";
    config.version.major = PCAPOVERTCP_VERSION_MAJOR;
    config.version.minor = PCAPOVERTCP_VERSION_MINOR;
    config.version.patch = PCAPOVERTCP_VERSION_PATCH;
    return config;
}

} // namespace zeek::plugin::Zeek_PcapOverTcp
