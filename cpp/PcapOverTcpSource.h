// SPDX-License-Identifier: BSD-3-Clause

#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "zeek/Val.h"
#include "zeek/iosource/PktSrc.h"
#include "zeek/telemetry/Counter.h"
#include "zeek/telemetry/Gauge.h"

#include "rust/cxx.h"
#include "zeek-pcapovertcp/src/ffi.rs.h"

namespace zeek::iosource::pcapovertcp {

/**
 * Packet source for PCAP-over-IP (`-i pcapovertcp::host:port`). A thin
 * translation of Zeek's PktSrc calls to the Rust core, which owns the
 * socket, the parser and the buffer.
 */
class PcapOverTcpSource : public PktSrc {
public:
    PcapOverTcpSource(const std::string& path, bool is_live);
    ~PcapOverTcpSource() override;

    static PktSrc* Instantiate(const std::string& path, bool is_live);

    /**
     * The counters of the PCAP-over-IP source Zeek reads from, as a
     * PcapOverTcp::Stats record (all zero if the source is another kind).
     */
    static RecordValPtr StatsVal();

    double GetNextTimeout() override;

    /**
     * Zeek is stopping (run_state::terminating): stops the core now, so
     * that what it received and Zeek never analysed is counted (and said)
     * before zeek_done, where scripts and telemetry.log's last lines read
     * the counters. Close() comes later, as usual.
     */
    static void ZeekStopping();

protected:
    void Open() override;
    void Close() override;
    bool ExtractNextPacket(Packet* pkt) override;
    void DoneWithPacket() override;
    bool PrecompileFilter(int index, const std::string& filter) override;
    bool SetFilter(int index) override;
    void Statistics(Stats* stats) override;

private:
    // Hands messages queued by the Rust core (from any thread) to Zeek's
    // reporter and debug log, here on the main thread.
    void ReportMessages();
    void RaiseEvents();

    // Exports the core's counters through Zeek's telemetry, one instance
    // per sender, labelled by endpoint; called again as senders appear.
    void UpdateMetrics();

    // Whether the active capture filter accepts the packet, compiled for
    // the packet's own link type (pcapng interfaces and reconnects may
    // bring several).
    bool FilterAccepts(int link_type, const struct pcap_pkthdr* hdr, const u_char* data);

    // The active filter compiled for `link_type`, or nullptr when it cannot
    // be (reported once; such packets pass unfiltered, as NFLOG's do).
    detail::BPF_Program* FilterFor(int link_type);

    Properties props;
    // Shared with the metrics callbacks, which may outlive this object.
    std::shared_ptr<::rust::Box<::pcapovertcp::rs::PcapOverTcp>> source;
    int filter_index = -1;        // -1: no filter applied.
    bool returned_packet = false; // The last ExtractNextPacket() returned one.
    bool fd_registered = false;   // The wake fd is registered with Zeek's loop.

    // Filter texts by index, and their programs for link types other than
    // the stream's (which Zeek's own PrecompileBPFFilter holds).
    std::map<int, std::string> filter_texts;
    std::map<std::pair<int, int>, std::unique_ptr<detail::BPF_Program>> other_link_filters;

    // The connection-key number of the sender with this input index (see
    // ConnKeySender.h), resolved and cached on its first packet.
    uint32_t SenderId(uint32_t input);

    // By input index; 0: not resolved yet. Inputs are bounded by the
    // core's sender list (src/shared/counters.rs).
    std::vector<uint32_t> sender_ids;

    // Metric instances (their values come from callbacks into the core).
    std::vector<telemetry::CounterPtr> counter_metrics;
    std::vector<telemetry::GaugePtr> gauge_metrics;
    size_t senders_exported = 0;
};

} // namespace zeek::iosource::pcapovertcp
