// SPDX-License-Identifier: BSD-3-Clause

#include "Plugin.h"

#include "zeek/conn_key/Component.h"
#include "zeek/RunState.h"
#include "zeek/iosource/Component.h"

#include "ConnKeySender.h"
#include "PcapOverTcpSource.h"

namespace zeek::plugin::Zeek_PcapOverTcp {

Plugin plugin;

zeek::plugin::Configuration Plugin::Configure() {
    AddComponent(new zeek::iosource::PktSrcComponent("PcapOverTcpReader", "pcapovertcp",
                                                     zeek::iosource::PktSrcComponent::LIVE,
                                                     zeek::iosource::pcapovertcp::PcapOverTcpSource::Instantiate));

    // Selected by policy/frameworks/conn_key/pcapovertcp/sender.zeek, as
    // ConnKey::CONNKEY_PCAPOVERTCP_SENDER_FIVETUPLE.
    AddComponent(new zeek::conn_key::Component("PCAPOVERTCP_SENDER_FIVETUPLE",
                                               zeek::iosource::pcapovertcp::SenderConnKeyFactory::Instantiate));

    // To see Zeek begin to stop (HookDrainEvents).
    EnableHook(zeek::plugin::HOOK_DRAIN_EVENTS);

    zeek::plugin::Configuration config;
    config.name = "Zeek::PcapOverTcp";
    config.description = "Packet acquisition from PCAP-over-IP streams (pcap or pcapng over TCP)";
    config.version.major = PCAPOVERTCP_VERSION_MAJOR;
    config.version.minor = PCAPOVERTCP_VERSION_MINOR;
    config.version.patch = PCAPOVERTCP_VERSION_PATCH;
    return config;
}

// Zeek drains its events once more after it has set run_state::terminating
// and stopped processing packets (done_with_network()), and before it
// raises zeek_done: the source is closed there, so that the packets it had
// received and Zeek never analysed are counted for zeek_done's scripts and
// telemetry.log's last lines, not only said at exit.
void Plugin::HookDrainEvents() {
    if ( run_state::terminating && ! source_stopped ) {
        source_stopped = true;
        zeek::iosource::pcapovertcp::PcapOverTcpSource::ZeekStopping();
    }
}

} // namespace zeek::plugin::Zeek_PcapOverTcp
