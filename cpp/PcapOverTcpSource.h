// SPDX-License-Identifier: BSD-3-Clause

#pragma once

#include <optional>
#include <string>

#include "zeek/Val.h"
#include "zeek/iosource/PktSrc.h"

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

protected:
    void Open() override;
    void Close() override;
    bool ExtractNextPacket(Packet* pkt) override;
    void DoneWithPacket() override;
    bool SetFilter(int index) override;
    void Statistics(Stats* stats) override;

private:
    // Hands messages queued by the Rust core (from any thread) to Zeek's
    // reporter and debug log, here on the main thread.
    void ReportMessages();

    Properties props;
    std::optional<::rust::Box<::pcapovertcp::rs::PcapOverTcp>> source;
    int filter_index = -1;        // -1: no filter applied.
    bool returned_packet = false; // The last ExtractNextPacket() returned one.
};

} // namespace zeek::iosource::pcapovertcp
